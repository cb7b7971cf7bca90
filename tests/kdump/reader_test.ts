/**
 * readKdump() on synthetic files from tests/kdump/_builder.ts: both byte
 * orders, both word sizes, every codec we decode, the flattened container,
 * and corrupted headers, bitmaps and descriptors.
 */

import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../../src/errors.ts";
import { bytesPositional } from "../../src/io/positional.ts";
import { decompressKdumpPage, KdumpBitmap, openFlattened, readKdump } from "../../src/kdump/mod.ts";
import { buildKdump, flatten, type KdumpSpec } from "./_builder.ts";
import { assertFormatError } from "../_util/assert.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";

const B = 4096;

function pattern(pfn: number, kind: "text" | "random" | "zero"): Uint8Array {
  const p = new Uint8Array(B);
  if (kind === "zero") return p;
  if (kind === "text") return p.fill(0x41 + (pfn % 26));
  let x = pfn * 2654435761 >>> 0;
  for (let i = 0; i < B; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    p[i] = x >>> 24;
  }
  return p;
}

function sampleSpec(extra: Partial<KdumpSpec> = {}): KdumpSpec {
  const pages = new Map<number, Uint8Array>();
  for (const pfn of [0, 1, 2, 7, 8, 100, 4095, 4096, 4097, 9000, 9001, 9002]) {
    pages.set(pfn, pattern(pfn, pfn % 3 === 0 ? "text" : pfn % 3 === 1 ? "random" : "zero"));
  }
  return { maxMapnr: 10_000, pages, excluded: [50, 51], ...extra };
}

async function assertPages(bytes: Uint8Array, spec: KdumpSpec) {
  using dump = await readKdump(bytesPositional(bytes));
  assert.equal(dump.maxMapnr, spec.maxMapnr);
  assert.equal(dump.pageCount, spec.pages.size);
  assert.equal(dump.header.utsname.machine, "x86_64");
  assert.equal(dump.vmcoreinfo, "OSRELEASE=test\nPAGESIZE=4096\n");
  assert.equal(dump.subHeader.physBase, 0x1000000n);
  for (const [pfn, want] of spec.pages) {
    assert.ok(dump.isDumpable(pfn));
    assert.deepEqual(await dump.readPage(pfn), want, `pfn ${pfn}`);
  }
  assert.ok(dump.isPresent(50) && !dump.isDumpable(50));
  assert.equal(await dump.readPage(50), undefined);
  assert.equal(await dump.readPage(3), undefined);
  assert.equal(await dump.readPage(20_000), undefined);
  const seen: number[] = [];
  for await (const batch of dump.iteratePages(0, dump.maxMapnr, { chunkSize: 2 * B })) {
    for (const p of batch) {
      assert.deepEqual(p.data, spec.pages.get(p.pfn), `iterated pfn ${p.pfn}`);
      seen.push(p.pfn);
    }
  }
  assert.deepEqual(seen, [...spec.pages.keys()].sort((a, b) => a - b));
  return dump.header;
}

for (
  const [name, extra] of [
    ["64-bit little-endian zlib", {}],
    ["64-bit big-endian zlib", { littleEndian: false }],
    ["32-bit little-endian zlib", { wordSize: 4 }],
    ["32-bit big-endian uncompressed", { wordSize: 4, littleEndian: false, codec: 0 }],
    ["64-bit little-endian zstd", { codec: 0x20 }],
  ] as [string, Partial<KdumpSpec>][]
) {
  Deno.test(`readKdump() reads every page of a ${name} dump`, async () => {
    const spec = sampleSpec(extra);
    const header = await assertPages(buildKdump(spec).bytes, spec);
    assert.equal(header.littleEndian, extra.littleEndian ?? true);
    assert.equal(header.wordSize, extra.wordSize ?? 8);
  });
}

Deno.test("readKdump() reads a flattened dump whose records come in any order and overlap", async () => {
  const spec = sampleSpec();
  const plain = buildKdump(spec).bytes;
  for (const order of ["forward", "reverse"] as const) {
    for (const size of [1000, 4096, 65536]) {
      const flat = flatten(plain, size, order);
      await assertPages(flat, spec);
      using real = await openFlattened(bytesPositional(flat));
      assert.equal(real.byteLength, plain.length);
      const all = new Uint8Array(plain.length);
      await real.readInto(0, all);
      assert.deepEqual(all, plain, `${order} ${size}`);
    }
  }
});

Deno.test("KdumpBitmap.rank() counts set bits below a pfn across checkpoints", () => {
  const bytes = new Uint8Array(2000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37) & 0xff;
  const bits = 15_997;
  const map = new KdumpBitmap(bytes, bits);
  let n = 0;
  for (let pfn = 0; pfn <= bits; pfn++) {
    if (pfn % 61 === 0 || pfn === bits) assert.equal(map.rank(pfn), n, `rank(${pfn})`);
    if (pfn < bits && map.has(pfn)) n++;
  }
  assert.equal(map.count, n);
  assert.equal(map.nextSet(0, 8), bytes[0] ? 0 : map.nextSet(0, 8));
});

Deno.test("decompressKdumpPage() rejects Snappy with UnsupportedFeatureError naming the codec", () => {
  for (const [flags, name] of [[4, "snappy"]] as const) {
    assert.throws(
      () => decompressKdumpPage(new Uint8Array(10), flags, B, 0x1234),
      (e) =>
        e instanceof UnsupportedFeatureError && e.message.includes(name) && e.offset === 0x1234,
    );
  }
});

Deno.test("decompressKdumpPage() rejects corrupt data, wrong lengths and unknown flags with FormatError", () => {
  const cases: [Uint8Array, number][] = [
    [new Uint8Array([1, 2, 3, 4]), 1], // not zlib
    [deflateSync(new Uint8Array(B - 1)), 1], // short page
    [deflateSync(new Uint8Array(B * 4)), 1], // long page
    [new Uint8Array(100), 0x40], // unknown codec
    [new Uint8Array(100), 0], // stored page of the wrong size
  ];
  for (const [data, flags] of cases) {
    assert.throws(
      () => decompressKdumpPage(data, flags, B, 0x99),
      (e) => e instanceof FormatError && e.format === "kdump" && e.code === "bad-record",
    );
  }
});

async function rejects(bytes: Uint8Array, check: (e: unknown) => boolean, what: string) {
  const signal = AbortSignal.timeout(5_000);
  await assert.rejects(
    (async () => {
      using dump = await readKdump(bytesPositional(bytes));
      for await (const _ of dump.iteratePages(0, dump.maxMapnr)) {
        if (signal.aborted) throw new Error("hang");
      }
    })(),
    (e) => {
      assert.ok(check(e), `${what}: ${e}`);
      return true;
    },
  );
}

const isFormat = (e: unknown) =>
  e instanceof FormatError && e.format === "kdump" && !(e.message.includes("hang"));

Deno.test("readKdump() rejects a truncated file with a typed error, wherever it is cut", async () => {
  const { bytes } = buildKdump(sampleSpec());
  const cuts = [0, 7, 8, 100, 463, 464, 4096, 4200, 8192, 12288, bytes.length - 1];
  for (let c = 8192; c < bytes.length; c += 997) cuts.push(c);
  for (const cut of cuts) {
    await rejects(bytes.slice(0, cut), isFormat, `cut at ${cut}`);
  }
  const flat = flatten(bytes, 4096);
  for (const cut of [100, 4096, 4100, 5000, flat.length - 16, flat.length - 1]) {
    await rejects(
      flat.slice(0, cut),
      (e) => e instanceof UnexpectedEofError || isFormat(e),
      `flat cut ${cut}`,
    );
  }
});

Deno.test("readKdump() rejects absurd bitmap_blocks and max_mapnr without allocating by them", async () => {
  const built = buildKdump(sampleSpec());
  for (const value of [0xffff_ffff, 0x10_0000]) {
    const b = built.bytes.slice();
    new DataView(b.buffer).setUint32(built.bitmapBlocksOffset, value, true);
    await rejects(
      b,
      (e) => e instanceof FormatError && e.code === "out-of-range" && e.offset === 436,
      `bitmap_blocks ${value}`,
    );
  }
  // One block: read as a single (legacy) bitmap, so the descriptors are misread.
  const one = built.bytes.slice();
  new DataView(one.buffer).setUint32(built.bitmapBlocksOffset, 1, true);
  await rejects(one, isFormat, "bitmap_blocks 1");
  const b = built.bytes.slice();
  new DataView(b.buffer).setBigUint64(4096 + 96, 1n << 45n, true); // max_mapnr_64
  await rejects(b, isFormat, "max_mapnr_64 2^45");
});

Deno.test("readKdump() rejects a page_desc pointing past the end of the file", async () => {
  const built = buildKdump(sampleSpec());
  for (const [field, value] of [[0, 1n << 40n], [0, 0x10n], [8, 0x100000n]] as const) {
    const b = built.bytes.slice();
    const v = new DataView(b.buffer);
    const at = built.descTableOffset + 24 + field;
    if (field === 0) v.setBigUint64(at, value, true);
    else v.setUint32(at, Number(value), true);
    await rejects(
      b,
      (e) =>
        e instanceof FormatError && e.code === "out-of-range" &&
        e.offset === built.descTableOffset + 24,
      `desc field ${field}`,
    );
  }
});

Deno.test("readKdump() rejects a bad signature and headers no layout fits", async () => {
  const { bytes } = buildKdump(sampleSpec());
  const b1 = bytes.slice();
  b1[0] = 0x4c;
  await rejects(b1, (e) => e instanceof FormatError && e.code === "bad-magic", "signature");
  const b2 = bytes.slice();
  new DataView(b2.buffer).setUint32(8, 99, true);
  await rejects(b2, (e) => e instanceof FormatError && e.code === "bad-header", "version");
  const b3 = bytes.slice();
  new DataView(b3.buffer).setUint32(428, 3000, true);
  await rejects(b3, (e) => e instanceof FormatError && e.code === "bad-header", "block size");
});

Deno.test("readKdump() refuses a flattened ELF dump with UnsupportedFeatureError", async () => {
  const elf = new Uint8Array(600);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  await rejects(
    flatten(elf, 256),
    (e) => e instanceof UnsupportedFeatureError && /makedumpfile -R/.test(e.message),
    "flattened ELF",
  );
});

Deno.test("readKdump() rejects a dump whose 2nd bitmap lists a page the 1st does not (real makedumpfile output)", async () => {
  // Found by the mutation campaign: strip then failed with a RangeError from the writer.
  const bytes = await tinyFixture("q72-tiny.kdump");
  const v = new DataView(bytes.buffer);
  const blockSize = v.getUint32(428, true);
  const bitmapStart = (1 + v.getUint32(432, true)) * blockSize;
  const half = (v.getUint32(436, true) / 2) * blockSize;
  // pfn 0x10 is dumped: clear it in the 1st bitmap only.
  assert.equal(bytes[bitmapStart + half + 2]! & 1, 1);
  bytes[bitmapStart + 2] = bytes[bitmapStart + 2]! & ~1;
  await assertFormatError(readKdump(bytesPositional(bytes)), {
    code: "invariant",
    format: "kdump",
    offset: bitmapStart + half + 2,
    message: /pfn 0x10 is in the 2nd bitmap/,
  });
});
