import assert from "node:assert/strict";
import { FormatError, UnsupportedFeatureError } from "../../src/errors.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { bytesReader, StreamByteReader } from "../../src/io/byte_reader.ts";
import { createHash } from "node:crypto";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { MigrationEncoder } from "../../src/migration/encoder.ts";
import {
  type DropStats,
  DropUnpluggedPagesStream,
  UnpluggedPageDropper,
} from "../../src/migration/filter.ts";
import { runMigrationPipeline } from "../../src/migration/pipeline.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { PlugStateVerifier } from "../../src/migration/verify.ts";
import { parsePlugMapSource } from "../../src/vmem/plug_map_source.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import { type RecordOrBatch, stageBatches } from "../../src/migration/stage.ts";
import { PlugMap } from "../../src/vmem/plug_map.ts";
import { assertFormatError } from "../_util/assert.ts";
import {
  BYTE_CHUNKINGS,
  chunkedFileStream,
  chunkedStream,
  concatBytes,
  FILE_CHUNKINGS,
  seededRandom,
} from "../_util/chunkings.ts";
import { realdata, realdataAvailable, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import {
  decodeBatches,
  encodeRecords,
  fileReader,
  isPage,
  plugStateOf,
  rebatch,
  recordKey,
  syntheticPlugMap,
  syntheticRecords,
  VMEM_BLOCK,
  VMEM_RAMBLOCK,
} from "../proxy/_util.ts";

/** Decode, filter and encode `bytes`; return the output and the stats. */
async function filterBytes(
  bytes: Uint8Array | ReadableStream<Uint8Array>,
  options: ConstructorParameters<typeof UnpluggedPageDropper>[0] = {},
): Promise<{ out: Uint8Array; stats: DropStats }> {
  const batches = await decodeBatches(bytes);
  const dropper = new UnpluggedPageDropper(options);
  const out = await encodeRecords(batches.map((b) => dropper.process(b)));
  return { out, stats: dropper.stats };
}

/**
 * Check a filter output against its input: the output decodes, its records
 * are the input's minus the dropped ones (same content, same resolved block),
 * CONTINUE changed only where the name had to come back, and the byte count
 * adds up.
 */
function checkFiltered(
  input: MigrationRecord[],
  output: MigrationRecord[],
  dropped: (r: MigrationRecord) => boolean,
  stats: DropStats,
  inBytes: number,
  outBytes: number,
): void {
  const kept = input.filter((r) => !dropped(r));
  assert.equal(output.length, kept.length, "record count");
  let renamed = 0;
  let lastNamed: string | undefined;
  for (let i = 0; i < kept.length; i++) {
    const a = kept[i]!;
    const b = output[i]!;
    assert.equal(
      recordKey(b, false),
      recordKey(a, false),
      `record ${i} (${a.kind} at 0x${a.streamOffset.toString(16)})`,
    );
    if (isPage(a) && isPage(b)) {
      if (a.continued !== b.continued) {
        assert.ok(a.continued && !b.continued, "only CONTINUE may be cleared");
        assert.notEqual(
          lastNamed,
          a.ramBlock,
          "CONTINUE cleared only when the output named another block",
        );
        renamed++;
      }
      if (!b.continued) lastNamed = b.ramBlock;
    }
    if (a.kind === "ram-mem-size") lastNamed = undefined;
  }
  assert.equal(renamed, stats.renamedRecords);
  assert.equal(outBytes, inBytes - stats.droppedBytes + stats.renamedBytes, "output size");
}

Deno.test("UnpluggedPageDropper drops every record of an unplugged block and keeps the stream loadable", async (t) => {
  for (const early of [true, false]) {
    await t.step(
      early ? "plug state in-band (early section)" : "plug state out of band (plug map)",
      async () => {
        for (let seed = 1; seed <= 40; seed++) {
          const syn = syntheticRecords({ seed, early, blocks: 8 + (seed % 24), strayRate: 0.3 });
          const bytes = await encodeRecords(syn.records);
          const input = (await decodeBatches(bytes)).flat();
          const { out, stats } = await filterBytes(bytes, early ? {} : { plugMap: syn.plugMap });
          const output = (await decodeBatches(out)).flat();
          const isDropped = (r: MigrationRecord) =>
            isPage(r) && r.ramBlock === VMEM_RAMBLOCK &&
            !syn.plugged[Math.floor(r.ramOffset / VMEM_BLOCK)];
          checkFiltered(input, output, isDropped, stats, bytes.byteLength, out.byteLength);
          assert.equal(stats.droppedRecords, input.filter(isDropped).length);
          for (const r of output) {
            assert.ok(!isDropped(r), "no page of an unplugged block survives");
          }
        }
      },
    );
  }
});

Deno.test("UnpluggedPageDropper gives the same output however the records are batched", async () => {
  const rnd = seededRandom(99);
  for (let seed = 100; seed < 110; seed++) {
    const syn = syntheticRecords({ seed, pages: 90 });
    const records = (await decodeBatches(await encodeRecords(syn.records))).flat();
    const reference = await encodeRecords(new UnpluggedPageDropper().process(records));
    for (const size of [1, 2, 7, () => 1 + Math.floor(rnd() * 20)]) {
      const dropper = new UnpluggedPageDropper();
      const out = await encodeRecords(rebatch(records, size).map((b) => dropper.process(b)));
      assert.deepEqual(out, reference);
    }
  }
});

Deno.test("UnpluggedPageDropper output does not depend on how the input bytes are chunked", async (t) => {
  const syn = syntheticRecords({ seed: 7, pages: 40 });
  const bytes = await encodeRecords(syn.records);
  const reference = (await filterBytes(bytes)).out;
  for (const c of BYTE_CHUNKINGS) {
    await t.step(c.name, async () => {
      const { out } = await filterBytes(chunkedStream(bytes, c));
      assert.deepEqual(out, reference);
    });
  }
});

Deno.test("DropUnpluggedPagesStream filters single records and batches", async () => {
  const syn = syntheticRecords({ seed: 3, pages: 60 });
  const records = (await decodeBatches(await encodeRecords(syn.records))).flat();
  const reference = await encodeRecords(new UnpluggedPageDropper().process(records));
  for (const batched of [false, true]) {
    const stream = new DropUnpluggedPagesStream();
    const items: RecordOrBatch[] = batched ? rebatch(records, 5) : records;
    const out: RecordOrBatch[] = await Array.fromAsync(
      ReadableStream.from(items).pipeThrough(stream),
    );
    assert.equal(out.every((x) => Array.isArray(x) === batched), true);
    assert.deepEqual(await encodeRecords(out), reference);
    assert.ok(stream.stats.droppedRecords > 0);
  }
});

Deno.test("stageBatches() runs the dropper over an async iterable of batches", async () => {
  const syn = syntheticRecords({ seed: 5 });
  const batches = await decodeBatches(await encodeRecords(syn.records));
  const dropper = new UnpluggedPageDropper();
  const out = await Array.fromAsync(stageBatches(dropper, batches));
  assert.equal(
    out.flat().filter(isPage).length,
    dropper.stats.pageRecords - dropper.stats.droppedRecords,
  );
});

Deno.test("UnpluggedPageDropper refuses a late-layout stream without plug state", async () => {
  const syn = syntheticRecords({ seed: 11, early: false });
  const bytes = await encodeRecords(syn.records);
  const batches = await decodeBatches(bytes);
  const firstPage = batches.flat().find(isPage)!;
  const e = await assertFormatError(
    () => batches.forEach((b) => new UnpluggedPageDropper().process(b)),
    { code: "unsupported", offset: firstPage.streamOffset },
  );
  assert.ok(e instanceof UnsupportedFeatureError);
  // Without the requirement, records pass unchanged.
  const dropper = new UnpluggedPageDropper({ requirePlugState: false });
  const out = await encodeRecords(batches.map((b) => dropper.process(b)));
  assert.deepEqual(out, bytes);
});

Deno.test("UnpluggedPageDropper refuses a plug map that would drop blocks the stream marks plugged", async () => {
  const plugged = Array.from({ length: 16 }, (_, i) => i % 3 !== 0);
  const syn = syntheticRecords({ seed: 12, plugged, strayRate: 0 });
  const batches = await decodeBatches(await encodeRecords(syn.records));
  const stricter = plugged.map((p, i) => p && i !== 1);
  const run = (options: ConstructorParameters<typeof UnpluggedPageDropper>[0]) => {
    const d = new UnpluggedPageDropper(options);
    for (const b of batches) d.process(b);
    return d.stats;
  };
  await assertFormatError(() => run({ plugMap: syntheticPlugMap(stricter) }), {
    code: "invariant",
    message: "block 1",
  });
  const stats = run({ plugMap: syntheticPlugMap(stricter), allowPlugStateMismatch: true });
  assert.ok(stats.droppedRecords > 0);
  assert.deepEqual(stats.devices[0]!.droppedBlocks.map((b) => b.blockIndex), [1]);
  // A map that is more generous than the stream: the stream's own state still drops (no page
  // of its unplugged blocks here; see the tiny streams' test below for one).
  assert.equal(run({ plugMap: syntheticPlugMap(plugged.map(() => true)) }).droppedRecords, 0);
});

Deno.test("UnpluggedPageDropper refuses a plug map for a device the stream does not have", async () => {
  const syn = syntheticRecords({ seed: 13 });
  const batches = await decodeBatches(await encodeRecords(syn.records));
  const map = syntheticPlugMap(syn.plugged, "0000:00:02.0/other");
  const e = await assertFormatError(
    () => batches.forEach((b) => new UnpluggedPageDropper({ plugMap: map }).process(b)),
    { code: "unknown-block" },
  );
  assert.ok(e instanceof FormatError);
});

// ---- Real QEMU streams ----------------------------------------------------------------------

const SETS: RealdataSet[] = ["out-small", "out-q10"];

/** Filter a real stream file; keep the output as a Blob and its sha256. */
async function filterRealFile(
  path: string,
  plugMap: PlugMap | undefined,
  extra: { allowPlugStateMismatch?: boolean } = {},
) {
  const reader = await fileReader(path);
  const dropper = new UnpluggedPageDropper({ ...(plugMap ? { plugMap } : {}), ...extra });
  const outChunks: Uint8Array[] = [];
  const hash = createHash("sha256");
  const enc = new MigrationEncoder(
    new ByteWriter((c) => {
      outChunks.push(c);
      hash.update(c);
    }),
  );
  try {
    for await (const batch of decodeMigrationBatches(reader)) {
      for (const r of dropper.process(batch)) enc.write(r);
    }
    await enc.flush();
  } finally {
    await reader.cancel();
  }
  const out = new Blob(outChunks as BlobPart[]);
  return {
    out,
    sha256: hash.digest("hex"),
    stats: dropper.stats,
    inBytes: (await Deno.stat(path)).size,
  };
}

/** Walk input and output records in lockstep (streaming) and check the filter invariants. */
async function compareRealFiltered(path: string, out: Blob, stats: DropStats, inBytes: number) {
  const droppedAt = new Set(stats.dropped.map((d) => d.streamOffset));
  assert.equal(droppedAt.size, stats.droppedRecords, "every dropped record is listed");
  const input = { reader: await fileReader(path), close() {} };
  const outIter = decodeMigrationBatches(new StreamByteReader(out.stream()))
    [Symbol.asyncIterator]();
  let outBatch: MigrationRecord[] = [];
  let outPos = 0;
  let compared = 0;
  let renamed = 0;
  try {
    for await (const batch of decodeMigrationBatches(input.reader)) {
      for (const a of batch) {
        if (isPage(a) && droppedAt.has(a.streamOffset)) continue;
        while (outPos >= outBatch.length) {
          const n = await outIter.next();
          assert.ok(!n.done, "output ended early");
          outBatch = n.value;
          outPos = 0;
        }
        const b = outBatch[outPos++]!;
        if (isPage(a) && isPage(b) && a.continued && !b.continued) renamed++;
        else {assert.equal(
            recordKey(b),
            recordKey(a),
            `record at input offset 0x${a.streamOffset.toString(16)}`,
          );}
        if (a.kind === "ram-page" && b.kind === "ram-page") assert.deepEqual(b.data, a.data);
        compared++;
      }
    }
    assert.equal(outPos, outBatch.length);
    assert.ok((await outIter.next()).done, "output has extra records");
  } finally {
    input.close();
  }
  assert.equal(renamed, stats.renamedRecords);
  assert.equal(out.size, inBytes - stats.droppedBytes + stats.renamedBytes);
  return compared;
}

for (const set of SETS) {
  Deno.test({
    name:
      `UnpluggedPageDropper drops exactly the EVIL-MIG records of real ${set} s3 and nothing else`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const path = await realdata(set, "s3-malicious.mig");
      const evil = realdataFacts(set).manifest.malicious_writes.during_migration.map((
        w: { gpa: number },
      ) => w.gpa);
      // Late layout (7.2): the plug state comes from a first pass; early layout (10.0): in-band.
      const first = await plugStateOf(path);
      assert.equal(first.layout, set === "out-q10" ? "early" : "late");
      const { out, stats, inBytes } = await filterRealFile(
        path,
        first.layout === "late" ? first.plugMap : undefined,
      );
      assert.deepEqual(stats.dropped.map((d) => d.gpa).sort(), [...evil].sort());
      assert.deepEqual(stats.dropped.map((d) => d.recordKind), ["ram-page", "ram-page"]);
      assert.equal(stats.droppedRecords, 2);
      assert.deepEqual(stats.devices[0]!.droppedBlocks.map((b) => b.blockIndex), [39, 53]);
      await compareRealFiltered(path, out, stats, inBytes);
    },
  });

  Deno.test({
    name: `UnpluggedPageDropper leaves real ${set} s0-s2 streams byte-identical`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      for (const name of ["s0-unplugged", "s1-plugged-200M", "s2-holes-100M"]) {
        const path = await realdata(set, `${name}.mig`);
        const first = await plugStateOf(path);
        const { out, sha256, stats, inBytes } = await filterRealFile(
          path,
          first.layout === "early" ? undefined : first.plugMap,
        );
        assert.equal(stats.droppedRecords, 0, name);
        assert.equal(out.size, inBytes, name);
        assert.equal(
          sha256,
          realdataFacts(set).sha256[`${name}.mig`],
          `${name}: output equals input`,
        );
      }
    },
  });
}

Deno.test({
  name:
    "UnpluggedPageDropper gives the RAMBlock name back when the dropped record carried it (real q10 s3)",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    // In q10 s3 the EVIL-MIG page of block 39 names the RAMBlock and the one of
    // block 53 follows with CONTINUE. Drop only block 39: block 53's record
    // must get the name back.
    const path = await realdata("out-q10", "s3-malicious.mig");
    const map = (await plugStateOf(path)).plugMap;
    const d = map.devices[0]!;
    const bitmap = d.bitmap.slice();
    bitmap[53 >> 3]! |= 1 << (53 & 7);
    const lenient = new PlugMap([{ ...d, bitmap, size: d.size + d.blockSize }]);
    // By default the stream's own (early) state drops block 53's page too.
    assert.equal((await filterRealFile(path, lenient)).stats.droppedRecords, 2);
    // The map alone decides (allowPlugStateMismatch): block 53's page stays.
    const { out, stats, inBytes } = await filterRealFile(path, lenient, {
      allowPlugStateMismatch: true,
    });
    assert.equal(stats.droppedRecords, 1);
    assert.equal(stats.dropped[0]!.blockIndex, 39);
    assert.equal(stats.renamedRecords, 1);
    assert.equal(stats.renamedBytes, 1 + VMEM_RAMBLOCK.length);
    await compareRealFiltered(path, out, stats, inBytes);
    // The kept EVIL page of block 53 now names its block.
    const records = (await decodeBatches(new Uint8Array(await out.arrayBuffer()))).flat();
    const kept = records.find((r) =>
      isPage(r) && r.ramBlock === VMEM_RAMBLOCK && r.ramOffset === 0x6a01000
    )!;
    assert.ok(isPage(kept) && !kept.continued);
  },
});

Deno.test({
  name:
    "UnpluggedPageDropper renames the first kept record when a run's first page is dropped (real q10 s1)",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    // Mark plugged block 0 unplugged: the record that names vmem0mem (block
    // 0's first page) is dropped and the first kept page of block 1 follows
    // with CONTINUE. Needs allowPlugStateMismatch: the stream says block 0 is plugged.
    const path = await realdata("out-q10", "s1-plugged-200M.mig");
    const map = (await plugStateOf(path)).plugMap;
    const d = map.devices[0]!;
    const bitmap = d.bitmap.slice();
    bitmap[0]! &= ~1;
    const stricter = new PlugMap([{ ...d, bitmap, size: d.size - d.blockSize }]);
    await assertFormatError(filterRealFile(path, stricter), { code: "invariant" });
    const { out, stats, inBytes } = await filterRealFile(path, stricter, {
      allowPlugStateMismatch: true,
    });
    assert.equal(stats.droppedRecords, 512);
    assert.ok(stats.renamedRecords >= 1);
    await compareRealFiltered(path, out, stats, inBytes);
  },
});

Deno.test({
  name: "UnpluggedPageDropper filters real q10 s3 the same under every file chunking",
  ignore: !realdataAvailable("out-q10"),
  fn: async (t) => {
    const path = await realdata("out-q10", "s3-malicious.mig");
    for (const c of FILE_CHUNKINGS) {
      await t.step(c.name, async () => {
        const dropper = new UnpluggedPageDropper();
        let n = 0;
        for await (
          const b of stageBatches(
            dropper,
            decodeMigrationBatches(new StreamByteReader(await chunkedFileStream(path, c))),
          )
        ) {
          n += b.length;
        }
        assert.equal(dropper.stats.droppedRecords, 2);
        assert.deepEqual(dropper.stats.dropped.map((d) => d.streamOffset), [110305743, 110309869]);
        assert.ok(n > 58000);
      });
    }
  },
});

Deno.test("UnpluggedPageDropper drops by the stream's own state where a plug map is more generous; refuses once such a page was passed (QEMU 7.2 and 10.0 tiny streams)", async (t) => {
  // The tiny VM: 8 blocks of 2 MiB, blocks 0, 4 and 5 plugged, one page in block 3 (s3). Both
  // maps also mark block 3 plugged: a page kept there would load into an unplugged block. The
  // second has 4 MiB blocks (as a range list's map may): compared by address, not by index.
  const device = {
    path: "0000:00:01.0",
    ramblock: "0000:00:01.0/vmem0mem",
    memaddr: 0x1_0000_0000,
    "region-size": 16 << 20,
    node: 0,
    "usable-region-size": 16 << 20,
    size: 12 << 20,
    "requested-size": 12 << 20,
  };
  const maps = [
    ["2 MiB blocks 0-5 plugged", { ...device, "block-size": 2 << 20, plugged: [[0, 6]] }],
    ["4 MiB blocks 0-2 plugged", { ...device, "block-size": 4 << 20, plugged: [[0, 3]] }],
  ] as const;
  const late = await tinyFixture("q72-tiny.mig");
  let deviceAt = -1;
  for await (const b of decodeMigrationBatches(bytesReader(late))) {
    for (const r of b) if (r.kind === "virtio-mem-device") deviceAt = r.streamOffset;
  }
  assert.ok(deviceAt > 0);
  for (const [name, d] of maps) {
    await t.step(name, async () => {
      const { map } = parsePlugMapSource(JSON.stringify({ version: 1, devices: [d] }));
      const filtered = async (fixture: string) => {
        const dropper = new UnpluggedPageDropper({ plugMap: map });
        const chunks: Uint8Array[] = [];
        await runMigrationPipeline(bytesReader(await tinyFixture(fixture)), {
          stages: [dropper],
          output: (c) => {
            chunks.push(c.slice());
            return Promise.resolve();
          },
        });
        return { stats: dropper.stats, out: concatBytes(chunks) };
      };

      // QEMU 10.0 (early layout): the stream states its plug state before its pages; block 3's
      // page, and only it, is dropped, and the output verifies clean.
      const { stats, out } = await filtered("q10-tiny.mig");
      assert.equal(stats.droppedRecords, 1);
      assert.equal(stats.dropped[0]!.gpa, 0x1_0060_1000);
      const verifier = new PlugStateVerifier({ mode: "report" });
      await runMigrationPipeline(bytesReader(out), { stages: [verifier] });
      assert.equal(verifier.result.clean, true);

      // QEMU 7.2 (late layout): the page went out before the device section said block 3 is
      // unplugged: refused at that section's record, naming the MiB of the page.
      await assertFormatError(filtered("q72-tiny.mig"), {
        code: "invariant",
        offset: deviceAt,
        message: "marks gpa 0x100600000 of 0000:00:01.0 plugged, but the stream marks it unplugged",
      });
    });
  }
  await t.step("a 4 MiB map that drops memory the stream marks plugged is refused", async () => {
    // 4 MiB blocks 0-1 plugged (0-8 MiB): the stream's plugged 2 MiB blocks 4-5 (8-12 MiB) lie in
    // the map's unplugged block 2. Compared index by index (2 MiB block 2 is unplugged too), this
    // went unseen and the filter dropped plugged memory.
    const coarse = { ...device, "block-size": 4 << 20, size: 8 << 20, "requested-size": 8 << 20 };
    const { map } = parsePlugMapSource(
      JSON.stringify({ version: 1, devices: [{ ...coarse, plugged: [[0, 2]] }] }),
    );
    const dropper = new UnpluggedPageDropper({ plugMap: map });
    await assertFormatError(
      runMigrationPipeline(bytesReader(await tinyFixture("q10-tiny.mig")), { stages: [dropper] }),
      { code: "invariant", message: "marks block 2 (gpa 0x100800000) of 0000:00:01.0 unplugged" },
    );
  });
});

Deno.test("UnpluggedPageDropper reports its drops in the block geometry they were counted in when a late statement narrows a coarser plug map (QEMU 7.2 tiny stream)", async () => {
  // A 4 MiB map with blocks 0 and 2 plugged (2 MiB blocks 0, 1, 4, 5); the stream: 0, 4 and 5.
  // The page in 2 MiB block 3 is dropped by the map; the late statement then narrows the map to
  // 2 MiB blocks (block 1, which no page touched, unplugged). The report gave the drop's 4 MiB
  // block index in 2 MiB blocks: "block 1 (gpa 0x100200000)" for a page at 0x100601000.
  const { map } = parsePlugMapSource(JSON.stringify({
    version: 1,
    devices: [{
      path: "0000:00:01.0",
      ramblock: "0000:00:01.0/vmem0mem",
      memaddr: 0x1_0000_0000,
      "region-size": 16 << 20,
      "block-size": 4 << 20,
      node: 0,
      "usable-region-size": 16 << 20,
      size: 8 << 20,
      "requested-size": 8 << 20,
      plugged: [[0, 1], [2, 1]],
    }],
  }));
  const dropper = new UnpluggedPageDropper({ plugMap: map });
  await runMigrationPipeline(bytesReader(await tinyFixture("q72-tiny.mig")), {
    stages: [dropper],
  });
  const { devices, dropped } = dropper.stats;
  assert.deepEqual(dropped.map((d) => d.gpa), [0x1_0060_1000]);
  const device = devices[0]!;
  assert.equal(device.droppedBlocks.length, 1);
  const block = device.droppedBlocks[0]!;
  assert.ok(
    block.gpa <= dropped[0]!.gpa && dropped[0]!.gpa < block.gpa + device.blockSize,
    `the dropped page 0x1_0060_1000 lies in its block (gpa ${block.gpa.toString(16)}, ` +
      `${device.blockSize} bytes)`,
  );
  assert.equal(block.gpa, device.gpa + block.blockIndex * device.blockSize);
  assert.equal(dropped[0]!.blockIndex, block.blockIndex);
});
