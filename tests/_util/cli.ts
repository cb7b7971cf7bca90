/**
 * Running `vmem-dump` commands in tests, in-process (through `cli/main.ts`,
 * so errors map to exit codes as for users) or as a real process (pipes,
 * signals, stdout bytes). The CLI tests live together in `tests/cli/`, one
 * file per command. `execCli` / `spawnCli` run the process with redirections,
 * a umask or signals (the evidence tests).
 *
 * @example
 * ```ts ignore
 * const r = await runCli(["inspect", "--json", path]);
 * assert.equal(r.code, 0, r.err);
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
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
  const r = await execCli(args, stdin ? { stdin } : {});
  return { code: r.code, stdout: r.out, stderr: r.err };
}

/** Options for {@linkcode execCli} and {@linkcode spawnCli}. */
export interface CliProcessOptions {
  /** Bytes fed to standard input (else it is closed, or see `stdinFile`). @default {undefined} */
  stdin?: Uint8Array;
  /** Redirect standard input from this file (`< FILE`, so `/dev/stdin` is that file). @default {undefined} */
  stdinFile?: string;
  /** Append standard output to this file (`>> FILE`). @default {undefined} */
  stdoutAppend?: string;
  /** Run under this umask (octal number). @default {undefined} (inherited) */
  umask?: number;
  /** Working directory. @default {undefined} (inherited) */
  cwd?: string;
  /** Extra environment variables. @default {{}} */
  env?: Record<string, string>;
  /** Kill the process after this many milliseconds. @default {300000} */
  timeoutMs?: number;
}

/** What a finished CLI process gave. */
export interface CliResult {
  /** Exit code (128 + n when a signal ended it). */
  code: number;
  /** The signal that ended it, or `null`. */
  signal: Deno.Signal | null;
  /** Standard output bytes. */
  stdout: Uint8Array;
  /** Standard output as text. */
  out: string;
  /** Standard error as text. */
  err: string;
}

/** The command line: deno directly, or `sh -c` when a redirection or umask is asked for. */
function commandOf(args: string[], options: CliProcessOptions): Deno.CommandOptions {
  const deno = [Deno.execPath(), "run", "-A", CLI_MAIN, ...args];
  const shell = options.stdinFile !== undefined || options.stdoutAppend !== undefined ||
    options.umask !== undefined;
  const common = {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: options.env } : {}),
  };
  if (!shell) {
    return {
      args: deno.slice(1),
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      ...common,
    };
  }
  // exec: the shell becomes the CLI, so its pid and exit status are the CLI's.
  let script = "";
  if (options.umask !== undefined) {
    script += `umask ${options.umask.toString(8).padStart(3, "0")}; `;
  }
  script += 'exec "$@"';
  if (options.stdinFile !== undefined) script += ` < "$VMEM_TEST_STDIN"`;
  if (options.stdoutAppend !== undefined) script += ` >> "$VMEM_TEST_STDOUT"`;
  return {
    args: ["-c", script, "sh", ...deno],
    stdin: options.stdin ? "piped" : "null",
    stdout: options.stdoutAppend !== undefined ? "null" : "piped",
    stderr: "piped",
    ...common,
    env: {
      ...(options.env ?? {}),
      ...(options.stdinFile !== undefined ? { VMEM_TEST_STDIN: options.stdinFile } : {}),
      ...(options.stdoutAppend !== undefined ? { VMEM_TEST_STDOUT: options.stdoutAppend } : {}),
    },
  };
}

function programOf(options: CliProcessOptions): string {
  return options.stdinFile !== undefined || options.stdoutAppend !== undefined ||
      options.umask !== undefined
    ? "sh"
    : Deno.execPath();
}

/**
 * Start the CLI; standard output and error are piped (see {@linkcode CliProcessOptions}).
 *
 * @param args Arguments after `cli/main.ts`.
 * @param options Redirections, umask, environment.
 * @returns The child process.
 */
export function spawnCli(args: string[], options: CliProcessOptions = {}): Deno.ChildProcess {
  return new Deno.Command(programOf(options), commandOf(args, options)).spawn();
}

/**
 * Collect a child started by {@linkcode spawnCli}: exit code, signal and its output.
 *
 * @param child The process.
 * @param timeoutMs Kill it (SIGKILL) after this long and fail.
 * @returns What it gave.
 */
export async function collectCli(
  child: Deno.ChildProcess,
  timeoutMs = 300_000,
): Promise<CliResult> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  try {
    const out = await child.output();
    if (timedOut) throw new Error(`the CLI did not finish within ${timeoutMs} ms`);
    const dec = new TextDecoder();
    // stdout is not piped when it was redirected to a file.
    let stdout = new Uint8Array(0);
    try {
      stdout = out.stdout;
    } catch { /* not piped */ }
    return {
      code: out.code,
      signal: out.signal,
      stdout,
      out: dec.decode(stdout),
      err: dec.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Run the CLI as a process to the end.
 *
 * @param args Arguments after `cli/main.ts`.
 * @param options Standard input, redirections, umask, environment, timeout.
 * @returns Exit code, signal, standard output and error.
 */
export async function execCli(args: string[], options: CliProcessOptions = {}): Promise<CliResult> {
  const child = spawnCli(args, options);
  if (options.stdin) {
    const w = child.stdin.getWriter();
    try {
      await w.write(options.stdin);
      await w.close();
    } catch { /* the CLI may stop reading early */ }
  }
  return await collectCli(child, options.timeoutMs);
}

/**
 * Assert that standard error is exactly one `error: …` line matching
 * `pattern`: no stack trace, no second line.
 *
 * @param err Standard error text.
 * @param pattern What the line must say.
 */
export function assertOneErrorLine(err: string, pattern: RegExp): void {
  assert.match(err, /^error: [^\n]*\n$/, `not one error line: ${JSON.stringify(err)}`);
  assert.doesNotMatch(err, /^\s+at /m);
  assert.match(err, pattern);
}
