/**
 * A prototype LZO1X page encoder for measuring (bench/lzo.ts), written from
 * the LZO1X bitstream description (Linux `Documentation/staging/lzo.rst`):
 * greedy, LZO1X-1 style (one hash table of 4-byte sequences, literal runs
 * skipped faster the longer they get). Not used by vmem-dump, which reads
 * LZO pages (`src/kdump/_lzo1x.ts`) but does not write them (docs/dumps.md,
 * "Writing LZO").
 *
 * @module
 */

const HASH_BITS = 13;
const table = new Int32Array(1 << HASH_BITS).fill(-1);

function u32(s: Uint8Array, i: number): number {
  return s[i]! | (s[i + 1]! << 8) | (s[i + 2]! << 16) | (s[i + 3]! << 24);
}

/** LZO1X-compress `src[start, start + n)` into `dst` at `at` (room: n + n / 16 + 67); returns the byte count. */
export function lzoCompress(
  src: Uint8Array,
  start: number,
  n: number,
  dst: Uint8Array,
  at: number,
): number {
  const end = start + n;
  const limit = end - 4;
  let ip = start + 1;
  let anchor = start;
  let op = at;
  /** An instruction byte whose length field is 0, then the length extension of `rem` (≥ 1). */
  const longLength = (instruction: number, rem: number) => {
    dst[op++] = instruction;
    for (; rem > 255; rem -= 255) dst[op++] = 0;
    dst[op++] = rem;
  };
  const lits = (to: number) => {
    const lit = to - anchor;
    if (lit === 0) return;
    if (op === at && lit <= 238) dst[op++] = 17 + lit;
    else if (lit <= 3) dst[op - 2]! |= lit;
    else if (lit <= 18) dst[op++] = lit - 3;
    else longLength(0, lit - 18);
    if (lit < 32) { for (let k = anchor; k < to; k++) dst[op++] = src[k]!; }
    else {
      dst.set(src.subarray(anchor, to), op);
      op += lit;
    }
  };
  while (ip < limit) {
    const v = u32(src, ip);
    const h = Math.imul(v, 0x1e35a7bd) >>> (32 - HASH_BITS);
    const cand = table[h]!;
    table[h] = ip;
    const d = ip - cand;
    if (cand >= start && d > 0 && d <= 49151 && u32(src, cand) === v) {
      let len = 4;
      while (ip + len + 4 <= end && u32(src, cand + len) === u32(src, ip + len)) len += 4;
      while (ip + len < end && src[cand + len] === src[ip + len]) len++;
      lits(ip);
      if (len <= 8 && d <= 2048) {
        const dd = d - 1;
        dst[op++] = ((len - 1) << 5) | ((dd & 7) << 2);
        dst[op++] = dd >> 3;
      } else if (d <= 16384) {
        const dd = d - 1;
        if (len <= 33) dst[op++] = 32 | (len - 2);
        else longLength(32, len - 33);
        dst[op++] = (dd << 2) & 0xff;
        dst[op++] = dd >> 6;
      } else {
        const dd = d - 16384;
        if (len <= 9) dst[op++] = 16 | ((dd >> 11) & 8) | (len - 2);
        else longLength(16 | ((dd >> 11) & 8), len - 9);
        dst[op++] = (dd << 2) & 0xff;
        dst[op++] = (dd >> 6) & 0xff;
      }
      ip += len;
      anchor = ip;
    } else ip += 1 + ((ip - anchor) >> 5);
  }
  lits(end);
  dst[op++] = 0x11;
  dst[op++] = 0;
  dst[op++] = 0;
  return op - at;
}
