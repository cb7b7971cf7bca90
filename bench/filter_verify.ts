/**
 * Speed and memory of `vmem-dump filter` and `vmem-dump verify`: the real
 * CLI in a child process (start-up included) against a plain copy measured
 * in the same run, page cache warm.
 *
 *   deno run -A bench/filter_verify.ts [--real] [--synthetic] [--runs 5] [--cli PATH/cli/main.ts]
 *                                      [--gib 2.5] [--small-gib 0.25] [--set out-q10|out-small]
 *
 * 1. Real stream (`--real`): the shared `out` set's `s3-malicious.mig`
 *    (231 MB, QEMU 7.2, late layout, 103,556 page records of which 47,366
 *    are zero pages), streamed once out of `fixtures.tar.zst` into
 *    `.cache/bench/` (checked against SHA256SUMS.payload). Each command runs
 *    `--runs` times, interleaved with its baseline; the table shows medians,
 *    the time ratio to the baseline (target: at most 2×) and page records
 *    per second. `cat | filter - - | cat` gets the plug map out of band (a
 *    late-layout pipe has no plug state before its RAM), from a file
 *    `vmem-dump plugmap` wrote once.
 * 2. Synthetic streams (`--synthetic`): the chosen set's s3 stream with its
 *    RAM PART sections repeated (bench/_synth.ts) at two sizes; throughput
 *    against `cat FILE | cat > /dev/null` and peak RSS (it must not grow
 *    with the stream). Target for pipe-to-pipe filter: at least 0.5× the
 *    pipe copy and 1 GB/s.
 *
 * Without `--real` or `--synthetic` both run.
 */

import { parseArgs } from "node:util";
import { realdata, type RealdataSet } from "../tests/_util/realdata.ts";
import { outSetFile } from "./_out_stream.ts";
import { synthesizeStream } from "./_synth.ts";
import { printTable } from "./_measure.ts";

/** The CLI to measure (`--cli PATH` measures another checkout, e.g. for before/after figures). */
let main = new URL("../cli/main.ts", import.meta.url).pathname;
const deno = Deno.execPath();
const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** What one measured pipeline cost. */
interface Measured {
  /** Wall seconds. */
  seconds: number;
  /** CPU seconds (user + system) of every process of the pipeline. */
  cpuSeconds: number;
  /** Peak RSS of the vmem-dump process (NaN for a baseline). */
  rssMiB: number;
}

/**
 * Wall time, CPU time of the whole pipeline and peak RSS of its `vmem`
 * stage (run under /usr/bin/time). The CPU time is reported beside the wall
 * time because a loaded machine stretches wall times unevenly: `cat` spends
 * its time in the kernel and suffers less from waiting for a core.
 */
async function measure(
  pipeline: (vmem: string) => string,
  okCodes = [0],
): Promise<Measured> {
  const rssFile = await Deno.makeTempFile();
  const cpuFile = await Deno.makeTempFile();
  try {
    const vmem = `/usr/bin/time -f %M -o ${q(rssFile)} ${q(deno)} run -A ${q(main)}`;
    const script = `set -o pipefail; ${pipeline(vmem)}`;
    const t0 = performance.now();
    const out = await new Deno.Command("/usr/bin/time", {
      args: ["-f", "%U %S %x", "-o", cpuFile, "bash", "-c", script],
      stdout: "null",
      stderr: "piped",
    }).output();
    const seconds = (performance.now() - t0) / 1000;
    const err = new TextDecoder().decode(out.stderr);
    const last = (await Deno.readTextFile(cpuFile)).trim().split("\n").pop()!;
    const [user, sys, rc] = last.split(" ").map(Number) as [number, number, number];
    if (!okCodes.includes(rc)) throw new Error(`${pipeline("vmem-dump")} exited ${rc}: ${err}`);
    const text = (await Deno.readTextFile(rssFile)).trim();
    const rssKiB = text === "" ? NaN : Number(text.split("\n").pop());
    return { seconds, cpuSeconds: user + sys, rssMiB: rssKiB / 1024 };
  } finally {
    await Deno.remove(rssFile);
    await Deno.remove(cpuFile);
  }
}

/** A baseline pipeline without vmem-dump. */
function baseline(command: string): Promise<Measured> {
  return measure(() => command);
}

/** Page records of a stream, from `verify --json` (the figure records/s is based on). */
async function pageRecords(file: string): Promise<number> {
  const out = await new Deno.Command(deno, {
    args: ["run", "-A", main, "verify", "--json", file],
    stdout: "piped",
  }).output();
  return (JSON.parse(new TextDecoder().decode(out.stdout)) as { pageRecords: number }).pageRecords;
}

async function benchReal(runs: number, dir: string): Promise<void> {
  const file = await outSetFile("s3-malicious.mig");
  const size = (await Deno.stat(file)).size;
  const map = `${dir}/plugmap.json`;
  const p = await new Deno.Command(deno, {
    args: ["run", "-A", main, "plugmap", file],
    stdout: "piped",
  }).output();
  await Deno.writeFile(map, p.stdout);
  const records = await pageRecords(file);
  const out = `${dir}/out.mig`;
  await baseline(`cat ${q(file)} > /dev/null`); // warm the page cache
  const pipe = `cat ${q(file)} | cat > /dev/null`;
  const cp = `cp ${q(file)} ${q(out)}; rm -f ${q(out)}`;
  const cases: { name: string; base: string; run: (v: string) => string; ok: number[] }[] = [
    { name: "start-up: verify --help", base: pipe, run: (v) => `${v} verify --help`, ok: [0] },
    { name: "verify FILE", base: pipe, run: (v) => `${v} verify ${q(file)}`, ok: [3] },
    {
      name: "cat FILE | verify -",
      base: pipe,
      run: (v) => `cat ${q(file)} | ${v} verify -`,
      ok: [3],
    },
    {
      name: "filter FILE OUT (vs cp)",
      base: cp,
      run: (v) => `${v} filter ${q(file)} ${q(out)}; rm -f ${q(out)}`,
      ok: [0],
    },
    {
      name: "cat FILE | filter - - | cat",
      base: pipe,
      run: (v) => `cat ${q(file)} | ${v} filter --plugmap ${q(map)} - - | cat > /dev/null`,
      ok: [0],
    },
  ];
  const rows: (string | number)[][] = [];
  for (const c of cases) {
    const ours: Measured[] = [];
    const base: Measured[] = [];
    for (let i = 0; i < runs; i++) {
      base.push(await baseline(c.base));
      ours.push(await measure(c.run, c.ok));
    }
    const t = median(ours.map((m) => m.seconds));
    const b = median(base.map((m) => m.seconds));
    const tc = median(ours.map((m) => m.cpuSeconds));
    const bc = median(base.map((m) => m.cpuSeconds));
    const startup = c.name.startsWith("start-up");
    rows.push([
      c.name,
      b.toFixed(3),
      t.toFixed(3),
      `${(t / b).toFixed(2)}×`,
      `${bc.toFixed(3)} / ${tc.toFixed(3)}`,
      `${(tc / bc).toFixed(2)}×`,
      startup ? "" : (size / t / 1e9).toFixed(2),
      startup ? "" : `${(records / t / 1e6).toFixed(2)} M`,
      Math.max(...ours.map((m) => m.rssMiB)).toFixed(0),
    ]);
  }
  console.log(
    `real stream: out/s3-malicious.mig, ${(size / 1e6).toFixed(0)} MB, ${records} page records; ` +
      `median of ${runs}; baseline: cat FILE | cat > /dev/null, or cp for filter FILE OUT`,
  );
  printTable(
    [
      "command",
      "baseline s",
      "s",
      "× baseline",
      "CPU s (base / ours)",
      "CPU ×",
      "GB/s",
      "records/s",
      "peak RSS MiB",
    ],
    rows,
  );
}

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
      const t = median(ours.map((m) => m.seconds));
      const pipe = median(base.map((m) => m.seconds));
      const tc = median(ours.map((m) => m.cpuSeconds));
      const bc = median(base.map((m) => m.cpuSeconds));
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
      real: { type: "boolean" },
      synthetic: { type: "boolean" },
      runs: { type: "string", default: "5" },
      gib: { type: "string", default: "2.5" },
      "small-gib": { type: "string", default: "0.25" },
      set: { type: "string", default: "out-q10" },
      cli: { type: "string" },
    },
  });
  if (values.cli !== undefined) main = values.cli;
  const both = !values.real && !values.synthetic;
  const runs = Number(values.runs);
  const dir = await Deno.makeTempDir({ prefix: "vmem-bench-fv-" });
  try {
    if (both || values.real) await benchReal(runs, dir);
    if (both || values.synthetic) {
      const sizes = [Number(values["small-gib"]), Number(values.gib)];
      await benchSynthetic(values.set as RealdataSet, sizes, Math.max(1, runs - 2), dir);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await run();
