/**
 * A prototype LZO1X page codec for measuring (bench/lzo.ts), written from
 * the LZO1X bitstream description (Linux `Documentation/staging/lzo.rst`):
 * a greedy LZO1X-1-style encoder (one hash table of 4-byte sequences,
 * literal runs skipped faster the longer they get) and a decoder that
 * checks every length and distance. Not used by vmem-dump: kdump pages are
 * not written or read as LZO (docs/dumps.md, "LZO").
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
  const lits = (to: number) => {
    const lit = to - anchor;
    if (lit === 0) return;
    if (op === at && lit <= 238) dst[op++] = 17 + lit;
    else if (lit <= 3) dst[op - 2]! |= lit;
    else if (lit <= 18) dst[op++] = lit - 3;
    else {
      dst[op++] = 0;
      let rem = lit - 18;
      while (rem > 255) {
        dst[op++] = 0;
        rem -= 255;
      }
      dst[op++] = rem;
    }
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
        else {
          dst[op++] = 32;
          let rem = len - 33;
          while (rem > 255) {
            dst[op++] = 0;
            rem -= 255;
          }
          dst[op++] = rem;
        }
        dst[op++] = (dd << 2) & 0xff;
        dst[op++] = dd >> 6;
      } else {
        const dd = d - 16384;
        if (len <= 9) dst[op++] = 16 | ((dd >> 11) & 8) | (len - 2);
        else {
          dst[op++] = 16 | ((dd >> 11) & 8);
          let rem = len - 9;
          while (rem > 255) {
            dst[op++] = 0;
            rem -= 255;
          }
          dst[op++] = rem;
        }
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

/** Decode one LZO1X stream into `out`; returns the bytes written. Throws on any malformed input. */
export function lzoDecompress(src: Uint8Array, out: Uint8Array): number {
  const n = src.byteLength;
  const cap = out.byteLength;
  let ip = 0, op = 0, state = 0;
  const bad = (m: string) => new Error(`lzo: ${m} at ${ip}`);
  const ext = (base: number) => {
    let e = base;
    while (true) {
      if (ip >= n) throw bad("truncated length");
      const b = src[ip++]!;
      if (b !== 0) return e + b;
      e += 255;
      if (e > cap) throw bad("length too long");
    }
  };
  const copyLit = (len: number) => {
    if (ip + len > n || op + len > cap) throw bad("literals overrun");
    if (len < 32) { for (let k = 0; k < len; k++) out[op++] = src[ip++]!; }
    else {
      out.set(src.subarray(ip, ip + len), op);
      ip += len;
      op += len;
    }
  };
  if (n > 0 && src[0]! > 17) {
    const t = src[0]! - 17;
    ip = 1;
    copyLit(t);
    state = t < 4 ? t : 4;
  }
  while (true) {
    if (ip >= n) throw bad("no end marker");
    const I = src[ip++]!;
    let len: number, dist: number, S: number;
    if (I < 16) {
      if (state === 0) {
        copyLit(I !== 0 ? I + 3 : ext(15) + 3);
        state = 4;
        continue;
      }
      if (ip >= n) throw bad("truncated");
      const H = src[ip++]!;
      if (state < 4) {
        dist = (H << 2) + (I >> 2) + 1;
        len = 2;
      } else {
        dist = (H << 2) + (I >> 2) + 2049;
        len = 3;
      }
      S = I & 3;
    } else if (I < 32) {
      len = (I & 7) !== 0 ? (I & 7) + 2 : ext(7) + 2;
      if (ip + 2 > n) throw bad("truncated");
      const w = src[ip]! | (src[ip + 1]! << 8);
      ip += 2;
      dist = 16384 + ((I & 8) << 11) + (w >> 2);
      S = w & 3;
      if (dist === 16384) {
        if (len !== 3 || S !== 0) throw bad("bad end marker");
        break;
      }
    } else if (I < 64) {
      len = (I & 31) !== 0 ? (I & 31) + 2 : ext(31) + 2;
      if (ip + 2 > n) throw bad("truncated");
      const w = src[ip]! | (src[ip + 1]! << 8);
      ip += 2;
      dist = (w >> 2) + 1;
      S = w & 3;
    } else {
      len = I >= 128 ? 5 + ((I >> 5) & 3) : 3 + ((I >> 5) & 1);
      if (ip >= n) throw bad("truncated");
      dist = (src[ip++]! << 3) + ((I >> 2) & 7) + 1;
      S = I & 3;
    }
    if (dist > op) throw bad("distance before the start");
    if (op + len > cap) throw bad("match overrun");
    let from = op - dist;
    if (dist >= len && len >= 32) {
      out.copyWithin(op, from, from + len);
      op += len;
    } else for (let k = 0; k < len; k++) out[op++] = out[from++]!;
    if (S > 0) copyLit(S);
    state = S;
  }
  if (ip !== n) throw bad("bytes after the end marker");
  return op;
}
