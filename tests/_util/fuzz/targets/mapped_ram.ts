/**
 * Campaign target `mapped-ram`: mutated real mapped-ram files (QEMU 10.0,
 * with and without multifd; testdata/tiny/) through `verify`, `scan`,
 * `plugmap`, `inspect` and `filter`, in-process. Mutations reach the stream
 * part, each block's mapped-ram header (version, page size, bitmap and pages
 * offsets) and the page bitmaps (a bit set in an unplugged block is a page
 * QEMU loads there).
 *
 * Oracles: typed errors with offsets inside the file; `verify` and `scan`
 * agree (verdict, the pages of unplugged blocks by gpa and file offset,
 * plug state, error class), `plugmap` states the same plug state; `filter`
 * succeeds whenever `verify` does, its output verifies clean, and no file is
 * left behind when it fails.
 *
 * @module
 */

import { isAllZero } from "../../../../src/io/zero.ts";
import { tinyFixture } from "../../tiny_fixtures.ts";
import { type CommandResult, runCommand } from "../commands.ts";
import { agree, type OffsetBound, OracleFailure } from "../oracle.ts";
import type { CaseContext, FuzzTarget, SeedInput } from "../target.ts";
import { migrationAnatomy } from "./migration_anatomy.ts";
import { plugStateLine, type ReportDevice } from "./migration_cli.ts";

const MANY = "100000000";
const CHUNK = 1 << 16;

/** Write `bytes` as a sparse file: all-zero 64 KiB chunks become holes. */
export async function writeSparse(path: string, bytes: Uint8Array): Promise<void> {
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  for (let at = 0; at < bytes.length; at += CHUNK) {
    const piece = bytes.subarray(at, Math.min(bytes.length, at + CHUNK));
    if (isAllZero(piece)) continue;
    await f.seek(at, Deno.SeekMode.Start);
    for (let done = 0; done < piece.length;) done += await f.write(piece.subarray(done));
  }
  await f.truncate(bytes.length);
}

/** The `mapped-ram` target's seeds (QEMU 10.0 mapped-ram files of the tiny VM). */
export async function mappedRamSeeds(): Promise<SeedInput[]> {
  const seeds: SeedInput[] = [];
  for (const name of ["q10-tiny.mapped-ram", "q10-tiny.mapped-ram-multifd"]) {
    const bytes = await tinyFixture(name);
    seeds.push({ name, bytes, anatomy: await migrationAnatomy(bytes, { mappedRam: true }) });
  }
  return seeds;
}

function said(r: CommandResult): string {
  return r.code === 1
    ? `${r.error ?? "printed"} (${r.thrown instanceof Error ? r.thrown.message : r.err.trim()})`
    : r.label;
}

function classOf(r: CommandResult): string {
  return r.error?.split(":")[0] ?? `printed: ${r.err.trim().split("\n")[0]}`;
}

async function runMappedRam(input: Uint8Array, context: CaseContext): Promise<string> {
  const dir = context.workDir;
  const path = `${dir}/in.mr`;
  await writeSparse(path, input);
  const bound: OffsetBound = { maxOffset: { migration: input.length, container: input.length } };
  const v = await runCommand("verify", ["--json", "--max-violations", MANY, path], bound);
  const s = await runCommand(
    "scan",
    ["--json", "--max-findings", MANY, "--hexdump-bytes", "0", path],
    bound,
  );
  const p = await runCommand("plugmap", [path], bound);
  await runCommand("inspect", ["--json", path], bound);
  const f = await runCommand("filter", [path, `${dir}/out.mr`], bound);
  for await (const e of Deno.readDir(dir)) {
    if (e.name !== "in.mr" && !(f.code === 0 && e.name === "out.mr")) {
      throw new OracleFailure("leftover-file", `filter (${f.label}) left ${e.name} behind`);
    }
  }
  if (f.code === 0) {
    const vo = await runCommand("verify", ["--json", `${dir}/out.mr`]);
    if (vo.code !== 0) {
      throw new OracleFailure(
        "output-unclean",
        `filter's output does not verify clean: ${said(vo)}`,
      );
    }
  }
  const failed = (r: CommandResult) => r.code === 1;
  agree(failed(v) === failed(s), `verify says ${said(v)}, scan ${said(s)}`);
  if (failed(v)) {
    agree(classOf(v) === classOf(s), `verify failed with ${said(v)}, scan with ${said(s)}`);
    if (v.error !== s.error) context.note(`verify ${v.error}, scan ${s.error}`);
    return `verify ${v.label}`;
  }
  agree(!failed(f), `verify ${v.label} but filter failed: ${said(f)}`);
  agree(!failed(p), `verify ${v.label} but plugmap failed: ${said(p)}`);
  const vj = JSON.parse(v.out) as {
    violationCount: number;
    violations: { gpa: number; fileOffset: number }[];
    devices: ReportDevice[];
  };
  const sj = JSON.parse(s.out) as {
    summary: { findings: number };
    devices:
      (ReportDevice & { blocks: { pages: { gpa: number; fileOffset: number | null }[] }[] })[];
  };
  agree((v.code === 3) === (s.code === 3), `verify exit ${v.code}, scan exit ${s.code}`);
  agree(
    vj.violationCount === sj.summary.findings,
    `verify counts ${vj.violationCount} violations, scan ${sj.summary.findings} findings`,
  );
  const fromVerify = vj.violations.map((x) => `0x${x.gpa.toString(16)}@${x.fileOffset}`).sort()
    .join(" ");
  const fromScan = sj.devices.flatMap((d) =>
    d.blocks.flatMap((b) => b.pages.map((x) => `0x${x.gpa.toString(16)}@${x.fileOffset}`))
  ).sort().join(" ");
  agree(fromVerify === fromScan, `pages: verify [${fromVerify}], scan [${fromScan}]`);
  const fromV = plugStateLine(vj.devices);
  agree(
    fromV === plugStateLine(sj.devices),
    `plug state: verify ${fromV}, scan ${plugStateLine(sj.devices)}`,
  );
  const pj = JSON.parse(p.out) as { devices: ReportDevice[] };
  agree(
    fromV === plugStateLine(pj.devices),
    `plug state: verify ${fromV}, plugmap ${plugStateLine(pj.devices)}`,
  );
  return `verify ${v.label}`;
}

/** The target. */
export const mappedRamTarget: FuzzTarget = {
  name: "mapped-ram",
  description: "mapped-ram files (QEMU 10.0, with and without multifd) through verify, scan, " +
    "plugmap, inspect and filter; agreement, filter output verifies clean, no leftover files",
  timeoutMs: 30_000,
  seeds: mappedRamSeeds,
  run: runMappedRam,
};
