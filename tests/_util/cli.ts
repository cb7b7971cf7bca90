/**
 * Running `vmem-dump` commands in tests, in-process (through `cli/main.ts`,
 * so errors map to exit codes as for users) or as a real process (pipes,
 * signals, stdout bytes). The CLI tests live together in `tests/cli/`, one
 * file per command.
 *
 * @example
 * ```ts ignore
 * const r = await runCli(["inspect", "--json", path]);
 * assert.equal(r.code, 0, r.err);
 * ```
 *
 * @module
 */

import type { CliIo } from "../../cli/io.ts";
import { main } from "../../cli/main.ts";

/** Absolute path of `cli/main.ts`. */
export const CLI_MAIN: string = decodeURIComponent(
  new URL("../../cli/main.ts", import.meta.url).pathname,
);

/** A {@linkcode CliIo} that keeps what a command prints. */
export interface MemoryIo {
  /** Hand this to `main()` or a command's `run()`. */
  io: CliIo;
  /** Standard output so far. */
  out: () => string;
  /** Standard error so far. */
  err: () => string;
}

/**
 * Text sinks for running a command in-process.
 *
 * @returns The io and accessors for what was printed.
 * @example
 * ```ts
 * import { memoryIo } from "./cli.ts";
 * const m = memoryIo();
 * await m.io.out("hello");
 * m.out(); // "hello"
 * ```
 */
export function memoryIo(): MemoryIo {
  let out = "";
  let err = "";
  return {
    io: {
      out(t: string) {
        out += t;
        return Promise.resolve();
      },
      err(t: string) {
        err += t;
        return Promise.resolve();
      },
      stderrIsTerminal: false,
    },
    out: () => out,
    err: () => err,
  };
}

/** What one in-process run printed. */
export interface CliRun {
  /** Exit code. */
  code: number;
  /** Standard output. */
  out: string;
  /** Standard error. */
  err: string;
}

/**
 * Run `vmem-dump ARGS` in-process through `main()`.
 *
 * @param args Command and arguments.
 * @returns Exit code and output.
 * @example
 * ```ts ignore
 * const { code, err } = await runCli(["verify", "x.mig"]);
 * ```
 */
export async function runCli(args: string[]): Promise<CliRun> {
  const m = memoryIo();
  const code = await main(args, m.io);
  return { code, out: m.out(), err: m.err() };
}

/** What one process run printed (stdout as text). */
export interface CliProcessRun {
  /** Exit code. */
  code: number;
  /** Standard output as text. */
  stdout: string;
  /** Standard error as text. */
  stderr: string;
}

/**
 * Run `vmem-dump ARGS` as a process (`deno run -A cli/main.ts`).
 *
 * @param args Command and arguments.
 * @param stdin Bytes fed to standard input; otherwise it is closed.
 * @returns Exit code and decoded output.
 * @example
 * ```ts ignore
 * const r = await runCliProcess(["inspect", "-"], bytes);
 * ```
 */
export async function runCliProcess(args: string[], stdin?: Uint8Array): Promise<CliProcessRun> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI_MAIN, ...args],
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
