/**
 * The 28-byte mapped-ram header QEMU (>= 9.0, `mapped-ram` capability)
 * writes after each RAMBlock of the MEM_SIZE list (migration/ram.c,
 * `MappedRamHeader`, packed, big-endian):
 *
 * | offset | width | field           |
 * | ------ | ----- | --------------- |
 * | 0      | 4     | `version` (1)   |
 * | 4      | 8     | `page_size`     |
 * | 12     | 8     | `bitmap_offset` |
 * | 20     | 8     | `pages_offset`  |
 *
 * The two offsets are absolute file positions (with `file:PATH,offset=N`
 * they include N).
 *
 * @module
 */

import { getSafeU64, setU64, viewOf } from "../../io/endian.ts";

/** Bytes of a mapped-ram header. */
export const MAPPED_RAM_HEADER_SIZE = 28;

/** The header version QEMU writes (and the highest it loads). */
export const MAPPED_RAM_HEADER_VERSION = 1;

/** The fields of a mapped-ram header. */
export interface MappedRamHeader {
  /** Header version (QEMU loads versions up to 1). */
  version: number;
  /** Page size the bitmap counts in (the target page size). */
  pageSize: number;
  /** File offset of the block's page bitmap (0 for an `x-ignore-shared` block). */
  bitmapOffset: number;
  /** File offset of the block's page 0 (0 for an `x-ignore-shared` block). */
  pagesOffset: number;
}

/**
 * Decode a mapped-ram header.
 *
 * @param bytes At least {@linkcode MAPPED_RAM_HEADER_SIZE} bytes.
 * @param fileOffset File offset of `bytes[0]`, for errors.
 * @returns The fields.
 * @throws {FormatError} (code `too-large`) for a 64-bit field beyond 2^53.
 *
 * @example
 * ```ts
 * import { readMappedRamHeader, writeMappedRamHeader } from "@vmem-dump/vmem-dump";
 * const bytes = writeMappedRamHeader({ version: 1, pageSize: 4096, bitmapOffset: 0x9a, pagesOffset: 0x100000 });
 * console.log(readMappedRamHeader(bytes, 0).pagesOffset); // 1048576
 * ```
 */
export function readMappedRamHeader(bytes: Uint8Array, fileOffset: number): MappedRamHeader {
  const v = viewOf(bytes);
  const u64 = (at: number) =>
    getSafeU64(v, at, false, { format: "migration", offset: fileOffset + at });
  return {
    version: v.getUint32(0), // version: 4 at 0
    pageSize: u64(4), // page_size: 8 at 4
    bitmapOffset: u64(12), // bitmap_offset: 8 at 12
    pagesOffset: u64(20), // pages_offset: 8 at 20
  };
}

/**
 * Encode a mapped-ram header.
 *
 * @param header The fields (offsets and sizes must be safe integers).
 * @returns {@linkcode MAPPED_RAM_HEADER_SIZE} bytes.
 *
 * @example
 * ```ts
 * import { writeMappedRamHeader } from "@vmem-dump/vmem-dump";
 * console.log(writeMappedRamHeader({ version: 1, pageSize: 4096, bitmapOffset: 0, pagesOffset: 0 }).length); // 28
 * ```
 */
export function writeMappedRamHeader(header: MappedRamHeader): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(MAPPED_RAM_HEADER_SIZE);
  const v = viewOf(out);
  v.setUint32(0, header.version);
  setU64(v, 4, header.pageSize, false);
  setU64(v, 12, header.bitmapOffset, false);
  setU64(v, 20, header.pagesOffset, false);
  return out;
}
