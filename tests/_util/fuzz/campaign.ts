/**
 * The mutation campaign: seeded mutations of real inputs of every reader,
 * run against oracles in worker processes that are killed when a case hangs.
 *
 * A campaign is a seed, a list of targets and a budget (cases per target,
 * or a duration). Case `i` of target `t` is fully determined by
 * `caseSeedOf(seed, t, i)`: the seed input it starts from and every
 * mutation. A failure is reported with that case seed, and replaying it
 * (`deno task fuzz --target t --replay SEED`) gives the same bytes; with a
 * `failDir`, the failing input is also written there for triage.
 *
 * Used by the CI tests in `tests/fuzz/` (a fixed seed, a few hundred cases)
 * and by `bench/fuzz.ts` (any seed, any duration).
 *
 * @module
 */

import assert from "node:assert/strict";
import { caseSeedOf } from "./mutate.ts";
import { makeScratchDir } from "./scratch.ts";
import {
  type FailureReport,
  GIVEN_INPUT,
  REPLY_PREFIX,
  type WorkerReply,
  type WorkerRequest,
} from "./worker.ts";

/** Options of {@linkcode runCampaign}. */
export interface CampaignOptions {
  /** Campaign seed. */
  seed: number;
  /** Target names (see `targets/mod.ts`). */
  targets: string[];
  /** Cases per target (count mode). One of `cases`, `durationMs` or `replay`. */
  cases?: number | Partial<Record<string, number>>;
  /** Run until this much time has passed (duration mode). */
  durationMs?: number;
  /**
   * Run exactly these cases (replay mode); with `input`, that input as it is
   * (a failing input saved earlier) instead of the case seed's mutation.
   */
  replay?: { target: string; caseSeed: number; input?: Uint8Array }[];
  /** Parallel workers. @default {1} */
  workers?: number;
  /** Multiply every target's timeout (a loaded machine). @default {1} */
  timeoutScale?: number;
  /** Write each failing input and its log here. @default {undefined} */
  failDir?: string;
  /** Largest single allocation allowed inside a case. @default {65 MiB} */
  allocationCapBytes?: number;
  /** Process RSS above which a case fails (`memory`). @default {3 GiB} */
  rssLimitBytes?: number;
  /**
   * `ci`: targets leave out their slowest steps (e.g. dump conversion, which starts
   * compression Workers) in most cases; `full`: every step at its usual rate.
   * @default {"full"}
   */
  budget?: "ci" | "full";
  /** Called after every case. */
  onCase?: (record: CaseRecord) => void;
  /** Stop dispatching cases when aborted (the running ones finish; the report covers them). */
  signal?: AbortSignal;
}

/** One case as the campaign saw it. */
export interface CaseRecord {
  /** Target name. */
  target: string;
  /** Case number within the target (`-1` in replay mode). */
  index: number;
  /** The seed that reproduces it. */
  caseSeed: number;
  /** The seed input it was mutated from. */
  seedName: string;
  /** The mutations applied. */
  mutations: string[];
  /** Outcome label, when it finished without failure. */
  outcome: string | undefined;
  /** What failed. */
  failure: FailureReport | undefined;
  /** Notes the target made (counted, not failures). */
  notes: string[];
  /** Wall time. */
  ms: number;
  /** Where the failing input was written. */
  savedAs?: string;
}

/** Counts of one target. */
export interface TargetReport {
  /** Cases run. */
  cases: number;
  /** Seed inputs. */
  seeds: string[];
  /** Outcomes by label (`exit-0`, `FormatError:migration/bad-section`, …). */
  outcomes: Record<string, number>;
  /** The failing cases. */
  failures: CaseRecord[];
  /** Notes by text. */
  notes: Record<string, number>;
  /** Mutations applied, by kind (`field`, `bit-flip`, `span-move`, `number`, …). */
  mutations: Record<string, number>;
  /** Total wall time of its cases. */
  ms: number;
  /** The unmutated seed inputs' outcomes (each must pass the oracles). */
  baseline: { seedName: string; outcome?: string; failure?: FailureReport }[];
}

/** What a campaign found. */
export interface CampaignReport {
  /** Campaign seed. */
  seed: number;
  /** The budget the targets ran under ({@linkcode CampaignOptions.budget}); a replay needs the same. */
  budget: "ci" | "full";
  /** Wall time. */
  elapsedMs: number;
  /** Of which: starting the workers (loading the seeds) and running the unmutated seeds. */
  setupMs: { start: number; baseline: number };
  /** Per target. */
  targets: Record<string, TargetReport>;
  /** Failures of all targets. */
  failures: CaseRecord[];
}

/** Above the library's largest named cap (a 64 MiB vmdesc, read with its 6 header bytes). */
const DEFAULT_CAP = 65 << 20;
const DEFAULT_RSS_LIMIT = 3 * 1024 ** 3;
const INIT_TIMEOUT_MS = 300_000;

/** Default timeouts live in the targets; the campaign only scales them. */
async function targetTimeouts(names: string[]): Promise<Record<string, number>> {
  const { loadTarget } = await import("./targets/mod.ts");
  const out: Record<string, number> = {};
  for (const n of names) out[n] = (await loadTarget(n)).timeoutMs;
  return out;
}

interface Job {
  target: string;
  index: number;
  caseSeed: number;
  input?: Uint8Array;
}

/** The mutation list of an unmutated seed's baseline run. */
const UNMUTATED = "(unmutated seed)";
const WORKER_SCRIPT = decodeURIComponent(new URL("./worker.ts", import.meta.url).pathname);
/** How much of a worker's standard error is kept for a failure report. */
const STDERR_KEPT = 16 << 10;

/** One worker process and the case it is running. */
class CampaignWorker {
  #child: Deno.ChildProcess | undefined;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #reading: Promise<void> | undefined;
  #stderr = "";
  #workDir = "";
  #onMessage: ((m: WorkerReply) => void) | undefined;

  constructor(readonly options: CampaignOptions) {}

  /** The file a case's input is written to before it runs (outside the case folder). */
  get inputPath(): string {
    return `${this.#workDir}.input`;
  }

  async start(): Promise<Record<string, string[]>> {
    this.#workDir = await makeScratchDir("vmem-fuzz-");
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", WORKER_SCRIPT],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    this.#stderr = "";
    this.#reading = Promise.all([this.#readReplies(child), this.#readStderr(child)]).then(() => {});
    const reply = await this.#await(
      {
        type: "init",
        targets: this.options.targets,
        workDir: this.#workDir,
        inputPath: this.inputPath,
        allocationCapBytes: this.options.allocationCapBytes ?? DEFAULT_CAP,
        rssLimitBytes: this.options.rssLimitBytes ?? DEFAULT_RSS_LIMIT,
        budget: this.options.budget ?? "full",
      },
      INIT_TIMEOUT_MS,
      (m) => m.type === "ready" || m.type === "init-failed" || m.type === "uncaught",
    );
    if (reply === undefined) throw new Error("the campaign worker did not start in time");
    if (reply.type !== "ready") {
      throw new Error(
        `the campaign worker did not start: ${
          "message" in reply ? reply.message : ""
        }\n${this.#stderr}`,
      );
    }
    return reply.seeds;
  }

  /** Hand each reply line to the waiting request; the end of output means the process died. */
  async #readReplies(child: Deno.ChildProcess): Promise<void> {
    let buffered = "";
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += text;
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith(REPLY_PREFIX)) {
          this.#onMessage?.(JSON.parse(line.slice(REPLY_PREFIX.length)) as WorkerReply);
        }
      }
    }
    if (this.#child === child) {
      const status = await child.status;
      this.#onMessage?.({
        type: "uncaught",
        message: `the worker process ended (exit ${status.code}${
          status.signal ? `, ${status.signal}` : ""
        })`,
        stack: this.#stderr.slice(-4096),
      });
    }
  }

  async #readStderr(child: Deno.ChildProcess): Promise<void> {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      this.#stderr = (this.#stderr + text).slice(-STDERR_KEPT);
    }
  }

  /** Send `request`; resolve with the first reply `until` accepts, or `undefined` after `timeoutMs`. */
  #await(
    request: WorkerRequest,
    timeoutMs: number,
    until: (m: WorkerReply) => boolean,
    onOther?: (m: WorkerReply) => void,
  ): Promise<WorkerReply | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#onMessage = undefined;
        resolve(undefined);
      }, timeoutMs);
      this.#onMessage = (m) => {
        if (until(m)) {
          clearTimeout(timer);
          this.#onMessage = undefined;
          resolve(m);
        } else {
          onOther?.(m);
        }
      };
      this.#stdin!.write(new TextEncoder().encode(JSON.stringify(request) + "\n")).catch(() => {
        // The process is gone: its end of output reports it.
      });
    });
  }

  /** Run one case; on a hang or an uncaught exception the worker is replaced. */
  async run(job: Job, timeoutMs: number): Promise<CaseRecord & { bytes: Uint8Array | undefined }> {
    const t0 = performance.now();
    let started: Extract<WorkerReply, { type: "start" }> | undefined;
    const { input, ...rest } = job;
    let inputFile: string | undefined;
    if (input !== undefined) {
      inputFile = `${this.#workDir}.given`;
      await Deno.writeFile(inputFile, input);
    }
    const reply = await this.#await(
      { type: "case", ...rest, ...(inputFile ? { inputFile } : {}) },
      timeoutMs,
      (m) => m.type === "done" || m.type === "uncaught",
      (m) => {
        if (m.type === "start") started = m;
      },
    );
    const base = {
      target: job.target,
      index: job.index,
      caseSeed: job.caseSeed,
      seedName: started?.seedName ?? "?",
      mutations: started?.mutations ?? [],
      bytes: undefined as Uint8Array | undefined,
    };
    if (started !== undefined && (reply === undefined || reply.type !== "done" || reply.failure)) {
      base.bytes = await Deno.readFile(this.inputPath).catch(() => undefined);
    }
    const ms = performance.now() - t0;
    if (reply === undefined || reply.type === "uncaught") {
      await this.restart();
      const failure: FailureReport = reply === undefined
        ? { kind: "hang", message: `no answer within ${Math.round(timeoutMs)} ms`, stack: "" }
        : { kind: "uncaught", message: reply.message, stack: reply.stack };
      return { ...base, outcome: undefined, failure, notes: [], ms };
    }
    if (reply.type !== "done") throw new Error(`unexpected worker reply ${reply.type}`);
    return { ...base, outcome: reply.outcome, failure: reply.failure, notes: reply.notes, ms };
  }

  /** Run the target's unmutated seeds. */
  async baseline(target: string, timeoutMs: number): Promise<TargetReport["baseline"]> {
    const reply = await this.#await(
      { type: "baseline", target },
      timeoutMs,
      (m) => m.type === "baseline-done" || m.type === "uncaught",
    );
    if (reply?.type === "baseline-done") return reply.results;
    await this.restart();
    return [{
      seedName: "?",
      failure: reply?.type === "uncaught"
        ? { kind: "uncaught", message: reply.message, stack: reply.stack }
        : { kind: "hang", message: `baseline not done within ${timeoutMs} ms`, stack: "" },
    }];
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child !== undefined) {
      await this.#stdin?.close().catch(() => {});
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await this.#reading;
    }
    if (this.#workDir) {
      for (const path of [this.#workDir, this.inputPath, `${this.#workDir}.given`]) {
        await Deno.remove(path, { recursive: true }).catch(() => {});
      }
    }
  }
}

/** The jobs of a campaign, in round-robin order over the targets. */
function* jobs(options: CampaignOptions, deadline: number): Generator<Job> {
  if (options.replay) {
    for (const r of options.replay) {
      yield {
        target: r.target,
        index: -1,
        caseSeed: r.caseSeed,
        ...(r.input ? { input: r.input } : {}),
      };
    }
    return;
  }
  const perTarget = (t: string) =>
    typeof options.cases === "number"
      ? options.cases
      : options.cases?.[t] ?? (options.durationMs !== undefined ? Infinity : 0);
  for (let i = 0;; i++) {
    let any = false;
    for (const t of options.targets) {
      if (i >= perTarget(t)) continue;
      if (performance.now() > deadline || options.signal?.aborted) return;
      any = true;
      yield { target: t, index: i, caseSeed: caseSeedOf(options.seed, t, i) };
    }
    if (!any) return;
  }
}

/** Write a failing case's input and log to `dir`; returns the input's path. */
async function saveFailure(
  dir: string,
  record: CaseRecord,
  bytes: Uint8Array,
): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const base = `${dir}/${record.target}-${record.caseSeed}`;
  await Deno.writeFile(`${base}.bin`, bytes);
  await Deno.writeTextFile(
    `${base}.txt`,
    [
      `target: ${record.target}`,
      `case seed: ${record.caseSeed} (replay: deno task fuzz --target ${record.target} --replay ${record.caseSeed},`,
      `  or, after the harness or its seeds changed: --input ${dir}/${record.target}-${record.caseSeed}.bin)`,
      `seed input: ${record.seedName}`,
      `mutations:`,
      ...record.mutations.map((m) => `  ${m}`),
      `failure: ${record.failure?.kind}: ${record.failure?.message}`,
      record.failure?.stack ?? "",
      "",
    ].join("\n"),
  );
  return `${base}.bin`;
}

/**
 * Run a campaign.
 *
 * @param options Seed, targets, budget, workers, where failing inputs go.
 * @returns Counts per target and every failure.
 */
export async function runCampaign(options: CampaignOptions): Promise<CampaignReport> {
  const t0 = performance.now();
  const deadline = options.durationMs !== undefined ? t0 + options.durationMs : Infinity;
  const timeouts = await targetTimeouts(options.targets);
  const scale = options.timeoutScale ?? 1;
  const report: CampaignReport = {
    seed: options.seed,
    budget: options.budget ?? "full",
    elapsedMs: 0,
    setupMs: { start: 0, baseline: 0 },
    targets: {},
    failures: [],
  };
  for (const t of options.targets) {
    report.targets[t] = {
      cases: 0,
      seeds: [],
      outcomes: {},
      failures: [],
      notes: {},
      mutations: {},
      ms: 0,
      baseline: [],
    };
  }
  const pool: CampaignWorker[] = [];
  try {
    for (let i = 0; i < Math.max(1, options.workers ?? 1); i++) {
      const w = new CampaignWorker(options);
      pool.push(w);
      const seeds = await w.start();
      for (const [t, names] of Object.entries(seeds)) report.targets[t]!.seeds = names;
    }
    report.setupMs.start = performance.now() - t0;
    if (!options.replay) {
      // The unmutated seeds first: a failure there is a broken seed or a broken oracle.
      for (const t of options.targets) {
        const tr = report.targets[t]!;
        tr.baseline = await pool[0]!.baseline(
          t,
          timeouts[t]! * scale * Math.max(1, tr.seeds.length),
        );
        for (const b of tr.baseline) {
          if (b.failure === undefined) continue;
          const record: CaseRecord = {
            target: t,
            index: -1,
            caseSeed: -1,
            seedName: b.seedName,
            mutations: [UNMUTATED],
            outcome: undefined,
            failure: b.failure,
            notes: [],
            ms: 0,
          };
          tr.failures.push(record);
          report.failures.push(record);
        }
      }
    }
    report.setupMs.baseline = performance.now() - t0 - report.setupMs.start;
    const queue = jobs(options, deadline);
    const next = () => {
      const r = queue.next();
      return r.done ? undefined : r.value;
    };
    await Promise.all(pool.map(async (w) => {
      for (let job = next(); job !== undefined; job = next()) {
        const { bytes, ...record } = await w.run(job, timeouts[job.target]! * scale);
        const tr = report.targets[job.target]!;
        tr.cases++;
        tr.ms += record.ms;
        for (const n of record.notes) tr.notes[n] = (tr.notes[n] ?? 0) + 1;
        for (const m of record.mutations) {
          const kind = m.split(" ")[0]!;
          tr.mutations[kind] = (tr.mutations[kind] ?? 0) + 1;
        }
        if (record.failure === undefined) {
          const label = record.outcome ?? "?";
          tr.outcomes[label] = (tr.outcomes[label] ?? 0) + 1;
        } else {
          const label = `FAIL ${record.failure.kind}`;
          tr.outcomes[label] = (tr.outcomes[label] ?? 0) + 1;
          if (options.failDir !== undefined && bytes !== undefined) {
            record.savedAs = await saveFailure(options.failDir, record, bytes);
          }
          tr.failures.push(record);
          report.failures.push(record);
        }
        options.onCase?.(record);
      }
    }));
  } finally {
    for (const w of pool) await w.stop();
  }
  report.elapsedMs = performance.now() - t0;
  return report;
}

/**
 * The report as text: per target the cases, seeds and outcomes by label,
 * then every failure with its reproducer.
 *
 * @param report A campaign's report.
 * @returns Lines of text.
 */
export function formatCampaignReport(report: CampaignReport): string {
  const lines = [
    `campaign seed ${report.seed}: ${
      Object.values(report.targets).reduce((a, t) => a + t.cases, 0)
    } cases in ${(report.elapsedMs / 1000).toFixed(1)} s (start ${
      (report.setupMs.start / 1000).toFixed(1)
    } s, unmutated seeds ${
      (report.setupMs.baseline / 1000).toFixed(1)
    } s), ${report.failures.length} failures`,
  ];
  for (const [name, t] of Object.entries(report.targets)) {
    if (t.baseline.length > 0) {
      lines.push(
        `  ${name}: unmutated seeds: ${
          t.baseline.map((b) => `${b.seedName}: ${b.outcome ?? `FAIL ${b.failure?.kind}`}`).join(
            "; ",
          )
        }`,
      );
    }
    lines.push(
      `  ${name}: ${t.cases} cases over ${t.seeds.length} seed inputs, ${
        (t.ms / Math.max(1, t.cases)).toFixed(0)
      } ms per case`,
    );
    const kinds = Object.entries(t.mutations).sort((a, b) => b[1] - a[1]);
    lines.push(`    mutations: ${kinds.map(([k, n]) => `${k} ${n}`).join(", ")}`);
    const outcomes = Object.entries(t.outcomes).sort((a, b) => b[1] - a[1]);
    for (const [label, n] of outcomes) lines.push(`    ${String(n).padStart(6)}  ${label}`);
    for (const [note, n] of Object.entries(t.notes).sort((a, b) => b[1] - a[1])) {
      lines.push(`    ${String(n).padStart(6)}  note: ${note}`);
    }
  }
  for (const f of report.failures) {
    lines.push(
      `FAIL ${f.target} case seed ${f.caseSeed} (${f.seedName}; ${f.mutations.join("; ")}): ` +
        `${f.failure?.kind}: ${f.failure?.message}`,
      f.mutations[0] === UNMUTATED
        ? `  an unmutated seed input fails: the seed or the oracle is broken`
        : `  replay: deno task fuzz --target ${f.target}` +
          (f.mutations[0] === GIVEN_INPUT
            ? ` --input ${f.savedAs ?? "FILE"}`
            : ` --replay ${f.caseSeed}${f.savedAs ? ` (input: ${f.savedAs})` : ""}`) +
          (report.budget === "ci" ? " --budget ci" : ""),
    );
    if (f.failure?.stack) {
      lines.push(...f.failure.stack.split("\n").slice(0, 12).map((l) => `    ${l}`));
    }
  }
  return lines.join("\n") + "\n";
}

/**
 * Fail (throw an `AssertionError` whose message is the whole report, every
 * failure with the case seed that replays it) unless the campaign ran every
 * case asked for without a failure and each target saw at least two different
 * outcomes (a campaign that never reaches a reader, or never gets past its
 * first check, proves nothing).
 *
 * @param report The campaign's report.
 * @param cases The cases asked for, per target.
 * @throws {AssertionError} as described.
 */
export function assertCleanCampaign(report: CampaignReport, cases: Record<string, number>): void {
  const text = formatCampaignReport(report);
  assert.equal(report.failures.length, 0, text);
  for (const [name, n] of Object.entries(cases)) {
    const t = report.targets[name];
    assert.ok(t !== undefined, `${name}: not in the campaign\n${text}`);
    assert.equal(t.cases, n, `${name}: ${t.cases} of ${n} cases ran\n${text}`);
    assert.ok(
      Object.keys(t.outcomes).length >= 2,
      `${name}: every case ended alike (${Object.keys(t.outcomes).join(", ")})\n${text}`,
    );
  }
}
