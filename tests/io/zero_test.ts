import assert from "node:assert/strict";
import {
  countNonZeroBytes,
  countNonZeroBytesByWords,
  firstNonZeroIndex,
  forEachNonZeroPage,
  isAllZero,
} from "../../src/io/zero.ts";
import { simdCountNonZeroBytes } from "../../src/io/_simd_zero_count.ts";
import { seededRandom } from "../_util/chunkings.ts";

/** Byte-by-byte answers to compare the word-wise code against. */
function naive(bytes: Uint8Array) {
  let first = -1;
  let count = 0;
  for (let i = 0; i < bytes.byteLength; i++) {
    if (bytes[i] !== 0) {
      if (first < 0) first = i;
      count++;
    }
  }
  return { zero: count === 0, first, count };
}

Deno.test("isAllZero(), firstNonZeroIndex() and countNonZeroBytes() agree with a byte loop for every alignment", () => {
  const random = seededRandom(7);
  const backing = new Uint8Array(4096 + 64);
  for (let round = 0; round < 400; round++) {
    backing.fill(0);
    const start = Math.floor(random() * 8);
    const length = Math.floor(random() * 300) + (round % 3 === 0 ? 4000 : 0);
    const view = backing.subarray(start, Math.min(backing.byteLength, start + length));
    const hits = Math.floor(random() * 4);
    for (let h = 0; h < hits && view.byteLength > 0; h++) {
      view[Math.floor(random() * view.byteLength)] = 1 + Math.floor(random() * 255);
    }
    const want = naive(view);
    assert.equal(isAllZero(view), want.zero, `round ${round}`);
    assert.equal(firstNonZeroIndex(view), want.first, `round ${round}`);
    assert.equal(countNonZeroBytes(view), want.count, `round ${round}`);
  }
});

Deno.test("countNonZeroBytes() (the SIMD loop) and its word-loop fallback agree with a byte loop across windows, lengths and offsets", () => {
  const random = seededRandom(11);
  // Long then short inputs in turn: a short one must not count bytes a longer one left behind.
  const lengths = [200_000, 17, 65_536, 65_537, 255, 256, 257, 4096, 131_071, 4095, 1, 0, 70_000];
  const backing = new Uint8Array(200_016);
  for (const [round, length] of lengths.entries()) {
    for (const density of [0, 0.001, 0.5, 1]) {
      const start = round % 16;
      const view = backing.subarray(start, start + length);
      backing.fill(0);
      for (let i = 0; i < view.byteLength; i++) {
        if (random() < density) view[i] = 1 + Math.floor(random() * 255);
      }
      // Non-zero bytes just outside the view must not be counted.
      if (start > 0) backing[start - 1] = 0x80;
      if (start + length < backing.byteLength) backing[start + length] = 0x01;
      const want = naive(view).count;
      // Deno always has WebAssembly SIMD: -1 (no kernel) would be a broken module.
      assert.equal(simdCountNonZeroBytes(view), want, `length ${length} density ${density}`);
      assert.equal(countNonZeroBytes(view), want, `length ${length} density ${density}`);
      assert.equal(countNonZeroBytesByWords(view), want, `length ${length} density ${density}`);
    }
  }
});

Deno.test("isAllZero() sees a single bit in any byte of a page, including the sign bit of a word", () => {
  const page = new Uint8Array(4096);
  assert.equal(isAllZero(page), true);
  assert.equal(isAllZero(new Uint8Array(0)), true);
  for (const at of [0, 1, 2, 3, 4, 2047, 4092, 4095]) {
    for (const bit of [0x01, 0x80]) {
      page.fill(0);
      page[at] = bit;
      assert.equal(isAllZero(page), false, `byte ${at} bit ${bit}`);
      assert.equal(firstNonZeroIndex(page), at);
      assert.equal(countNonZeroBytes(page), 1);
    }
  }
});

Deno.test("forEachNonZeroPage() visits exactly the non-zero pages, aligned or not, with a short last page", () => {
  for (const offset of [0, 1, 4]) {
    const backing = new Uint8Array(offset + 5 * 4096 + 100);
    const chunk = backing.subarray(offset);
    chunk[4096 + 4095] = 1; // last byte of page 1
    chunk[3 * 4096] = 2; // first byte of page 3
    chunk[5 * 4096 + 99] = 3; // the short last page
    const seen: number[] = [];
    const n = forEachNonZeroPage(chunk, 4096, (at) => seen.push(at));
    assert.deepEqual(seen, [4096, 3 * 4096, 5 * 4096], `offset ${offset}`);
    assert.equal(n, 3);
  }
});

Deno.test("forEachNonZeroPage() rejects a page size that is not a multiple of 32", () => {
  assert.throws(() => forEachNonZeroPage(new Uint8Array(64), 48, () => {}), RangeError);
});

Deno.test("forEachNonZeroPage() finds single bytes across the native-compare windows of a large chunk", () => {
  const random = seededRandom(3);
  for (const offset of [0, 4, 3]) {
    const backing = new Uint8Array(offset + 300 * 4096);
    const chunk = backing.subarray(offset);
    const want = new Set<number>();
    for (let i = 0; i < 12; i++) {
      const at = Math.floor(random() * chunk.byteLength);
      chunk[at] = 1 + Math.floor(random() * 255);
      want.add(Math.floor(at / 4096) * 4096);
    }
    const seen: number[] = [];
    forEachNonZeroPage(chunk, 4096, (at) => seen.push(at));
    assert.deepEqual(seen, [...want].sort((a, b) => a - b), `offset ${offset}`);
  }
  const empty: number[] = [];
  assert.equal(forEachNonZeroPage(new Uint8Array(1 << 20), 4096, (at) => empty.push(at)), 0);
  assert.deepEqual(empty, []);
});

Deno.test("countNonZeroBytes() counts every byte value in every lane of a word, dense random data too", () => {
  const words = new Uint8Array(4 * 256 * 4);
  // Byte value v in lane l of word (v * 4 + l), the other lanes zero.
  for (let v = 0; v < 256; v++) for (let l = 0; l < 4; l++) words[(v * 4 + l) * 4 + l] = v;
  assert.equal(countNonZeroBytes(words), 255 * 4);
  const random = seededRandom(11);
  const dense = new Uint8Array(1 << 16);
  for (let i = 0; i < dense.byteLength; i++) {
    // Mostly values that stress the carry trick: 0, 0x80, 0x7f, 0x01, 0xff, anything.
    const pick = random();
    dense[i] = pick < 0.3
      ? 0
      : pick < 0.4
      ? 0x80
      : pick < 0.5
      ? 0x7f
      : pick < 0.6
      ? 1
      : pick < 0.7
      ? 0xff
      : Math.floor(random() * 256);
  }
  for (const start of [0, 1, 2, 3]) {
    const view = dense.subarray(start, dense.byteLength - (3 - start));
    assert.equal(countNonZeroBytes(view), naive(view).count, `start ${start}`);
  }
});
