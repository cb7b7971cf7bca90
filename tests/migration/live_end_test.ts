/**
 * A live source keeps its connection open after EOF + vmdesc (with a return
 * path it waits for the destination's answer): the decoder hands out the EOF
 * and vmdesc records before it reads on, and only then checks that nothing
 * follows. Real QEMU 7.2 stream (its device state is walked once the vmdesc
 * arrived), every in-memory chunking.
 */

import assert from "node:assert/strict";
import { BYTE_CHUNKINGS, type Chunking, splitBytes } from "../_util/chunkings.ts";
import { assertFormatError } from "../_util/assert.ts";
import { decodeAll, oneChunk, tinyStream } from "./_stream_util.ts";
import { PullByteReader } from "../../src/io/byte_reader.ts";
import { decodeMigrationBatches, type DecodeOptions } from "../../src/migration/decoder.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";

/**
 * `bytes` cut by `chunking`, then a read that waits until `release` says
 * what comes next (`undefined`: the source closes). `stalled` resolves when
 * the decoder starts that read.
 */
function stallingSource(bytes: Uint8Array, chunking: Chunking) {
  const chunks = splitBytes(bytes, chunking);
  let next = 0;
  let release!: (more: Uint8Array | undefined) => void;
  const after = new Promise<Uint8Array | undefined>((r) => release = r);
  let stalledNow!: () => void;
  const stalled = new Promise<void>((r) => stalledNow = r);
  let waited = false;
  const reader = new PullByteReader(async () => {
    if (next < chunks.length) return chunks[next++];
    if (waited) return undefined;
    waited = true;
    stalledNow();
    return await after;
  });
  return { reader, stalled, release };
}

/** Collect batches in the background; `done` settles when the decoder ends or throws. */
function consume(reader: PullByteReader, options: DecodeOptions = {}) {
  const records: MigrationRecord[] = [];
  const done = (async () => {
    for await (const batch of decodeMigrationBatches(reader, options)) records.push(...batch);
  })();
  done.catch(() => {});
  return { records, done };
}

const kinds = (records: MigrationRecord[]) => records.map((r) => `${r.kind}@${r.streamOffset}`);

Deno.test("decodeMigrationBatches() hands out EOF and the vmdesc of a source that stays open, then checks what follows", async (t) => {
  const bytes = await tinyStream();
  const expected = await decodeAll(oneChunk(bytes));
  assert.ok(expected.some((r) => r.kind === "device-state"), "the stream has a device-state tail");
  assert.equal(expected.at(-1)!.kind, "vmdesc");
  for (const chunking of BYTE_CHUNKINGS) {
    await t.step(chunking.name, async () => {
      // The source closes later: the records came before the read that waits for it.
      const open = stallingSource(bytes, chunking);
      const a = consume(open.reader);
      await open.stalled;
      await new Promise((r) => setTimeout(r, 0));
      assert.deepEqual(kinds(a.records), kinds(expected));
      assert.notEqual((a.records.at(-1) as { parsed?: unknown }).parsed, undefined);
      open.release(undefined);
      await a.done;
      assert.deepEqual(kinds(a.records), kinds(expected));

      // A byte after the vmdesc: bad-section at its offset, after the records were handed on.
      const trailing = stallingSource(bytes, chunking);
      const b = consume(trailing.reader);
      await trailing.stalled;
      trailing.release(new Uint8Array([0]));
      await assertFormatError(b.done, {
        name: "FormatError",
        code: "bad-section",
        offset: bytes.byteLength,
        message: "trailing bytes after the vmdesc",
      });
      assert.deepEqual(kinds(b.records), kinds(expected));
    });
  }
});

Deno.test("decodeMigrationBatches() takes a vmdesc whose JSON does not parse as the end only when the input ends", async () => {
  const bytes = (await tinyStream()).slice();
  const expected = await decodeAll(oneChunk(bytes));
  const vmdesc = expected.at(-1)!;
  // `{"` becomes `{x`: still 0x06, the length and "{" … "}", but no JSON.
  bytes[vmdesc.streamOffset + 6] = 0x78;
  for (const chunking of BYTE_CHUNKINGS.slice(0, 3)) {
    // Proving: nothing gives the sizes of the device sections, an error once the input ends.
    const src = stallingSource(bytes, chunking);
    const c = consume(src.reader);
    await src.stalled;
    await new Promise((r) => setTimeout(r, 0));
    assert.ok(!c.records.some((r) => r.kind === "eof"), `${chunking.name}: no EOF while open`);
    src.release(undefined);
    await assertFormatError(c.done, { code: "unproven", message: /vmdesc is not valid JSON/ });
    // Describing: the tail as it is, the problem, EOF and the vmdesc that does not parse.
    const d = stallingSource(bytes, chunking);
    const described = consume(d.reader, { deviceState: "describe" });
    await d.stalled;
    await new Promise((r) => setTimeout(r, 0));
    assert.ok(
      !described.records.some((r) => r.kind === "eof"),
      `${chunking.name}: no EOF while open`,
    );
    d.release(undefined);
    await described.done;
    assert.deepEqual(described.records.slice(-3).map((r) => r.kind), [
      "tail-problem",
      "eof",
      "vmdesc",
    ]);
    assert.equal((described.records.at(-1) as { parsed?: unknown }).parsed, undefined);
  }
});
