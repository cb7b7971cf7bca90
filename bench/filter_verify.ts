/**
 * Throughput and memory of `vmem-dump filter` and `vmem-dump verify`, each as
 * a ratio against a plain pipe copy (`cat FILE | cat > /dev/null`) measured
 * in the same run, at two stream sizes (peak RSS should not grow with size).
 *
 *   deno run -A bench/filter_verify.ts [--gib 2.2] [--small-gib 0.25] [--set out-q10|out-small]
 *
 * The input is synthesised from the real s3 stream of the chosen set (its RAM
 * PART sections repeated until the size is reached; see bench/_synth.ts), so
 * it keeps the real plug state, the EVIL pages of the END section and the
 * real device-state tail. Commands run as the real CLI in a child process
 * under `/usr/bin/time` (peak RSS); times include Deno's start-up.
 */

import { parseArgs } from "node:util";
import { realdata, type RealdataSet } from "../tests/_util/realdata.ts";
import { synthesizeStream } from "./_synth.ts";
import { printTable, ratio, timeShell } from "./_measure.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;
const deno = Deno.execPath();
const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** Run a shell pipeline whose vmem-dump stage runs under /usr/bin/time; return seconds and peak RSS. */
async function measure(
  pipeline: (vmem: string) => string,
  okCodes = [0],
): Promise<{ seconds: number; rssMiB: number }> {
  const rssFile = await Deno.makeTempFile();
  try {
    const vmem = `/usr/bin/time -f %M -o ${q(rssFile)} ${q(deno)} run -A ${q(main)}`;
    const t0 = performance.now();
    const out = await new Deno.Command("bash", {
      args: ["-c", `set -o pipefail; ${pipeline(vmem)}; echo "rc=$?" >&2`],
      stdout: "null",
      stderr: "piped",
    }).output();
    const seconds = (performance.now() - t0) / 1000;
    const err = new TextDecoder().decode(out.stderr);
    const rc = Number(/rc=(\d+)/.exec(err)?.[1] ?? NaN);
    if (!okCodes.includes(rc)) throw new Error(`${pipeline("vmem-dump")} exited ${rc}: ${err}`);
    const rssKiB = Number((await Deno.readTextFile(rssFile)).trim().split("\n").pop());
    return { seconds, rssMiB: rssKiB / 1024 };
  } finally {
    await Deno.remove(rssFile);
  }
}

async function run(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      gib: { type: "string", default: "2.2" },
      "small-gib": { type: "string", default: "0.25" },
      set: { type: "string", default: "out-q10" },
    },
  });
  const set = values.set as RealdataSet;
  const real = await realdata(set, "s3-malicious.mig");
  const dir = await Deno.makeTempDir({ prefix: "vmem-bench-fv-" });
  try {
    const rows: (string | number)[][] = [];
    for (const gib of [Number(values["small-gib"]), Number(values.gib)]) {
      const file = `${dir}/synth-${gib}.mig`;
      const size = await synthesizeStream(real, file, Math.round(gib * 2 ** 30));
      await timeShell(`cat ${q(file)} > /dev/null`); // warm the page cache
      const pipe = Math.min(
        await timeShell(`cat ${q(file)} | cat > /dev/null`),
        await timeShell(`cat ${q(file)} | cat > /dev/null`),
      );
      const cases: [string, (v: string) => string, number[]][] = [
        ["filter FILE -", (v) => `${v} filter ${q(file)} - > /dev/null`, [0]],
        ["cat | filter - - | cat", (v) => `cat ${q(file)} | ${v} filter - - | cat > /dev/null`, [
          0,
        ]],
        ["verify FILE", (v) => `${v} verify --single-pass ${q(file)}`, [3]],
        ["cat | verify -", (v) => `cat ${q(file)} | ${v} verify -`, [3]],
      ];
      for (const [name, pipeline, ok] of cases) {
        if (set === "out-small" && name.startsWith("cat | filter")) continue; // late layout: a pipe has no plug state
        const m = await measure(pipeline, ok);
        rows.push([
          (size / 1e9).toFixed(2) + " GB",
          name,
          (size / pipe / 1e9).toFixed(2),
          (size / m.seconds / 1e9).toFixed(2),
          ratio(pipe, m.seconds),
          m.rssMiB.toFixed(0),
        ]);
      }
      await Deno.remove(file);
    }
    console.log(`input: ${set}/s3-malicious.mig, PART sections repeated`);
    printTable(["stream", "command", "pipe GB/s", "GB/s", "vs pipe", "peak RSS MiB"], rows);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await run();
