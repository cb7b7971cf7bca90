/**
 * Where a kdump writer's bytes go: a path written atomically (plain format:
 * random access to the temporary file; flattened: front to back, so `-`
 * works too), or a caller's {@linkcode KdumpSink}.
 *
 * @module
 */

import { type AtomicOutputOptions, createAtomicOutput } from "../io/file.ts";
import { flattenedSink, type KdumpSink } from "../kdump/writer.ts";

/** A kdump output being written. */
export interface KdumpOutput {
  /** The sink for {@linkcode KdumpWriter}. */
  sink: KdumpSink;
  /** Make the file appear (rename into place). */
  commit(): Promise<void>;
  /** Remove the temporary file. */
  abort(): Promise<void>;
}

/** Where to write a kdump file. */
export type KdumpTarget = string | KdumpSink;

/**
 * Open a kdump output.
 *
 * @param target A path (`-` only with `flattened`) or a sink.
 * @param flattened Write the flattened container instead of a plain file.
 * @param policy For a path: the output policy (inputs never replaced, `force`, permissions).
 * @returns The output.
 * @throws {TypeError} for `-` without `flattened` (a plain kdump file needs random access).
 *
 * @example
 * ```ts ignore
 * import { openKdumpOutput } from "@vmem-dump/vmem-dump/dumps";
 * const out = await openKdumpOutput("guest.kdump", false, { inputs: ["guest.elf"] });
 * ```
 */
export async function openKdumpOutput(
  target: KdumpTarget,
  flattened: boolean,
  policy: AtomicOutputOptions = {},
): Promise<KdumpOutput> {
  if (typeof target !== "string") {
    return { sink: target, commit: () => Promise.resolve(), abort: () => Promise.resolve() };
  }
  if (target === "-" && !flattened) {
    throw new TypeError(
      "A plain kdump file cannot be written to standard output: write a file, or the flattened format",
    );
  }
  const out = await createAtomicOutput(target, policy);
  const positional = out.positional;
  if (!flattened && positional === undefined) {
    await out.abort();
    throw new TypeError(
      `A plain kdump file needs random access and ${target} is not a regular file: write a file, or the flattened format`,
    );
  }
  if (flattened || positional === undefined) {
    return { sink: flattenedSink((c) => out.write(c)), commit: out.commit, abort: out.abort };
  }
  return {
    sink: {
      writeAt: positional.writeAt,
      readAt: positional.readAt,
      truncate: positional.truncate,
    },
    commit: out.commit,
    abort: out.abort,
  };
}
