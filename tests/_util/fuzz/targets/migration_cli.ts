/**
 * Campaign target `migration-cli`: mutated real migration streams (QEMU 7.2
 * late layout, QEMU 10 early layout: testdata/migration/ and the tiny VM's
 * streams of testdata/tiny/) through the commands that read them,
 * in-process: `verify`, `verify --single-pass`, `scan`, `plugmap`,
 * `inspect` and `filter` (whose output is then verified). A few cases put
 * the mutated stream in a gzip or zstd container first.
 *
 * Oracles, beyond "a typed error or a valid result" for every command:
 *
 * - `verify` and `verify --single-pass` give the same exit code, the same
 *   error class, the same violating-record count and the same plug state;
 * - `scan` gives the same verdict (findings ⇔ violations), the same pages
 *   (gpa and stream offset of every record in an unplugged block), the same
 *   plug state and the same error class as `verify`; a stream without
 *   virtio-mem state is clean for `verify` and "no plug state" for `scan`;
 * - `plugmap` fails only when `verify` fails too, and when both succeed it
 *   states the plug state `verify` used;
 * - `filter` succeeds whenever `verify` does, its output verifies clean,
 *   and it leaves no file behind when it fails.
 *
 * @module
 */

import { gzipSync, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { type CommandResult, runCommand } from "../commands.ts";
import { agree, type OffsetBound, OracleFailure } from "../oracle.ts";
import { mutate, type Mutated, type Rng } from "../mutate.ts";
import type { CaseContext, FuzzTarget, SeedInput } from "../target.ts";
import { migrationAnatomy } from "./migration_anatomy.ts";

const TESTDATA = new URL("../../../../testdata/", import.meta.url);

/** The committed real streams the target mutates (zstd ones are decompressed first). */
export const MIGRATION_SEED_FILES = [
  "migration/q72-qboot-unplugged.mig",
  "tiny/q72-tiny.mig.zst",
  "tiny/q10-tiny.mig.zst",
  "migration/q72-s3-malicious.mig.zst",
  "migration/q10-s3-malicious.mig.zst",
];

/** Load committed real streams as seed inputs (decompressed), with their anatomy. */
export async function migrationSeeds(files: readonly string[]): Promise<SeedInput[]> {
  const out: SeedInput[] = [];
  for (const f of files) {
    const raw = await Deno.readFile(new URL(f, TESTDATA));
    const bytes = f.endsWith(".zst") ? new Uint8Array(zstdDecompressSync(raw)) : raw;
    const name = f.replace(/\.zst$/, "").replace(/^.*\//, "");
    out.push({ name, bytes, anatomy: await migrationAnatomy(bytes) });
  }
  return out;
}

const MANY = "100000000";

/** The JSON a successful `verify --json` prints (the fields compared). */
interface VerifyJson {
  verdict: string;
  plugState: { layout: string | null };
  violatingRecords: number;
  violations: { reason?: string; gpa: number; streamOffset: number; records: number }[];
  devices: ReportDevice[];
}

/** The JSON a successful `scan --json` prints (the fields compared). */
interface ScanJson {
  verdict: string;
  summary: { findings: number };
  devices: (ReportDevice & {
    blocks: { pages: { gpa: number; streamOffset: number | null }[] }[];
  })[];
}

/** The JSON `plugmap` prints. */
interface PlugmapJson {
  devices: ReportDevice[];
}

function parsed<T>(r: CommandResult, what: string): T {
  try {
    return JSON.parse(r.out) as T;
  } catch (e) {
    throw new OracleFailure("untyped-error", `${what}: exit ${r.code} but no JSON on stdout`, {
      cause: e,
    });
  }
}

/** A plug state in one comparable line per device. */
/** A device as the JSON reports give it (verify, scan: `pluggedBlocks`; plugmap: `plugged` runs). */
export interface ReportDevice {
  ramblock: string;
  memaddr: number;
  "block-size": number;
  "region-size": number;
  pluggedBlocks?: number;
  plugged?: [number, number][];
}

/** A plug state in one comparable line, one word per device. */
export function plugStateLine(devices: readonly ReportDevice[]): string {
  return devices
    .map((d) => {
      const plugged = d.pluggedBlocks ?? d.plugged?.reduce((n, [, count]) => n + count, 0);
      return `${d.ramblock}@0x${d.memaddr.toString(16)}:${d["region-size"] / d["block-size"]}x${
        d["block-size"]
      }:${plugged}`;
    })
    .sort()
    .join(" ");
}

/** What a failed command said: the error's label, or the first line it printed itself. */
function errorOf(r: CommandResult): string {
  return r.error ?? `printed: ${r.err.trim().split("\n")[0]}`;
}

/** The class of a failure: the error's class name (`FormatError`, `UnexpectedEofError`, …). */
function classOf(r: CommandResult): string {
  return r.error?.split(":")[0] ?? errorOf(r);
}

/** The full message of a failed command, for the failure report. */
function messageOf(r: CommandResult): string {
  return r.thrown instanceof Error ? r.thrown.message : r.err.trim();
}

/**
 * Two commands failed: the error classes must be equal; a different code of
 * the same class (each command stopped at a different problem first) is
 * noted.
 */
function sameFailure(
  a: CommandResult,
  an: string,
  b: CommandResult,
  bn: string,
  note: (t: string) => void,
) {
  agree(
    classOf(a) === classOf(b),
    `${an} failed with ${errorOf(a)} (${messageOf(a)}), ${bn} with ${errorOf(b)} (${messageOf(b)})`,
  );
  if (errorOf(a) !== errorOf(b)) note(`${an} ${errorOf(a)}, ${bn} ${errorOf(b)}`);
}

/** How the campaign labels scan's refusal of a stream without plug state. */
const NO_PLUG_STATE = "CommandError:no-plug-state";

/**
 * The agreement oracles between the commands' answers.
 *
 * @throws {OracleFailure} `disagreement`.
 */
function checkAgreement(
  v2: CommandResult,
  v1: CommandResult,
  sc: CommandResult,
  pm: CommandResult,
  fl: CommandResult,
  note: (text: string) => void,
): void {
  const failed = (r: CommandResult) => r.code === 1;
  agree(
    failed(v1) === failed(v2),
    `verify says ${failed(v2) ? `${errorOf(v2)} (${messageOf(v2)})` : v2.label}, ` +
      `verify --single-pass ${failed(v1) ? `${errorOf(v1)} (${messageOf(v1)})` : v1.label}`,
  );
  if (failed(v2)) {
    sameFailure(v2, "verify", v1, "verify --single-pass", note);
    agree(
      failed(sc),
      `verify failed with ${errorOf(v2)} (${messageOf(v2)}) but scan says ${sc.label}`,
    );
    sameFailure(v2, "verify", sc, "scan", note);
    if (errorOf(v2) === NO_PLUG_STATE) {
      // No plug state in the stream: nothing to judge by (verify and scan refuse alike).
      agree(
        !failed(pm) && parsed<PlugmapJson>(pm, "plugmap").devices.length === 0,
        `verify: no virtio-mem state, but plugmap says ${failed(pm) ? errorOf(pm) : pm.out.trim()}`,
      );
    }
    return;
  }
  const a = parsed<VerifyJson>(v2, "verify");
  const b = parsed<VerifyJson>(v1, "verify --single-pass");
  agree(v1.code === v2.code, `verify exit ${v2.code}, verify --single-pass exit ${v1.code}`);
  agree(
    a.violatingRecords === b.violatingRecords,
    `verify counts ${a.violatingRecords} violating records, --single-pass ${b.violatingRecords}`,
  );
  const vDevices = (j: VerifyJson) => plugStateLine(j.devices);
  agree(
    vDevices(a) === vDevices(b),
    `plug state: verify ${vDevices(a)}, --single-pass ${vDevices(b)}`,
  );
  // Violations about unplugged blocks are what scan finds in a stream; the others (RAM after
  // device state, a plug state restated) are about the stream's structure: scan warns.
  const unplugged = a.violations.filter((v) =>
    (v.reason ?? "unplugged-block") === "unplugged-block"
  );
  const structural = a.violations.length - unplugged.length;
  const unpluggedRecords = unplugged.reduce((n, v) => n + v.records, 0);
  // filter must handle every stream verify handles, unless its structure makes every output
  // fail verification.
  if (structural === 0) {
    agree(!failed(fl), `verify ${v2.label} but filter failed: ${errorOf(fl)} (${messageOf(fl)})`);
  } else if (failed(fl)) {
    note(`structural violations: filter refuses (${errorOf(fl)})`);
  }
  // scan
  agree(!failed(sc), `verify ${v2.label} but scan failed: ${errorOf(sc)} (${messageOf(sc)})`);
  const s = parsed<ScanJson>(sc, "scan");
  agree(
    (sc.code === 3) === (unpluggedRecords > 0) && (v2.code === 3) === (a.violations.length > 0),
    `verify exit ${v2.code} (${unpluggedRecords} records in unplugged blocks, ${structural} ` +
      `other violations), scan exit ${sc.code} (${s.verdict})`,
  );
  if (structural > 0) note("structural violations: verify 3, scan warns");
  agree(
    s.summary.findings === unpluggedRecords,
    `verify counts ${unpluggedRecords} records in unplugged blocks, scan ${s.summary.findings} findings`,
  );
  const fromVerify = unplugged.every((v) => v.records === 1)
    ? unplugged.map((v) => `0x${v.gpa.toString(16)}@${v.streamOffset}`).sort().join(" ")
    : undefined;
  const fromScan = s.devices.flatMap((d) =>
    d.blocks.flatMap((blk) => blk.pages.map((p) => `0x${p.gpa.toString(16)}@${p.streamOffset}`))
  ).sort().join(" ");
  agree(
    fromVerify === undefined || fromVerify === fromScan,
    `violations: verify [${fromVerify}], scan [${fromScan}]`,
  );
  const sDevices = plugStateLine(s.devices);
  agree(sDevices === vDevices(a), `plug state: verify ${vDevices(a)}, scan ${sDevices}`);
  // plugmap
  agree(!failed(pm), `verify ${v2.label} but plugmap failed: ${errorOf(pm)} (${messageOf(pm)})`);
  const p = parsed<PlugmapJson>(pm, "plugmap");
  const pDevices = plugStateLine(p.devices);
  agree(pDevices === vDevices(a), `plug state: verify ${vDevices(a)}, plugmap ${pDevices}`);
}

/** Files a command left in the case folder that it should not have. */
async function leftovers(dir: string, allowed: readonly string[]): Promise<string[]> {
  const extra: string[] = [];
  for await (const e of Deno.readDir(dir)) if (!allowed.includes(e.name)) extra.push(e.name);
  return extra;
}

function containerOf(bytes: Uint8Array): "raw" | "gzip" | "zstd" {
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) return "gzip";
  if (bytes[0] === 0x28 && bytes[1] === 0xb5 && bytes[2] === 0x2f && bytes[3] === 0xfd) {
    return "zstd";
  }
  return "raw";
}

/**
 * Run the commands on `input` in `dir` and check every oracle.
 *
 * @param input The (mutated) stream.
 * @param context The case's folder.
 * @returns `verify`'s outcome label.
 */
export async function runMigrationCommands(
  input: Uint8Array,
  context: CaseContext,
): Promise<string> {
  const dir = context.workDir;
  const path = `${dir}/in.mig`;
  const out = `${dir}/out.mig`;
  await Deno.writeFile(path, input);
  const container = containerOf(input);
  const bound: OffsetBound = {
    maxOffset: container === "raw"
      ? { migration: input.length, container: input.length }
      : { container: input.length },
  };
  const v2 = await runCommand("verify", ["--json", "--max-violations", MANY, path], bound);
  const v1 = await runCommand(
    "verify",
    ["--json", "--single-pass", "--max-violations", MANY, path],
    bound,
  );
  const sc = await runCommand(
    "scan",
    ["--json", "--max-findings", MANY, "--hexdump-bytes", "0", path],
    bound,
  );
  const pm = await runCommand("plugmap", [path], bound);
  await runCommand("inspect", ["--json", path], bound);
  const fl = await runCommand("filter", [path, out], bound);
  const extra = await leftovers(dir, fl.code === 0 ? ["in.mig", "out.mig"] : ["in.mig"]);
  if (extra.length > 0) {
    throw new OracleFailure(
      "leftover-file",
      `filter (${fl.label}) left ${extra.join(", ")} in the case folder`,
    );
  }
  if (fl.code === 0) {
    const vo = await runCommand("verify", ["--json", out]);
    if (vo.code !== 0) {
      throw new OracleFailure(
        "output-unclean",
        `filter's output does not verify clean: ${vo.error ?? vo.label} ${vo.err.trim()}`,
      );
    }
  }
  checkAgreement(v2, v1, sc, pm, fl, context.note);
  return `verify ${v2.label}`;
}

/** Mutate a stream, and now and then put it in a gzip or zstd container. */
export function mutateStream(seed: SeedInput, rng: Rng): Mutated {
  const m = mutate(seed.bytes, seed.anatomy, rng);
  const r = rng.float();
  if (r < 0.08) {
    return {
      bytes: new Uint8Array(zstdCompressSync(m.bytes)),
      mutations: [...m.mutations, "in zstd"],
    };
  }
  if (r < 0.12) {
    return { bytes: new Uint8Array(gzipSync(m.bytes)), mutations: [...m.mutations, "in gzip"] };
  }
  return m;
}

/**
 * The shared fixtures' `s3-malicious` streams (110 MB, QEMU 7.2 late and QEMU 10.0 early layout,
 * a real Linux guest), for long campaigns on demand.
 */
async function realdataStreamSeeds(): Promise<SeedInput[]> {
  const { realdata } = await import("../../realdata.ts");
  const seeds: SeedInput[] = [];
  for (const set of ["out-small", "out-q10"] as const) {
    const bytes = await Deno.readFile(await realdata(set, "s3-malicious.mig"));
    seeds.push({ name: `${set}/s3-malicious.mig`, bytes, anatomy: await migrationAnatomy(bytes) });
  }
  return seeds;
}

/** `migration-cli` on the shared fixtures' 110 MB streams (heavy: named only). */
export const migrationCliRealdataTarget: FuzzTarget = {
  name: "migration-cli-realdata",
  description: "as migration-cli, on the shared fixtures' 110 MB s3-malicious streams (QEMU 7.2 " +
    "and 10.0, Linux guest); heavy: only when named",
  timeoutMs: 120_000,
  heavy: true,
  seeds: realdataStreamSeeds,
  mutate: (seed, rng) => mutate(seed.bytes, seed.anatomy, rng),
  run: runMigrationCommands,
};

/** The target. */
export const migrationCliTarget: FuzzTarget = {
  name: "migration-cli",
  description:
    "migration streams (QEMU 7.2 late, QEMU 10 early layout) through verify, verify --single-pass, " +
    "scan, plugmap, inspect and filter; agreement, filter output verifies clean, no leftover files",
  timeoutMs: 30_000,
  seeds: () => migrationSeeds(MIGRATION_SEED_FILES),
  mutate: mutateStream,
  run: runMigrationCommands,
};
