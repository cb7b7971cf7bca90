/**
 * The LZO1X page decoder (`src/kdump/_lzo1x.ts`) on streams assembled here
 * instruction by instruction from the bitstream description (every
 * instruction kind, with the expected bytes worked out by hand), and its
 * refusals: truncation at every length, every single-byte change, matches
 * before the start, overruns, long zero-run lengths, a missing end marker
 * and bytes after it. Real liblzo2 pages (makedumpfile -l) are decoded in
 * makedumpfile_test.ts against the zlib file of the same dump.
 */
import assert from "node:assert/strict";
import { decompressLzo1x, LzoError } from "../../src/kdump/_lzo1x.ts";
import { decompressKdumpPage, DUMP_DH_COMPRESSED_LZO } from "../../src/kdump/mod.ts";
import { FormatError } from "../../src/errors.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const END = [0x11, 0, 0];

/** Decode into a buffer of `cap` bytes; the bytes written. */
function decode(stream: number[] | Uint8Array, cap: number): Uint8Array {
  const out = new Uint8Array(cap);
  return out.subarray(0, decompressLzo1x(Uint8Array.from(stream), out));
}

Deno.test("LZO1X: every instruction kind decodes to the bytes worked out by hand", () => {
  // First-byte literals (17 + n), then the end marker.
  assert.deepEqual(decode([17 + 4, ...enc("abcd"), ...END], 16), enc("abcd"));
  // State 1-3 after 2 literals: 0000DDSS + H is a 2-byte match at (H << 2) + DD + 1 = 1.
  assert.deepEqual(decode([17 + 2, ...enc("ab"), 0x00, 0x00, ...END], 16), enc("abbb"));
  // 01LDDDSS: length 3 + L, distance (H << 3) + DDD + 1; here L 1, DDD 3, H 0: 4 bytes from 4 back,
  // then SS = 2 literals "xy".
  assert.deepEqual(
    decode([17 + 4, ...enc("wxyz"), 0b0110_1110, 0x00, ...enc("xy"), ...END], 16),
    enc("wxyzwxyzxy"),
  );
  // 1LLDDDSS: length 5 + LL, LL 3 → 8 bytes from 1 back (overlapping: a run).
  assert.deepEqual(
    decode([17 + 1, ...enc("q"), 0b1110_0000, 0x00, ...END], 16),
    enc("q".repeat(9)),
  );
  // 001LLLLL + u16: length L + 2 = 5, distance (u16 >> 2) + 1 = 3, SS 1 literal "!".
  assert.deepEqual(
    decode([17 + 3, ...enc("abc"), 0x20 | 3, (2 << 2) | 1, 0, ...enc("!"), ...END], 16),
    enc("abcabcab!"),
  );
  // 001 with L = 0: length 33 + extension (two zero bytes = 510, then 7) = 550 from 1 back.
  assert.deepEqual(
    decode([17 + 1, 0x55, 0x20, 0, 0, 7, 0, 0, ...END], 600),
    new Uint8Array(551).fill(0x55),
  );
  // A literal run after a match with SS 0 (state 0): 0000LLLL = L + 3 literals; L 0: 18 + ext.
  const lits = Array.from({ length: 18 + 300 }, (_, i) => i & 0xff);
  assert.deepEqual(
    decode([17 + 1, 9, 0b0100_0000, 0x00, 0x00, 0, 45, ...lits, ...END], 1000),
    Uint8Array.from([9, 9, 9, 9, ...lits]),
  );
  // State 4 after 4+ literals: 0000DDSS + H is a 3-byte match at (H << 2) + DD + 2049.
  const head = Array.from({ length: 2100 }, (_, i) => (i * 7) & 0xff);
  const m1 = decode(
    [0, ...Array(8).fill(0), 2100 - 18 - 8 * 255, ...head, 0x04, 0x03, ...END],
    4096,
  );
  // distance (3 << 2) + 1 + 2049 = 2062: the 3 bytes at 2100 - 2062 = 38.
  assert.deepEqual(m1, Uint8Array.from([...head, ...head.slice(38, 41)]));
  // 0001HLLL + u16: length L + 2 = 4, distance 16384 + (H << 14) + (u16 >> 2); H 0, u16 >> 2 = 1.
  const far = Array.from({ length: 16385 }, (_, i) => (i * 13 + 1) & 0xff);
  const farStream = [
    0,
    ...Array(64).fill(0),
    16385 - 18 - 64 * 255,
    ...far,
    0x12,
    1 << 2,
    0,
    ...END,
  ];
  assert.deepEqual(
    decode(farStream, 20000),
    Uint8Array.from([...far, ...far.slice(0, 4)]),
  );
});

Deno.test("LZO1X: refusals (typed, with the offset of the instruction), never another error or a hang", () => {
  const refuse = (stream: number[] | Uint8Array, cap: number, what: RegExp, at?: number) =>
    assert.throws(
      () => decode(stream, cap),
      (e) => e instanceof LzoError && what.test(e.message) && (at === undefined || e.at === at),
    );
  refuse([17 + 2, ...enc("ab"), 0b0110_1100, 0x00, ...END], 16, /before the start/, 3); // 4 back of 2
  refuse([17 + 4, ...enc("abcd"), ...END, 0], 16, /1 bytes after the end marker/, 8);
  refuse([17 + 4, ...enc("abcd")], 16, /without its end marker/, 5);
  refuse([17 + 4, ...enc("abcd"), ...END], 3, /overrun the 3-byte output/, 0);
  refuse([17 + 1, 0x55, 0x20, 0, 0, 7, 0, 0, ...END], 100, /length beyond|overruns/);
  refuse([0x11, 1, 0], 16, /malformed end marker/, 0);
  // A million zero bytes of length extension stop at the output's size, not at the end.
  const zeros = new Uint8Array(1 << 20);
  zeros[0] = 17 + 1;
  zeros[2] = 0x20;
  refuse(zeros, 4096, /length beyond the 4096-byte output/, 2);

  // Every truncation and every single-byte change of a stream with every instruction kind.
  const good = Uint8Array.from([
    17 + 3,
    ...enc("abc"),
    0x20 | 3,
    (2 << 2) | 1,
    0,
    ...enc("!"),
    0b1110_0000,
    0x00,
    0b0110_1100,
    0x01,
    3,
    ...enc("zzzzzz"),
    ...END,
  ]);
  const cap = decode(good, 4096).byteLength;
  for (let n = 0; n < good.byteLength; n++) {
    assert.throws(() => decode(good.subarray(0, n), 4096), LzoError, `truncated to ${n}`);
  }
  for (let i = 0; i < good.byteLength; i++) {
    for (const x of [0x00, 0x01, 0x11, 0x20, 0x40, 0x80, 0xff]) {
      const bad = good.slice();
      bad[i] = x;
      try {
        assert.ok(decode(bad, cap).byteLength <= cap);
      } catch (e) {
        assert.ok(e instanceof LzoError, `byte ${i} = ${x}: ${e}`);
      }
    }
  }
});

Deno.test("decompressKdumpPage() decodes LZO pages; a corrupt or short one is a FormatError at its file offset", () => {
  const page = new Uint8Array(4096).fill(0x41);
  // 1 literal, then a run: 001LLLLL with L 0, extension 4095 - 33 = 4062 = 15 × 255 + 237.
  const stream = Uint8Array.from([17 + 1, 0x41, 0x20, ...Array(15).fill(0), 237, 0, 0, ...END]);
  assert.deepEqual(decompressKdumpPage(stream, DUMP_DH_COMPRESSED_LZO, 4096, 0x5000), page);
  assert.throws(
    () => decompressKdumpPage(stream.subarray(0, 10), DUMP_DH_COMPRESSED_LZO, 4096, 0x5000),
    (e) =>
      e instanceof FormatError && e.code === "bad-record" && e.offset === 0x5000 + 2 &&
      /corrupt lzo data/.test(e.message),
  );
  // A whole stream that decodes to less than a page.
  assert.throws(
    () => decompressKdumpPage(Uint8Array.from([17 + 1, 0x41, ...END]), 2, 4096, 0x5000),
    (e) => e instanceof FormatError && /1 bytes, not the block size 4096/.test(e.message),
  );
});
