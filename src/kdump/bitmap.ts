/**
 * The kdump pfn bitmaps: bit `pfn` is byte `pfn >> 3`, bit `pfn & 7`
 * (LSB first). The 1st bitmap marks pages that exist, the 2nd pages that are
 * in the dump; the rank of a pfn in the 2nd bitmap is the index of its
 * `page_desc`.
 *
 * @module
 */

import { forEachSetRun } from "../io/bits.ts";

/** Pfns per rank checkpoint (crash's `BITMAP_SECT_LEN` idea). */
const RANK_STEP = 4096;

const POPCOUNT8 = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT8[i] = (i & 1) + POPCOUNT8[i >> 1]!;

/**
 * A pfn bitmap with rank queries in O(`RANK_STEP`/8) byte steps: the set-bit
 * count is kept at every 4096th pfn.
 *
 * @example
 * ```ts
 * import { KdumpBitmap } from "@vmem-dump/vmem-dump/kdump";
 * const map = new KdumpBitmap(new Uint8Array([0b0000_0101, 0x80]), 16);
 * console.log(map.has(2), map.rank(15), map.count); // true 2 3
 * ```
 */
export class KdumpBitmap {
  /** Pfns covered (bits beyond it are ignored). */
  readonly bitCount: number;
  /** Set bits below `bitCount`. */
  readonly count: number;
  #bytes: Uint8Array;
  #checkpoints: Float64Array; // set bits below pfn k·RANK_STEP

  /**
   * Construct it.
   *
   * @param bytes The bitmap (kept, not copied); at least `ceil(bitCount / 8)` bytes.
   * @param bitCount Pfns covered.
   */
  constructor(bytes: Uint8Array, bitCount: number) {
    if (!Number.isSafeInteger(bitCount) || bitCount < 0 || bytes.byteLength * 8 < bitCount) {
      throw new RangeError(`A bitmap of ${bytes.byteLength} bytes cannot hold ${bitCount} bits`);
    }
    this.bitCount = bitCount;
    this.#bytes = bytes;
    const steps = Math.floor(bitCount / RANK_STEP) + 1;
    this.#checkpoints = new Float64Array(steps);
    let total = 0;
    const fullBytes = bitCount >> 3;
    for (let i = 0; i < fullBytes; i++) {
      if (i % (RANK_STEP / 8) === 0) this.#checkpoints[i / (RANK_STEP / 8)] = total;
      total += POPCOUNT8[bytes[i]!]!;
    }
    if (fullBytes % (RANK_STEP / 8) === 0) this.#checkpoints[fullBytes / (RANK_STEP / 8)] = total;
    for (let pfn = fullBytes * 8; pfn < bitCount; pfn++) if (this.has(pfn)) total++;
    this.count = total;
  }

  /**
   * Whether the bit of `pfn` is set (`false` beyond `bitCount`).
   *
   * @param pfn Page frame number.
   * @returns Whether it is set.
   */
  has(pfn: number): boolean {
    if (!(pfn >= 0 && pfn < this.bitCount)) return false;
    return (this.#bytes[Math.floor(pfn / 8)]! >> (pfn % 8) & 1) === 1;
  }

  /**
   * Set bits below `pfn`.
   *
   * @param pfn Page frame number (clamped to 0..bitCount).
   * @returns The count.
   */
  rank(pfn: number): number {
    const end = Math.max(0, Math.min(pfn, this.bitCount));
    const step = Math.floor(end / RANK_STEP);
    let n = this.#checkpoints[step]!;
    const firstByte = step * (RANK_STEP / 8);
    const lastByte = Math.floor(end / 8);
    for (let i = firstByte; i < lastByte; i++) n += POPCOUNT8[this.#bytes[i]!]!;
    const rest = end % 8;
    if (rest) n += POPCOUNT8[this.#bytes[lastByte]! & ((1 << rest) - 1)]!;
    return n;
  }

  /**
   * Call `fn` for every run of set pfns in `[from, end)` (clamped to
   * `bitCount`), in ascending order; zero and all-ones bytes are skipped a
   * word at a time.
   *
   * @param from First pfn.
   * @param end End pfn (exclusive).
   * @param fn Receives the first pfn and the length of each run.
   *
   * @example
   * ```ts
   * import { KdumpBitmap } from "@vmem-dump/vmem-dump/kdump";
   * const runs: number[][] = [];
   * new KdumpBitmap(new Uint8Array([0b0111_0011]), 8).forEachRun(0, 8, (p, n) => runs.push([p, n]));
   * console.log(runs); // [[0, 2], [4, 3]]
   * ```
   */
  forEachRun(from: number, end: number, fn: (firstPfn: number, count: number) => void): void {
    forEachSetRun(this.#bytes, Math.max(0, from), Math.min(end, this.bitCount), fn);
  }

  /**
   * A copy of the bits below `bitCount` (`ceil(bitCount / 8)` bytes, LSB
   * first; bits beyond `bitCount` cleared), to change and write out.
   *
   * @returns The copy.
   *
   * @example
   * ```ts
   * import { KdumpBitmap } from "@vmem-dump/vmem-dump/kdump";
   * console.log(new KdumpBitmap(new Uint8Array([0xff, 0xff]), 12).copyBytes()); // Uint8Array(2) [ 255, 15 ]
   * ```
   */
  copyBytes(): Uint8Array<ArrayBuffer> {
    const out = this.#bytes.slice(0, Math.ceil(this.bitCount / 8));
    if (this.bitCount % 8 !== 0) out[out.length - 1]! &= (1 << (this.bitCount % 8)) - 1;
    return out;
  }

  /**
   * The first set pfn in `[from, end)`, skipping zero bytes quickly.
   *
   * @param from First pfn to look at.
   * @param end End pfn (exclusive; clamped to `bitCount`).
   * @returns The pfn, or -1 when none is set.
   */
  nextSet(from: number, end: number): number {
    const stop = Math.min(end, this.bitCount);
    let pfn = Math.max(0, from);
    while (pfn < stop) {
      if (pfn % 8 === 0) {
        const byte = this.#bytes[pfn / 8]!;
        if (byte === 0) {
          pfn += 8;
          continue;
        }
      }
      if (this.has(pfn)) return pfn;
      pfn++;
    }
    return -1;
  }
}
