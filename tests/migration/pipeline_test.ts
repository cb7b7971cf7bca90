/**
 * The record pipeline's own guarantees (the filter, verify and proxy tests
 * cover its stages): byte-exact pass-through, the stream ends at its vmdesc
 * while the input stays open, `beforeEof` withholds `QEMU_VM_EOF`, a stage
 * that holds records releases them at the end, `detachOutput` stops the
 * output for good, trailing bytes after the vmdesc are an error.
 */

import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { bytesReader, PullByteReader } from "../../src/io/byte_reader.ts";
import { MigrationEncoder } from "../../src/migration/encoder.ts";
import { MigrationPipeline, runMigrationPipeline } from "../../src/migration/pipeline.ts";
import { PassThroughStage, type RecordStage } from "../../src/migration/stage.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { PlugStateVerifier } from "../../src/migration/verify.ts";
import { BYTE_CHUNKINGS, concatBytes, splitBytes } from "../_util/chunkings.ts";
import { decodeBatches, encodeRecords, syntheticRecords } from "../proxy/_util.ts";
import { realdata, realdataAvailable } from "../_util/realdata.ts";

/** Collects what a pipeline writes (chunks are reused after the promise: copy). */
function collector() {
  const chunks: Uint8Array[] = [];
  return {
    output: (c: Uint8Array) => {
      chunks.push(c.slice());
      return Promise.resolve();
    },
    bytes: (): Uint8Array => concatBytes(chunks),
  };
}

/** A reader over `bytes` in pieces that, after the last piece, waits until `release()`. */
function liveReader(pieces: Uint8Array[]) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let pulls = 0;
  const queue = [...pieces];
  const reader = new PullByteReader(async () => {
    pulls++;
    const next = queue.shift();
    if (next !== undefined) return next;
    await released;
    return undefined;
  });
  return { reader, release, pulls: () => pulls };
}

const stream = async (seed: number) =>
  await encodeRecords(syntheticRecords({ seed, strayRate: 0, pages: 60 }).records);

Deno.test("runMigrationPipeline() passes a stream through byte for byte under every chunking", async (t) => {
  const bytes = await stream(1);
  for (const c of BYTE_CHUNKINGS) {
    await t.step(c.name, async () => {
      const pieces = splitBytes(bytes, c, { copy: true });
      let next = 0;
      const out = collector();
      const r = await runMigrationPipeline(
        new PullByteReader(() => Promise.resolve(pieces[next++])),
        { stages: [new PassThroughStage()], output: out.output, chunkSize: 4096 },
      );
      assert.deepEqual(out.bytes(), bytes);
      assert.equal(r.bytesIn, bytes.byteLength);
      assert.equal(r.bytesOut, bytes.byteLength);
    });
  }
});

Deno.test({
  name:
    "MigrationPipeline copies unchanged page batches verbatim and encodes changed ones: a real stream comes out byte-exact",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const bytes = await Deno.readFile(await realdata("out-q10", "s2-holes-100M.mig"));
    // A stage that replaces every 50th batch by a copy of its records (same bytes, new array):
    // those batches take the encoder, the others the verbatim copy.
    let batches = 0;
    const copying: RecordStage = {
      process: (b) => (++batches % 50 === 0 ? b.map((r) => ({ ...r })) : b),
      end: () => [],
    };
    const verbatim = { calls: 0, bytes: 0 };
    const original = MigrationEncoder.prototype.writeVerbatim;
    MigrationEncoder.prototype.writeVerbatim = function (records, input) {
      verbatim.calls++;
      verbatim.bytes += input.byteLength;
      return original.call(this, records, input);
    };
    try {
      for (const readSize of [1 << 20, 4099]) {
        verbatim.calls = verbatim.bytes = batches = 0;
        let at = 0;
        const out = collector();
        await runMigrationPipeline(
          new PullByteReader(() => {
            const c = at < bytes.byteLength ? bytes.subarray(at, at + readSize) : undefined;
            at += readSize;
            return Promise.resolve(c);
          }),
          { stages: [copying], output: out.output },
        );
        const got = out.bytes();
        assert.equal(got.byteLength, bytes.byteLength);
        assert.ok(got.every((b, i) => b === bytes[i]), `read size ${readSize}: bytes differ`);
        // Most of the stream went verbatim, not all of it.
        assert.ok(verbatim.bytes > bytes.byteLength / 2, `${verbatim.bytes} bytes verbatim`);
        assert.ok(verbatim.bytes < bytes.byteLength, `${verbatim.bytes} bytes verbatim`);
      }
    } finally {
      MigrationEncoder.prototype.writeVerbatim = original;
    }
  },
});

Deno.test("MigrationPipeline is complete at the vmdesc although its input stays open", async () => {
  const bytes = await stream(2);
  const live = liveReader([bytes.slice(0, 1000), bytes.slice(1000)]);
  const out = collector();
  let completeAt: number | undefined;
  const pipeline = new MigrationPipeline(live.reader, {
    stages: [new PlugStateVerifier()],
    output: out.output,
    onComplete: (p) => (completeAt = p.bytesOut),
  });
  const running = pipeline.run();
  // The verifier released EOF and vmdesc and the output was flushed, while the input is still open.
  for (let i = 0; i < 100 && completeAt === undefined; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(completeAt, bytes.byteLength);
  assert.deepEqual(out.bytes(), bytes);
  assert.equal(pipeline.complete, true);
  live.release();
  await running;
});

Deno.test("MigrationPipeline rejects bytes after a vmdesc that ended a live stream", async () => {
  const bytes = await stream(3);
  const pieces = [bytes, new Uint8Array([0])];
  const e = await runMigrationPipeline(new PullByteReader(() => Promise.resolve(pieces.shift())), {
    output: collector().output,
  }).then(() => undefined, (x) => x);
  assert.ok(e instanceof FormatError, String(e));
  assert.match(e.message, /trailing bytes after the vmdesc/);
});

Deno.test("MigrationPipeline awaits beforeEof and withholds QEMU_VM_EOF when it rejects", async () => {
  const bytes = await stream(4);
  const eofAt = (await decodeBatches(bytes)).flat().find((r) => r.kind === "eof")!.streamOffset;
  for (const agree of [true, false]) {
    const out = collector();
    let asked = 0;
    const run = runMigrationPipeline(bytesReader(bytes), {
      output: out.output,
      beforeEof: () => {
        asked++;
        // Everything before the EOF, and nothing after it, has been written when the gate is asked.
        assert.deepEqual(out.bytes(), bytes.subarray(0, eofAt));
        return agree ? Promise.resolve() : Promise.reject(new Error("a channel vetoed"));
      },
    });
    if (agree) {
      await run;
      assert.deepEqual(out.bytes(), bytes);
    } else {
      await assert.rejects(run, /a channel vetoed/);
      const got = out.bytes();
      assert.ok(got.byteLength < bytes.byteLength);
      assert.deepEqual(got, bytes.subarray(0, got.byteLength), "a prefix, without the EOF");
    }
    assert.equal(asked, 1);
  }
});

Deno.test("MigrationPipeline releases what a stage held back, through the later stages, at the end", async () => {
  const bytes = await stream(5);
  /** Holds every section footer until the end (a stage may hold anything). */
  class HoldFooters implements RecordStage {
    held: MigrationRecord[] = [];
    process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
      const out = batch.filter((r) => r.kind !== "section-footer");
      this.held.push(...batch.filter((r) => r.kind === "section-footer"));
      return out;
    }
    end(): readonly MigrationRecord[] {
      return this.held;
    }
  }
  const seen: string[] = [];
  const tail: RecordStage = {
    process(batch) {
      for (const r of batch) seen.push(r.kind);
      return batch;
    },
    end: () => [],
  };
  await runMigrationPipeline(bytesReader(bytes), { stages: [new HoldFooters(), tail] });
  const footers = seen.map((k, i) => [k, i] as const).filter(([k]) => k === "section-footer");
  assert.ok(footers.length > 0);
  assert.ok(footers.every(([, i]) => i > seen.lastIndexOf("vmdesc")), "released after the vmdesc");
});

Deno.test("MigrationPipeline.detachOutput() stops the output but the stages see everything", async () => {
  const bytes = await stream(6);
  const out = collector();
  let records = 0;
  const counter: RecordStage = {
    process(batch) {
      records += batch.length;
      return batch;
    },
    end: () => [],
  };
  const pipeline: MigrationPipeline = new MigrationPipeline(bytesReader(bytes), {
    stages: [counter],
    output: out.output,
    chunkSize: 1024,
    onBatch: (p) => {
      if (p.records > 10) pipeline.detachOutput();
    },
  });
  const r = await pipeline.run();
  assert.ok(out.bytes().byteLength < bytes.byteLength / 2);
  assert.equal(r.records, records);
  assert.equal(pipeline.eofWritten, false);
});
