/**
 * Run `vmem-dump` commands in-process for the mutation campaign: each
 * command's `run(args, io)` is called directly (not through `main()`), so
 * that a thrown error reaches the oracle as the object it is, with its
 * class, code and offset, instead of as the line `main()` prints.
 *
 * @module
 */

import type { CliIo, CommandRun } from "../../../cli/io.ts";
import { UsageError } from "../../../cli/io.ts";
import { type OffsetBound, OracleFailure, typedErrorLabel } from "./oracle.ts";

const LOADERS: Record<string, () => Promise<{ run: CommandRun }>> = {
  inspect: () => import("../../../cli/commands/inspect.ts"),
  plugmap: () => import("../../../cli/commands/plugmap.ts"),
  filter: () => import("../../../cli/commands/filter.ts"),
  verify: () => import("../../../cli/commands/verify.ts"),
  strip: () => import("../../../cli/commands/strip.ts"),
  scan: () => import("../../../cli/commands/scan.ts"),
  convert: () => import("../../../cli/commands/convert.ts"),
};

/** What one in-process command run gave. */
export interface CommandResult {
  /** Exit code (1 for a typed error that was thrown). */
  code: number;
  /** Standard output. */
  out: string;
  /** Standard error. */
  err: string;
  /** The thrown error's label (`FormatError:migration/bad-section`), when one was thrown. */
  error: string | undefined;
  /** The thrown error itself. */
  thrown: unknown;
  /**
   * The outcome in one word: `exit-0`, `exit-3`, `exit-4`, the error label,
   * or `exit-1` for an error the command printed itself.
   */
  label: string;
}

/**
 * Run `vmem-dump NAME ARGS` in-process.
 *
 * @param name Command name.
 * @param args Its arguments.
 * @param bound Offset bounds for thrown errors.
 * @returns Exit code, output and the error label.
 * @throws {OracleFailure} when the command throws an untyped error, a usage error or a typed error with a bad offset.
 */
export async function runCommand(
  name: string,
  args: string[],
  bound: OffsetBound = {},
): Promise<CommandResult> {
  const load = LOADERS[name];
  if (load === undefined) throw new TypeError(`unknown command ${name}`);
  const { run } = await load();
  let out = "";
  let err = "";
  const io: CliIo = {
    out(t) {
      out += t;
      return Promise.resolve();
    },
    err(t) {
      err += t;
      return Promise.resolve();
    },
    stderrIsTerminal: false,
  };
  try {
    const code = await run(args, io);
    return { code, out, err, error: undefined, thrown: undefined, label: `exit-${code}` };
  } catch (e) {
    if (e instanceof UsageError) {
      // The campaign's command lines are fixed and valid: a usage error is an untyped answer.
      throw new OracleFailure(
        "untyped-error",
        `${name}: usage error on a valid command line: ${e.message}`,
        { cause: e },
      );
    }
    const label = typedErrorLabel(e, bound);
    return { code: 1, out, err, error: label, thrown: e, label };
  }
}
