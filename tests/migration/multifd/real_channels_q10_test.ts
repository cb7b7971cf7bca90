/**
 * multifd library tests on channels captured from real QEMU 10 migrations
 * (see _real_channels.ts; one file per QEMU build so that the two builds run
 * in parallel).
 *
 * @module
 */

import { realChannelTests } from "./_real_channels.ts";

realChannelTests("10");
