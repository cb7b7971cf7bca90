/**
 * The input files of a command, pinned before anything opens them. A
 * command that opens an input more than once (a first pass for the plug
 * state and the full pass; the kind told by one open and the dump read by
 * another; the input's SHA-256 taken after the scan) must not give a
 * verdict, or commit an output, made of two files: before it does, it
 * checks that every path still names the file it named at the start, and
 * that the file was not written meanwhile.
 *
 * Every open of a pinned path by the library's readers checks device and
 * inode (`src/io/pinned_files.ts`): a file swapped in and read is found even
 * when the first file is put back afterwards. The check before the verdict
 * compares device and inode (another file), size, modification
 * time and status-change time (a write, or a file moved or linked away and
 * back: the kernel sets the ctime, which no user can set back; Deno gives
 * it to the second), and for a
 * path that is a symbolic link, the link itself (a link replaced and
 * replaced back is a new link). Only regular files are pinned: a FIFO or a
 * device is read once.
 *
 * @module
 */

import { InputChangedError } from "../src/errors.ts";
import { pinFileIdentity } from "../src/io/pinned_files.ts";

/** What identifies one version of a file. */
interface FileVersion {
  dev: number | null;
  ino: number | null;
  size: number;
  mtime: number | undefined;
  ctime: number | undefined;
}

interface Pinned {
  path: string;
  file: FileVersion;
  /** The path itself when it is a symbolic link. */
  link: FileVersion | undefined;
}

/**
 * Pinned input files: every open of a pinned path by the library's readers
 * checks that it opened the pinned file; {@linkcode InputPin.check} before a
 * verdict or a commit checks that it was not written meanwhile. Dispose it
 * when the command ends.
 */
export interface InputPin extends Disposable {
  /**
   * Throw when a pinned path no longer names the same, unchanged file.
   * @throws {InputChangedError} code `input-changed` (exit 1).
   */
  check(): Promise<void>;
}

function versionOf(info: Deno.FileInfo): FileVersion {
  return {
    dev: info.dev,
    ino: info.ino,
    size: info.size,
    mtime: info.mtime?.getTime(),
    ctime: info.ctime?.getTime(),
  };
}

/** How `now` differs from `then`, in words, or `undefined` when it does not. */
function difference(then: FileVersion, now: FileVersion): string | undefined {
  if (then.dev !== now.dev || then.ino !== now.ino) return "it is another file now";
  if (then.size !== now.size) return `its size went from ${then.size} to ${now.size} bytes`;
  if (then.mtime !== now.mtime || then.ctime !== now.ctime) return "it was written or moved";
  return undefined;
}

/**
 * Pin the regular files among `paths` (`-`, `undefined`, a FIFO, a device or
 * a missing path are left out: the opener reports a missing one).
 *
 * @param paths The command's input paths, before it opens any of them.
 * @returns The pin.
 */
export async function pinInputs(paths: readonly (string | undefined)[]): Promise<InputPin> {
  const pinned: Pinned[] = [];
  const held: Disposable[] = [];
  for (const path of new Set(paths)) {
    if (path === undefined || path === "-") continue;
    let info: Deno.FileInfo;
    let linkInfo: Deno.FileInfo;
    try {
      linkInfo = await Deno.lstat(path);
      info = linkInfo.isSymlink ? await Deno.stat(path) : linkInfo;
    } catch {
      continue;
    }
    if (!info.isFile) continue;
    if (info.dev !== null && info.ino !== null) {
      held.push(pinFileIdentity(path, { dev: info.dev, ino: info.ino }));
    }
    pinned.push({
      path,
      file: versionOf(info),
      link: linkInfo.isSymlink ? versionOf(linkInfo) : undefined,
    });
  }
  return {
    async check() {
      for (const p of pinned) {
        let why: string | undefined;
        try {
          const linkInfo = await Deno.lstat(p.path);
          if (p.link !== undefined) {
            why = linkInfo.isSymlink
              ? difference(p.link, versionOf(linkInfo)) && "the link was replaced"
              : "it is no longer a link";
          } else if (linkInfo.isSymlink) why = "it is a link now";
          why ??= difference(p.file, versionOf(await Deno.stat(p.path)));
        } catch {
          why = "it is gone";
        }
        if (why !== undefined) throw new InputChangedError(p.path, why);
      }
    },
    [Symbol.dispose]() {
      for (const h of held) h[Symbol.dispose]();
    },
  };
}
