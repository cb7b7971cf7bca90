/** Every-byte truncation of testdata/migration/q72-qboot-unplugged.mig (a real QEMU 7.2 stream). */

import assert from "node:assert/strict";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { UnexpectedEofError } from "../../src/errors.ts";

/** Decode the stream cut at every byte offset `cut` with `cut % parts === part`. */
export async function truncationCuts(part: number, parts: number): Promise<void> {
  const bytes = await Deno.readFile(
    new URL("../../testdata/migration/q72-qboot-unplugged.mig", import.meta.url),
  );
  // The whole stream decodes.
  for await (const _ of decodeMigrationBatches(bytesReader(bytes))) { /* ok */ }
  let checked = 0;
  for (let cut = part; cut < bytes.byteLength; cut += parts) {
    try {
      for await (
        const _ of decodeMigrationBatches(bytesReader(bytes.subarray(0, cut)))
      ) { /* decode */ }
    } catch (e) {
      if (!(e instanceof UnexpectedEofError)) {
        assert.fail(`cut ${cut}: ${e instanceof Error ? e.stack : e}`);
      }
      assert.ok(e.offset <= cut, `cut ${cut}: error offset ${e.offset}`);
      checked++;
      continue;
    }
    assert.fail(`the stream cut at ${cut} of ${bytes.byteLength} decoded without error`);
  }
  assert.equal(checked, Math.ceil((bytes.byteLength - part) / parts));
}
