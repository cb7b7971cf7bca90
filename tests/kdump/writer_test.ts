/**
 * KdumpWriter, the page compressors and the flattened sink, checked by
 * reading their output back with readKdump (an independent decoder of every
 * header field, bitmap and descriptor): plain files with and without the
 * final compaction, the flattened container, shared and zero pages, both
 * byte orders and word sizes, every codec, misuse, and corruption of the
 * written files (typed errors only, never a wrong page).
 */

import assert from "node:assert/strict";
import { inflateSync, zstdDecompressSync } from "node:zlib";
import { FormatError, UnexpectedEofError } from "../../src/errors.ts";
import { bytesPositional } from "../../src/io/positional.ts";
import {
  compressPageBatch,
  DUMP_DH_COMPRESSED_ZLIB,
  DUMP_DH_COMPRESSED_ZSTD,
  flattenedSink,
  kdumpCodecFlag,
  type KdumpSink,
  type KdumpWriteCodec,
  KdumpWriter,
  type KdumpWriterOptions,
  PageCompressor,
  PageCompressorPool,
  readKdump,
} from "../../src/kdump/mod.ts";
import { encodeNote } from "../../src/elf/note.ts";
import { concatBytes, seededRandom } from "../_util/chunkings.ts";

const B = 4096;
const UTS = {
  sysname: "Linux",
  nodename: "node",
  release: "6.1.0-test",
  version: "#1 SMP",
  machine: "x86_64",
  domainname: "",
};

/** A growable in-memory file with the sink operations the writer uses. */
class MemoryFile {
  bytes = new Uint8Array(1 << 16);
  size = 0;
  writes = 0;
  sink(options: { readBack: boolean }): KdumpSink {
    return {
      writeAt: (at, b) => {
        this.#grow(at + b.byteLength);
        this.bytes.set(b, at);
        this.size = Math.max(this.size, at + b.byteLength);
        this.writes++;
        return Promise.resolve();
      },
      ...(options.readBack
        ? {
          readAt: (at: number, into: Uint8Array) => {
            const n = Math.max(0, Math.min(into.byteLength, this.size - at));
            into.set(this.bytes.subarray(at, at + n));
            return Promise.resolve(n);
          },
          truncate: (n: number) => {
            this.size = n;
            return Promise.resolve();
          },
        }
        : {}),
    };
  }
  #grow(n: number) {
    if (n <= this.bytes.byteLength) return;
    const bigger = new Uint8Array(Math.max(n, this.bytes.byteLength * 2));
    bigger.set(this.bytes);
    this.bytes = bigger;
  }
  get contents(): Uint8Array {
    return this.bytes.slice(0, this.size);
  }
}

type Kind = "zero" | "text" | "random";

function page(pfn: number, kind: Kind, size = B): Uint8Array {
  const p = new Uint8Array(size);
  if (kind === "zero") return p;
  if (kind === "text") {
    const s = new TextEncoder().encode(`page ${pfn} of guest memory; `);
    for (let i = 0; i < size; i++) p[i] = s[i % s.length]!;
    return p;
  }
  const rnd = seededRandom(pfn + 1);
  for (let i = 0; i < size; i++) p[i] = Math.floor(rnd() * 256);
  return p;
}

/** A page set: pfn → kind, some pfns present but left out (no data). */
function pageSet(seed: number, maxMapnr: number, count: number) {
  const rnd = seededRandom(seed);
  const pfns = new Set<number>();
  while (pfns.size < count) pfns.add(Math.floor(rnd() * maxMapnr));
  const kinds = new Map<number, Kind>();
  for (const pfn of [...pfns].sort((a, b) => a - b)) {
    const r = rnd();
    kinds.set(pfn, r < 0.4 ? "zero" : r < 0.8 ? "text" : "random");
  }
  return kinds;
}

interface WriteSpec {
  codec: KdumpWriteCodec;
  littleEndian?: boolean;
  wordSize?: 8 | 4;
  blockSize?: number;
  /** Leave zero pages out of the 2nd bitmap (fewer descriptors than reserved). */
  excludeZero?: boolean;
  readBack?: boolean;
  flattened?: boolean;
  oneShot?: boolean;
}

/** Write `kinds` through compressPageBatch + KdumpWriter; return the file and what readers must see. */
async function writeDump(kinds: Map<number, Kind>, maxMapnr: number, spec: WriteSpec) {
  const bs = spec.blockSize ?? B;
  const present = new Uint8Array(Math.ceil(maxMapnr / 8));
  for (const pfn of kinds.keys()) present[pfn >>> 3]! |= 1 << (pfn & 7);
  const file = new MemoryFile();
  const flatParts: Uint8Array[] = [];
  const sink = spec.flattened
    ? flattenedSink((c) => {
      flatParts.push(c.slice());
      return Promise.resolve();
    })
    : file.sink({ readBack: spec.readBack ?? true });
  const le = spec.littleEndian ?? true;
  const vmcoreinfo = new TextEncoder().encode(`OSRELEASE=6.1.0-test\nPAGESIZE=${bs}\n`);
  const notes = encodeNote({ name: "VMCOREINFO", type: 0, desc: vmcoreinfo }, le);
  const options: KdumpWriterOptions = {
    wordSize: spec.wordSize ?? 8,
    littleEndian: le,
    blockSize: bs,
    maxMapnr,
    present,
    maxPageCount: kinds.size,
    utsname: UTS,
    status: kdumpCodecFlag(spec.codec),
    physBase: 0x1000000n,
    dumpLevel: spec.excludeZero ? 1 : 0,
    notes,
    vmcoreinfo,
    vmcoreinfoInNotes: notes.byteLength - Math.ceil(vmcoreinfo.byteLength / 4) * 4,
    bufferByteLength: 3 * bs, // small, so drains and compaction run many times
  };
  const writer = new KdumpWriter(sink, options);
  using compressor = new PageCompressor(spec.codec, 1, { oneShot: spec.oneShot ?? false });
  const pfns = [...kinds.keys()];
  const expected = new Map<number, Uint8Array>();
  for (let first = 0; first < pfns.length; first += 7) {
    const batch = pfns.slice(first, first + 7);
    const pages = new Uint8Array(batch.length * bs);
    batch.forEach((pfn, i) => pages.set(page(pfn, kinds.get(pfn)!, bs), i * bs));
    const b = compressPageBatch(pages, batch.length, bs, compressor);
    let at = 0;
    for (let i = 0; i < batch.length; i++) {
      const pfn = batch[i]!;
      const size = b.sizes[i]!;
      if (size === 0) {
        if (!spec.excludeZero) {
          writer.addZeroPage(pfn);
          expected.set(pfn, new Uint8Array(bs));
        }
      } else {
        writer.addPage(pfn, b.data.subarray(at, at + size), b.flags[i]!);
        expected.set(pfn, pages.slice(i * bs, (i + 1) * bs));
        at += size;
      }
      if (writer.needsDrain) await writer.drain();
    }
  }
  const result = await writer.finish();
  let bytes: Uint8Array;
  if (spec.flattened) {
    bytes = concatBytes(flatParts);
  } else bytes = file.contents;
  return { bytes, result, expected, notes, vmcoreinfo };
}

async function assertReadsBack(
  written: Awaited<ReturnType<typeof writeDump>>,
  kinds: Map<number, Kind>,
  maxMapnr: number,
  spec: WriteSpec,
) {
  using dump = await readKdump(bytesPositional(written.bytes));
  assert.equal(dump.container, spec.flattened ? "flattened" : "raw");
  assert.equal(dump.maxMapnr, maxMapnr);
  assert.equal(dump.blockSize, spec.blockSize ?? B);
  assert.equal(dump.header.littleEndian, spec.littleEndian ?? true);
  assert.equal(dump.header.wordSize, spec.wordSize ?? 8);
  assert.deepEqual(dump.header.utsname, UTS);
  assert.equal(dump.header.status, kdumpCodecFlag(spec.codec));
  assert.equal(dump.subHeader.dumpLevel, spec.excludeZero ? 1 : 0);
  assert.equal(dump.subHeader.physBase, 0x1000000n);
  assert.deepEqual(dump.notes, written.notes);
  assert.equal(dump.vmcoreinfo, new TextDecoder().decode(written.vmcoreinfo));
  assert.equal(dump.pageCount, written.expected.size);
  assert.equal(written.result.pageCount, written.expected.size);
  for (let pfn = 0; pfn < maxMapnr; pfn++) {
    const kind = kinds.get(pfn);
    assert.equal(dump.isPresent(pfn), kind !== undefined, `present ${pfn}`);
    const want = written.expected.get(pfn);
    assert.equal(dump.isDumpable(pfn), want !== undefined, `dumpable ${pfn}`);
    if (want !== undefined) assert.deepEqual(await dump.readPage(pfn), want, `pfn ${pfn}`);
  }
  // Every descriptor points into the data area; zero pages share one stored page.
  const zeroOffsets = new Set<number>();
  for (const [pfn, kind] of kinds) {
    const d = await dump.pageDesc(pfn);
    if (d === undefined) continue;
    assert.ok(d.fileOffset >= dump.dataOffset);
    if (kind === "zero") zeroOffsets.add(d.fileOffset);
  }
  assert.ok(zeroOffsets.size <= 1);
  return dump.byteLength;
}

const MAX_MAPNR = 3000;
const KINDS = pageSet(7, MAX_MAPNR, 400);

for (const codec of ["zlib", "zstd", "none"] as const) {
  for (
    const variant of [
      { name: "plain" },
      { name: "plain, zero pages excluded (compaction)", excludeZero: true },
      {
        name: "plain, zero pages excluded, no read-back (gap)",
        excludeZero: true,
        readBack: false,
      },
      { name: "flattened", flattened: true },
      { name: "flattened, zero pages excluded", flattened: true, excludeZero: true },
      { name: "big-endian 32-bit", littleEndian: false, wordSize: 4 as const },
      { name: "one-shot compressor", oneShot: true },
    ]
  ) {
    Deno.test(`KdumpWriter ${codec}, ${variant.name}: readKdump reads every page back`, async () => {
      const spec: WriteSpec = { codec, ...variant };
      const written = await writeDump(KINDS, MAX_MAPNR, spec);
      const size = await assertReadsBack(written, KINDS, MAX_MAPNR, spec);
      if (!spec.flattened) {
        assert.equal(size, written.result.byteLength);
        if (spec.excludeZero && spec.readBack === false) {
          assert.ok(written.result.gapByteLength > 0, "the unused descriptor reserve stays");
        } else assert.equal(written.result.gapByteLength, 0);
        assert.equal(
          written.result.dataOffset,
          written.result.descTableOffset + written.result.pageCount * 24 +
            written.result.gapByteLength,
        );
      }
    });
  }
}

Deno.test("KdumpWriter with 64 KiB pages (block size from the page size)", async () => {
  const kinds = pageSet(3, 300, 40);
  const spec: WriteSpec = { codec: "zstd", blockSize: 65536, excludeZero: true };
  await assertReadsBack(await writeDump(kinds, 300, spec), kinds, 300, spec);
});

Deno.test("KdumpWriter.addSharedPage stores data once per key; repeats beyond the window are stored again", async () => {
  const maxMapnr = 6000;
  const present = new Uint8Array(maxMapnr / 8).fill(0xff);
  const file = new MemoryFile();
  const w = new KdumpWriter(file.sink({ readBack: true }), {
    blockSize: B,
    maxMapnr,
    present,
    maxPageCount: maxMapnr,
    utsname: UTS,
    status: 0,
  });
  const a = page(1, "text");
  const b = page(2, "random");
  for (let pfn = 0; pfn < maxMapnr; pfn++) {
    // Key 0 (among the first 64) for even pfns, a fresh key per odd pfn (fills the window).
    if (pfn % 2 === 0) w.addSharedPage(pfn, a, 0, 0);
    else w.addSharedPage(pfn, b, 0, 1000 + pfn);
    if (w.needsDrain) await w.drain();
  }
  const r = await w.finish();
  assert.equal(r.pageCount, maxMapnr);
  // a once, b once per odd pfn.
  assert.equal(r.dataByteLength, B + (maxMapnr / 2) * B);
  using dump = await readKdump(bytesPositional(file.contents));
  const d0 = await dump.pageDesc(0);
  const d5000 = await dump.pageDesc(5000);
  assert.equal(d0!.fileOffset, d5000!.fileOffset);
  assert.deepEqual(await dump.readPage(4998), a);
  assert.deepEqual(await dump.readPage(4999), b);
});

Deno.test("KdumpWriter refuses misuse with RangeError and writes nothing wrong", async () => {
  const present = new Uint8Array(2).fill(0b1011_0111);
  const make = () =>
    new KdumpWriter(new MemoryFile().sink({ readBack: true }), {
      blockSize: B,
      maxMapnr: 16,
      present,
      maxPageCount: 3,
      utsname: UTS,
      status: 0,
      bufferByteLength: 2 * B,
    });
  const p = page(0, "text");
  const w = make();
  w.addPage(1, p, 0);
  assert.throws(() => w.addPage(1, p, 0), RangeError, "same pfn twice");
  assert.throws(() => w.addPage(0, p, 0), RangeError, "pfn going down");
  assert.throws(() => w.addPage(3, p, 0), /not in the 1st bitmap/);
  assert.throws(() => w.addPage(16, p, 0), /out of order or range/);
  assert.throws(() => w.addPage(4, new Uint8Array(0), 0), /Cannot store 0 bytes/);
  assert.throws(() => w.addPage(4, new Uint8Array(2 * B + 1), 0), /Cannot store/);
  w.addPage(2, p, 0);
  w.addZeroPage(4);
  assert.throws(() => w.addZeroPage(5), /more than the 3 pages reserved/);
  await w.finish();
  assert.throws(() => w.addPage(7, p, 0), /already finished/);
  // Adding on without drain() once needsDrain is set is refused before data is lost.
  const all = new Uint8Array(2).fill(0xff);
  const big = new KdumpWriter(new MemoryFile().sink({ readBack: true }), {
    blockSize: B,
    maxMapnr: 16,
    present: all,
    maxPageCount: 16,
    utsname: UTS,
    status: 0,
    bufferByteLength: 2 * B,
  });
  let pfn = 0;
  while (!big.needsDrain) big.addPage(pfn++, p, 0);
  assert.throws(() => {
    for (;;) big.addPage(pfn++, p, 0);
  }, /drain\(\) was not awaited/);
  assert.throws(
    () =>
      new KdumpWriter(new MemoryFile().sink({ readBack: true }), {
        blockSize: B,
        maxMapnr: 100,
        present: new Uint8Array(2),
        maxPageCount: 1,
        utsname: UTS,
        status: 0,
      }),
    /bitmap of 2 bytes is too small/,
  );
});

Deno.test("KdumpWriter for one file of a split set: its pages in its range, the set's 2nd bitmap outside it", async () => {
  // pfns 0..23 exist; the set dumps 0..19 except 5; this file holds pfns 8..15.
  const present = new Uint8Array([0xff, 0xff, 0xff]);
  const setDumpable = new Uint8Array([0xdf, 0xff, 0x0f]);
  const file = new MemoryFile();
  const w = new KdumpWriter(file.sink({ readBack: true }), {
    blockSize: B,
    maxMapnr: 24,
    present,
    maxPageCount: 8,
    utsname: UTS,
    status: 0,
    split: { startPfn: 8, endPfn: 16, dumpable: setDumpable },
  });
  assert.throws(() => w.addPage(7, page(7, "text"), 0), /outside this split file's range/);
  for (let pfn = 8; pfn < 16; pfn++) if (pfn !== 12) w.addPage(pfn, page(pfn, "text"), 0);
  await w.finish();
  using dump = await readKdump(bytesPositional(file.contents));
  assert.equal(dump.subHeader.split, 1);
  assert.deepEqual([dump.subHeader.startPfn, dump.subHeader.endPfn], [8, 16]);
  // Outside the range: the set's bits; inside: the pages given (12 was not).
  const bits = Array.from({ length: 24 }, (_, pfn) => dump.dumpable.has(pfn) ? 1 : 0).join("");
  assert.equal(bits, "11111011" + "11110111" + "11110000");
  assert.equal(dump.pageCount, 7);
  for (let pfn = 0; pfn < 24; pfn++) {
    const want = pfn >= 8 && pfn < 16 && pfn !== 12 ? page(pfn, "text") : undefined;
    assert.deepEqual(await dump.readPage(pfn), want, `pfn ${pfn}`);
  }
  // The set's bitmap must be a subset of the 1st bitmap.
  assert.throws(
    () =>
      new KdumpWriter(new MemoryFile().sink({ readBack: true }), {
        blockSize: B,
        maxMapnr: 24,
        present: new Uint8Array([0xff, 0xff, 0x00]),
        maxPageCount: 8,
        utsname: UTS,
        status: 0,
        split: { startPfn: 0, endPfn: 8, dumpable: setDumpable },
      }),
    /split 2nd bitmap marks pfns near 0x10 that the 1st bitmap lacks/,
  );
});

Deno.test("PageCompressor keeps one context on this Deno and gives independent zlib streams and zstd frames", () => {
  for (const codec of ["zlib", "zstd"] as const) {
    using kept = new PageCompressor(codec, 1);
    using oneShot = new PageCompressor(codec, 1, { oneShot: true });
    assert.ok(
      kept.persistent,
      `${codec}: node:zlib handle available (else the one-shot fallback runs)`,
    );
    assert.ok(!oneShot.persistent);
    const out = new Uint8Array(B + 1024);
    for (const pfn of [1, 2, 3, 4, 5]) {
      const p = page(pfn, pfn === 3 ? "random" : "text");
      for (const c of [kept, oneShot]) {
        const n = c.compressInto(p, out, 0);
        if (pfn === 3) {
          assert.equal(n, -1, "incompressible pages are stored as is");
          continue;
        }
        assert.ok(n > 0 && n < B);
        const back = codec === "zlib"
          ? inflateSync(out.subarray(0, n))
          : zstdDecompressSync(out.subarray(0, n));
        assert.deepEqual(new Uint8Array(back), p, `${codec} pfn ${pfn}`);
      }
    }
  }
  using none = new PageCompressor("none", 0);
  assert.equal(none.compressInto(page(1, "text"), new Uint8Array(2 * B), 0), -1);
});

Deno.test("compressPageBatch: zero pages size 0, incompressible pages stored as is, flags per page", () => {
  const kinds: Kind[] = ["zero", "text", "random", "zero", "text"];
  const pages = new Uint8Array(kinds.length * B);
  kinds.forEach((k, i) => pages.set(page(i, k), i * B));
  for (const codec of ["zlib", "zstd"] as const) {
    using c = new PageCompressor(codec, 3);
    const b = compressPageBatch(pages, kinds.length, B, c);
    assert.deepEqual([...b.sizes].map((s) => s === 0 ? "zero" : s === B ? "raw" : "packed"), [
      "zero",
      "packed",
      "raw",
      "zero",
      "packed",
    ]);
    const flag = codec === "zlib" ? DUMP_DH_COMPRESSED_ZLIB : DUMP_DH_COMPRESSED_ZSTD;
    assert.deepEqual([...b.flags], [0, flag, 0, 0, flag]);
    assert.equal(b.data.byteLength, b.sizes.reduce((n, s) => n + s, 0));
    assert.deepEqual(b.data.subarray(b.sizes[1]!, b.sizes[1]! + B), page(2, "random"));
  }
});

Deno.test("PageCompressorPool: workers give the same batches as the calling thread and recycle buffers", async () => {
  const count = 64;
  const fill = (pages: Uint8Array) => {
    for (let i = 0; i < count; i++) {
      pages.set(page(i, i % 3 === 0 ? "zero" : i % 3 === 1 ? "text" : "random"), i * B);
    }
  };
  using local = new PageCompressorPool({ codec: "zstd", blockSize: B, workers: 0 });
  using pool = new PageCompressorPool({ codec: "zstd", blockSize: B, workers: 2 });
  const want = await local.compress(
    (() => {
      const p = local.takePages(count);
      fill(p);
      return p;
    })(),
    count,
  );
  for (let round = 0; round < 4; round++) {
    const pages = pool.takePages(count);
    assert.ok(pages.every((b) => b === 0), "recycled buffers come back zeroed");
    fill(pages);
    const got = await pool.compress(pages, count);
    assert.deepEqual([...got.sizes], [...want.sizes]);
    assert.deepEqual(got.data, want.data);
    assert.equal(got.pages.byteLength, count * B, "the pages buffer comes back");
    pool.release(got);
  }
});

Deno.test("written kdump files cut anywhere give typed errors or the right pages; flipped header bits give typed errors or values, never a crash", async () => {
  const kinds = pageSet(11, 800, 120);
  for (const spec of [{ codec: "zstd" as const }, { codec: "zlib" as const, flattened: true }]) {
    const written = await writeDump(kinds, 800, spec);
    const full = written.bytes;
    const rnd = seededRandom(99);
    const cuts = new Set<number>([0, 1, 8, 463, 464, B - 1, B, B + 1, full.length - 1]);
    for (let i = 0; i < 60; i++) cuts.add(Math.floor(rnd() * full.length));
    for (const cut of cuts) await readAll(full.slice(0, cut), `cut at ${cut}`, written.expected);
    // Bit flips in the headers, bitmaps and descriptors: no checksum protects
    // them (a flipped descriptor may point at another page's data), so the
    // oracle is "a typed error or a value", never another exception or a hang.
    const headerEnd = spec.flattened ? full.length : written.result.dataOffset;
    for (let i = 0; i < 120; i++) {
      const bytes = full.slice();
      const at = Math.floor(rnd() * headerEnd);
      bytes[at] = bytes[at]! ^ (1 << Math.floor(rnd() * 8));
      await readAll(bytes, `bit flip at ${at}`, undefined);
    }
  }
});

/**
 * Open and read every expected page: each step either fails with a typed
 * error or succeeds; with `expected` (a truncated file), pages that are
 * read must be right.
 */
async function readAll(
  bytes: Uint8Array,
  what: string,
  expected: Map<number, Uint8Array> | undefined,
) {
  const typed = (e: unknown) =>
    e instanceof FormatError || e instanceof UnexpectedEofError ||
    (e as Error)?.name === "UnsupportedFeatureError";
  let dump;
  try {
    dump = await readKdump(bytesPositional(bytes));
  } catch (e) {
    assert.ok(typed(e), `${what}: ${e}`);
    return;
  }
  try {
    for (let pfn = 0; pfn < Math.min(dump.maxMapnr, 1000); pfn++) {
      try {
        const got = await dump.readPage(pfn);
        const want = expected?.get(pfn);
        if (expected !== undefined && got !== undefined) {
          assert.deepEqual(got, want, `${what}: pfn ${pfn} read wrong bytes`);
        }
      } catch (e) {
        assert.ok(typed(e), `${what}: pfn ${pfn}: ${e}`);
      }
    }
  } finally {
    dump.close();
  }
}
