/**
 * Filter mode (the proxy's relay, and the pipeline behind `filter`) never
 * copies a dropped record's bytes through the verbatim batch path
 * (`MigrationEncoder.writeVerbatim` with `batchInputBytes`): a batch that
 * lost a record in its middle is encoded record by record, under every
 * chunking of the input.
 *
 * The stream is a synthetic one with no stray pages, into which three
 * records of an unplugged block are inserted in the middle of page runs: one
 * that names the RAMBlock (the next record, CONTINUE set, must get the name
 * back), one CONTINUE page and one CONTINUE zero page. The filtered output
 * must be exactly the stream without them, and no verbatim copy may hold one.
 *
 * @module
 */

import assert from "node:assert/strict";
import { PullByteReader } from "../../src/io/byte_reader.ts";
import { MigrationEncoder } from "../../src/migration/encoder.ts";
import { UnpluggedPageDropper } from "../../src/migration/filter.ts";
import { runMigrationPipeline } from "../../src/migration/pipeline.ts";
import type { MigrationRecord, RamPageLikeRecord } from "../../src/migration/types.ts";
import { relayMigration } from "../../src/proxy/relay.ts";
import { BYTE_CHUNKINGS, concatBytes, splitBytes, WHOLE } from "../_util/chunkings.ts";
import {
  decodeBatches,
  encodeRecords,
  isPage,
  syntheticRecords,
  VMEM_BLOCK,
  VMEM_RAMBLOCK,
} from "./_util.ts";

/** Bytes every dropped page is filled with: never in a page the stream keeps. */
const MARKER = new TextEncoder().encode("DROPPED!");

/** Index of the first 8-byte run of MARKER in `bytes`, or -1. */
function markerAt(bytes: Uint8Array): number {
  outer: for (let i = 0; i + MARKER.byteLength <= bytes.byteLength; i++) {
    for (let k = 0; k < MARKER.byteLength; k++) if (bytes[i + k] !== MARKER[k]) continue outer;
    return i;
  }
  return -1;
}

/** The clean stream, and the same stream with three records of unplugged block 1 inserted. */
async function streams() {
  const plugged = Array.from({ length: 8 }, (_, i) => i !== 1);
  const syn = syntheticRecords({ seed: 31, plugged, strayRate: 0, pages: 150 });
  const clean = await encodeRecords(syn.records);
  const records: MigrationRecord[] = syn.records.slice();
  const vmem = (r: MigrationRecord | undefined): r is RamPageLikeRecord =>
    r !== undefined && isPage(r) && r.ramBlock === VMEM_RAMBLOCK;
  const stray = (ramOffset: number, continued: boolean, zero = false): RamPageLikeRecord =>
    zero
      ? {
        kind: "ram-zero-page",
        streamOffset: 0,
        ramBlock: VMEM_RAMBLOCK,
        ramOffset,
        continued,
        fill: 0,
      }
      : {
        kind: "ram-page",
        streamOffset: 0,
        ramBlock: VMEM_RAMBLOCK,
        ramOffset,
        continued,
        data: new Uint8Array(4096).map((_, i) => MARKER[i % MARKER.byteLength]!),
      };
  const pages = records.flatMap((r, i) => (isPage(r) ? [i] : []));
  const third = Math.floor(pages.length / 3);
  // 1. A record that names the virtio-mem RAMBlock, before a kept one that relies on it (CONTINUE).
  const named = pages.find((i, n) =>
    n > 10 && !vmem(records[i]) && vmem(records[i + 1]) &&
    !(records[i + 1] as RamPageLikeRecord).continued
  )!;
  assert.ok(named !== undefined);
  const next = records[named + 1] as RamPageLikeRecord;
  records.splice(named + 1, 1, stray(VMEM_BLOCK + 0x5000, false), { ...next, continued: true });
  // 2. A CONTINUE page between two kept pages of the same block, a third of the way in.
  const cont = records.findIndex((r, i) =>
    i > pages[third]! && vmem(r) && vmem(records[i + 1]) &&
    (records[i + 1] as RamPageLikeRecord).continued
  );
  records.splice(cont + 1, 0, stray(VMEM_BLOCK + 0x9000, true));
  // 3. A CONTINUE zero page the same way, two thirds of the way in.
  const zero = records.findIndex((r, i) =>
    i > pages[2 * third]! + 3 && vmem(r) && vmem(records[i + 1]) &&
    (records[i + 1] as RamPageLikeRecord).continued
  );
  records.splice(zero + 1, 0, stray(VMEM_BLOCK + 0xa000, true, true));
  return { clean, dirty: await encodeRecords(records) };
}

Deno.test("filter mode never copies a dropped record through the verbatim batch path: relay and pipeline, every chunking", async (t) => {
  const { clean, dirty } = await streams();
  assert.ok(markerAt(dirty) >= 0 && markerAt(clean) < 0);

  // In one chunk, each stray sits inside a batch of page records, neither first nor last:
  // the batch the verbatim path would copy whole if it ignored drops.
  const strayAt = (r: MigrationRecord) =>
    isPage(r) && r.ramBlock === VMEM_RAMBLOCK && Math.floor(r.ramOffset / VMEM_BLOCK) === 1;
  let inside = 0;
  for (const b of await decodeBatches(dirty)) {
    b.forEach((r, i) => {
      if (strayAt(r) && i > 0 && isPage(b[i - 1]!) && isPage(b[i + 1]!)) inside++;
    });
  }
  assert.equal(inside, 3, "each stray in the middle of a batch of pages");

  const verbatim: Uint8Array[] = [];
  const original = MigrationEncoder.prototype.writeVerbatim;
  MigrationEncoder.prototype.writeVerbatim = function (records, input) {
    verbatim.push(input.slice());
    for (const r of records) assert.ok(!strayAt(r), "a dropped record went to writeVerbatim");
    return original.call(this, records, input);
  };
  try {
    for (
      const chunking of [...BYTE_CHUNKINGS, {
        name: "64 KiB chunks",
        kind: "fixed" as const,
        size: 1 << 16,
      }]
    ) {
      for (const via of ["relay", "pipeline"] as const) {
        await t.step(`${via}, ${chunking.name}`, async () => {
          verbatim.length = 0;
          const pieces = splitBytes(dirty, chunking, { copy: true });
          let at = 0;
          const reader = new PullByteReader(() => Promise.resolve(pieces[at++]));
          const out: Uint8Array[] = [];
          const sink = (c: Uint8Array) => {
            out.push(c.slice());
            return Promise.resolve();
          };
          let dropped: number;
          let renamed: number;
          if (via === "relay") {
            const r = await relayMigration(reader, sink, { mode: "filter" });
            dropped = r.droppedRecords;
            renamed = r.dropStats!.renamedRecords;
          } else {
            const dropper = new UnpluggedPageDropper();
            await runMigrationPipeline(reader, { stages: [dropper], output: sink });
            dropped = dropper.stats.droppedRecords;
            renamed = dropper.stats.renamedRecords;
          }
          assert.equal(dropped, 3);
          assert.equal(renamed, 1);
          const got = concatBytes(out);
          assert.equal(markerAt(got), -1, "a dropped page's bytes reached the output");
          assert.equal(got.byteLength, clean.byteLength);
          assert.ok(
            got.every((b, i) => b === clean[i]),
            "the output is the stream without the strays",
          );
          for (const v of verbatim) {
            assert.equal(markerAt(v), -1, "a verbatim copy held a dropped page");
          }
          // The verbatim path did run (batches of kept pages only), so it is what was checked.
          // In one chunk every batch of pages holds a stray: all three are encoded.
          if (chunking !== WHOLE) assert.ok(verbatim.length > 0, "no batch went verbatim");
        });
      }
    }
  } finally {
    MigrationEncoder.prototype.writeVerbatim = original;
  }
});
