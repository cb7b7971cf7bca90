/**
 * Plug bitmaps: one bit per device block, LSB-first bytes (bit i is byte
 * `i >> 3`, bit `i & 7`). Conversions from QEMU's wire form (big-endian u64
 * words, bit i in word `i >> 6`, bit `i & 63`) and from block runs.
 *
 * @module
 */

import type { BlockRun } from "./ranges.ts";

/** Bytes an LSB-first bitmap of `bits` bits takes. */
export function bitmapByteLength(bits: number): number {
  return Math.ceil(bits / 8);
}

/** Bytes QEMU's wire bitmap (be64 words) of `bits` bits takes. */
export function wireBitmapByteLength(bits: number): number {
  return 8 * Math.ceil(bits / 64);
}

/** Whether bit `i` is set. */
export function testBit(bitmap: Uint8Array, i: number): boolean {
  return ((bitmap[i >>> 3]! >>> (i & 7)) & 1) === 1;
}

/** Index of the first set bit at or beyond `bits` (bits past the end), or -1. */
export function firstBitBeyond(bitmap: Uint8Array, bits: number): number {
  for (let i = bits; i < bitmap.byteLength * 8; i++) if (testBit(bitmap, i)) return i;
  return -1;
}

/**
 * Convert QEMU's wire bitmap (be64 words) to LSB-first bytes. Word k's
 * least significant byte is wire byte `8k + 7`, so each word is reversed.
 * Bits at or beyond `bits` are kept (callers check them with
 * {@linkcode firstBitBeyond} on the result before trimming).
 */
export function bitmapFromWire(wire: Uint8Array, bits: number): Uint8Array<ArrayBuffer> {
  const words = Math.ceil(bits / 64);
  if (wire.byteLength < words * 8) {
    throw new RangeError(`Wire bitmap of ${wire.byteLength} bytes is too short for ${bits} bits`);
  }
  const out = new Uint8Array(words * 8);
  for (let k = 0; k < words; k++) {
    for (let j = 0; j < 8; j++) out[8 * k + j] = wire[8 * k + 7 - j]!;
  }
  return out;
}

/** Convert LSB-first bytes back to QEMU's wire form (be64 words). */
export function bitmapToWire(bitmap: Uint8Array, bits: number): Uint8Array<ArrayBuffer> {
  const words = Math.ceil(bits / 64);
  const out = new Uint8Array(words * 8);
  for (let k = 0; k < words; k++) {
    for (let j = 0; j < 8; j++) out[8 * k + 7 - j] = bitmap[8 * k + j] ?? 0;
  }
  return out;
}

/** Keep the first `bitmapByteLength(bits)` bytes (a copy). */
export function trimBitmap(bitmap: Uint8Array, bits: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bitmapByteLength(bits));
  out.set(bitmap.subarray(0, out.byteLength));
  return out;
}

/**
 * Runs of equal bits with value `value` in `[0, bits)`, as `[first, count]`.
 * Skips whole bytes of the other value, so sparse maps are cheap.
 */
export function runsOf(bitmap: Uint8Array, bits: number, value: boolean): BlockRun[] {
  const runs: BlockRun[] = [];
  const skip = value ? 0x00 : 0xff;
  let i = 0;
  while (i < bits) {
    if ((i & 7) === 0 && bitmap[i >>> 3] === skip) {
      i += 8;
      continue;
    }
    if (testBit(bitmap, i) !== value) {
      i++;
      continue;
    }
    const first = i;
    const fill = value ? 0xff : 0x00;
    while (i < bits) {
      if ((i & 7) === 0 && i + 8 <= bits && bitmap[i >>> 3] === fill) {
        i += 8;
        continue;
      }
      if (testBit(bitmap, i) !== value) break;
      i++;
    }
    runs.push([first, i - first]);
  }
  return runs;
}

/**
 * Whether blocks `[first, end)` are all set (`"plugged"`), all clear
 * (`"unplugged"`) or both (`"mixed"`). `end > first`.
 */
export function classifyBits(
  bitmap: Uint8Array,
  first: number,
  end: number,
): "plugged" | "unplugged" | "mixed" {
  let set = false;
  let clear = false;
  let i = first;
  while (i < end) {
    if ((i & 7) === 0 && i + 8 <= end) {
      const b = bitmap[i >>> 3]!;
      if (b === 0xff) set = true;
      else if (b === 0) clear = true;
      else return "mixed";
      i += 8;
    } else {
      if (testBit(bitmap, i)) set = true;
      else clear = true;
      i++;
    }
    if (set && clear) return "mixed";
  }
  return set ? "plugged" : "unplugged";
}

/** Build an LSB-first bitmap of `bits` bits from runs (callers validate the runs first). */
export function bitmapFromRuns(runs: readonly BlockRun[], bits: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bitmapByteLength(bits));
  for (const [first, count] of runs) {
    for (let i = first; i < first + count; i++) out[i >>> 3] = out[i >>> 3]! | (1 << (i & 7));
  }
  return out;
}
