/**
 * Live multifd migrations through `vmem-dump proxy` between real QEMU 7.2
 * processes (see multifd_qemu_cases.ts; one file per QEMU build so the two
 * builds run in parallel).
 *
 * @module
 */

import { multifdProxyTests } from "./multifd_qemu_cases.ts";

multifdProxyTests("7.2");
