/**
 * Word-wise zero detection, for every reader that asks "is this page all
 * zero?" (the scanners above all: unplugged virtio-mem memory reads as zero).
 * Two answers, never a byte loop: long runs are compared against a zero
 * buffer, natively with `Buffer.equals` (a memcmp, about 20 GB/s here) once
 * {@linkcode loadNativeZeroCompare} ran, and pages are checked with an
 * OR-reduction over 32-bit words (unrolled eight times, about 11 GB/s on
 * cached data). Bytes are looked at one by one only inside words already
 * known to be non-zero.
 *
 * `node:buffer` is loaded on request, not at import: it brings Deno's Node
 * compatibility layer, about 10 ms of start-up for every command. The dump
 * scanners, which compare gigabytes, request it; without it long runs are
 * OR-reduced too (about 5 GB/s), still faster than any input arrives.
 *
 * @module
 */

import { simdCountNonZeroBytes } from "./_simd_zero_count.ts";

/** Window compared against zeros before pages are looked at one by one (small enough to stay in cache). */
const ZERO_WINDOW = 64 * 1024;

/** The native compare, once loaded. */
let nativeWindowIsZero: ((bytes: Uint8Array) => boolean) | undefined;

/**
 * Load the native zero compare (`Buffer.equals` against a zero buffer) for
 * long runs. Optional: the word-wise check answers the same without it.
 *
 * @example
 * ```ts
 * import { loadNativeZeroCompare } from "./zero.ts";
 * await loadNativeZeroCompare();
 * ```
 */
export async function loadNativeZeroCompare(): Promise<void> {
  if (nativeWindowIsZero !== undefined) return;
  const { Buffer } = await import("node:buffer");
  const zeros = Buffer.alloc(ZERO_WINDOW);
  nativeWindowIsZero = (bytes) =>
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(
      bytes.byteLength === ZERO_WINDOW ? zeros : zeros.subarray(0, bytes.byteLength),
    );
}

/** Whether `bytes` (at most {@linkcode ZERO_WINDOW} long) is all zero. */
function windowIsZero(bytes: Uint8Array): boolean {
  return nativeWindowIsZero === undefined ? isAllZero(bytes) : nativeWindowIsZero(bytes);
}

/** OR of the 32-bit words `words[from..to)` (`to - from` a multiple of 8 is fastest). */
function orWords(words: Int32Array, from: number, to: number): number {
  let acc = 0;
  let i = from;
  for (const stop = to - 7; i < stop; i += 8) {
    acc |= words[i]! | words[i + 1]! | words[i + 2]! | words[i + 3]! | words[i + 4]! |
      words[i + 5]! |
      words[i + 6]! | words[i + 7]!;
  }
  for (; i < to; i++) acc |= words[i]!;
  return acc;
}

/** Head bytes before the first 4-aligned byte, word count and tail bytes of `bytes`. */
function wordSplit(bytes: Uint8Array): { head: number; words: number; tail: number } {
  const misalign = bytes.byteOffset & 3;
  const head = Math.min(bytes.byteLength, misalign === 0 ? 0 : 4 - misalign);
  const words = (bytes.byteLength - head) >>> 2;
  return { head, words, tail: bytes.byteLength - head - words * 4 };
}

function wordView(bytes: Uint8Array, head: number, words: number): Int32Array {
  return new Int32Array(bytes.buffer, bytes.byteOffset + head, words);
}

/**
 * Whether every byte of `bytes` is zero. Works for any length and
 * alignment; the bulk is checked as 32-bit words.
 *
 * @param bytes The bytes to check.
 * @returns `true` when all bytes are zero (also for an empty array).
 *
 * @example
 * ```ts
 * import { isAllZero } from "@vmem-dump/vmem-dump/scan";
 * const page = new Uint8Array(4096);
 * console.log(isAllZero(page)); // true
 * page[4095] = 1;
 * console.log(isAllZero(page)); // false
 * ```
 */
export function isAllZero(bytes: Uint8Array): boolean {
  const { head, words, tail } = wordSplit(bytes);
  for (let i = 0; i < head; i++) if (bytes[i] !== 0) return false;
  if (words > 0 && orWords(wordView(bytes, head, words), 0, words) !== 0) return false;
  for (let i = bytes.byteLength - tail; i < bytes.byteLength; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * Index of the first non-zero byte of `bytes`, or -1 when all are zero.
 * Skips zero memory a word at a time.
 *
 * @param bytes The bytes to search.
 * @returns The index, or -1.
 *
 * @example
 * ```ts
 * import { firstNonZeroIndex } from "@vmem-dump/vmem-dump/scan";
 * const page = new Uint8Array(4096);
 * page[1234] = 0x41;
 * console.log(firstNonZeroIndex(page)); // 1234
 * ```
 */
export function firstNonZeroIndex(bytes: Uint8Array): number {
  const { head, words, tail } = wordSplit(bytes);
  for (let i = 0; i < head; i++) if (bytes[i] !== 0) return i;
  if (words > 0) {
    const w = wordView(bytes, head, words);
    // Find the first non-zero block of 64 words, then the word, then the byte.
    for (let base = 0; base < words; base += 64) {
      const stop = Math.min(words, base + 64);
      if (orWords(w, base, stop) === 0) continue;
      for (let i = base; i < stop; i++) {
        if (w[i] !== 0) {
          const at = head + i * 4;
          for (let j = at; j < at + 4; j++) if (bytes[j] !== 0) return j;
        }
      }
    }
  }
  for (let i = bytes.byteLength - tail; i < bytes.byteLength; i++) if (bytes[i] !== 0) return i;
  return -1;
}

/** Below this many bytes the JavaScript word loop answers (no copy into the SIMD module). */
const SIMD_MIN_BYTES = 256;

/**
 * Number of non-zero bytes in `bytes`: a WebAssembly SIMD loop (see
 * `_simd_zero_count.ts`), or where that cannot run, and for short inputs,
 * a loop over 32-bit words that skips zero words.
 *
 * @param bytes The bytes to count.
 * @returns How many of them are not zero.
 *
 * @example
 * ```ts
 * import { countNonZeroBytes } from "@vmem-dump/vmem-dump/scan";
 * console.log(countNonZeroBytes(new Uint8Array([0, 1, 2, 0, 0, 0, 0, 3, 0]))); // 3
 * ```
 */
export function countNonZeroBytes(bytes: Uint8Array): number {
  if (bytes.byteLength >= SIMD_MIN_BYTES) {
    const n = simdCountNonZeroBytes(bytes);
    if (n >= 0) return n;
  }
  return countNonZeroBytesByWords(bytes);
}

/**
 * {@linkcode countNonZeroBytes} without the SIMD loop (its fallback, and the
 * tests' second opinion on it). Internal: not re-exported by any `mod.ts`.
 *
 * @param bytes The bytes to count.
 * @returns How many of them are not zero.
 */
export function countNonZeroBytesByWords(bytes: Uint8Array): number {
  const { head, words, tail } = wordSplit(bytes);
  let n = 0;
  for (let i = 0; i < head; i++) if (bytes[i] !== 0) n++;
  if (words > 0) {
    const w = wordView(bytes, head, words);
    for (let i = 0; i < words; i++) {
      const x = w[i]!;
      if (x === 0) continue;
      // Non-zero bytes of the word without a branch per byte: bit 7 of each
      // byte of `t` is set when that byte is non-zero (adding 0x7f carries
      // into bit 7 from the low seven bits, OR-ing x adds bit 7 itself); the
      // multiply sums the four flags into the top byte.
      const t = ((((x & 0x7f7f7f7f) + 0x7f7f7f7f) | x) >>> 7) & 0x01010101;
      n += Math.imul(t, 0x01010101) >>> 24;
    }
  }
  for (let i = bytes.byteLength - tail; i < bytes.byteLength; i++) if (bytes[i] !== 0) n++;
  return n;
}

/**
 * Call `visit` with the start index of every page of `chunk` that holds a
 * non-zero byte, in ascending order. Pages are `pageSize` bytes from the
 * start of `chunk`; a shorter last page is checked too. This is the hot
 * loop of the dump scanners: one word view for the whole chunk, no
 * allocation per page.
 *
 * @param chunk The bytes, typically a few MiB read from a file.
 * @param pageSize Page size in bytes, a multiple of 32. @default {4096}
 * @param visit Receives the index in `chunk` of each non-zero page.
 * @returns The number of non-zero pages.
 *
 * @example
 * ```ts
 * import { forEachNonZeroPage } from "@vmem-dump/vmem-dump/scan";
 * const chunk = new Uint8Array(4 * 4096);
 * chunk[2 * 4096 + 7] = 9;
 * const found: number[] = [];
 * forEachNonZeroPage(chunk, 4096, (at) => found.push(at));
 * console.log(found); // [8192]
 * ```
 */
export function forEachNonZeroPage(
  chunk: Uint8Array,
  pageSize: number,
  visit: (pageStart: number) => void,
): number {
  if (!(pageSize > 0 && pageSize % 32 === 0)) {
    throw new RangeError(
      `Cannot scan pages of ${pageSize} bytes: the size must be a positive multiple of 32`,
    );
  }
  let found = 0;
  const fullPages = Math.floor(chunk.byteLength / pageSize);
  const aligned = (chunk.byteOffset & 3) === 0;
  const w = aligned && fullPages > 0
    ? new Int32Array(chunk.buffer, chunk.byteOffset, (fullPages * pageSize) >>> 2)
    : undefined;
  const wordsPerPage = pageSize >>> 2;
  // Windows of whole pages: skip a window that compares equal to zeros, else check its pages.
  const pagesPerWindow = Math.max(1, Math.floor(ZERO_WINDOW / pageSize));
  for (let first = 0; first < fullPages; first += pagesPerWindow) {
    const last = Math.min(fullPages, first + pagesPerWindow);
    if (
      pageSize <= ZERO_WINDOW && windowIsZero(chunk.subarray(first * pageSize, last * pageSize))
    ) continue;
    for (let p = first; p < last; p++) {
      const base = p * wordsPerPage;
      // Most pages with data have some in their first words: look there before reducing all.
      const nonZero = w !== undefined
        ? (w[base]! | w[base + 1]! | w[base + 2]! | w[base + 3]!) !== 0 ||
          orWords(w, base, base + wordsPerPage) !== 0
        : !isAllZero(chunk.subarray(p * pageSize, (p + 1) * pageSize));
      if (nonZero) {
        found++;
        visit(p * pageSize);
      }
    }
  }
  const rest = fullPages * pageSize;
  if (rest < chunk.byteLength && !isAllZero(chunk.subarray(rest))) {
    found++;
    visit(rest);
  }
  return found;
}
