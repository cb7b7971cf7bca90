/**
 * Synthesise a big, valid migration stream from a real one: its RAM PART
 * sections are repeated until the output reaches the wanted size (a real
 * migration resends pages in every iteration too), then the END section and
 * the real device-state tail follow. Streams in constant memory.
 */

import { openFileReader } from "../src/io/file.ts";
import { ByteWriter } from "../src/io/byte_writer.ts";
import { decodeMigrationBatches } from "../src/migration/decoder.ts";
import { MigrationEncoder } from "../src/migration/encoder.ts";
import type { MigrationRecord } from "../src/migration/types.ts";

/** Write `outPath` of at least `targetBytes` bytes built from the real stream at `realPath`. */
export async function synthesizeStream(
  realPath: string,
  outPath: string,
  targetBytes: number,
): Promise<number> {
  const file = await Deno.open(outPath, { write: true, create: true, truncate: true });
  const enc = new MigrationEncoder(
    new ByteWriter(async (c) => {
      let done = 0;
      while (done < c.byteLength) done += await file.write(c.subarray(done));
    }, { reuseChunks: true }),
  );
  let lastBlock: string | undefined;
  const put = (r: MigrationRecord) => {
    if (
      (r.kind === "ram-page" || r.kind === "ram-zero-page") && r.continued &&
      r.ramBlock !== lastBlock
    ) {
      r = { ...r, continued: false };
    }
    if (r.kind === "ram-page" || r.kind === "ram-zero-page") lastBlock = r.ramBlock;
    if (r.kind === "ram-mem-size") lastBlock = undefined;
    enc.write(r);
  };
  // phase: "head" until the first PART, "parts" while PART sections run, "rest" after.
  for (let pass = 0;; pass++) {
    const input = await openFileReader(realPath);
    let phase: "head" | "parts" | "rest" = "head";
    let done = false;
    for await (const batch of decodeMigrationBatches(input.reader)) {
      for (const r of batch) {
        if (r.kind === "section-part") phase = "parts";
        if (r.kind === "section-end" || r.kind === "command") {
          phase = phase === "parts" ? "rest" : phase;
        }
        const writeIt = (pass === 0 && phase === "head") || phase === "parts" ||
          (phase === "rest" && enc.writer.offset >= targetBytes);
        if (writeIt) put(r);
      }
      await enc.flushIfFull();
      if (phase === "rest" && enc.writer.offset < targetBytes) break;
    }
    input.close();
    if (enc.writer.offset >= targetBytes && phase === "rest") done = true;
    if (done) break;
  }
  await enc.flush();
  file.close();
  return (await Deno.stat(outPath)).size;
}
