/**
 * Sparse output: `hole` steps of `copyRangesTo` become holes in a regular
 * file (same bytes as zeros, less disk space, also at the end of the file)
 * and zeros in a sink.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bytesPositional, copyRanges, copyRangesTo } from "../../src/io/positional.ts";
import { duKiB } from "../_util/mapped_ram.ts";
import { tempDir } from "../_util/qemu.ts";

const MiB = 1 << 20;

Deno.test("copyRangesTo() leaves holes in a regular file and writes zeros to a sink", async () => {
  const input = new Uint8Array(2 * MiB).fill(0xab);
  const steps = [
    { kind: "copy", fileOffset: 0, byteLength: 4096 },
    { kind: "hole", byteLength: 8 * MiB },
    { kind: "copy", fileOffset: 4096, byteLength: 4096 },
    { kind: "hole", byteLength: 4 * MiB }, // a trailing hole still counts in the size
  ] as const;
  await using tmp = await tempDir("vmem-holes-");
  const path = `${tmp.path}/out`;
  const written = await copyRangesTo(bytesPositional(input), path, steps);
  assert.equal(written, 12 * MiB + 8192);
  const bytes = await Deno.readFile(path);
  assert.equal(bytes.byteLength, 12 * MiB + 8192);
  assert.ok(bytes.subarray(0, 4096).every((b) => b === 0xab));
  assert.ok(bytes.subarray(4096, 4096 + 8 * MiB).every((b) => b === 0));
  assert.ok(bytes.subarray(4096 + 8 * MiB, 8192 + 8 * MiB).every((b) => b === 0xab));
  assert.ok(bytes.subarray(8192 + 8 * MiB).every((b) => b === 0));
  assert.ok((await duKiB(path)) < 1024, `du ${await duKiB(path)} KiB`);

  const chunks: Uint8Array[] = [];
  await copyRanges(bytesPositional(input), (c) => {
    chunks.push(c.slice());
    return Promise.resolve();
  }, steps);
  const joined = new Uint8Array(chunks.reduce((a, c) => a + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    joined.set(c, at);
    at += c.byteLength;
  }
  assert.deepEqual(joined, bytes);
});
