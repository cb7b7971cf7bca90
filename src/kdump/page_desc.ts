/**
 * `page_desc`: where a dumped page's data sits and how it is compressed
 * (makedumpfile `diskdump_mod.h`). 24 bytes in both word sizes.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import {
  getWireBigUint,
  getWireUint,
  setWireUint,
  type WireLayout,
  wireLayout,
} from "../io/wire.ts";

/** `page_desc`: the same 24 bytes in both word sizes. */
export const PAGE_DESC: WireLayout<"fileOffset" | "byteLength" | "flags" | "pageFlags"> =
  wireLayout("page_desc", 24, {
    fileOffset: ["offset", 0, 8], // a signed off_t; negative values are rejected as > 2^53
    byteLength: ["size", 8, 4],
    flags: ["flags", 12, 4],
    pageFlags: ["page_flags", 16, 8],
  });

/** Size of one `page_desc`. */
export const PAGE_DESC_SIZE: number = PAGE_DESC.byteLength;

/** A decoded `page_desc`. */
export interface PageDesc {
  /** `offset`: file offset of the page data (0 = lost in an incomplete dump). */
  fileOffset: number;
  /** `size`: bytes of (compressed) page data. */
  byteLength: number;
  /** `flags`: one `DUMP_DH_COMPRESSED_*` bit, or 0 for a page stored as is. */
  flags: number;
  /** `page_flags` (0 from QEMU and current makedumpfile). */
  pageFlags: bigint;
}

/**
 * Decode a `page_desc` at `at` of `view`.
 *
 * @param view Bytes holding the descriptor.
 * @param at Offset of the descriptor inside `view`.
 * @param littleEndian Byte order of the dump.
 * @param fileOffset File offset of the descriptor, for errors.
 * @returns The descriptor.
 * @throws {FormatError} `too-large` when `offset` is negative or beyond 2^53.
 *
 * @example
 * ```ts
 * import { readPageDesc } from "@vmem-dump/vmem-dump/kdump";
 * const b = new Uint8Array(24);
 * const v = new DataView(b.buffer);
 * v.setBigUint64(0, 0x5000n, true);
 * v.setUint32(8, 100, true);
 * v.setUint32(12, 1, true);
 * console.log(readPageDesc(v, 0, true, 0x3000)); // { fileOffset: 20480, byteLength: 100, flags: 1, pageFlags: 0n }
 * ```
 */
export function readPageDesc(
  view: DataView,
  at: number,
  littleEndian: boolean,
  fileOffset: number,
): PageDesc {
  const f = PAGE_DESC.fields;
  const le = littleEndian;
  return {
    fileOffset: getWireUint(view, at, f.fileOffset, le, { format: "kdump", fileOffset }),
    byteLength: getWireUint(view, at, f.byteLength, le),
    flags: getWireUint(view, at, f.flags, le),
    pageFlags: getWireBigUint(view, at, f.pageFlags, le),
  };
}

/**
 * Encode a `page_desc` at `at` of `view`.
 *
 * @param view Destination.
 * @param at Offset of the descriptor inside `view`.
 * @param littleEndian Byte order of the dump.
 * @param desc The descriptor.
 *
 * @example
 * ```ts
 * import { readPageDesc, writePageDesc } from "@vmem-dump/vmem-dump/kdump";
 * const v = new DataView(new ArrayBuffer(24));
 * writePageDesc(v, 0, true, { fileOffset: 0x5000, byteLength: 100, flags: 0x20, pageFlags: 0n });
 * console.log(readPageDesc(v, 0, true, 0).flags); // 32
 * ```
 */
export function writePageDesc(
  view: DataView,
  at: number,
  littleEndian: boolean,
  desc: PageDesc,
): void {
  const f = PAGE_DESC.fields;
  setWireUint(view, at, f.fileOffset, desc.fileOffset, littleEndian);
  setWireUint(view, at, f.byteLength, desc.byteLength, littleEndian);
  setWireUint(view, at, f.flags, desc.flags, littleEndian);
  setWireUint(view, at, f.pageFlags, desc.pageFlags, littleEndian);
}

/**
 * Check a descriptor against the file: its data must lie inside the file,
 * after the descriptor table, and be at most 2 × `blockSize` bytes
 * (exactly `blockSize` when stored as is).
 *
 * @param desc The descriptor.
 * @param limits Block size, data area start and file size.
 * @param descFileOffset File offset of the descriptor, for errors.
 * @throws {FormatError} `out-of-range` when it does not fit.
 *
 * @example
 * ```ts
 * import { checkPageDesc } from "@vmem-dump/vmem-dump/kdump";
 * checkPageDesc({ fileOffset: 0x5000, byteLength: 4096, flags: 0, pageFlags: 0n },
 *   { blockSize: 4096, dataStart: 0x5000, fileByteLength: 0x6000 }, 0x4000);
 * ```
 */
export function checkPageDesc(
  desc: PageDesc,
  limits: { blockSize: number; dataStart: number; fileByteLength: number },
  descFileOffset: number,
): void {
  const { blockSize, dataStart, fileByteLength } = limits;
  let problem: string | undefined;
  if (desc.byteLength === 0 || desc.byteLength > 2 * blockSize) {
    problem = `size 0x${desc.byteLength.toString(16)} (block size 0x${blockSize.toString(16)})`;
  } else if (desc.flags === 0 && desc.byteLength !== blockSize) {
    problem = `uncompressed size 0x${desc.byteLength.toString(16)} is not the block size`;
  } else if (desc.fileOffset < dataStart) {
    problem = `data offset 0x${desc.fileOffset.toString(16)} lies before the page data area`;
  } else if (desc.fileOffset + desc.byteLength > fileByteLength) {
    problem = `data 0x${desc.fileOffset.toString(16)} + 0x${
      desc.byteLength.toString(16)
    } lies beyond the end of the file (0x${fileByteLength.toString(16)})`;
  }
  if (problem !== undefined) {
    throw new FormatError(`Cannot use kdump page descriptor: ${problem}`, {
      format: "kdump",
      code: "out-of-range",
      offset: descFileOffset,
    });
  }
}
