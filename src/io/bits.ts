/**
 * Bit counting, runs of set bits and powers of two, for bitmaps and sizes of
 * every format (plug bitmaps in QEMU's wire form or LSB-first, mapped-ram
 * page bitmaps, block and page sizes).
 *
 * @module
 */

/** Number of set bits in every byte value. */
const POPCOUNT8 = (() => {
  const t = new Uint8Array(256);
  for (let i = 1; i < 256; i++) t[i] = (i & 1) + t[i >> 1]!;
  return t;
})();

/**
 * Number of set bits in `bytes` (independent of byte order, so it counts
 * both LSB-first bitmaps and QEMU's be64-word bitmaps).
 *
 * @param bytes The bitmap.
 * @returns How many bits are set.
 *
 * @example
 * ```ts
 * import { popcount } from "./bits.ts";
 * console.log(popcount(new Uint8Array([0xff, 0x01]))); // 9
 * ```
 */
export function popcount(bytes: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < bytes.byteLength; i++) n += POPCOUNT8[bytes[i]!]!;
  return n;
}

/**
 * Bytes an LSB-first bitmap of `bits` bits takes.
 *
 * @param bits Number of bits.
 * @returns `ceil(bits / 8)`.
 *
 * @example
 * ```ts
 * import { bitmapByteLength } from "./bits.ts";
 * console.log(bitmapByteLength(100)); // 13
 * ```
 */
export function bitmapByteLength(bits: number): number {
  return Math.ceil(bits / 8);
}

/**
 * Whether bit `i` of an LSB-first bitmap is set (bit i is byte `i >> 3`, bit `i & 7`).
 *
 * @param bitmap The bitmap.
 * @param i Bit index (inside the bitmap).
 * @returns `true` when set.
 *
 * @example
 * ```ts
 * import { testBit } from "./bits.ts";
 * console.log(testBit(new Uint8Array([0b10]), 1)); // true
 * ```
 */
export function testBit(bitmap: Uint8Array, i: number): boolean {
  return ((bitmap[i >>> 3]! >>> (i & 7)) & 1) === 1;
}

/**
 * Index of the first set bit at or beyond `bits` of an LSB-first bitmap
 * (bits past the end of what it describes), or -1.
 *
 * @param bitmap The bitmap.
 * @param bits Bits it describes.
 * @returns The index of the first stray bit, or -1.
 *
 * @example
 * ```ts
 * import { firstBitBeyond } from "./bits.ts";
 * console.log(firstBitBeyond(new Uint8Array([0x80]), 7)); // 7
 * ```
 */
export function firstBitBeyond(bitmap: Uint8Array, bits: number): number {
  for (let i = bits; i < bitmap.byteLength * 8; i++) if (testBit(bitmap, i)) return i;
  return -1;
}

/**
 * Whether `n` is a power of two (any safe integer, not only 32-bit ones).
 *
 * @param n The number.
 * @returns `true` for 1, 2, 4, … up to 2^52.
 *
 * @example
 * ```ts
 * import { isPowerOfTwo } from "./bits.ts";
 * console.log(isPowerOfTwo(2 ** 40), isPowerOfTwo(3 * 4096)); // true false
 * ```
 */
export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/**
 * Call `fn` for every run of set bits among bits `[from, to)` of an
 * LSB-first bitmap. Zero and all-ones bytes are skipped a word at a time.
 *
 * @param bits The bitmap.
 * @param from First bit.
 * @param to End bit (exclusive).
 * @param fn Receives the first bit and the length of each run.
 *
 * @example
 * ```ts
 * import { forEachSetRun } from "./bits.ts";
 * forEachSetRun(new Uint8Array([0b1110_0001, 0xff, 0]), 0, 24, (first, count) => console.log(first, count));
 * // 0 1
 * // 5 11
 * ```
 */
export function forEachSetRun(
  bits: Uint8Array,
  from: number,
  to: number,
  fn: (first: number, count: number) => void,
): void {
  let i = from;
  while (i < to) {
    i = nextBit(bits, i, to, 1);
    if (i >= to) return;
    const stop = nextBit(bits, i + 1, to, 0);
    fn(i, stop - i);
    i = stop;
  }
}

/** First bit ≥ `i` (and < `to`) equal to `value`, or `to`. */
function nextBit(bits: Uint8Array, i: number, to: number, value: 0 | 1): number {
  const skipByte = value === 1 ? 0 : 0xff;
  const skipWord = value === 1 ? 0 : 0xffffffff;
  const lastByte = to >>> 3; // bytes wholly below `to`
  while (i < to) {
    if ((i & 7) === 0) {
      // Skip whole bytes, then whole 32-bit words, that cannot hold the bit sought.
      let byte = i >>> 3;
      while (byte < lastByte && (byte & 3) !== 0 && bits[byte] === skipByte) byte++;
      if ((byte & 3) === 0) {
        while (byte + 4 <= lastByte && word32(bits, byte) === skipWord) byte += 4;
      }
      while (byte < lastByte && bits[byte] === skipByte) byte++;
      if (byte * 8 > i) {
        i = byte * 8;
        continue;
      }
    }
    if (((bits[i >>> 3]! >>> (i & 7)) & 1) === value) return i;
    i++;
  }
  return to;
}

function word32(bits: Uint8Array, byte: number): number {
  return (bits[byte]! | bits[byte + 1]! << 8 | bits[byte + 2]! << 16 | bits[byte + 3]! << 24) >>> 0;
}

/**
 * Clear bits `[from, to)` of an LSB-first bitmap.
 *
 * @param bits The bitmap (modified).
 * @param from First bit.
 * @param to End bit (exclusive).
 *
 * @example
 * ```ts
 * import { clearBitRange } from "./bits.ts";
 * const bits = new Uint8Array([0xff, 0xff]);
 * clearBitRange(bits, 4, 12);
 * console.log(bits); // Uint8Array [15, 240]
 * ```
 */
export function clearBitRange(bits: Uint8Array, from: number, to: number): void {
  let i = from;
  while (i < to && (i & 7) !== 0) {
    bits[i >>> 3]! &= ~(1 << (i & 7));
    i++;
  }
  const full = (to - i) >>> 3;
  bits.fill(0, i >>> 3, (i >>> 3) + full);
  i += full * 8;
  while (i < to) {
    bits[i >>> 3]! &= ~(1 << (i & 7));
    i++;
  }
}
