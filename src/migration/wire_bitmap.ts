/**
 * The virtio-mem plug bitmap as QEMU puts it in a migration stream: big-endian
 * u64 words, bit i in word `i >> 6` at bit `i & 63` (the bitmap of the
 * `virtio-mem` device section and of the early section). `src/vmem` keeps
 * bitmaps LSB-first (bit i is byte `i >> 3`, bit `i & 7`); this module
 * converts between the two.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { bitmapByteLength, firstBitBeyond } from "../io/bits.ts";

/**
 * Index of the first set bit at or beyond `bits` in a wire bitmap (bits past
 * the last block), or -1.
 *
 * @param wire The bitmap as be64 words.
 * @param bits Blocks of the device.
 * @returns The index of the first stray bit, or -1.
 *
 * @example
 * ```ts
 * import { firstWireBitBeyond } from "./wire_bitmap.ts";
 * const wire = new Uint8Array(8);
 * wire[0] = 0x80; // bit 63
 * console.log(firstWireBitBeyond(wire, 60)); // 63
 * ```
 */
export function firstWireBitBeyond(wire: Uint8Array, bits: number): number {
  for (let i = bits; i < wire.byteLength * 8; i++) {
    const byte = wire[8 * (i >>> 6) + 7 - ((i & 63) >>> 3)]!;
    if ((byte >>> (i & 7)) & 1) return i;
  }
  return -1;
}

/**
 * Convert a plug bitmap from QEMU's wire form (big-endian u64 words, bit i
 * in word `i >> 6` at bit `i & 63`, as in migration streams) to the
 * LSB-first bytes of a `VmemDevice` bitmap.
 *
 * @param wire At least `8 * ceil(blockCount / 64)` bytes.
 * @param blockCount Blocks of the device.
 * @returns `ceil(blockCount / 8)` bytes (a new buffer).
 * @throws {FormatError} (format `plugmap`, code `invariant`) when a bit at or beyond `blockCount` is set.
 * @throws {RangeError} when `wire` is too short.
 *
 * @example Blocks 0 and 64 plugged
 * ```ts
 * import { bitmapFromWireWords } from "@vmem-dump/vmem-dump/migration";
 * const wire = new Uint8Array(16);
 * wire[7] = 0x01; // word 0, bit 0
 * wire[15] = 0x01; // word 1, bit 0 = block 64
 * const bitmap = bitmapFromWireWords(wire, 128);
 * console.log(bitmap[0], bitmap[8]); // 1 1
 * ```
 */
export function bitmapFromWireWords(wire: Uint8Array, blockCount: number): Uint8Array<ArrayBuffer> {
  const words = Math.ceil(blockCount / 64);
  if (wire.byteLength < words * 8) {
    throw new RangeError(
      `Wire bitmap of ${wire.byteLength} bytes is too short for ${blockCount} bits`,
    );
  }
  // Word k's least significant byte is wire byte 8k + 7: reverse each word.
  const full = new Uint8Array(words * 8);
  for (let k = 0; k < words; k++) {
    for (let j = 0; j < 8; j++) full[8 * k + j] = wire[8 * k + 7 - j]!;
  }
  const stray = firstBitBeyond(full, blockCount);
  if (stray >= 0) {
    throw new FormatError(
      `Invalid virtio-mem plug map: bitmap sets bit ${stray} beyond the last block ${
        blockCount - 1
      }`,
      { format: "plugmap", code: "invariant", offset: 0 },
    );
  }
  return full.slice(0, bitmapByteLength(blockCount));
}

/**
 * Convert an LSB-first plug bitmap back to QEMU's wire form (big-endian u64 words).
 *
 * @param bitmap LSB-first bytes.
 * @param blockCount Blocks of the device.
 * @returns `8 * ceil(blockCount / 64)` bytes.
 *
 * @example
 * ```ts
 * import { bitmapToWireWords } from "@vmem-dump/vmem-dump/migration";
 * console.log(bitmapToWireWords(new Uint8Array([1]), 8)[7]); // 1
 * ```
 */
export function bitmapToWireWords(bitmap: Uint8Array, blockCount: number): Uint8Array<ArrayBuffer> {
  const words = Math.ceil(blockCount / 64);
  const out = new Uint8Array(words * 8);
  for (let k = 0; k < words; k++) {
    for (let j = 0; j < 8; j++) out[8 * k + 7 - j] = bitmap[8 * k + j] ?? 0;
  }
  return out;
}
