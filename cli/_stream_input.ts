/**
 * Open a migration stream for a command: a file or `-`, unwrapped from its
 * container (gzip, zstd, libvirt save image) when it has one.
 */

import { openInput } from "../src/io/file.ts";
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
   * Recycle read buffers (see `recycleChunks` of `openInput`): only for
   * consumers that finish each batch before pulling the next. @default {false}
   */
  recycle?: boolean;
}

/** Open `path` (or `-`) as a migration stream, through its container. */
export async function openStreamInput(
  path: string,
  options: StreamInputOptions = {},
): Promise<StreamInput> {
  const input = await openInput(path, options.recycle ? { recycleChunks: 16 } : {});
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
