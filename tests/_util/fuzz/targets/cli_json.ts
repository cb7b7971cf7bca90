/**
 * Campaign target `cli-json`: mutated real streams and dumps through the
 * command line's front door, `main([...args, "--json"])` in-process, as a
 * program that reads the JSON would see them; and `scan --extract DIR`.
 *
 * Seeds: the `migration-cli` streams (some cases in gzip or zstd), the
 * `elf` and `kdump` dumps and the `mapped-ram` files of the tiny VM. Each
 * case runs `scan --json --extract DIR` and one other command with `--json`
 * (streams: `verify`, `verify --single-pass`, `filter`, `inspect`,
 * `plugmap`, `convert --to zstd|gzip` (libvirt needs a header or XML), `scan`; dumps: `strip`,
 * `convert --to` the other dump format, `scan`).
 *
 * Oracles:
 *
 * - Exit 0, 3 or 4: standard output is one JSON report of the command's
 *   schema (`schemas/<command>-report.schema.json`); nothing on standard
 *   error but a summary line, and no stack trace.
 * - Exit 1: standard error is exactly one line, a JSON error object of
 *   `schemas/error.schema.json` with a `code` that is not `internal` (a
 *   bug) and an `offset`: a safe integer for errors about the input's bytes,
 *   inside the input when it is not compressed; no stack trace; nothing on
 *   standard output (no partial report), and no output file or directory
 *   left behind (no partial output).
 * - Never exit 2: the command lines are valid.
 * - `scan --extract DIR`: on success DIR holds `manifest.json` and exactly
 *   the page files it lists, each of `byteLength` bytes with the SHA-256 it
 *   states; the manifest counts the report's findings, is `complete`, and
 *   names the input's size and SHA-256; on failure there is no DIR and no
 *   temporary folder. When the other command is `scan` too, both give the
 *   same verdict and findings.
 *
 * @module
 */

import { main } from "../../../../cli/main.ts";
import type { CliIo } from "../../../../cli/io.ts";
import { latin1Decode } from "../../../../src/io/text.ts";
import { sha256Hex } from "../../hashing.ts";
import { schemaFolderLoader, validate } from "../../json_schema.ts";
import { mutate, type Mutated, type Rng } from "../mutate.ts";
import { agree, OracleFailure } from "../oracle.ts";
import type { CaseContext, FuzzTarget, SeedInput } from "../target.ts";
import { elfSeeds, kdumpSeeds, tinyPlugMapJson } from "./dumps.ts";
import { mappedRamSeeds, writeSparse } from "./mapped_ram.ts";
import { MIGRATION_SEED_FILES, migrationSeeds, mutateStream } from "./migration_cli.ts";

const schemas = schemaFolderLoader(new URL("../../../../schemas/", import.meta.url));

const MANY = "100000000";

/**
 * Error codes that are not about the input's bytes, so carry no offset:
 * the CLI's own (`usage`, the operating system's), `CommandError`s and
 * `OutputError`s (docs/glossary.md). Every other code is a `FormatError`'s.
 */
const CODES_WITHOUT_OFFSET = new Set([
  "usage",
  "not-found",
  "permission-denied",
  "os-error",
  "no-devices",
  "no-plug-state",
  "extraction-incomplete",
  "output-is-input",
  "output-exists",
  "not-writable",
  "io",
]);

type Kind = "migration" | "mapped-ram" | "elf" | "kdump";

/** Which reader a seed is for (the seed names say it). */
function kindOf(seed: SeedInput): Kind {
  if (seed.name.includes("mapped-ram")) return "mapped-ram";
  if (/\.mig\b/.test(seed.name)) return "migration";
  return /kdump/.test(seed.name) ? "kdump" : "elf";
}

async function cliJsonSeeds(): Promise<SeedInput[]> {
  return [
    ...await migrationSeeds(MIGRATION_SEED_FILES),
    ...await elfSeeds(),
    ...await kdumpSeeds(),
    ...await mappedRamSeeds(),
  ];
}

function mutateAny(seed: SeedInput, rng: Rng): Mutated {
  return kindOf(seed) === "migration"
    ? mutateStream(seed, rng)
    : mutate(seed.bytes, seed.anatomy, rng);
}

/** What `main()` gave. */
interface MainResult {
  args: string[];
  code: number;
  out: string;
  err: string;
}

async function runMain(args: string[]): Promise<MainResult> {
  let out = "";
  let err = "";
  const io: CliIo = {
    out(t) {
      out += t;
      return Promise.resolve();
    },
    err(t) {
      err += t;
      return Promise.resolve();
    },
    stderrIsTerminal: false,
  };
  const code = await main(args, io);
  return { args, code, out, err };
}

const STACK_LINE = /^\s+at .+[:(]/m;

/**
 * Check the `--json` contract of one run; returns the parsed report (exit 0/3/4) or the error code.
 *
 * @param r The run.
 * @param maxOffset The largest offset an input error may name, or `undefined` (compressed input).
 */
function checkJsonContract(
  r: MainResult,
  maxOffset: number | undefined,
): { report?: Record<string, unknown>; error?: string } {
  const what = `vmem-dump ${r.args.join(" ")}`;
  if (STACK_LINE.test(r.err) || STACK_LINE.test(r.out)) {
    throw new OracleFailure("untyped-error", `${what}: a stack trace:\n${r.err.slice(0, 2000)}`);
  }
  if (r.code === 2) {
    throw new OracleFailure(
      "untyped-error",
      `${what}: usage error on a valid command line: ${r.err}`,
    );
  }
  if (r.code === 1) {
    const lines = r.err.split("\n").filter((l) => l !== "");
    if (lines.length !== 1) {
      throw new OracleFailure(
        "untyped-error",
        `${what}: exit 1 with ${lines.length} lines on stderr, not one JSON error: ${
          r.err.slice(0, 2000)
        }`,
      );
    }
    let parsed: { error: { code: string; message: string; offset: number | null } };
    try {
      parsed = JSON.parse(lines[0]!);
    } catch {
      throw new OracleFailure("untyped-error", `${what}: stderr is not JSON: ${lines[0]}`);
    }
    const problems = validate(parsed, "error.schema.json", schemas);
    if (problems.length > 0) {
      throw new OracleFailure(
        "untyped-error",
        `${what}: the JSON error breaks its schema (${problems.join("; ")}): ${lines[0]}`,
      );
    }
    const { code, offset, message } = parsed.error;
    if (code === "internal") {
      throw new OracleFailure("untyped-error", `${what}: an internal error: ${message}`);
    }
    if (!CODES_WITHOUT_OFFSET.has(code)) {
      if (offset === null || !Number.isSafeInteger(offset) || offset < 0) {
        throw new OracleFailure("bad-offset", `${what}: ${code} with offset ${offset}: ${message}`);
      }
      if (maxOffset !== undefined && offset > maxOffset) {
        throw new OracleFailure(
          "bad-offset",
          `${what}: ${code} at offset ${offset}, beyond the input's ${maxOffset} bytes: ${message}`,
        );
      }
    }
    if (r.out !== "" && code !== "extraction-incomplete") {
      throw new OracleFailure(
        "disagreement",
        `${what}: failed (${code}) after printing ${r.out.length} bytes on stdout: ${
          r.out.slice(0, 200)
        }`,
      );
    }
    return { error: code };
  }
  if (r.code !== 0 && r.code !== 3 && r.code !== 4) {
    throw new OracleFailure("untyped-error", `${what}: exit ${r.code}: ${r.err}`);
  }
  let report: Record<string, unknown>;
  try {
    report = JSON.parse(r.out);
  } catch {
    throw new OracleFailure(
      "untyped-error",
      `${what}: exit ${r.code} but stdout is not one JSON report: ${r.out.slice(0, 200)}`,
    );
  }
  const command = r.args[0]!;
  const problems = validate(report, `${command}-report.schema.json`, schemas);
  if (problems.length > 0) {
    throw new OracleFailure(
      "untyped-error",
      `${what}: the report breaks its schema: ${problems.slice(0, 5).join("; ")}`,
    );
  }
  if (/^\{"error"/m.test(r.err)) {
    throw new OracleFailure("disagreement", `${what}: exit ${r.code} with a JSON error: ${r.err}`);
  }
  return { report };
}

/** Names in `dir` other than `allowed`. */
async function extraNames(dir: string, allowed: readonly string[]): Promise<string[]> {
  const extra: string[] = [];
  for await (const e of Deno.readDir(dir)) if (!allowed.includes(e.name)) extra.push(e.name);
  return extra.sort();
}

interface Manifest {
  pages: { file: string | null; byteLength: number; sha256: string }[];
  input: { byteLength: number; sha256: string };
  findings: number;
  pageFiles: number;
  complete: boolean;
  verdict: string;
}

/** The extraction folder against its manifest and the scan report. */
async function checkExtraction(
  dir: string,
  report: Record<string, unknown>,
  input: Uint8Array,
  inputSha256: string,
): Promise<void> {
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`)) as Manifest;
  const files = manifest.pages.flatMap((p) => p.file === null ? [] : [p.file]);
  const extra = await extraNames(dir, ["manifest.json", ...files]);
  agree(extra.length === 0, `--extract: files the manifest does not list: ${extra.join(", ")}`);
  agree(
    files.length === manifest.pageFiles,
    `--extract: ${files.length} page files listed, pageFiles ${manifest.pageFiles}`,
  );
  for (const p of manifest.pages) {
    if (p.file === null) continue;
    const bytes = await Deno.readFile(`${dir}/${p.file}`);
    agree(bytes.length === p.byteLength, `--extract: ${p.file} has ${bytes.length} bytes`);
    agree(sha256Hex(bytes) === p.sha256, `--extract: ${p.file} does not hash to its sha256`);
  }
  const summary = report.summary as { findings: number };
  agree(
    manifest.findings === summary.findings && manifest.pages.length === summary.findings,
    `--extract: manifest findings ${manifest.findings} (${manifest.pages.length} pages), ` +
      `report ${summary.findings}`,
  );
  agree(manifest.complete, `--extract: manifest not complete`);
  agree(manifest.verdict === report.verdict, `--extract: verdict ${manifest.verdict}`);
  agree(
    manifest.input.byteLength === input.length && manifest.input.sha256 === inputSha256,
    `--extract: the manifest names another input (${manifest.input.byteLength} bytes)`,
  );
}

/**
 * `compressed` for gzip and zstd; `flattened` for a flattened kdump, whose errors name offsets
 * in the file its records stand for (as the `kdump` target allows; docs/dumps.md); else `raw`.
 */
function containerOf(bytes: Uint8Array): "raw" | "compressed" | "flattened" {
  const gzip = bytes[0] === 0x1f && bytes[1] === 0x8b;
  const zstd = bytes[0] === 0x28 && bytes[1] === 0xb5 && bytes[2] === 0x2f && bytes[3] === 0xfd;
  if (gzip || zstd) return "compressed";
  return latin1Decode(bytes.subarray(0, 12)) === "makedumpfile" ? "flattened" : "raw";
}

/** The other command of a case (its arguments before `--json`), and the output it may write. */
function otherCommand(kind: Kind, path: string, dir: string, pm: string, rng: Rng): string[] {
  const plug = kind === "elf" || kind === "kdump" ? ["--plugmap", pm] : [];
  const scan = ["scan", path, ...plug, "--max-findings", MANY, "--hexdump-bytes", "0"];
  if (kind === "elf" || kind === "kdump") {
    const r = rng.int(3);
    if (r === 0) return ["strip", path, `${dir}/out`, ...plug];
    if (r === 1) return ["convert", path, `${dir}/out`, "--to", kind === "elf" ? "kdump" : "elf"];
    return scan;
  }
  const choices = [
    ["verify", path, "--max-violations", MANY],
    ["verify", path, "--single-pass", "--max-violations", MANY],
    ["filter", path, `${dir}/out`],
    ["inspect", path],
    ["plugmap", path],
    ["convert", path, `${dir}/out`, "--to", ["zstd", "gzip"][rng.int(2)]!],
    scan,
  ];
  // The single-pass verifier and convert do not read mapped-ram files.
  const usable = kind === "mapped-ram" ? [choices[0]!, choices[3]!, choices[4]!, scan] : choices;
  return usable[rng.int(usable.length)]!;
}

async function runCliJson(input: Uint8Array, context: CaseContext): Promise<string> {
  const dir = context.workDir;
  const kind = kindOf(context.seed);
  const path = `${dir}/in`;
  const pm = `${dir}/plugmap.json`;
  if (kind === "mapped-ram") await writeSparse(path, input);
  else await Deno.writeFile(path, input);
  await Deno.writeTextFile(pm, await tinyPlugMapJson());
  const maxOffset = containerOf(input) === "raw" ? input.length : undefined;
  const base = ["in", "plugmap.json"];

  const plug = kind === "elf" || kind === "kdump" ? ["--plugmap", pm] : [];
  const ex = await runMain([
    "scan",
    path,
    ...plug,
    "--max-findings",
    MANY,
    "--hexdump-bytes",
    "0",
    "--extract",
    `${dir}/pages`,
    "--json",
  ]);
  const scanned = checkJsonContract(ex, maxOffset);
  if (scanned.report !== undefined) {
    await checkExtraction(`${dir}/pages`, scanned.report, input, sha256Hex(input));
  }
  const extra = await extraNames(dir, scanned.report !== undefined ? [...base, "pages"] : base);
  if (extra.length > 0) {
    throw new OracleFailure(
      "leftover-file",
      `scan --extract (${scanned.error ?? `exit ${ex.code}`}) left ${extra.join(", ")}`,
    );
  }
  await Deno.remove(`${dir}/pages`, { recursive: true }).catch(() => {});

  const args = otherCommand(kind, path, dir, pm, context.rng);
  const slow = args[0] === "convert" && (kind === "elf" || kind === "kdump");
  // Dump conversion starts compression Workers: in CI, a quarter of the cases that draw it.
  if (slow && context.budget === "ci" && !context.rng.chance(0.25)) {
    return `scan ${scanned.error ?? `exit-${ex.code}`}`;
  }
  const other = await runMain([...args, "--json"]);
  const result = checkJsonContract(other, maxOffset);
  const writes = args.includes(`${dir}/out`);
  const left = await extraNames(
    dir,
    writes && result.report !== undefined ? [...base, "out"] : base,
  );
  if (left.length > 0) {
    throw new OracleFailure(
      "leftover-file",
      `${args[0]} (${result.error ?? `exit ${other.code}`}) left ${left.join(", ")}`,
    );
  }
  if (args[0] === "scan") {
    agree(
      (result.error ?? `exit-${other.code}`) === (scanned.error ?? `exit-${ex.code}`),
      `scan with --extract: ${scanned.error ?? `exit ${ex.code}`}, without: ${
        result.error ?? `exit ${other.code}`
      }`,
    );
    if (result.report !== undefined && scanned.report !== undefined) {
      const a = result.report.summary as { findings: number };
      const b = scanned.report.summary as { findings: number };
      agree(
        a.findings === b.findings,
        `scan findings ${a.findings} vs ${b.findings} with --extract`,
      );
    }
  }
  return `${args[0]} ${result.error ?? `exit-${other.code}`}`;
}

/** The target. */
export const cliJsonTarget: FuzzTarget = {
  name: "cli-json",
  description: "streams, dumps and mapped-ram files through main() with --json: one JSON error " +
    "(code, offset, no stack) or one schema-valid report, no partial output; scan --extract " +
    "matches its manifest",
  timeoutMs: 30_000,
  seeds: cliJsonSeeds,
  mutate: mutateAny,
  run: runCliJson,
};
