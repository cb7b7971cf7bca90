import assert from "node:assert/strict";
import { FormatError, VerificationError } from "../../src/errors.ts";
import { StreamByteReader } from "../../src/io/byte_reader.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { PlugStateVerifier, VerifyPlugStateStream } from "../../src/migration/verify.ts";
import {
  BYTE_CHUNKINGS,
  chunkedFileStream,
  chunkedStream,
  FILE_CHUNKINGS,
} from "../_util/chunkings.ts";
import { realdata, realdataAvailable, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import {
  decodeBatches,
  encodeRecords,
  fileReader,
  isPage,
  rebatch,
  syntheticRecords,
  VMEM_BLOCK,
  VMEM_GPA,
  VMEM_RAMBLOCK,
} from "../proxy/_util.ts";

/** Run a verifier over batches; return what it forwarded and the error, if any. */
function runVerifier(
  batches: MigrationRecord[][],
  options: ConstructorParameters<typeof PlugStateVerifier>[0],
): { verifier: PlugStateVerifier; forwarded: MigrationRecord[]; error: unknown } {
  const verifier = new PlugStateVerifier(options);
  const forwarded: MigrationRecord[] = [];
  try {
    for (const b of batches) forwarded.push(...verifier.process(b));
    forwarded.push(...verifier.end());
    return { verifier, forwarded, error: undefined };
  } catch (e) {
    return { verifier, forwarded, error: e };
  }
}

Deno.test("PlugStateVerifier passes a clean stream through unchanged, EOF and vmdesc last", async () => {
  for (const early of [true, false]) {
    const syn = syntheticRecords({ seed: 21, early, strayRate: 0 });
    const bytes = await encodeRecords(syn.records);
    const batches = await decodeBatches(bytes);
    const { forwarded, error, verifier } = runVerifier(
      batches,
      early ? { mode: "veto" } : { plugMap: syn.plugMap },
    );
    assert.equal(error, undefined);
    assert.deepEqual(await encodeRecords(forwarded), bytes);
    assert.deepEqual(forwarded.slice(-2).map((r) => r.kind), ["eof", "vmdesc"]);
    assert.equal(verifier.result.clean, true);
    assert.equal(verifier.result.layout, early ? "early" : "none");
  }
});

Deno.test("PlugStateVerifier holds back QEMU_VM_EOF until the input ends", async () => {
  const syn = syntheticRecords({ seed: 22, strayRate: 0 });
  const records = (await decodeBatches(await encodeRecords(syn.records))).flat();
  const v = new PlugStateVerifier();
  const eofAt = records.findIndex((r) => r.kind === "eof");
  const before = v.process(records.slice(0, eofAt + 1));
  assert.equal(before.length, eofAt, "everything but the EOF");
  assert.deepEqual(v.process(records.slice(eofAt + 1)), []);
  assert.deepEqual(v.end().map((r) => r.kind), ["eof", "vmdesc"]);
});

Deno.test("PlugStateVerifier reports every record in an unplugged block (early layout and plug map)", async (t) => {
  for (const early of [true, false]) {
    await t.step(early ? "early section" : "plug map", async () => {
      for (let seed = 30; seed < 50; seed++) {
        const syn = syntheticRecords({ seed, early, strayRate: 0.25 });
        const batches = await decodeBatches(await encodeRecords(syn.records));
        const bad = batches.flat().filter((r) =>
          isPage(r) && r.ramBlock === VMEM_RAMBLOCK &&
          !syn.plugged[Math.floor(r.ramOffset / VMEM_BLOCK)]
        );
        const report = runVerifier(batches, {
          mode: "report",
          ...(early ? {} : { plugMap: syn.plugMap }),
        });
        assert.equal(report.error, undefined);
        const vs = report.verifier.result.violations;
        assert.deepEqual(vs.map((v) => v.streamOffset), bad.map((r) => r.streamOffset));
        for (const [i, v] of vs.entries()) {
          const r = bad[i]!;
          assert.ok(isPage(r));
          assert.equal(v.recordKind, r.kind);
          assert.equal(v.ramOffset, r.ramOffset);
          assert.equal(v.gpa, VMEM_GPA + r.ramOffset);
          assert.equal(v.blockIndex, Math.floor(r.ramOffset / VMEM_BLOCK));
          assert.equal(v.records, 1);
          assert.equal(v.detectedBy, early ? "early" : "plugmap");
        }
        if (bad.length === 0) {
          assert.equal(report.verifier.result.clean, true);
          continue;
        }
        // Report mode forwards nothing from the first offending record on, and never the EOF.
        assert.ok(report.forwarded.every((r) => r.streamOffset < bad[0]!.streamOffset));
        assert.equal(report.verifier.end().length, 0);
        // Veto mode throws at the first one.
        const veto = runVerifier(batches, early ? {} : { plugMap: syn.plugMap });
        assert.ok(veto.error instanceof VerificationError);
        assert.equal(veto.error.offset, bad[0]!.streamOffset);
        assert.equal(veto.error.gpa, VMEM_GPA + (bad[0] as { ramOffset: number }).ramOffset);
        assert.equal(veto.error.ramBlock, VMEM_RAMBLOCK);
        assert.ok(veto.forwarded.every((r) => r.streamOffset < bad[0]!.streamOffset));
      }
    });
  }
});

Deno.test("PlugStateVerifier verdicts do not depend on batching or byte chunking", async (t) => {
  const syn = syntheticRecords({ seed: 60, strayRate: 0.3, pages: 60 });
  const bytes = await encodeRecords(syn.records);
  const reference = runVerifier(await decodeBatches(bytes), { mode: "report" }).verifier.result;
  assert.ok(reference.violationCount > 0);
  for (const c of BYTE_CHUNKINGS) {
    await t.step(c.name, async () => {
      const batches = await decodeBatches(chunkedStream(bytes, c));
      assert.deepEqual(runVerifier(batches, { mode: "report" }).verifier.result, reference);
      assert.deepEqual(
        runVerifier(rebatch(batches.flat(), 3), { mode: "report" }).verifier.result,
        reference,
      );
    });
  }
});

Deno.test("VerifyPlugStateStream passes a clean stream and errors on a dirty one", async () => {
  const clean = syntheticRecords({ seed: 70, strayRate: 0 });
  const cleanRecords = (await decodeBatches(await encodeRecords(clean.records))).flat();
  const out = await Array.fromAsync(
    ReadableStream.from(cleanRecords).pipeThrough(new VerifyPlugStateStream()),
  );
  assert.equal(out.length, cleanRecords.length);
  const dirty = syntheticRecords({ seed: 71, strayRate: 0.5 });
  const batches = await decodeBatches(await encodeRecords(dirty.records));
  for (const mode of ["veto", "report"] as const) {
    const stream = new VerifyPlugStateStream({ mode });
    const got: unknown[] = [];
    await assert.rejects(
      (async () => {
        for await (const b of ReadableStream.from(batches).pipeThrough(stream)) got.push(b);
      })(),
      VerificationError,
    );
    if (mode === "report") assert.ok(stream.violations.length > 1);
    assert.ok(!got.flat().some((r) => (r as MigrationRecord).kind === "eof"));
  }
});

Deno.test("PlugStateVerifier refuses a stream whose vmdesc names a virtio-mem device it did not see", async () => {
  const syn = syntheticRecords({ seed: 80, early: false, strayRate: 0 });
  const records = syn.records.map((r) => {
    if (r.kind !== "vmdesc") return r;
    const json = new TextEncoder().encode(
      JSON.stringify({ page_size: 4096, devices: [{ name: "0000:00:01.0/virtio-mem" }] }),
    );
    return { ...r, json, parsed: JSON.parse(new TextDecoder().decode(json)) };
  });
  const batches = await decodeBatches(await encodeRecords(records));
  const { error } = runVerifier(batches, {});
  assert.ok(error instanceof FormatError && !(error instanceof VerificationError));
  assert.equal(error.code, "bad-virtio-mem");
  // With an out-of-band plug map for that device, it verifies.
  assert.equal(runVerifier(batches, { plugMap: syn.plugMap }).error, undefined);
});

Deno.test("PlugStateVerifier caps the memory of its touched set", async () => {
  const syn = syntheticRecords({ seed: 81, early: false, strayRate: 0 });
  const batches = await decodeBatches(await encodeRecords(syn.records));
  const r = runVerifier(batches, { maxTrackedBytes: 1024 });
  assert.ok(r.error instanceof FormatError, String(r.error));
  assert.equal(r.error.code, "too-large");
  assert.equal(runVerifier(batches, {}).error, undefined);
});

// ---- Real QEMU streams ----------------------------------------------------------------------

const SETS: RealdataSet[] = ["out-small", "out-q10"];

async function verifyFile(
  path: string,
  options: ConstructorParameters<typeof PlugStateVerifier>[0],
  stream?: ReadableStream<Uint8Array>,
) {
  const reader = stream ? new StreamByteReader(stream) : await fileReader(path);
  const verifier = new PlugStateVerifier(options);
  const forwarded: MigrationRecord[] = [];
  let error: unknown;
  try {
    for await (const b of decodeMigrationBatches(reader)) {
      for (const r of verifier.process(b)) {
        forwarded.push({ kind: r.kind, streamOffset: r.streamOffset } as MigrationRecord);
      }
    }
    for (const r of verifier.end()) {
      forwarded.push({ kind: r.kind, streamOffset: r.streamOffset } as MigrationRecord);
    }
  } catch (e) {
    error = e;
  } finally {
    await reader.cancel();
  }
  return { verifier, forwarded, error };
}

for (const set of SETS) {
  Deno.test({
    name: `PlugStateVerifier finds real ${set} s0-s2 clean and s3's EVIL-MIG pages exactly`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      for (const name of ["s0-unplugged", "s1-plugged-200M", "s2-holes-100M"]) {
        const { verifier, error, forwarded } = await verifyFile(
          await realdata(set, `${name}.mig`),
          { mode: "report" },
        );
        assert.equal(error, undefined, name);
        assert.equal(verifier.result.clean, true, name);
        assert.equal(verifier.result.layout, set === "out-q10" ? "early" : "late");
        assert.deepEqual(forwarded.slice(-2).map((r) => r.kind), ["eof", "vmdesc"]);
      }
      const evil = realdataFacts(set).manifest.malicious_writes.during_migration.map((
        w: { gpa: number },
      ) => w.gpa);
      const { verifier, error, forwarded } = await verifyFile(
        await realdata(set, "s3-malicious.mig"),
        { mode: "report" },
      );
      assert.equal(error, undefined);
      const r = verifier.result;
      assert.equal(r.clean, false);
      assert.deepEqual(r.violations.map((v) => v.gpa), evil);
      assert.deepEqual(r.violations.map((v) => v.blockIndex), [39, 53]);
      assert.deepEqual(r.violations.map((v) => v.recordKind), ["ram-page", "ram-page"]);
      assert.deepEqual(r.violations.map((v) => v.records), [1, 1]);
      assert.deepEqual(
        r.violations.map((v) => v.detectedBy),
        set === "out-q10" ? ["early", "early"] : ["device", "device"],
      );
      assert.ok(!forwarded.some((x) => x.kind === "eof"), "EOF never forwarded");
      if (set === "out-small") {
        // Late layout: everything before the device section went through, nothing from it on.
        assert.ok(!forwarded.some((x) => x.kind === "virtio-mem-device"));
        assert.ok(
          forwarded.some((x) => x.streamOffset === r.violations[1]!.streamOffset),
          "RAM pages streamed through",
        );
      } else {
        assert.ok(forwarded.every((x) => x.streamOffset < r.violations[0]!.streamOffset));
      }
    },
  });

  Deno.test({
    name: `PlugStateVerifier in veto mode stops real ${set} s3 before the destination could start`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const evil = realdataFacts(set).manifest.malicious_writes.during_migration.map((
        w: { gpa: number },
      ) => w.gpa);
      const { error, forwarded } = await verifyFile(await realdata(set, "s3-malicious.mig"), {
        mode: "veto",
      });
      assert.ok(error instanceof VerificationError, String(error));
      assert.equal(error.gpa, evil[0]);
      assert.match(error.message, set === "out-small" ? /and 1 more/ : /block 39/);
      assert.ok(!forwarded.some((x) => x.kind === "eof" || x.kind === "virtio-mem-device"));
    },
  });
}

Deno.test({
  name: "PlugStateVerifier gives the same verdict on real s3 under every file chunking",
  ignore: !realdataAvailable("out-small"),
  fn: async (t) => {
    const path = await realdata("out-small", "s3-malicious.mig");
    for (const c of FILE_CHUNKINGS) {
      await t.step(c.name, async () => {
        const { verifier } = await verifyFile(
          path,
          { mode: "report" },
          await chunkedFileStream(path, c),
        );
        assert.deepEqual(verifier.result.violations.map((v) => v.gpa), [0x104e01000, 0x106a01000]);
      });
    }
  },
});
