/**
 * crash sessions on real dumps: probes (plugged lines and the guest's EVIL
 * writes into unplugged blocks), one crash run per dump with each command's
 * output in its own file, and the parsing of what crash printed.
 */
import assert from "node:assert/strict";
import { readPhdrsIndependently } from "../_util/elf_builder.ts";
import { realdataFacts } from "../_util/realdata.ts";
import { runTool, type ToolResult } from "../_util/tools.ts";
import { readFileBytes } from "./_helpers.ts";
import { firstNonZero, pluggedRanges, REGION, unpluggedRanges } from "./_realdata.ts";

export const SCENARIO = "s3-malicious";
export const CRASH_TIMEOUT_MS = 300_000;
export const PROBE_BYTES = 16;

export const hex = (n: number) => `0x${n.toString(16)}`;

/** `OSRELEASE` and `BUILD-ID` from the VMCOREINFO note of a real dump, read without src/. */
export async function vmcoreinfoOf(
  elfPath: string,
): Promise<{ osrelease?: string; buildId?: string }> {
  const note = (await readPhdrsIndependently(elfPath)).find((p) => p.type === 4);
  assert.ok(note, `${elfPath} has no PT_NOTE`);
  const text = new TextDecoder("latin1").decode(
    await readFileBytes(elfPath, note.offset, note.filesz),
  );
  const osrelease = /(?:^|[\n\0])OSRELEASE=(\S+)/.exec(text)?.[1];
  const buildId = /(?:^|[\n\0])BUILD-ID=([0-9a-f]+)/.exec(text)?.[1];
  return { ...(osrelease ? { osrelease } : {}), ...(buildId ? { buildId } : {}) };
}

/** One `rd -p -8 GPA 16` probe and what its bytes must be. */
export interface Probe {
  gpa: number;
  plugged: boolean;
  /** The pmemsave image's bytes at `gpa`. */
  expected: number[];
}

/** Where to read: start, first non-zero line and last line of every plugged run; every EVIL write. */
export async function probesFor(raw: string): Promise<Probe[]> {
  const gpas = new Map<number, boolean>();
  for (const r of pluggedRanges(SCENARIO)) {
    gpas.set(r.gpa, true);
    const nz = await firstNonZero(raw, r.gpa - REGION.gpa, r.byteLength);
    if (nz !== undefined) gpas.set(r.gpa + nz, true);
    gpas.set(r.gpa + r.byteLength - PROBE_BYTES, true);
  }
  const manifest = realdataFacts("out-small").manifest;
  const evil: Array<{ gpa: number; marker: string }> = [
    ...manifest.malicious_writes.pre_migration,
    ...manifest.malicious_writes.during_migration,
  ];
  assert.ok(evil.length >= 2, "the manifest lists the guest's EVIL writes");
  const unplugged = unpluggedRanges(SCENARIO);
  for (const w of evil) {
    assert.ok(
      unplugged.some((u) => u.gpa <= w.gpa && w.gpa < u.gpa + u.byteLength),
      `EVIL write at ${hex(w.gpa)} is in an unplugged block`,
    );
    gpas.set(w.gpa, false);
  }
  // The addresses of the brief must be among them.
  for (const must of [0x1_0000_0000, 0x1_0800_0000]) assert.equal(gpas.get(must), true);
  for (const must of [0x1_04e0_1000, 0x1_01c0_0000]) assert.equal(gpas.get(must), false);

  const probes: Probe[] = [];
  for (const [gpa, plugged] of [...gpas].sort((a, b) => a[0] - b[0])) {
    const expected = [...(await readFileBytes(raw, gpa - REGION.gpa, PROBE_BYTES))];
    if (!plugged) {
      assert.equal(
        new TextDecoder().decode(new Uint8Array(expected.slice(0, 5))),
        "EVIL-",
        `the pmemsave image holds an EVIL marker at ${hex(gpa)}`,
      );
    }
    probes.push({ gpa, plugged, expected });
  }
  return probes;
}

/** What one crash session printed: each command's output file, and the diagnostics on stdout/stderr. */
export interface CrashRun {
  result: ToolResult;
  sys: string;
  kmem: string;
  /** Output of `rd -p -8 GPA 16`, by gpa. */
  rd: Map<number, string>;
}

/**
 * Run crash once on `dump` with the command file: every command's output is
 * redirected to its own file (crash's `cmd > file`), so stdout keeps only
 * crash's own messages (warnings, errors; they go to both).
 */
export async function runCrash(
  vmlinux: string,
  dump: string,
  outDir: string,
  probes: Probe[],
): Promise<CrashRun> {
  Deno.mkdirSync(outDir);
  const lines = [`sys > ${outDir}/sys.txt`, `kmem -i > ${outDir}/kmem.txt`];
  for (const p of probes) {
    lines.push(`rd -p -8 ${hex(p.gpa)} ${PROBE_BYTES} > ${outDir}/rd-${p.gpa.toString(16)}.txt`);
  }
  lines.push("exit");
  const cmdFile = `${outDir}.cmds`;
  Deno.writeTextFileSync(cmdFile, lines.join("\n") + "\n");
  const result = await runTool("crash", ["-s", vmlinux, dump, "-i", cmdFile], {
    timeoutMs: CRASH_TIMEOUT_MS,
  });
  const read = (name: string) => {
    try {
      return Deno.readTextFileSync(`${outDir}/${name}`);
    } catch {
      return "";
    }
  };
  const rd = new Map<number, string>();
  for (const p of probes) rd.set(p.gpa, read(`rd-${p.gpa.toString(16)}.txt`));
  return { result, sys: read("sys.txt"), kmem: read("kmem.txt"), rd };
}

/** The bytes of `rd -p -8` output lines ("       100000000:  00 11 ...   ascii"). */
export function rdBytes(text: string): number[] {
  const bytes: number[] = [];
  for (const m of text.matchAll(/^\s*[0-9a-f]+:\s+((?:[0-9a-f]{2} )*[0-9a-f]{2})(?:\s{2}|$)/gm)) {
    bytes.push(...m[1]!.split(" ").map((b) => parseInt(b, 16)));
  }
  return bytes;
}

/** crash's own messages of a run (stdout and stderr lines), with the dump's name replaced. */
export function diagnostics(run: CrashRun, dump: string): string[] {
  const base = dump.slice(dump.lastIndexOf("/") + 1);
  return `${run.result.stdout}\n${run.result.stderr}`
    .split("\n")
    .map((l) => l.trimEnd().replaceAll(dump, "DUMPFILE").replaceAll(base, "DUMPFILE"))
    .filter((l) => l !== "");
}
