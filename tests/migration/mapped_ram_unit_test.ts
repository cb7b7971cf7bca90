/**
 * The small parts of the mapped-ram reader, against naive models: bitmap
 * runs and clearing, pieces in both host byte orders, the header codec, the
 * block layout rules, and the positional byte reader the decoder walks the
 * file with.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bytesPositional } from "../../src/io/positional.ts";
import { positionalByteReader } from "../../src/io/positional_byte_reader.ts";
import { clearBitRange, forEachSetRun } from "../../src/io/bits.ts";
import { readBitmapPieces, swapBitmapWords } from "../../src/migration/mapped_ram/bitmap.ts";
import {
  readMappedRamHeader,
  writeMappedRamHeader,
} from "../../src/migration/mapped_ram/header.ts";
import { mappedRamBlockLayout } from "../../src/migration/mapped_ram/block_layout.ts";
import { assertFormatError } from "../_util/assert.ts";
import { seededRandom } from "../_util/chunkings.ts";

function randomBitmap(rnd: () => number, bytes: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes);
  // Long runs of 0x00 and 0xff with noise, so both the word skips and the bit loops run.
  let i = 0;
  while (i < bytes) {
    const len = 1 + Math.floor(rnd() * 40);
    const kind = rnd();
    for (let k = 0; k < len && i < bytes; k++, i++) {
      out[i] = kind < 0.4 ? 0 : kind < 0.7 ? 0xff : Math.floor(rnd() * 256);
    }
  }
  return out;
}

const bit = (bits: Uint8Array, i: number) => (bits[i >> 3]! >> (i & 7)) & 1;

Deno.test("forEachSetRun() finds the runs a bit-by-bit scan finds", () => {
  const rnd = seededRandom(3);
  for (let round = 0; round < 300; round++) {
    const bits = randomBitmap(rnd, 1 + Math.floor(rnd() * 200));
    const n = bits.byteLength * 8;
    const from = Math.floor(rnd() * n);
    const to = from + Math.floor(rnd() * (n - from + 1));
    const got: [number, number][] = [];
    forEachSetRun(bits, from, to, (f, c) => got.push([f, c]));
    const want: [number, number][] = [];
    for (let i = from; i < to; i++) {
      if (!bit(bits, i)) continue;
      const last = want[want.length - 1];
      if (last && last[0] + last[1] === i) last[1]++;
      else want.push([i, 1]);
    }
    assert.deepEqual(got, want, `round ${round}: [${from}, ${to})`);
  }
});

Deno.test("clearBitRange() clears exactly the range", () => {
  const rnd = seededRandom(5);
  for (let round = 0; round < 300; round++) {
    const bits = randomBitmap(rnd, 1 + Math.floor(rnd() * 64));
    const n = bits.byteLength * 8;
    const from = Math.floor(rnd() * n);
    const to = from + Math.floor(rnd() * (n - from + 1));
    const before = bits.slice();
    clearBitRange(bits, from, to);
    for (let i = 0; i < n; i++) {
      assert.equal(bit(bits, i), i >= from && i < to ? 0 : bit(before, i), `bit ${i}`);
    }
  }
});

Deno.test("readBitmapPieces() covers a range in whole words, in both host byte orders", async () => {
  const rnd = seededRandom(9);
  const pageCount = 64 * 37 + 13; // a partial last word
  const lsb = randomBitmap(rnd, Math.ceil(pageCount / 64) * 8);
  const be = lsb.slice();
  swapBitmapWords(be);
  const block = {
    headerOffset: 0,
    version: 1,
    pageSize: 4096,
    ignored: false,
    bitmapOffset: 100,
    bitmapByteLength: lsb.byteLength,
    pagesOffset: 1 << 20,
    pageCount,
    areaEnd: (1 << 20) + pageCount * 4096,
  };
  for (const [order, bytes] of [["little", lsb], ["big", be]] as const) {
    const file = new Uint8Array(100 + bytes.byteLength);
    file.set(bytes, 100);
    for (const range of [{ firstPage: 0, pageCount }, { firstPage: 130, pageCount: 700 }]) {
      const seen: number[] = [];
      let next = Math.floor(range.firstPage / 64) * 64;
      for await (
        const p of readBitmapPieces(bytesPositional(file), block, range, {
          byteOrder: order,
          pieceBytes: 24,
        })
      ) {
        assert.equal(p.firstPage, next);
        assert.equal(p.fileOffset, 100 + p.firstPage / 8);
        forEachSetRun(p.bits, 0, p.pageCount, (f, c) => {
          for (let i = 0; i < c; i++) seen.push(p.firstPage + f + i);
        });
        next += p.pageCount;
      }
      assert.ok(next >= Math.min(pageCount, range.firstPage + range.pageCount));
      const want: number[] = [];
      for (let i = Math.floor(range.firstPage / 64) * 64; i < next; i++) {
        if (bit(lsb, i)) want.push(i);
      }
      assert.deepEqual(seen, want, `${order} ${JSON.stringify(range)}`);
    }
  }
});

Deno.test("mapped-ram header: write and read back, fields at their offsets", () => {
  const h = { version: 1, pageSize: 4096, bitmapOffset: 0x9a, pagesOffset: 2 ** 40 };
  const bytes = writeMappedRamHeader(h);
  assert.equal(bytes.byteLength, 28);
  assert.deepEqual([...bytes.subarray(0, 4)], [0, 0, 0, 1]);
  assert.deepEqual([...bytes.subarray(4, 12)], [0, 0, 0, 0, 0, 0, 0x10, 0]);
  assert.deepEqual([...bytes.subarray(20, 28)], [0, 0, 1, 0, 0, 0, 0, 0]);
  assert.deepEqual(readMappedRamHeader(bytes, 0), h);
});

Deno.test("mappedRamBlockLayout(): what QEMU writes, what it refuses, x-ignore-shared blocks", async () => {
  const base = {
    idstr: "pc.ram",
    usedLength: 0x8000000,
    headerOffset: 0x1000_000f,
    pageSize: 4096,
    ignoreShared: false,
    header: { version: 1, pageSize: 4096, bitmapOffset: 0x1000_002b, pagesOffset: 0x1010_0000 },
  };
  const ok = mappedRamBlockLayout(base);
  assert.equal(ok.pageCount, 0x8000);
  assert.equal(ok.bitmapByteLength, 0x1000);
  assert.equal(ok.areaEnd, 0x1810_0000);
  // Version 0 is loaded by QEMU (it refuses only newer versions).
  assert.equal(
    mappedRamBlockLayout({ ...base, header: { ...base.header, version: 0 } }).version,
    0,
  );
  // x-ignore-shared: both offsets 0 means nothing in the file; without the capability it is an error.
  const zero = { ...base.header, bitmapOffset: 0, pagesOffset: 0 };
  const ignored = mappedRamBlockLayout({ ...base, ignoreShared: true, header: zero });
  assert.equal(ignored.ignored, true);
  assert.equal(ignored.areaEnd, base.headerOffset + 28);
  await assertFormatError(() => mappedRamBlockLayout({ ...base, header: zero }), {
    code: "bad-mapped-ram",
    offset: base.headerOffset + 12,
  });
  await assertFormatError(
    () => mappedRamBlockLayout({ ...base, usedLength: base.usedLength + 100 }),
    { code: "bad-mapped-ram", offset: base.headerOffset },
  );
});

Deno.test("positionalByteReader(): offsets are file offsets, long skips are seeks, EOF is typed", async () => {
  const file = new Uint8Array(3 << 20);
  for (let i = 0; i < file.length; i += 4096) file[i] = (i >> 12) & 0xff;
  let reads = 0;
  const inner = bytesPositional(file);
  const counting = {
    byteLength: inner.byteLength,
    readInto(at: number, into: Uint8Array) {
      reads += into.byteLength;
      return inner.readInto(at, into);
    },
    close() {},
  };
  const r = positionalByteReader(counting, { startOffset: 4096, chunkSize: 8192 });
  assert.equal((await r.read(1))[0], 1);
  await r.skip((2 << 20) - 1); // far beyond one chunk: no read
  assert.equal(r.offset, 4096 + (2 << 20));
  assert.equal((await r.read(1))[0], ((4096 + (2 << 20)) >> 12) & 0xff);
  assert.ok(reads <= 2 * 8192, `read ${reads} bytes`);
  await r.skip(5); // short skip: through the buffer
  assert.equal(r.offset, 4096 + (2 << 20) + 6);
  await assertFormatError(r.skip(2 << 20), {
    name: "UnexpectedEofError",
    offset: file.length,
  });
});
