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

import { viewOf } from "../../io/endian.ts";
import { getWireUint, setWireUint, type WireLayout, wireLayout } from "../../io/wire.ts";

/** The header's layout (migration/ram.c `MappedRamHeader`, packed, big-endian). */
export const MAPPED_RAM_HEADER: WireLayout<
  "version" | "pageSize" | "bitmapOffset" | "pagesOffset"
> = wireLayout("MappedRamHeader", 28, {
  version: ["version", 0, 4],
  pageSize: ["page_size", 4, 8],
  bitmapOffset: ["bitmap_offset", 12, 8],
  pagesOffset: ["pages_offset", 20, 8],
});

/** Bytes of a mapped-ram header. */
export const MAPPED_RAM_HEADER_SIZE: number = MAPPED_RAM_HEADER.byteLength;

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
 * import { readMappedRamHeader, writeMappedRamHeader } from "@vmem-dump/vmem-dump/migration";
 * const bytes = writeMappedRamHeader({ version: 1, pageSize: 4096, bitmapOffset: 0x9a, pagesOffset: 0x100000 });
 * console.log(readMappedRamHeader(bytes, 0).pagesOffset); // 1048576
 * ```
 */
export function readMappedRamHeader(bytes: Uint8Array, fileOffset: number): MappedRamHeader {
  const v = viewOf(bytes);
  const f = MAPPED_RAM_HEADER.fields;
  const where = { format: "migration" as const, fileOffset };
  return {
    version: getWireUint(v, 0, f.version, false, where),
    pageSize: getWireUint(v, 0, f.pageSize, false, where),
    bitmapOffset: getWireUint(v, 0, f.bitmapOffset, false, where),
    pagesOffset: getWireUint(v, 0, f.pagesOffset, false, where),
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
 * import { writeMappedRamHeader } from "@vmem-dump/vmem-dump/migration";
 * console.log(writeMappedRamHeader({ version: 1, pageSize: 4096, bitmapOffset: 0, pagesOffset: 0 }).length); // 28
 * ```
 */
export function writeMappedRamHeader(header: MappedRamHeader): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(MAPPED_RAM_HEADER_SIZE);
  const v = viewOf(out);
  for (const key of ["version", "pageSize", "bitmapOffset", "pagesOffset"] as const) {
    setWireUint(v, 0, MAPPED_RAM_HEADER.fields[key], header[key], false);
  }
  return out;
}
