/**
 * crash sessions on real dumps: probes (plugged lines and the guest's EVIL
 * writes into unplugged blocks), one crash run per dump with each command's
 * output in its own file, and the parsing of what crash printed.
 *
 * The dumps come from `kernelDumps()` (tests/_util/kernel_dumps.ts): made in
 * the test from the installed kernel, whose debug vmlinux Debian serves.
 */
import assert from "node:assert/strict";
import { readFileBytes } from "../_util/files.ts";
import type { KernelDumps } from "../_util/kernel_dumps.ts";
import { runTool, type ToolResult } from "../_util/tools.ts";
import { firstNonZero } from "./_realdata.ts";

/** One crash session loads a 600 MB vmlinux: ~30 s idle, four minutes seen on a loaded machine. */
export const CRASH_TIMEOUT_MS = 600_000;
/** Bytes read per `rd` probe. */
export const PROBE_BYTES = 16;

/** `0x…` of an address. */
export const hex = (n: number): string => `0x${n.toString(16)}`;

/** One `rd -p -8 GPA 16` probe and what its bytes must be. */
export interface Probe {
  gpa: number;
  plugged: boolean;
  /** The pmemsave image's bytes at `gpa`. */
  expected: number[];
}

/** Where to read: start, first non-zero line and last line of every plugged run; every EVIL write. */
export async function probesFor(d: KernelDumps): Promise<Probe[]> {
  const gpas = new Map<number, boolean>();
  for (const r of d.pluggedRanges) {
    gpas.set(r.gpa, true);
    const nz = await firstNonZero(d.raw, r.gpa - d.device.gpa, r.byteLength);
    if (nz !== undefined) gpas.set(r.gpa + nz, true);
    gpas.set(r.gpa + r.byteLength - PROBE_BYTES, true);
  }
  assert.ok(d.evil.length >= 3, "the guest's EVIL writes");
  for (const w of d.evil) gpas.set(w.gpa, false);
  const probes: Probe[] = [];
  for (const [gpa, plugged] of [...gpas].sort((a, b) => a[0] - b[0])) {
    const expected = [...(await readFileBytes(d.raw, gpa - d.device.gpa, PROBE_BYTES))];
    if (!plugged) {
      assert.equal(
        new TextDecoder().decode(new Uint8Array(expected.slice(0, 5))),
        "EVIL-",
        `the pmemsave image holds an EVIL marker at ${hex(gpa)}`,
      );
    }
    probes.push({ gpa, plugged, expected });
  }
  assert.ok(probes.filter((p) => p.plugged).some((p) => p.expected.some((b) => b !== 0)));
  return probes;
}

/**
 * The vmlinux must be the guest's kernel, or crash's verdict means nothing:
 * its GNU build id must equal the dumps' VMCOREINFO `BUILD-ID`.
 */
export async function assertVmlinuxOfGuest(d: KernelDumps, vmlinux: string): Promise<void> {
  assert.equal(
    d.vmcoreinfo.osrelease,
    d.kernel.abi,
    "the dump's VMCOREINFO names the guest kernel",
  );
  const notes = await runTool("readelf", ["-nW", vmlinux]);
  assert.equal(notes.code, 0, notes.stderr);
  assert.equal(
    /Build ID: ([0-9a-f]+)/.exec(notes.stdout)?.[1],
    d.vmcoreinfo.buildId,
    `${vmlinux} is not the guest's kernel (build id differs from the dump's VMCOREINFO)`,
  );
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
 * crash's own messages (warnings, errors; they go to both). `dump` may be
 * the files of a split dump (makedumpfile `--split`), which crash reads as
 * one.
 */
export async function runCrash(
  vmlinux: string,
  dump: string | readonly string[],
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
  const dumps = typeof dump === "string" ? [dump] : dump;
  const result = await runTool("crash", ["-s", vmlinux, ...dumps, "-i", cmdFile], {
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

/**
 * Run crash on each dump (a file, or the files of a split set) with the same
 * probes, two sessions at a time: more only thrash a 2-core machine into
 * timeouts. Results in the order of `dumps`.
 */
export async function runCrashes(
  vmlinux: string,
  dumps: ReadonlyArray<{ name: string; dump: string | readonly string[] }>,
  outDir: string,
  probes: Probe[],
): Promise<CrashRun[]> {
  const runs: CrashRun[] = [];
  for (let i = 0; i < dumps.length; i += 2) {
    runs.push(
      ...await Promise.all(
        dumps.slice(i, i + 2).map((d) =>
          runCrash(vmlinux, d.dump, `${outDir}/crash-${d.name}`, probes)
        ),
      ),
    );
  }
  return runs;
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

/**
 * `rd -p -8` of unplugged memory in a dump that leaves it out fails: crash
 * says "read error" for an ELF dump without a PT_LOAD there and "seek error"
 * for a kdump page whose bitmap bit is clear.
 */
export function assertReadError(text: string, gpa: number, what: string, error = "read"): void {
  assert.match(
    text,
    new RegExp(`^rd: ${error} error: physical address: ${gpa.toString(16)}\\s`, "m"),
    `${what}, rd -p ${hex(gpa)} must fail`,
  );
  assert.doesNotMatch(text, /EVIL/, `${what}, rd -p ${hex(gpa)}`);
}
