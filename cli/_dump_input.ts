/**
 * What a dump command's input is (strip, convert --to, scan of a dump), told
 * by the library's `openInput` as for every command, so that all commands
 * name a stream, a dump or a compressed dump alike. Dumps are read at random
 * offsets, so a dump inside gzip or zstd is refused with what to do.
 *
 * @module
 */

import { FormatError, UnsupportedFeatureError } from "../src/errors.ts";
import { type Input, INPUT_KIND_NAMES, openInput } from "../src/input/open_input.ts";
import { UsageError } from "./io.ts";

/** The dump kinds. */
export type DumpInputKind = "elf" | "kdump" | "kdump-flattened";

/** Bytes read to tell the kind (the flattened kdump header needs 24). */
const PROBE_CHUNK = 64 << 10;

/**
 * Whether `path` names a regular file (after following links). A missing
 * path gives `false`: its opener reports it.
 *
 * @param path The path.
 * @returns Whether it is a regular file.
 */
export async function isRegularFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * Refuse, before anything opens it, an input path that cannot be read at
 * random offsets: a FIFO, a socket or a device. Opening a FIFO takes what
 * its writer sent, and opening it again waits for a writer that is gone, so
 * a command that reads dumps must tell before its first open. A path that
 * does not exist is left to the opener to report.
 *
 * @param path The input path (not `-`: each command words that refusal itself).
 * @param command What needs it, for the message (`strip`, `scanning a dump`).
 * @throws {UsageError} when the path is not a regular file (exit 2).
 */
export async function requireRegularFile(path: string, command: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    return;
  }
  if (info.isFile) return;
  const what = info.isFifo
    ? "a FIFO"
    : info.isDirectory
    ? "a directory"
    : info.isSocket
    ? "a socket"
    : "a device";
  throw new UsageError(
    `${command} reads its input at random offsets: ${path} is ${what}, not a regular file ` +
      "(copy it to a file first)",
  );
}

/**
 * Refuse a dump inside a compressed container or a libvirt image: the dump
 * readers need the file itself.
 *
 * @param input What `openInput` saw.
 * @param command The command, for the message.
 * @throws {UnsupportedFeatureError} for a dump that is not a plain file.
 */
export function refuseWrappedDump(input: Input, command: string): void {
  if (input.container === "raw") return;
  throw new UnsupportedFeatureError(
    `Cannot ${command} ${input.path}: it is ${INPUT_KIND_NAMES[input.kind]} inside a ` +
      `${input.container} container; dumps are read at random offsets: unpack it first`,
    "container",
    0,
  );
}

/**
 * Tell what a dump command's input is, through `openInput` (the file is
 * closed again: the dump readers open it by path). For a command given no
 * `--base` (a raw memory image is told by that option, not by its bytes).
 *
 * @param path The input file.
 * @param command The command, for the messages (`strip`, `convert`).
 * @returns The dump kind.
 * @throws {FormatError} for a migration stream or mapped-ram file, or no known magic (code
 * `bad-magic`: a bad input, exit 1, not a bad command line).
 * @throws {UnsupportedFeatureError} for a dump inside gzip, zstd or a libvirt image.
 */
export async function dumpInputKind(path: string, command: string): Promise<DumpInputKind> {
  using input = await openInput(path, { allowUnknown: true, chunkSize: PROBE_CHUNK });
  if (input.kind === "unknown") {
    throw new FormatError(
      `Cannot ${command} ${path}: neither an ELF nor a kdump-compressed dump (a raw memory ` +
        "image needs --base GPA)",
      { format: "elf", code: "bad-magic", offset: 0 },
    );
  }
  if (input.kind === "migration" || input.kind === "mapped-ram") {
    throw new FormatError(
      `Cannot ${command} ${path}: it is ${INPUT_KIND_NAMES[input.kind]}, not a dump ` +
        "(filter and verify read streams; scan reads both)",
      { format: "migration", code: "bad-magic", offset: input.payloadOffset },
    );
  }
  refuseWrappedDump(input, command);
  return input.kind;
}
