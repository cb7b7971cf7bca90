/**
 * `page_desc`: where a dumped page's data sits and how it is compressed
 * (makedumpfile `diskdump_mod.h`). 24 bytes in both word sizes.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { getSafeU64 } from "../io/endian.ts";

/** Size of one `page_desc`. */
export const PAGE_DESC_SIZE = 24;

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
  return {
    // offset: 8 bytes (signed off_t) at 0
    fileOffset: getSafeU64(view, at, littleEndian, { format: "kdump", offset: fileOffset }),
    byteLength: view.getUint32(at + 8, littleEndian), // size: 4 bytes at 8
    flags: view.getUint32(at + 12, littleEndian), // flags: 4 bytes at 12
    pageFlags: view.getBigUint64(at + 16, littleEndian), // page_flags: 8 bytes at 16
  };
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
