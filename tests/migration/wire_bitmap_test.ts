import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import {
  bitmapFromWireWords,
  bitmapToWireWords,
  firstWireBitBeyond,
} from "../../src/migration/wire_bitmap.ts";

/** LSB-first bitmap of `blocks` blocks with the given inclusive ranges set. */
function lsb(blocks: number, ranges: [number, number][]): Uint8Array {
  const bitmap = new Uint8Array(Math.ceil(blocks / 8));
  for (const [a, b] of ranges) {
    for (let i = a; i <= b; i++) bitmap[i >> 3] = bitmap[i >> 3]! | (1 << (i & 7));
  }
  return bitmap;
}

Deno.test("bitmapFromWireWords() reads QEMU's be64 words and rejects bits past the end", () => {
  // out-q10 s2 as QEMU sends it: 00000000 00003fff 0000000f ffffffff = blocks 0-13 and 64-99
  const wire = Uint8Array.from([
    0,
    0,
    0,
    0,
    0,
    0,
    0x3f,
    0xff,
    0,
    0,
    0,
    0x0f,
    0xff,
    0xff,
    0xff,
    0xff,
  ]);
  const bitmap = bitmapFromWireWords(wire, 128);
  assert.deepEqual(bitmap, lsb(128, [[0, 13], [64, 99]]));
  assert.deepEqual(bitmapToWireWords(bitmap, 128), wire);
  // Bit 100 set with only 100 blocks:
  const stray = new Uint8Array(16);
  stray[8 + 7 - 4] = 0x10; // word 1, bit 36 = block 100
  assert.equal(firstWireBitBeyond(stray, 100), 100);
  assert.equal(firstWireBitBeyond(stray, 101), -1);
  assert.throws(
    () => bitmapFromWireWords(stray, 100),
    (e: unknown) =>
      e instanceof FormatError && e.format === "plugmap" && e.code === "invariant" &&
      /bit 100 beyond the last block 99/.test(e.message),
  );
  assert.throws(() => bitmapFromWireWords(new Uint8Array(8), 128), RangeError);
});

Deno.test("bitmapFromWireWords() and bitmapToWireWords() round-trip every block count up to 200", () => {
  for (let blocks = 1; blocks <= 200; blocks++) {
    const bitmap = lsb(blocks, [[0, 0], [blocks >> 1, blocks >> 1], [blocks - 1, blocks - 1]]);
    const wire = bitmapToWireWords(bitmap, blocks);
    assert.equal(wire.byteLength, 8 * Math.ceil(blocks / 64));
    assert.deepEqual(bitmapFromWireWords(wire, blocks), bitmap, `${blocks} blocks`);
  }
});
