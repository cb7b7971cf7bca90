/**
 * Speed and memory of `vmem-dump filter` and `vmem-dump verify` on large
 * synthetic streams: the real CLI in a child process (start-up included)
 * against a plain copy measured in the same run, page cache warm. (The real
 * 231 MB stream, with every streaming command, is bench/streams.ts.)
 *
 *   deno run -A bench/filter_verify.ts [--runs 3] [--cli PATH/cli/main.ts]
 *                                      [--gib 2.5] [--small-gib 0.25] [--set out-q10|out-small]
 *
 * The chosen set's s3 stream with its RAM PART sections repeated
 * (bench/_synth.ts) at two sizes; throughput against
 * `cat FILE | cat > /dev/null` and peak RSS (it must not grow with the
 * stream). Target for pipe-to-pipe filter: at least 0.5× the pipe copy and
 * 1 GB/s.
 */

import { parseArgs } from "node:util";
import { realdata, type RealdataSet } from "../tests/_util/realdata.ts";
import { synthesizeStream } from "./_synth.ts";
import { type Measured, measurePipeline, median, printTable, shellQuote } from "./_measure.ts";

/** The CLI to measure (`--cli PATH` measures another checkout, e.g. for before/after figures). */
let main = new URL("../cli/main.ts", import.meta.url).pathname;
const q = shellQuote;

/** A run of `pipeline` through the CLI being measured. */
const measure = (pipeline: (vmem: string) => string, okCodes = [0]): Promise<Measured> =>
  measurePipeline(pipeline, main, okCodes);

/** A baseline pipeline without vmem-dump. */
const baseline = (command: string): Promise<Measured> => measure(() => command);

async function benchSynthetic(
  set: RealdataSet,
  sizes: number[],
  runs: number,
  dir: string,
): Promise<void> {
  const real = await realdata(set, "s3-malicious.mig");
  const rows: (string | number)[][] = [];
  for (const gib of sizes) {
    const file = `${dir}/synth-${gib}.mig`;
    const size = await synthesizeStream(real, file, Math.round(gib * 2 ** 30));
    await baseline(`cat ${q(file)} > /dev/null`); // warm the page cache
    const cases: [string, (v: string) => string, number[]][] = [
      ["filter FILE -", (v) => `${v} filter ${q(file)} - > /dev/null`, [0]],
      ["cat | filter - - | cat", (v) => `cat ${q(file)} | ${v} filter - - | cat > /dev/null`, [0]],
      ["verify FILE", (v) => `${v} verify --single-pass ${q(file)}`, [3]],
      ["cat | verify -", (v) => `cat ${q(file)} | ${v} verify -`, [3]],
    ];
    for (const [name, pipeline, ok] of cases) {
      if (set === "out-small" && name.startsWith("cat | filter")) continue; // late layout: a pipe has no plug state
      const ours: Measured[] = [];
      const base: Measured[] = [];
      for (let i = 0; i < runs; i++) {
        base.push(await baseline(`cat ${q(file)} | cat > /dev/null`));
        ours.push(await measure(pipeline, ok));
      }
      const t = median(ours.map((m) => m.wall));
      const pipe = median(base.map((m) => m.wall));
      const tc = median(ours.map((m) => m.cpu));
      const bc = median(base.map((m) => m.cpu));
      rows.push([
        (size / 1e9).toFixed(2) + " GB",
        name,
        (size / pipe / 1e9).toFixed(2),
        (size / t / 1e9).toFixed(2),
        `${(pipe / t).toFixed(2)}×`,
        `${bc.toFixed(2)} / ${tc.toFixed(2)}`,
        Math.max(...ours.map((m) => m.rssMiB)).toFixed(0),
      ]);
    }
    await Deno.remove(file);
  }
  console.log(`synthetic: ${set}/s3-malicious.mig, PART sections repeated; median of ${runs}`);
  printTable(
    ["stream", "command", "pipe GB/s", "GB/s", "vs pipe", "CPU s (pipe / ours)", "peak RSS MiB"],
    rows,
  );
}

async function run(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "3" },
      gib: { type: "string", default: "2.5" },
      "small-gib": { type: "string", default: "0.25" },
      set: { type: "string", default: "out-q10" },
      cli: { type: "string" },
    },
  });
  if (values.cli !== undefined) main = values.cli;
  const runs = Number(values.runs);
  const dir = await Deno.makeTempDir({ prefix: "vmem-bench-fv-" });
  try {
    const sizes = [Number(values["small-gib"]), Number(values.gib)];
    await benchSynthetic(values.set as RealdataSet, sizes, runs, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await run();
