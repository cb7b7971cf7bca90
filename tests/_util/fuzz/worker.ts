/**
 * The process that runs the cases of the mutation campaign. The campaign
 * (`campaign.ts`) runs it as a child `deno run` process so that a case that
 * hangs, even in a synchronous loop, or dies can be stopped by killing it,
 * so that the allocation guard replaces the global constructors of this
 * process only, and so that its memory is its own. (A Web Worker served
 * first, but `deno test` type-checks a Worker's module graph each time one
 * starts: 15 s per test file on this machine.)
 *
 * Protocol: one JSON message per line, {@linkcode WorkerRequest}s on
 * standard input, {@linkcode WorkerReply}s on standard output (each line
 * starts with {@linkcode REPLY_PREFIX}, other output is ignored). `init` →
 * `ready`; then per case `case` → `start` (the mutated bytes are written to
 * the file `inputPath` first, so the campaign keeps a failing input even if
 * the case never ends) → `done`. An exception that escapes every handler is
 * reported as `uncaught`.
 *
 * @module
 */

import {
  installAllocationGuard,
  setAllocationCap,
  takeRefusedAllocations,
} from "./allocation_guard.ts";
import { mutate, Rng } from "./mutate.ts";
import { type FailureKind, failureStack, OracleFailure } from "./oracle.ts";
import type { FuzzTarget, SeedInput } from "./target.ts";
import { loadTarget } from "./targets/mod.ts";

/** Messages to the worker. */
export type WorkerRequest =
  | {
    type: "init";
    targets: string[];
    workDir: string;
    /** Where each case's input is written before it runs. */
    inputPath: string;
    allocationCapBytes: number;
    rssLimitBytes: number;
    budget: "ci" | "full";
  }
  | { type: "case"; target: string; index: number; caseSeed: number; inputFile?: string }
  | { type: "baseline"; target: string };

/** A failure as the worker reports it. */
export interface FailureReport {
  /** Which oracle. */
  kind: FailureKind;
  /** One line. */
  message: string;
  /** Stack of the error behind it, when there is one. */
  stack: string;
}

/** Messages from the worker. */
export type WorkerReply =
  | { type: "ready"; seeds: Record<string, string[]> }
  | { type: "init-failed"; message: string }
  | {
    type: "start";
    target: string;
    index: number;
    caseSeed: number;
    seedName: string;
    mutations: string[];
  }
  | {
    type: "done";
    target: string;
    index: number;
    caseSeed: number;
    outcome: string | undefined;
    failure: FailureReport | undefined;
    notes: string[];
  }
  | { type: "uncaught"; message: string; stack: string }
  | {
    type: "baseline-done";
    target: string;
    results: { seedName: string; outcome?: string; failure?: FailureReport }[];
  };

const loaded = new Map<string, { target: FuzzTarget; seeds: SeedInput[] }>();
let workDir = "";
let inputPath = "";
let rssLimit = Infinity;
let allocationCap = Infinity;
let budget: "ci" | "full" = "full";

/** The mutation list of a case that runs a given input (a saved failing case) as it is. */
export const GIVEN_INPUT = "input as given";

/** Every reply line starts with this; other lines on standard output are not replies. */
export const REPLY_PREFIX = "@@vmem-fuzz ";

const encoder = new TextEncoder();

function post(m: WorkerReply): void {
  const bytes = encoder.encode(`${REPLY_PREFIX}${JSON.stringify(m)}\n`);
  for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
}

/** Bytes the files of a folder take on disk (holes not counted). */
async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dir)) {
    const st = await Deno.lstat(`${dir}/${entry.name}`);
    total += st.blocks !== null ? st.blocks * 512 : st.size;
  }
  return total;
}

/** Outputs may take this many times the input's size (plus a floor) before the case fails. */
const OUTPUT_FACTOR = 8;
const OUTPUT_FLOOR = 256 << 20;

async function emptyDir(dir: string): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    await Deno.remove(`${dir}/${entry.name}`, { recursive: true });
  }
}

/** Run every seed input of a target unmutated: each must pass the oracles. */
async function runBaseline(name: string): Promise<void> {
  const t = loaded.get(name)!;
  const results: { seedName: string; outcome?: string; failure?: FailureReport }[] = [];
  for (const seed of t.seeds) {
    const rng = new Rng(0);
    try {
      const outcome = await t.target.run(seed.bytes, {
        workDir,
        seed,
        rng,
        budget,
        note: () => {},
      });
      results.push({ seedName: seed.name, outcome });
    } catch (e) {
      results.push({
        seedName: seed.name,
        failure: {
          kind: e instanceof OracleFailure ? e.kind : "untyped-error",
          message: e instanceof Error ? e.message : String(e),
          stack: failureStack(e),
        },
      });
    }
    await emptyDir(workDir);
  }
  post({ type: "baseline-done", target: name, results });
}

async function runCase(
  name: string,
  index: number,
  caseSeed: number,
  inputFile: string | undefined,
): Promise<void> {
  const t = loaded.get(name);
  if (t === undefined) throw new Error(`target ${name} not loaded`);
  // The campaign's own copies of an input are not the reader's allocations.
  setAllocationCap(Infinity);
  const rng = new Rng(caseSeed);
  const seed = t.seeds[rng.int(t.seeds.length)]!;
  // A given input (a saved failing case) runs as it is, against the first seed's context.
  const m = inputFile !== undefined
    ? { bytes: await Deno.readFile(inputFile), mutations: [GIVEN_INPUT] }
    : t.target.mutate
    ? t.target.mutate(seed, rng)
    : mutate(seed.bytes, seed.anatomy, rng);
  await Deno.writeFile(inputPath, m.bytes);
  post({
    type: "start",
    target: name,
    index,
    caseSeed,
    seedName: seed.name,
    mutations: m.mutations,
  });
  takeRefusedAllocations();
  setAllocationCap(allocationCap);
  let outcome: string | undefined;
  let failure: FailureReport | undefined;
  const notes: string[] = [];
  try {
    outcome = await t.target.run(m.bytes, {
      workDir,
      seed,
      rng,
      budget,
      note: (n) => notes.push(n),
    });
  } catch (e) {
    failure = e instanceof OracleFailure
      ? { kind: e.kind, message: e.message, stack: failureStack(e) }
      : {
        kind: "untyped-error",
        message: `${e instanceof Error ? e.name : typeof e}: ${
          e instanceof Error ? e.message : String(e)
        }`,
        stack: failureStack(e),
      };
  }
  const refused = takeRefusedAllocations();
  if (refused.length > 0) {
    const r = refused[0]!;
    failure = {
      kind: "allocation",
      message: `${r.constructor} of ${r.byteLength} bytes` +
        (failure ? ` (the case then failed: ${failure.message})` : ""),
      stack: r.stack,
    };
  }
  const disk = await diskBytes(workDir);
  if (failure === undefined && disk > OUTPUT_FLOOR + OUTPUT_FACTOR * m.bytes.length) {
    failure = {
      kind: "output-size",
      message: `the case's files take ${disk} bytes for a ${m.bytes.length}-byte input`,
      stack: "",
    };
  }
  const rss = Deno.memoryUsage().rss;
  if (failure === undefined && rss > rssLimit) {
    failure = { kind: "memory", message: `RSS ${rss} bytes after the case`, stack: "" };
  }
  await emptyDir(workDir);
  post({ type: "done", target: name, index, caseSeed, outcome, failure, notes });
}

async function handle(m: WorkerRequest): Promise<void> {
  if (m.type === "init") {
    try {
      workDir = m.workDir;
      inputPath = m.inputPath;
      rssLimit = m.rssLimitBytes;
      budget = m.budget;
      const seeds: Record<string, string[]> = {};
      for (const name of m.targets) {
        const target = await loadTarget(name);
        const s = await target.seeds();
        if (s.length === 0) throw new Error(`target ${name} has no seed inputs`);
        loaded.set(name, { target, seeds: s });
        seeds[name] = s.map((x) => x.name);
      }
      // After loading the seeds: building them may legitimately need big buffers.
      allocationCap = m.allocationCapBytes;
      installAllocationGuard(allocationCap);
      post({ type: "ready", seeds });
    } catch (e) {
      post({ type: "init-failed", message: failureStack(e) });
    }
    return;
  }
  if (m.type === "baseline") {
    await runBaseline(m.target);
    return;
  }
  await runCase(m.target, m.index, m.caseSeed, m.inputFile);
}

if (import.meta.main) {
  // Ctrl-C reaches the whole process group: the campaign stops its workers itself.
  Deno.addSignalListener("SIGINT", () => {});
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    post({ type: "uncaught", message: String(e.reason), stack: failureStack(e.reason) });
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    post({ type: "uncaught", message: String(e.error ?? e.message), stack: failureStack(e.error) });
  });
  // One request at a time, in order: the campaign sends the next after the reply.
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buffered = "";
  for await (const text of lines) {
    buffered += text;
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() !== "") await handle(JSON.parse(line) as WorkerRequest);
    }
  }
}
