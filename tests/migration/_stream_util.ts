/** Helpers for the migration tests: decode/encode bytes or files in memory or streaming. */

import { StreamByteReader } from "../../src/io/byte_reader.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { decodeMigration, decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { encodeMigration } from "../../src/migration/encoder.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { createHash } from "node:crypto";

/** Decode a byte stream and encode it back; returns the sha256 and length of the output. */
export async function roundTripDigest(
  stream: ReadableStream<Uint8Array>,
): Promise<{ sha256: string; byteLength: number }> {
  const h = createHash("sha256");
  const byteLength = await encodeMigration(
    decodeMigrationBatches(new StreamByteReader(stream)),
    new ByteWriter((c) => void h.update(c)),
  );
  return { sha256: h.digest("hex"), byteLength };
}

/** Decode a byte stream and encode it back into memory. */
export async function roundTripBytes(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await encodeMigration(
    decodeMigrationBatches(new StreamByteReader(stream)),
    new ByteWriter((c) => void parts.push(c)),
  );
  const n = parts.reduce((a, p) => a + p.byteLength, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/** Decode all records of a byte stream. */
export async function decodeAll(stream: ReadableStream<Uint8Array>): Promise<MigrationRecord[]> {
  const out: MigrationRecord[] = [];
  for await (const r of decodeMigration(new StreamByteReader(stream))) out.push(r);
  return out;
}

/** A stream of one chunk. */
export function oneChunk(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
}

/** The small real QEMU 7.2 stream bundled in testdata (see testdata/README.md). */
export async function tinyStream(): Promise<Uint8Array> {
  return await Deno.readFile(
    new URL("../../testdata/migration/q72-tiny-unplugged.mig", import.meta.url),
  );
}
