/**
 * A stream of a source with postcopy-ram and huge pages (POSTCOPY_ADVISE
 * with a page-size summary above the target page size): QEMU then sends the
 * page size of every RAMBlock whose page size is not the host's, and of no
 * other. QEMU orders blocks by size, so the last entry of the list is a
 * small block without one, and the RAM record after it (EOS, a zero high
 * byte) used to be read as its page size: such honest streams failed to
 * decode. The decoder now takes only a power of two above the target page
 * size as a page size (a record header always has flag bits). Built from
 * the bundled real 7.2 stream (no huge pages on the test machines).
 */

import assert from "node:assert/strict";
import { StreamByteReader } from "../../src/io/byte_reader.ts";
import { MIG_CMD_POSTCOPY_ADVISE } from "../../src/migration/constants.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { BYTE_CHUNKINGS, chunkedStream } from "../_util/chunkings.ts";
import { baseStream, encodeRecords } from "./_device_state_attacks.ts";
import { tinyStream } from "./_stream_util.ts";

const HUGE = 2 << 20;

/** The bundled stream as a huge-page source with postcopy-ram writes it. */
async function hugePageStream(): Promise<{ bytes: Uint8Array; records: MigrationRecord[] }> {
  const base = await baseStream(await tinyStream());
  const payload = new Uint8Array(16);
  const view = new DataView(payload.buffer);
  view.setBigUint64(0, BigInt(HUGE | 4096)); // the page-size summary: huge and normal pages
  view.setBigUint64(8, 4096n); // the target page size
  const records: MigrationRecord[] = [];
  for (const r of base.records) {
    if (r.kind === "section-start" && r.idstr === "ram") {
      records.push({
        kind: "command",
        streamOffset: 0,
        command: MIG_CMD_POSTCOPY_ADVISE,
        name: "POSTCOPY_ADVISE",
        payload,
      });
    }
    if (r.kind === "ram-mem-size") {
      // The largest block on huge pages; the others (the last one too) on host pages.
      records.push({
        ...r,
        blocks: r.blocks.map((b, i) => i === 0 ? { ...b, pageSize: HUGE } : b),
      });
    } else records.push(r);
  }
  return { bytes: encodeRecords(records), records };
}

Deno.test("the decoder reads the page sizes a huge-page postcopy source sends, and only those, however the stream is chunked", async () => {
  const { bytes, records } = await hugePageStream();
  const want = records.find((r) => r.kind === "ram-mem-size");
  assert.ok(want?.kind === "ram-mem-size");
  assert.ok(want.blocks.length > 2);
  for (const chunking of BYTE_CHUNKINGS) {
    let got: MigrationRecord | undefined;
    let eos = 0;
    for await (const r of decodeMigration(new StreamByteReader(chunkedStream(bytes, chunking)))) {
      if (r.kind === "ram-mem-size") got = r;
      if (r.kind === "ram-eos") eos++;
    }
    assert.ok(got?.kind === "ram-mem-size", chunking.name);
    assert.deepEqual(
      got.blocks.map((b) => [b.idstr, b.usedLength, b.pageSize]),
      want.blocks.map((b) => [b.idstr, b.usedLength, b.pageSize]),
      chunking.name,
    );
    assert.equal(eos, records.filter((r) => r.kind === "ram-eos").length, chunking.name);
  }
  // Byte for byte: what was decoded encodes to the same stream.
  const again: MigrationRecord[] = [];
  for await (
    const r of decodeMigration(new StreamByteReader(chunkedStream(bytes, BYTE_CHUNKINGS[0]!)))
  ) {
    again.push(r);
  }
  assert.deepEqual(encodeRecords(again), bytes);
});
