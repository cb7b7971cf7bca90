/**
 * One measured run, in its own process so its peak RSS is its own:
 * `deno run -A bench/_child.ts MODE FILE` with MODE `decode` (decode only)
 * or `roundtrip` (decode → encode to stdout). Prints one JSON line on stderr:
 * bytes, seconds, peak RSS in KiB.
 */

import { openFileReader } from "../src/io/file.ts";
import { ByteWriter } from "../src/io/byte_writer.ts";
import { decodeMigrationBatches } from "../src/migration/decoder.ts";
import { encodeMigration } from "../src/migration/encoder.ts";

const [mode, path] = Deno.args;
const input = await openFileReader(path!, { recycleChunks: 16 });
const t0 = performance.now();
let bytes = 0;
if (mode === "decode") {
  for await (const _batch of decodeMigrationBatches(input.reader)) { /* decode only */ }
  bytes = input.reader.offset;
} else if (mode === "roundtrip") {
  bytes = await encodeMigration(
    decodeMigrationBatches(input.reader),
    new ByteWriter(async (c) => {
      let done = 0;
      while (done < c.byteLength) done += await Deno.stdout.write(c.subarray(done));
    }, { reuseChunks: true }),
  );
} else {
  throw new Error(`unknown mode ${mode}`);
}
const seconds = (performance.now() - t0) / 1000;
const status = Deno.readTextFileSync("/proc/self/status");
const peakRssKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? NaN);
console.error(JSON.stringify({ mode, bytes, seconds, peakRssKiB }));
