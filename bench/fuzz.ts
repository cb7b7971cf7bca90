/**
 * The long mutation campaign, on demand (issue 9 §5): mutated real inputs of
 * every reader against the campaign's oracles, for as long as asked.
 *
 *   deno task fuzz [--seed N] [--duration 10m] [--target NAME ...] [--workers 2]
 *                  [--out DIR] [--timeout-scale 2] [--budget full|ci] [--json]
 *   deno task fuzz --target NAME --replay CASE_SEED [--replay CASE_SEED ...] [--budget ci]
 *   deno task fuzz --target NAME --input FILE [--input FILE ...]
 *   deno task fuzz --list
 *
 * Prints the counts (cases per target, outcomes by label, ms per case) and
 * every failure with the case seed that reproduces it; failing inputs and
 * their logs go to `--out` (default `.cache/fuzz-failures/`). Exit status 0
 * when nothing failed, 1 otherwise. Not part of `deno task bench` (it is a
 * campaign, not a measurement). docs/testing.md describes the targets and
 * oracles.
 */

import { parseArgs } from "node:util";
import { formatCampaignReport, runCampaign } from "../tests/_util/fuzz/campaign.ts";
import { loadTarget, TARGET_NAMES } from "../tests/_util/fuzz/targets/mod.ts";

/** `90`, `90s`, `15m`, `2h` → milliseconds. */
function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new Error(`--duration: cannot read ${JSON.stringify(text)} (e.g. 90s, 15m, 2h)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"]!;
  return Number(m[1]) * unit;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seed: { type: "string" },
      duration: { type: "string", default: "5m" },
      cases: { type: "string" },
      target: { type: "string", multiple: true },
      workers: { type: "string", default: "2" },
      out: {
        type: "string",
        default: new URL("../.cache/fuzz-failures", import.meta.url).pathname,
      },
      replay: { type: "string", multiple: true },
      input: { type: "string", multiple: true },
      "timeout-scale": { type: "string", default: "2" },
      // `ci` as the test suite's campaign runs (a case seed from a CI failure replays under it).
      budget: { type: "string", default: "full" },
      json: { type: "boolean", default: false },
      verbose: { type: "boolean", short: "v", default: false },
      list: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.list) {
    for (const name of TARGET_NAMES) {
      console.log(`${name.padEnd(24)} ${(await loadTarget(name)).description}`);
    }
    Deno.exit(0);
  }
  // Heavy targets (hundreds of MB per case) run only when named.
  const targets = values.target ??
    (await Promise.all(TARGET_NAMES.map(async (n) => (await loadTarget(n)).heavy ? [] : [n])))
      .flat();
  if (values.budget !== "full" && values.budget !== "ci") {
    throw new Error(`--budget: full or ci, not ${JSON.stringify(values.budget)}`);
  }
  const budget: "full" | "ci" = values.budget;
  const seed = values.seed === undefined ? (Date.now() & 0x7fffffff) : Number(values.seed);
  if ((values.replay || values.input) && targets.length !== 1) {
    throw new Error("--replay and --input need exactly one --target");
  }
  const replay = values.replay?.map((s) => ({ target: targets[0]!, caseSeed: Number(s) })) ??
    (values.input
      ? await Promise.all(
        values.input.map(async (path) => ({
          target: targets[0]!,
          caseSeed: 0,
          input: await Deno.readFile(path),
        })),
      )
      : undefined);
  console.error(
    replay
      ? `replaying ${replay.length} case(s) of ${targets[0]}`
      : `campaign seed ${seed}, targets ${targets.join(", ")}, ${
        values.cases ? `${values.cases} cases per target` : values.duration
      }, ${values.workers} workers; failing inputs go to ${values.out}`,
  );
  // The first Ctrl-C stops the campaign after the running cases and prints what it found.
  const stop = new AbortController();
  const onInterrupt = () => {
    if (stop.signal.aborted) Deno.exit(130);
    console.error("stopping after the running cases (Ctrl-C again to quit at once)");
    stop.abort();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  const report = await runCampaign({
    signal: stop.signal,
    seed,
    budget,
    targets,
    ...(replay
      ? { replay }
      : values.cases
      ? { cases: Number(values.cases) }
      : { durationMs: parseDuration(values.duration) }),
    workers: replay ? 1 : Number(values.workers),
    timeoutScale: Number(values["timeout-scale"]),
    failDir: values.out,
    onCase: (c) => {
      if (values.verbose || replay || c.failure) {
        console.error(
          `${c.target} #${c.index} seed ${c.caseSeed} ${Math.round(c.ms)} ms: ${
            c.outcome ?? `FAIL ${c.failure?.kind}: ${c.failure?.message}`
          }\n  ${c.seedName}: ${c.mutations.join("; ")}`,
        );
      }
    },
  });
  Deno.removeSignalListener("SIGINT", onInterrupt);
  console.log(values.json ? JSON.stringify(report, null, 2) : formatCampaignReport(report));
  Deno.exit(report.failures.length === 0 ? 0 : 1);
}
