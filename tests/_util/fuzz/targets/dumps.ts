/**
 * Campaign targets `elf` and `kdump`: mutated real dumps of the tiny VM
 * (testdata/tiny/) through `scan`, `strip` and `convert`, in-process.
 *
 * Seeds (`elf`): QEMU 7.2's and 10.0's `dump-guest-memory` ELF (QEMU's
 * layout, unplugged memory left out), the dump a QEMU < 6.2 would have made
 * (classic layout, the whole region with the EVIL pages, built from the real
 * dump and the real `pmemsave` image), and `strip`'s output (classic layout
 * with a provenance note). Seeds (`kdump`): QEMU's flattened `kdump-zlib`
 * (7.2 and 10.0), QEMU 10.0's plain `kdump-raw-zlib`, `makedumpfile -R`'s
 * plain dump, and `convert --to kdump` of the whole-region ELF (with pages in
 * unplugged blocks).
 *
 * Oracles: typed errors with offsets inside the file (plain formats); no
 * leftover files; `strip`'s output scans without findings and without
 * error; `convert` (ELF → kdump, now and then with the plug map, flattened,
 * another codec, zero pages left out or on the main thread; kdump → ELF)
 * succeeds only on a dump `scan` reads, and its output scans to the same
 * findings (none with the plug map, which leaves unplugged blocks out).
 * `strip` writes a flattened kdump or a packed ELF now and then.
 *
 * @module
 */

import { bytesReader } from "../../../../src/io/byte_reader.ts";
import { decodeMigration, extractPlugMap } from "../../../../src/migration/mod.ts";
import { formatPlugMapJson } from "../../../../src/vmem/mod.ts";
import { writeWholeRegionElf } from "../../elf_builder.ts";
import { TINY_REGION, tinyFixture } from "../../tiny_fixtures.ts";
import { type CommandResult, runCommand } from "../commands.ts";
import { makeScratchDir } from "../scratch.ts";
import { agree, type OffsetBound, OracleFailure } from "../oracle.ts";
import type { CaseContext, FuzzTarget, SeedInput } from "../target.ts";
import { elfAnatomy, kdumpAnatomy } from "./dump_anatomy.ts";

const MANY = "100000000";

let plugMapJson: string | undefined;

/** The tiny VM's plug map (JSON v1), from its QEMU 7.2 stream. */
export async function tinyPlugMapJson(): Promise<string> {
  if (plugMapJson === undefined) {
    const stream = await tinyFixture("q72-tiny.mig");
    plugMapJson = formatPlugMapJson(
      await extractPlugMap(decodeMigration(bytesReader(stream)), { complete: true }),
    );
  }
  return plugMapJson;
}

/** Run a command that writes OUT from IN; fail the case on an error it should not give. */
async function derived(args: string[], what: string): Promise<void> {
  const r = await runCommand(args[0]!, args.slice(1));
  if (r.code !== 0) throw new Error(`cannot build the ${what} seed: ${r.error ?? r.err}`);
}

/** Build the derived seeds in a temporary folder. */
async function withTemp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await makeScratchDir("vmem-fuzz-seeds-");
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The whole-region ELF (a QEMU < 6.2 dump: unplugged memory and EVIL pages inside). */
async function wholeRegionElf(dir: string): Promise<string> {
  const elf = `${dir}/q72-tiny.elf`;
  const raw = `${dir}/vmem0.raw`;
  await Deno.writeFile(elf, await tinyFixture("q72-tiny.elf"));
  await Deno.writeFile(raw, await tinyFixture("q72-tiny.vmem0.raw"));
  const out = `${dir}/whole-region.elf`;
  await writeWholeRegionElf(elf, raw, TINY_REGION, out);
  return out;
}

/** The `elf` target's seeds (the tiny VM's dumps and the derived ones). */
export async function elfSeeds(): Promise<SeedInput[]> {
  const seed = (name: string, bytes: Uint8Array) => ({ name, bytes, anatomy: elfAnatomy(bytes) });
  const seeds = [
    seed("q72-tiny.elf", await tinyFixture("q72-tiny.elf")),
    seed("q10-tiny.elf", await tinyFixture("q10-tiny.elf")),
  ];
  await withTemp(async (dir) => {
    const whole = await wholeRegionElf(dir);
    seeds.push(
      seed("whole-region classic ELF (q72-tiny.elf + vmem0.raw)", await Deno.readFile(whole)),
    );
    const pm = `${dir}/plugmap.json`;
    await Deno.writeTextFile(pm, await tinyPlugMapJson());
    await Deno.writeFile(`${dir}/q10.elf`, await tinyFixture("q10-tiny.elf"));
    await derived(["strip", `${dir}/q10.elf`, `${dir}/stripped.elf`, "--plugmap", pm], "strip");
    seeds.push(seed("strip output of q10-tiny.elf", await Deno.readFile(`${dir}/stripped.elf`)));
  });
  return seeds;
}

/** The `kdump` target's seeds (the tiny VM's dumps and the derived ones). */
export async function kdumpSeeds(): Promise<SeedInput[]> {
  const seed = (name: string, bytes: Uint8Array) => ({ name, bytes, anatomy: kdumpAnatomy(bytes) });
  const seeds: SeedInput[] = [];
  for (
    const f of [
      "q72-tiny.kdump-zlib",
      "q72-tiny.kdump",
      "q10-tiny.kdump-zlib",
      "q10-tiny.kdump-raw-zlib",
    ]
  ) {
    seeds.push(seed(f, await tinyFixture(f)));
  }
  await withTemp(async (dir) => {
    const whole = await wholeRegionElf(dir);
    await derived(["convert", whole, `${dir}/whole.kdump`, "--to", "kdump"], "convert --to kdump");
    seeds.push(
      seed("convert --to kdump of the whole-region ELF", await Deno.readFile(`${dir}/whole.kdump`)),
    );
  });
  return seeds;
}

interface ScanJson {
  verdict: string;
  devices: { blocks: { pages: { gpa: number }[] }[] }[];
}

function findingsOf(r: CommandResult): string {
  const j = JSON.parse(r.out) as ScanJson;
  return j.devices.flatMap((d) => d.blocks.flatMap((b) => b.pages.map((p) => p.gpa)))
    .sort((a, b) => a - b).map((g) => `0x${g.toString(16)}`).join(" ");
}

function said(r: CommandResult): string {
  return r.code === 1
    ? `${r.error ?? "error"} (${r.thrown instanceof Error ? r.thrown.message : r.err.trim()})`
    : r.label;
}

async function leftovers(dir: string, allowed: string[], after: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (!allowed.includes(e.name)) {
      throw new OracleFailure("leftover-file", `${after} left ${e.name} in the case folder`);
    }
  }
}

/**
 * Scan, strip and (now and then) convert a dump, checking every oracle.
 *
 * @param input The (mutated) dump.
 * @param context The case.
 * @param kind Which kind of dump the seeds are.
 * @returns `scan`'s outcome.
 */
async function runDump(
  input: Uint8Array,
  context: CaseContext,
  kind: "elf" | "kdump",
): Promise<string> {
  const dir = context.workDir;
  const inName = `in.${kind}`;
  const path = `${dir}/${inName}`;
  const pm = `${dir}/plugmap.json`;
  await Deno.writeFile(path, input);
  await Deno.writeTextFile(pm, await tinyPlugMapJson());
  const flattened = new TextDecoder().decode(input.subarray(0, 12)) === "makedumpfile";
  const bound: OffsetBound = {
    maxOffset: flattened ? { elf: input.length } : { elf: input.length, kdump: input.length },
  };
  const scanArgs = ["--json", "--max-findings", MANY, "--hexdump-bytes", "0", "--plugmap", pm];
  const scan = await runCommand("scan", [...scanArgs, path], bound);
  const stripArgs = [path, `${dir}/out`, "--plugmap", pm];
  if (kind === "kdump" && context.rng.chance(0.3)) stripArgs.push("--flattened");
  if (kind === "elf" && context.rng.chance(0.2)) stripArgs.push("--page-align", "0");
  const strip = await runCommand("strip", stripArgs, bound);
  await leftovers(
    dir,
    strip.code === 0 ? [inName, "plugmap.json", "out"] : [inName, "plugmap.json"],
    `strip (${strip.label})`,
  );
  if (strip.code === 0) {
    const again = await runCommand("scan", [...scanArgs, `${dir}/out`]);
    if (again.code === 1 || again.code === 3) {
      throw new OracleFailure(
        again.code === 3 ? "output-unclean" : "disagreement",
        `strip's output scans ${said(again)} (the input scanned ${said(scan)})`,
      );
    }
    await Deno.remove(`${dir}/out`);
  }
  // Conversion is the slowest step: a fifth of the cases, a tenth in CI, where it compresses on
  // the main thread (no compression Workers to start, and under the allocation guard).
  if (context.rng.chance(context.budget === "ci" ? 0.1 : 0.2)) {
    const to = kind === "elf" ? "kdump" : "elf";
    const convArgs = [path, `${dir}/conv`, "--to", to];
    // With the plug map, unplugged blocks are left out of the output: nothing to find there.
    // (A kdump dump converts to ELF only without one: strip is the way to remove memory from it.)
    const withPlugMap = to === "kdump" && context.rng.chance(0.3);
    if (withPlugMap) convArgs.push("--plugmap", pm);
    if (to === "kdump") {
      if (context.rng.chance(0.3)) convArgs.push("--flattened");
      if (context.rng.chance(0.3)) convArgs.push("--exclude-zero");
      convArgs.push("--codec", ["zlib", "zstd", "none"][context.rng.int(3)]!);
      convArgs.push("--workers", context.budget === "ci" ? "0" : String(context.rng.int(3)));
    }
    const conv = await runCommand("convert", convArgs, bound);
    await leftovers(
      dir,
      conv.code === 0 ? [inName, "plugmap.json", "conv"] : [inName, "plugmap.json"],
      `convert (${conv.label})`,
    );
    if (conv.code === 0) {
      const s = await runCommand("scan", [...scanArgs, `${dir}/conv`]);
      agree(s.code !== 1, `convert --to ${to} wrote a dump that scan refuses: ${said(s)}`);
      agree(scan.code !== 1, `convert --to ${to} read the dump, scan did not: ${said(scan)}`);
      const expected = withPlugMap ? "" : findingsOf(scan);
      agree(
        findingsOf(s) === expected,
        `findings: input [${findingsOf(scan)}], convert ${convArgs.slice(2).join(" ")} output [${
          findingsOf(s)
        }]`,
      );
    }
  }
  return `scan ${scan.label}`;
}

/** The `elf` target. */
export const elfTarget: FuzzTarget = {
  name: "elf",
  description: "ELF dumps (QEMU 7.2/10.0 layout, classic whole-region, strip output) through " +
    "scan, strip (output scans without findings) and convert --to kdump (same findings)",
  timeoutMs: 30_000,
  seeds: elfSeeds,
  run: (input, context) => runDump(input, context, "elf"),
};

/** The `kdump` target. */
export const kdumpTarget: FuzzTarget = {
  name: "kdump",
  description: "kdump dumps (QEMU flattened and plain, makedumpfile -R, convert output) through " +
    "scan, strip (output scans without findings) and convert --to elf (same findings)",
  timeoutMs: 30_000,
  seeds: kdumpSeeds,
  run: (input, context) => runDump(input, context, "kdump"),
};
