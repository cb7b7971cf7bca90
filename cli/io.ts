/**
 * What a CLI command receives: text sinks for stdout and stderr, so tests can
 * run commands in-process. Bulk data goes through `createAtomicOutput`.
 *
 * @module
 */

/** Text output of a command. */
export interface CliIo {
  /** Write text to standard output. */
  out(text: string): Promise<void>;
  /** Write text to standard error. */
  err(text: string): Promise<void>;
  /** Whether standard error is a terminal (progress is shown only then). */
  stderrIsTerminal: boolean;
}

/** A CLI subcommand: returns the process exit code. */
export type CommandRun = (args: string[], io: CliIo) => Promise<number>;

/** A usage mistake: exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * A command failed for a reason that is neither bad input nor a bad command
 * line (e.g. `no-plug-state`: the input carries no plug state and none was
 * given): exit code 1, `code` in the JSON error (docs/glossary.md).
 */
export class CommandError extends Error {
  override name = "CommandError";
  /** Stable code for programs. */
  readonly code: string;

  /**
   * @param code Stable code for programs.
   * @param message One line for people.
   */
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

const encoder = new TextEncoder();

/** The process's real standard streams. */
export function denoIo(): CliIo {
  return {
    async out(text) {
      await writeAllTo(Deno.stdout, encoder.encode(text));
    },
    async err(text) {
      await writeAllTo(Deno.stderr, encoder.encode(text));
    },
    stderrIsTerminal: Deno.stderr.isTerminal(),
  };
}

async function writeAllTo(w: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  let done = 0;
  while (done < bytes.byteLength) done += await w.write(bytes.subarray(done));
}
