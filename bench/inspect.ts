/**
 * Whole-process time of `vmem-dump inspect` on real streams, against a plain
 * pipe copy of the same file (`cat FILE | cat > /dev/null`) measured in the
 * same run. Per-record cost is what this shows: real streams are half zero
 * pages (the reference, `out/s3-malicious.mig`, is 231 MB in 103,556
 * records, 47,366 of them zero pages).
 *
 *   deno run -A bench/inspect.ts [--rounds 7] [--cli PATH/cli/main.ts]
 *
 * The `out` streams are streamed once out of `shared/realdata/out/fixtures.tar.zst`
 * into `.cache/bench/` (bench/_out_stream.ts; the set unpacks to 6.7 GB, never
 * at once); `out-small` and `out-q10` come from the test cache. Each case runs
 * `--rounds` times, alternating with the pipe copy; the table shows the best
 * and the median of each (a busy machine only ever makes a run slower).
 * `--cli` measures another checkout's CLI (e.g. the commit before a change).
 */

import { parseArgs } from "node:util";
import { realdata } from "../tests/_util/realdata.ts";
import { outSetFile } from "./_out_stream.ts";
import { median, printTable, shellQuote, timeShell } from "./_measure.ts";

const deno = Deno.execPath();
const q = shellQuote;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "7" },
    cli: { type: "string", default: new URL("../cli/main.ts", import.meta.url).pathname },
  },
});
const main = values.cli;
const rounds = Number(values.rounds);

const inputs: [string, string][] = [
  ["out/s3-malicious", await outSetFile("s3-malicious.mig")],
  ["out/s1-plugged-300M", await outSetFile("s1-plugged-300M.mig")],
  ["out-small/s3-malicious", await realdata("out-small", "s3-malicious.mig")],
  ["out-q10/s3-malicious", await realdata("out-q10", "s3-malicious.mig")],
];
const rows: (string | number)[][] = [];
for (const [name, file] of inputs) {
  const size = (await Deno.stat(file)).size;
  await timeShell(`cat ${q(file)} > /dev/null`); // warm the page cache
  const pipe: number[] = [];
  const file1: number[] = [];
  const stdin: number[] = [];
  for (let i = 0; i < rounds; i++) {
    pipe.push(await timeShell(`cat ${q(file)} | cat > /dev/null`));
    file1.push(await timeShell(`${q(deno)} run -A ${q(main)} inspect ${q(file)} > /dev/null`));
    stdin.push(
      await timeShell(`cat ${q(file)} | ${q(deno)} run -A ${q(main)} inspect - > /dev/null`),
    );
  }
  const p = Math.min(...pipe);
  for (const [what, times] of [["inspect FILE", file1], ["cat | inspect -", stdin]] as const) {
    rows.push([
      name,
      (size / 1e6).toFixed(0) + " MB",
      what,
      p.toFixed(3),
      Math.min(...times).toFixed(3),
      median(times).toFixed(3),
      (Math.min(...times) / p).toFixed(2) + "×",
    ]);
  }
}
printTable(
  ["stream", "size", "command", "pipe s (best)", "best s", "median s", "best / pipe"],
  rows,
);
