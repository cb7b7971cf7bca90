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
 * Not exported (per symbol, see the root module for the rule): the field
 * layout tables of the headers, page descriptors and flattened records
 * (`DISK_DUMP_HEADER_64`, `KDUMP_SUB_HEADER_32`, `PAGE_DESC`,
 * `MAKEDUMPFILE_HEADER`, …, `diskDumpHeaderLayout`, `kdumpSubHeaderLayout`
 * and their field types) and the reader's read size.
 *
 * @module
 */

export {
  decodeUtsname,
  DISK_DUMP_HEADER_SIZE,
  type DiskDumpHeader,
  DUMP_DH_COMPRESSED_INCOMPLETE,
  DUMP_DH_COMPRESSED_LZO,
  DUMP_DH_COMPRESSED_SNAPPY,
  DUMP_DH_COMPRESSED_ZLIB,
  DUMP_DH_COMPRESSED_ZSTD,
  DUMP_DH_EXCLUDED_VMEMMAP,
  KDUMP_MAX_BLOCK_SIZE,
  KDUMP_MAX_HEADER_VERSION,
  KDUMP_MIN_BLOCK_SIZE,
  KDUMP_SIGNATURE,
  type KdumpSubHeader,
  kdumpSubHeaderSize,
  type KdumpUtsname,
  readDiskDumpHeader,
  readKdumpSubHeader,
  UTSNAME_BYTE_LENGTH,
  writeDiskDumpHeader,
  writeKdumpSubHeader,
} from "./header.ts";
export * from "./bitmap.ts";
export {
  checkPageDesc,
  PAGE_DESC_SIZE,
  type PageDesc,
  readPageDesc,
  writePageDesc,
} from "./page_desc.ts";
export * from "./codecs.ts";
export {
  type FlattenedReader,
  isFlattenedKdump,
  MAKEDUMPFILE_SIGNATURE,
  MAX_SIZE_MDF_HEADER,
  openFlattened,
} from "./flattened.ts";
export {
  type IterateKdumpPagesOptions,
  type KdumpFile,
  type KdumpPage,
  readKdump,
} from "./reader.ts";
export * from "./writer.ts";
export * from "./compress.ts";
export * from "./physical.ts";
export * from "./strip.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { FileIdentity } from "../io/file.ts";
export type { PositionalReader } from "../io/positional.ts";
export type { GpaRange } from "../vmem/ranges.ts";
// END-TYPES
