/**
 * Files pinned by identity for the readers that open them by path. A
 * command that opens an input more than once (a first pass for the plug
 * state and the full pass; the kind told by one open, the dump read and
 * hashed by others) pins the input's device and inode before its first
 * open; every later open of that path by `openFileReader`, `readFileRange`,
 * `openPositional` and `sha256File` then checks that it opened the same
 * file, so no read of a file swapped in between goes unnoticed, even when
 * the first file is put back afterwards.
 *
 * Pins belong to the process (the command-line tool pins its inputs for
 * the length of one command) and are keyed by the path as given.
 *
 * @module
 */

import { InputChangedError } from "../errors.ts";

/** Device and inode of a file (after following links). */
export interface PinnedIdentity {
  /** Device number. */
  dev: number;
  /** Inode number. */
  ino: number;
}

const pins = new Map<string, PinnedIdentity>();

/**
 * Pin `path` to the file with `identity` until the returned handle is
 * disposed.
 *
 * @param path The path, exactly as the readers will be given it.
 * @param identity The file's device and inode.
 * @returns Dispose it to unpin.
 * @example
 * ```ts ignore
 * import { pinFileIdentity } from "./pinned_files.ts";
 * const info = await Deno.stat("s1.mig");
 * using _pin = pinFileIdentity("s1.mig", { dev: info.dev!, ino: info.ino! });
 * ```
 */
export function pinFileIdentity(path: string, identity: PinnedIdentity): Disposable {
  pins.set(path, identity);
  return {
    [Symbol.dispose]() {
      if (pins.get(path) === identity) pins.delete(path);
    },
  };
}

/**
 * The identity `path` is pinned to, if it is.
 *
 * @param path The path as given.
 * @returns The identity, or `undefined`.
 */
export function pinnedIdentity(path: string): PinnedIdentity | undefined {
  return pins.get(path);
}

/**
 * Check a file just opened under `path` against the path's pin (nothing to
 * check when it has none).
 *
 * @param path The path it was opened by.
 * @param opened Device and inode of the opened file (`fstat`).
 * @param pin The pin to check against. @default {pinnedIdentity(path)}
 * @throws {InputChangedError} when it is another file.
 */
export function checkPinnedIdentity(
  path: string,
  opened: { dev: number | null; ino: number | null },
  pin: PinnedIdentity | undefined = pins.get(path),
): void {
  if (pin === undefined || opened.dev === null || opened.ino === null) return;
  if (opened.dev !== pin.dev || opened.ino !== pin.ino) {
    throw new InputChangedError(path, "another file was opened under its name");
  }
}
