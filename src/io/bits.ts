/**
 * Bit counting and powers of two, for bitmaps and sizes of every format
 * (plug bitmaps in QEMU's wire form or LSB-first, block and page sizes).
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
