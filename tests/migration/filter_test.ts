import assert from "node:assert/strict";
import { FormatError, UnsupportedFeatureError } from "../../src/errors.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { StreamByteReader } from "../../src/io/byte_reader.ts";
import { createHash } from "node:crypto";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { MigrationEncoder } from "../../src/migration/encoder.ts";
import {
  type DropStats,
  dropUnpluggedPages,
  DropUnpluggedPagesStream,
  UnpluggedPageDropper,
} from "../../src/migration/filter.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { PlugMap } from "../../src/vmem/plug_map.ts";
import { run as runFilter } from "../../cli/commands/filter.ts";
import { assertFormatError } from "../_util/assert.ts";
import {
  BYTE_CHUNKINGS,
  chunkedFileStream,
  chunkedStream,
  FILE_CHUNKINGS,
  seededRandom,
} from "../_util/chunkings.ts";
import { realdata, realdataAvailable, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import {
  decodeBatches,
  encodeRecords,
  fileReader,
  isPage,
  memoryIo,
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
  const out = await encodeRecords(batches.map((b) => dropper.filterBatch(b)));
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
    const reference = await encodeRecords(new UnpluggedPageDropper().filterBatch(records));
    for (const size of [1, 2, 7, () => 1 + Math.floor(rnd() * 20)]) {
      const dropper = new UnpluggedPageDropper();
      const out = await encodeRecords(rebatch(records, size).map((b) => dropper.filterBatch(b)));
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
  const reference = await encodeRecords(new UnpluggedPageDropper().filterBatch(records));
  for (const batched of [false, true]) {
    const stream = new DropUnpluggedPagesStream();
    const items: (MigrationRecord | MigrationRecord[])[] = batched ? rebatch(records, 5) : records;
    const out: (MigrationRecord | MigrationRecord[])[] = await Array.fromAsync(
      ReadableStream.from(items).pipeThrough(stream),
    );
    assert.equal(out.every((x) => Array.isArray(x) === batched), true);
    assert.deepEqual(await encodeRecords(out), reference);
    assert.ok(stream.stats.droppedRecords > 0);
  }
});

Deno.test("dropUnpluggedPages() filters an async iterable of batches", async () => {
  const syn = syntheticRecords({ seed: 5 });
  const batches = await decodeBatches(await encodeRecords(syn.records));
  const dropper = new UnpluggedPageDropper();
  const out = await Array.fromAsync(dropUnpluggedPages(batches, { dropper }));
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
    () => batches.forEach((b) => new UnpluggedPageDropper().filterBatch(b)),
    { code: "unsupported", offset: firstPage.streamOffset },
  );
  assert.ok(e instanceof UnsupportedFeatureError);
  // Without the requirement, records pass unchanged.
  const dropper = new UnpluggedPageDropper({ requirePlugState: false });
  const out = await encodeRecords(batches.map((b) => dropper.filterBatch(b)));
  assert.deepEqual(out, bytes);
});

Deno.test("UnpluggedPageDropper refuses a plug map that would drop blocks the stream marks plugged", async () => {
  const plugged = Array.from({ length: 16 }, (_, i) => i % 3 !== 0);
  const syn = syntheticRecords({ seed: 12, plugged, strayRate: 0 });
  const batches = await decodeBatches(await encodeRecords(syn.records));
  const stricter = plugged.map((p, i) => p && i !== 1);
  const run = (options: ConstructorParameters<typeof UnpluggedPageDropper>[0]) => {
    const d = new UnpluggedPageDropper(options);
    for (const b of batches) d.filterBatch(b);
    return d.stats;
  };
  await assertFormatError(() => run({ plugMap: syntheticPlugMap(stricter) }), {
    code: "invariant",
    message: "block 1",
  });
  const stats = run({ plugMap: syntheticPlugMap(stricter), allowPlugStateMismatch: true });
  assert.ok(stats.droppedRecords > 0);
  assert.deepEqual(stats.devices[0]!.droppedBlocks.map((b) => b.blockIndex), [1]);
  // A map that is more generous than the stream only keeps more: allowed.
  assert.equal(run({ plugMap: syntheticPlugMap(plugged.map(() => true)) }).droppedRecords, 0);
});

Deno.test("UnpluggedPageDropper refuses a plug map for a device the stream does not have", async () => {
  const syn = syntheticRecords({ seed: 13 });
  const batches = await decodeBatches(await encodeRecords(syn.records));
  const map = syntheticPlugMap(syn.plugged, "0000:00:02.0/other");
  const e = await assertFormatError(
    () => batches.forEach((b) => new UnpluggedPageDropper({ plugMap: map }).filterBatch(b)),
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
      for (const r of dropper.filterBatch(batch)) enc.write(r);
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
    const { out, stats, inBytes } = await filterRealFile(path, lenient);
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
          const b of dropper.filterBatches(
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

// ---- CLI -------------------------------------------------------------------------------------

for (const set of SETS) {
  Deno.test({
    name: `vmem-dump filter drops the EVIL-MIG pages of real ${set} s3 and reports them`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const path = await realdata(set, "s3-malicious.mig");
      const dir = await Deno.makeTempDir({ prefix: "vmem-filter-" });
      try {
        const out = `${dir}/out.mig`;
        const m = memoryIo();
        assert.equal(await runFilter([path, out, "--json"], m.io), 0);
        const report = JSON.parse(m.out());
        assert.equal(report.droppedRecords, 2);
        assert.equal(report.plugState.source, set === "out-q10" ? "in-band" : "two-pass");
        const evil = realdataFacts(set).manifest.malicious_writes.during_migration.map((
          w: { gpa: number },
        ) => w.gpa);
        assert.deepEqual(
          report.dropped.map((d: { gpa: number }) => d.gpa).sort(),
          [...evil].sort(),
        );
        assert.equal((await Deno.stat(out)).size, report.bytesOut);
        assert.deepEqual(
          [...Deno.readDirSync(dir)].map((e) => e.name),
          ["out.mig"],
          "no temp files left",
        );
        // Text report on stderr.
        const t = memoryIo();
        assert.equal(await runFilter([path, `${dir}/out2.mig`], t.io), 0);
        assert.match(t.err(), /dropped 2 of [\d,]+ page records/);
        assert.match(t.err(), /gpa 0x104e01000/);
        // The output filters to itself.
        const again = memoryIo();
        assert.equal(await runFilter([out, `${dir}/out3.mig`, "--json"], again.io), 0);
        assert.equal(JSON.parse(again.out()).droppedRecords, 0);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name:
    "vmem-dump filter reads a pipe and writes stdout (early layout), refuses a late-layout pipe",
  ignore: !realdataAvailable("out-q10") || !realdataAvailable("out-small"),
  fn: async () => {
    const main = new URL("../../cli/main.ts", import.meta.url).pathname;
    const runPipe = async (path: string) => {
      const cmd = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", main, "filter", "-", "-"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      });
      const child = cmd.spawn();
      const file = await Deno.open(path);
      const feeding = file.readable.pipeTo(child.stdin).catch(() => {});
      let outBytes = 0;
      const reading = (async () => {
        for await (const c of child.stdout) outBytes += c.byteLength;
      })();
      const errText = new Response(child.stderr).text();
      const status = await child.status;
      await feeding;
      await reading;
      return { code: status.code, outBytes, err: await errText };
    };
    const q10 = await realdata("out-q10", "s3-malicious.mig");
    const ok = await runPipe(q10);
    assert.equal(ok.code, 0, ok.err);
    assert.equal(ok.outBytes, (await Deno.stat(q10)).size - 8230);
    assert.match(ok.err, /dropped 2 of/);
    const late = await runPipe(await realdata("out-small", "s3-malicious.mig"));
    assert.equal(late.code, 1);
    assert.match(late.err, /plug state is not known at the first RAM page/);
  },
});

Deno.test("vmem-dump filter rejects bad arguments with exit code 2", async () => {
  const { main } = await import("../../cli/main.ts");
  for (
    // (`filter a a` is refused by file identity, exit 1: tests/cli/output_policy_test.ts.)
    const args of [["filter"], ["filter", "a"], ["filter", "a", "b", "--bogus"]]
  ) {
    const m = memoryIo();
    assert.equal(await main(args, m.io), 2, args.join(" "));
  }
});
