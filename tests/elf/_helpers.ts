/**
 * Helpers shared by the ELF and raw-image tests: error assertions, a seeded
 * PRNG, external tool checks (required in CI), an in-memory sink.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { FormatError } from "../../src/errors.ts";
import { assertFormatError as sharedAssertFormatError } from "../_util/assert.ts";
import { inCi, requireTool, toolAvailable } from "../_util/tools.ts";

/**
 * Assert that `promise` rejects with a FormatError of `code` (and `offset`
 * when given, which the message must end with), via the shared
 * `tests/_util/assert.ts`.
 */
export async function assertFormatError(
  promise: Promise<unknown>,
  expected: { code?: string; offset?: number; name?: string },
): Promise<FormatError> {
  const e = await sharedAssertFormatError(promise, { ...expected, format: "elf" });
  if (expected.offset !== undefined) {
    assert.match(e.message, new RegExp(`at offset 0x${expected.offset.toString(16)}$`));
  }
  return e;
}

/** Deterministic PRNG (mulberry32). */
export { seededRandom as prng } from "../_util/chunkings.ts";

/**
 * Whether an external tool is installed. In CI a missing tool is an error
 * (the test fails); elsewhere the caller skips the check (with a warning).
 */
export function haveTool(name: string): boolean {
  if (inCi()) {
    requireTool(name);
    return true;
  }
  return toolAvailable(name);
}

/** Run a command, return its exit code and output. */
export async function runTool(
  cmd: string,
  args: string[],
  options: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.cwd ? { cwd: options.cwd } : {}),
    signal: AbortSignal.timeout(options.timeoutMs ?? 120_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A chunk sink that keeps a copy of everything. */
export function memorySink(): { sink: (c: Uint8Array) => Promise<void>; bytes: () => Uint8Array } {
  const chunks: Uint8Array[] = [];
  return {
    sink(c) {
      chunks.push(c.slice());
      return Promise.resolve();
    },
    bytes() {
      const n = chunks.reduce((s, c) => s + c.byteLength, 0);
      const out = new Uint8Array(n);
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.byteLength;
      }
      return out;
    },
  };
}

/** A PT_LOAD line of `readelf -lW`. */
export interface ReadelfLoad {
  fileOffset: number;
  vaddr: number;
  paddr: number;
  fileByteLength: number;
  byteLength: number;
}

/** Parse the PT_LOAD lines of `readelf -lW` (independent of our reader). */
export function parseReadelfLoads(text: string): { loads: ReadelfLoad[]; notes: number } {
  const loads: ReadelfLoad[] = [];
  let notes = 0;
  for (const line of text.split("\n")) {
    const m =
      /^\s*(LOAD|NOTE)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)/
        .exec(line);
    if (!m) continue;
    if (m[1] === "NOTE") {
      notes++;
      continue;
    }
    loads.push({
      fileOffset: Number(m[2]),
      vaddr: Number(m[3]),
      paddr: Number(m[4]),
      fileByteLength: Number(m[5]),
      byteLength: Number(m[6]),
    });
  }
  return { loads, notes };
}

export { readFileBytes } from "../_util/files.ts";

/** Files in a directory (names). */
export function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}
