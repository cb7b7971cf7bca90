/**
 * The independent readers of kdump outputs, for the interop tests: the CLI
 * run as a user runs it, drgn (libkdumpfile) reading physical addresses, and
 * makedumpfile.
 *
 * @module
 */
import assert from "node:assert/strict";
import { CLI_MAIN } from "../_util/cli.ts";
import { runTool } from "../_util/tools.ts";

/** The Python that has Debian's `python3-drgn`. */
export const DRGN_PYTHON = "/usr/bin/python3";
/** makedumpfile on a few hundred MB, on a loaded 2-core machine. */
export const TOOL_TIMEOUT_MS = 300_000;

/** Run vmem-dump (a subprocess, as installed); fails the test unless it exits 0. Returns stdout. */
export async function cli(args: string[]): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI_MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, `vmem-dump ${args.join(" ")} failed: ${err}`);
  return new TextDecoder().decode(r.stdout);
}

/** drgn: read each address; hex bytes or "fault" per address. */
export async function drgnRead(dump: string, gpas: number[], length: number): Promise<string[]> {
  const script = `
import sys, drgn
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
for a in sys.argv[3:]:
    try:
        print(prog.read(int(a, 16), int(sys.argv[2]), True).hex())
    except drgn.FaultError:
        print("fault")
`;
  const r = await runTool(DRGN_PYTHON, [
    "-c",
    script,
    dump,
    String(length),
    ...gpas.map((g) => g.toString(16)),
  ], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `drgn on ${dump}: ${r.stderr}`);
  return r.stdout.trim().split("\n");
}

/**
 * drgn's error when it cannot open `dump` at all (the last line of its
 * message), or `undefined` when it opens it.
 */
export async function drgnOpenError(dump: string): Promise<string | undefined> {
  const r = await runTool(DRGN_PYTHON, [
    "-c",
    "import sys, drgn\nprog = drgn.Program()\nprog.set_core_dump(sys.argv[1])\n",
    dump,
  ], { timeoutMs: 120_000 });
  return r.code === 0 ? undefined : r.stderr.trim().split("\n").at(-1);
}

/** Fail the test unless drgn imports (Debian `python3-drgn`). */
export function requireDrgn(): void {
  let ok = false;
  try {
    ok = new Deno.Command(DRGN_PYTHON, { args: ["-c", "import drgn"] }).outputSync().code === 0;
  } catch {
    ok = false;
  }
  if (!ok) throw new Error(`drgn is missing: apt-get install python3-drgn (${DRGN_PYTHON})`);
}

/** Run makedumpfile; fails the test unless it exits 0. */
export async function makedumpfile(args: string[]): Promise<void> {
  const r = await runTool("makedumpfile", args, { timeoutMs: TOOL_TIMEOUT_MS });
  assert.equal(r.code, 0, `makedumpfile ${args.join(" ")}: ${r.stdout}${r.stderr}`);
}
