/**
 * LZO1X decoding of one kdump page (makedumpfile `-l`, QEMU `kdump-lzo`:
 * each page one LZO1X stream, as liblzo2's `lzo1x_1_compress` writes it),
 * written from the LZO1X bitstream description (Linux
 * `Documentation/staging/lzo.rst`). Every length and distance is checked
 * before a byte moves: the output never grows past its buffer, a match
 * never reaches before the output's start, the stream must end with the
 * end-of-stream marker and nothing after it.
 *
 * The instructions, by first byte `I` and the number of literals the
 * previous instruction copied (`state`):
 *
 * - first byte > 17: `I - 17` literals;
 * - `0000LLLL`, state 0: a literal run of `L + 3` bytes (`L` = 0: 18 plus a
 *   length extension); state 1-3: a 2-byte match at distance
 *   `(next << 2) + (I >> 2) + 1`; state 4: a 3-byte match at distance
 *   `(next << 2) + (I >> 2) + 2049`;
 * - `0001HLLL`: length `L + 2` (`L` = 0: 9 plus an extension), distance
 *   `16384 + (H << 14) + (u16 >> 2)`; distance 16384 is the end marker;
 * - `001LLLLL`: length `L + 2` (`L` = 0: 33 plus an extension), distance
 *   `(u16 >> 2) + 1`;
 * - `01LDDDSS` / `1LLDDDSS`: length 3-4 / 5-8, distance
 *   `(next << 3) + DDD + 1`;
 *
 * where a match's two low bits `SS` (of `I`, or of the little-endian u16)
 * are the literals copied after it (the next state), and a length
 * extension is a run of zero bytes (255 each) ended by a non-zero byte.
 *
 * Private to the kdump codecs (`codecs.ts` turns an {@linkcode LzoError}
 * into a `FormatError` with the file offset).
 *
 * @module
 */

/** Why an LZO1X stream was refused, and where in it. */
export class LzoError extends Error {
  override name = "LzoError";
  /** Offset in the stream of the instruction that was wrong. */
  readonly at: number;

  /**
   * @param message What was wrong.
   * @param at Offset in the stream.
   */
  constructor(message: string, at: number) {
    super(message);
    this.at = at;
  }
}

/**
 * Decode one LZO1X stream into `out`.
 *
 * @param src The stream (one kdump page as stored).
 * @param out Where the bytes go; decoding more than its length is an error.
 * @returns Bytes written.
 * @throws {LzoError} for a stream that is truncated, reaches before the
 *   output's start, overruns `out`, lacks the end marker or has bytes after it.
 *
 * @example 4 literals "abcd", then the end marker
 * ```ts ignore
 * const page = new Uint8Array(4);
 * decompressLzo1x(new Uint8Array([21, 97, 98, 99, 100, 0x11, 0, 0]), page); // 4
 * ```
 */
export function decompressLzo1x(src: Uint8Array, out: Uint8Array): number {
  const n = src.byteLength;
  const cap = out.byteLength;
  let ip = 0;
  let op = 0;
  let state = 0;
  let at = 0; // start of the current instruction, for errors
  const fail = (what: string) => new LzoError(what, at);
  /** A length extension: zero bytes add 255 each, the first non-zero byte ends it. */
  const extension = (base: number): number => {
    let len = base;
    for (;;) {
      if (ip >= n) throw fail("the stream ends inside a length");
      const b = src[ip++]!;
      if (b !== 0) return len + b;
      len += 255;
      if (len > cap) throw fail(`a length beyond the ${cap}-byte output`);
    }
  };
  const literals = (len: number) => {
    if (ip + len > n) throw fail(`${len} literals run past the end of the stream`);
    if (op + len > cap) throw fail(`${len} literals overrun the ${cap}-byte output`);
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
    literals(t);
    state = t < 4 ? t : 4;
  }
  for (;;) {
    at = ip;
    if (ip >= n) throw fail("the stream ends without its end marker");
    const I = src[ip++]!;
    let len: number;
    let dist: number;
    let next: number;
    if (I < 16) {
      if (state === 0) {
        literals(I !== 0 ? I + 3 : extension(15) + 3);
        state = 4;
        continue;
      }
      if (ip >= n) throw fail("the stream ends inside a match");
      const h = src[ip++]!;
      dist = (h << 2) + (I >> 2) + (state === 4 ? 2049 : 1);
      len = state === 4 ? 3 : 2;
      next = I & 3;
    } else if (I < 64) {
      len = I < 32
        ? ((I & 7) !== 0 ? (I & 7) + 2 : extension(7) + 2)
        : ((I & 31) !== 0 ? (I & 31) + 2 : extension(31) + 2);
      if (ip + 2 > n) throw fail("the stream ends inside a match");
      const u16 = src[ip]! | (src[ip + 1]! << 8);
      ip += 2;
      next = u16 & 3;
      if (I < 32) {
        dist = 16384 + ((I & 8) << 11) + (u16 >> 2);
        if (dist === 16384) {
          if (len !== 3 || next !== 0) throw fail("a malformed end marker");
          break;
        }
      } else dist = (u16 >> 2) + 1;
    } else {
      len = I >= 128 ? 5 + ((I >> 5) & 3) : 3 + ((I >> 5) & 1);
      if (ip >= n) throw fail("the stream ends inside a match");
      dist = (src[ip++]! << 3) + ((I >> 2) & 7) + 1;
      next = I & 3;
    }
    if (dist > op) throw fail(`a match ${dist} bytes back, before the start of the output`);
    if (op + len > cap) throw fail(`a ${len}-byte match overruns the ${cap}-byte output`);
    let from = op - dist;
    if (dist >= len && len >= 32) {
      out.copyWithin(op, from, from + len);
      op += len;
    } else for (let k = 0; k < len; k++) out[op++] = out[from++]!; // may overlap: byte by byte
    if (next > 0) literals(next);
    state = next;
  }
  at = ip;
  if (ip !== n) throw fail(`${n - ip} bytes after the end marker`);
  return op;
}
