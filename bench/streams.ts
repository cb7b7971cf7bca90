/**
 * The streaming commands on a real stream, as issue 10 states its targets:
 * the whole process (start-up included), page cache warm, each command
 * against a plain copy measured in the same run, interleaved with it.
 *
 *   deno run -A bench/streams.ts [--runs 5] [--stream FILE] [--cli PATH/cli/main.ts]
 *                                [--before PATH/cli/main.ts]
 *
 * Input: the shared `out` set's `s3-malicious.mig` (231 MB, QEMU 7.2, late
 * layout, 103,556 page records of which 47,366 are zero pages), streamed once
 * out of `fixtures.tar.zst` into `.cache/bench/` (checked against the
 * producer's SHA-256), or `--stream FILE`.
 *
 * Every command runs `--runs` times, each run right after its baseline:
 * `cat FILE | cat > /dev/null` (the pipe copy), or `cp FILE OUT` for
 * `filter FILE OUT`. The table shows medians of the wall time and of the CPU
 * time (user + system of every process of the pipeline, from bash's `time`),
 * the ratio of each to its baseline, page records per second (wall) and the
 * peak RSS of the vmem-dump process. `cat | filter - - | cat` gets the plug
 * map out of band (a late-layout pipe has no plug state before its RAM),
 * from a file `vmem-dump plugmap` wrote once.
 *
 * Targets: every streaming command within 2× its baseline (wall); `scan` no
 * slower than `verify` (scan FILE / verify FILE, and through a pipe); peak
 * RSS under 150 MiB. On the shared 2-core machine wall times stretch with
 * the load (printed before and after): the CPU ratios are the steadier
 * figure. `--cli` measures another checkout; `--before PATH/cli/main.ts`
 * measures a second one in the same rounds and prints "before → after"
 * ratios (the peak RSS, GB/s and records/s columns are the `--cli` one's).
 */

import { parseArgs } from "node:util";
import { outSetFile } from "./_out_stream.ts";
import { type Measured, measurePipeline, median, printTable, shellQuote } from "./_measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "5" },
    stream: { type: "string" },
    cli: { type: "string", default: new URL("../cli/main.ts", import.meta.url).pathname },
    before: { type: "string" },
  },
});
const main = values.cli;
/** Another checkout's CLI measured in the same rounds (`--before`), for before/after ratios. */
const before = values.before;
const runs = Number(values.runs);
const deno = Deno.execPath();
const q = shellQuote;
const measure = (
  pipeline: (vmem: string) => string,
  okCodes: number[],
  cli = main,
): Promise<Measured> => measurePipeline(pipeline, cli, okCodes);

/** Page records of a stream, from `verify --json` (what records/s counts). */
async function pageRecords(file: string): Promise<number> {
  const out = await new Deno.Command(deno, {
    args: ["run", "-A", main, "verify", "--json", file],
    stdout: "piped",
  }).output();
  return (JSON.parse(new TextDecoder().decode(out.stdout)) as { pageRecords: number }).pageRecords;
}

const loadAverage = async () => (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3);

const file = values.stream ?? await outSetFile("s3-malicious.mig");
const size = (await Deno.stat(file)).size;
const dir = await Deno.makeTempDir({ prefix: "vmem-bench-streams-" });
try {
  const map = `${dir}/plugmap.json`;
  const p = await new Deno.Command(deno, {
    args: ["run", "-A", main, "plugmap", file],
    stdout: "piped",
  }).output();
  await Deno.writeFile(map, p.stdout);
  const records = await pageRecords(file);
  const out = `${dir}/out.mig`;
  const pipe = `cat ${q(file)} | cat > /dev/null`;
  const cp = `cp ${q(file)} ${q(out)}; rm -f ${q(out)}`;
  /** Each case: its name, its baseline, the pipeline, the exit codes that mean success. */
  const cases: { name: string; base: string; run: (v: string) => string; ok: number[] }[] = [
    { name: "start-up: verify --help", base: pipe, run: (v) => `${v} verify --help`, ok: [0] },
    { name: "inspect FILE", base: pipe, run: (v) => `${v} inspect ${q(file)}`, ok: [0] },
    { name: "verify FILE", base: pipe, run: (v) => `${v} verify ${q(file)}`, ok: [0, 3] },
    {
      name: "cat FILE | verify -",
      base: pipe,
      run: (v) => `cat ${q(file)} | ${v} verify -`,
      ok: [0, 3],
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
    { name: "scan FILE", base: pipe, run: (v) => `${v} scan ${q(file)}`, ok: [0, 3] },
    {
      name: "cat FILE | scan -",
      base: pipe,
      run: (v) => `cat ${q(file)} | ${v} scan -`,
      ok: [0, 3],
    },
  ];
  const loadBefore = await loadAverage();
  await measure(() => `cat ${q(file)} > /dev/null`, [0]); // warm the page cache
  const ours = new Map<string, Measured[]>(cases.map((c) => [c.name, []]));
  const base = new Map<string, Measured[]>(cases.map((c) => [c.name, []]));
  const old = new Map<string, Measured[]>(cases.map((c) => [c.name, []]));
  // Round by round, so that a busy spell of the machine spreads over every command.
  for (let i = 0; i < runs; i++) {
    for (const c of cases) {
      base.get(c.name)!.push(await measure(() => c.base, [0]));
      if (before !== undefined) old.get(c.name)!.push(await measure(c.run, c.ok, before));
      ours.get(c.name)!.push(await measure(c.run, c.ok));
    }
  }
  const loadAfter = await loadAverage();
  const med = (name: string, of: Map<string, Measured[]>, k: "wall" | "cpu") =>
    median(of.get(name)!.map((m) => m[k]));
  const rows = cases.map((c) => {
    const t = med(c.name, ours, "wall");
    const b = med(c.name, base, "wall");
    const tc = med(c.name, ours, "cpu");
    const bc = med(c.name, base, "cpu");
    const startup = c.name.startsWith("start-up");
    // With --before: "before → after" ratios, the older checkout measured in the same rounds.
    const was = (k: "wall" | "cpu", ratio: number) =>
      before === undefined
        ? `${ratio.toFixed(2)}×`
        : `${(med(c.name, old, k) / med(c.name, base, k)).toFixed(2)}× → ${ratio.toFixed(2)}×`;
    return [
      c.name,
      `${b.toFixed(3)} / ${t.toFixed(3)}`,
      was("wall", t / b),
      `${bc.toFixed(3)} / ${tc.toFixed(3)}`,
      was("cpu", tc / bc),
      startup ? "" : (size / t / 1e9).toFixed(2),
      startup ? "" : `${(records / t / 1e6).toFixed(2)} M`,
      Math.max(...ours.get(c.name)!.map((m) => m.rssMiB)).toFixed(0),
      startup ? "" : t / b <= 2 ? "met" : "not met",
    ];
  });
  console.log(
    `${file}: ${(size / 1e6).toFixed(0)} MB, ${records} page records; median of ${runs}; ` +
      `load average ${loadBefore.join(" ")} before, ${loadAfter.join(" ")} after` +
      (before === undefined ? "" : `; ratios before → after: ${before} → ${main}`),
  );
  printTable(
    [
      "command",
      "wall s (base / ours)",
      "wall ×",
      "CPU s (base / ours)",
      "CPU ×",
      "GB/s",
      "records/s",
      "peak RSS MiB",
      "≤ 2× (wall)",
    ],
    rows,
  );
  console.log();
  const vs = (a: string, b: string) => {
    const w = med(a, ours, "wall") / med(b, ours, "wall");
    const c = med(a, ours, "cpu") / med(b, ours, "cpu");
    const was = (k: "wall" | "cpu") =>
      before === undefined ? "" : `${(med(a, old, k) / med(b, old, k)).toFixed(2)}× → `;
    return [
      `${a} / ${b}`,
      `${was("wall")}${w.toFixed(2)}×`,
      `${was("cpu")}${c.toFixed(2)}×`,
      w <= 1 ? "met" : "not met",
    ];
  };
  printTable(["scan against verify", "wall", "CPU", "no slower (wall)"], [
    vs("scan FILE", "verify FILE"),
    vs("cat FILE | scan -", "cat FILE | verify -"),
  ]);
} finally {
  await Deno.remove(dir, { recursive: true });
}
