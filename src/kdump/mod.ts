/**
 * kdump-compressed dumps (makedumpfile `-c/-l/-p/-z`, QEMU
 * `dump-guest-memory` `kdump-zlib|lzo|snappy`): headers, bitmaps, page
 * descriptors, per-page codecs and the flattened container.
 *
 * @example Read a page of a QEMU kdump-zlib dump
 * ```ts ignore
 * import { readKdump } from "@vmem-dump/vmem-dump/kdump";
 * using dump = await readKdump("guest.kdump-zlib");
 * console.log(dump.container, dump.header.utsname.machine, dump.pageCount);
 * const page = await dump.readPage(0x100); // Uint8Array of dump.blockSize bytes, or undefined
 * ```
 *
 * @module
 */

export * from "./header.ts";
export * from "./bitmap.ts";
export * from "./page_desc.ts";
export * from "./codecs.ts";
export * from "./flattened.ts";
export * from "./reader.ts";
export * from "./writer.ts";
export * from "./compress.ts";
export * from "./physical.ts";
export * from "./strip.ts";
