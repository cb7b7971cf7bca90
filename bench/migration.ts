/**
 * Decoder/encoder throughput and memory, as ratios against a plain pipe copy
 * of the same file measured in the same run.
 *
 *   deno run -A bench/migration.ts [--gib 2.2] [--small-gib 0.2] [--keep DIR]
 *
 * The input is synthesised from the real QEMU 7.2 stream out-small/s1 (its
 * RAM iterations repeated, see bench/_synth.ts).
 */

import { parseArgs } from "node:util";
import { realdata } from "../tests/_util/realdata.ts";
import { synthesizeStream } from "./_synth.ts";
import { printTable, ratio, runChild, timeShell } from "./_measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    gib: { type: "string", default: "2.2" },
    "small-gib": { type: "string", default: "0.2" },
  },
});
const real = await realdata("out-small", "s1-plugged-200M.mig");
const dir = await Deno.makeTempDir({ prefix: "vmem-bench-" });
try {
  const rows: (string | number)[][] = [];
  for (const gib of [Number(values["small-gib"]), Number(values.gib)]) {
    const file = `${dir}/synth-${gib}.mig`;
    const size = await synthesizeStream(real, file, Math.round(gib * 2 ** 30));
    // Warm the page cache, then measure the baseline and our two modes.
    await timeShell(`cat '${file}' > /dev/null`);
    const pipe = await timeShell(`cat '${file}' | cat > /dev/null`);
    const decode = await runChild(["bench/_child.ts", "decode", file], "/dev/null");
    const round = await runChild(["bench/_child.ts", "roundtrip", file], "/dev/null");
    rows.push([
      (size / 1e9).toFixed(2) + " GB",
      (size / pipe / 1e9).toFixed(2),
      (size / decode.seconds / 1e9).toFixed(2),
      ratio(pipe, decode.seconds),
      (decode.peakRssKiB / 1024).toFixed(0),
      (size / round.seconds / 1e9).toFixed(2),
      ratio(pipe, round.seconds),
      (round.peakRssKiB / 1024).toFixed(0),
    ]);
    await Deno.remove(file);
  }
  printTable(
    [
      "stream",
      "pipe GB/s",
      "decode GB/s",
      "decode/pipe",
      "decode RSS MiB",
      "decode→encode GB/s",
      "d→e/pipe",
      "d→e RSS MiB",
    ],
    rows,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
