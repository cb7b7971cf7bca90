/**
 * Open a migration stream for a command: a file or `-`, unwrapped from its
 * container (gzip, zstd, libvirt save image) when it has one.
 */

import { openFileReader } from "../src/io/file.ts";
import type { ByteReader } from "../src/io/byte_reader.ts";
import { openContainer, type OpenedContainer } from "../src/container/open.ts";

/** An opened stream. */
export interface StreamInput {
  /** Reader over the (decompressed) migration stream. */
  reader: ByteReader;
  /** What wrapped it: `raw`, `gzip`, `zstd` or `libvirt-save`. */
  container: OpenedContainer["kind"];
  /** The container details (libvirt header, inner compression). */
  opened: OpenedContainer;
  /** File size when the input is a regular file. */
  byteLength: number | undefined;
  /** Close the file. */
  close(): void;
}

/** Options for {@linkcode openStreamInput}. */
export interface StreamInputOptions {
  /**
   * The fast path for consumers that finish each batch before pulling the
   * next (the record pipeline, inspect): blocking reads of 256 KiB into a
   * ring of 4 reused buffers (see `syncReads` and `recycleChunks` of
   * `openFileReader`). Measured on the 231 MB `out` s3 stream: 37–48 ms of CPU to
   * read it, against 66–83 ms for asynchronous 1 MiB reads into a ring of
   * 16 (a thread hop per read, and buffers that no longer fit the cache).
   * A command-line run has nothing else for the event loop to do while it
   * waits for its input. @default {false}
   */
  recycle?: boolean;
}

/** Open `path` (or `-`) as a migration stream, through its container. */
export async function openStreamInput(
  path: string,
  options: StreamInputOptions = {},
): Promise<StreamInput> {
  const input = await openFileReader(
    path,
    options.recycle ? { recycleChunks: 4, chunkSize: 256 << 10, syncReads: true } : {},
  );
  try {
    const opened = await openContainer(input.reader);
    return {
      reader: opened.reader,
      container: opened.kind,
      opened,
      byteLength: input.byteLength,
      close: input.close,
    };
  } catch (e) {
    input.close();
    throw e;
  }
}

/**
 * The size of a regular file, `null` for `-`, a pipe or a device (what a
 * report's `input.byteLength` says).
 *
 * @param path A path or `-`.
 * @returns The size, or `null`.
 */
export async function fileByteLength(path: string): Promise<number | null> {
  if (path === "-") return null;
  const info = await Deno.stat(path);
  return info.isFile ? info.size : null;
}
