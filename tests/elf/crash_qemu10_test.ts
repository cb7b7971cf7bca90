/** `crash` with the guest kernel's debug vmlinux on QEMU 10's dumps, our strip of them and its kdump (tests/elf/_crash_interop.ts). */

import { crashInteropTest } from "./_crash_interop.ts";

crashInteropTest("10");
