/** `copyRanges`: a write that fails while the next read is in flight (ENOSPC) is an error of the copy, not of the process. */

import assert from "node:assert/strict";
import { bytesPositional, copyRanges, type PositionalReader } from "../../src/io/positional.ts";

Deno.test("copyRanges rejects with a write error that came while it was reading", async () => {
  // Found with `strip` into a full tmpfs: the rejected write was not awaited until the next
  // write, the read in between took an event-loop turn, and Deno ended the process with
  // "Uncaught (in promise) OutputError" and a stack trace, leaving the temporary file behind.
  const bytes = bytesPositional(new Uint8Array(4 << 20).fill(1));
  const slowReader: PositionalReader = {
    byteLength: bytes.byteLength,
    async readInto(fileOffset, into) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      return await bytes.readInto(fileOffset, into);
    },
    close() {},
  };
  const full = new Error("no space left on device");
  let writes = 0;
  const sink = (_chunk: Uint8Array) => {
    writes++;
    return new Promise<void>((_resolve, reject) => setTimeout(() => reject(full), 1));
  };
  await assert.rejects(
    copyRanges(slowReader, sink, [{ kind: "copy", fileOffset: 0, byteLength: 4 << 20 }], {
      chunkSize: 1 << 20,
    }),
    (e) => e === full,
  );
  assert.equal(writes, 1);
});
