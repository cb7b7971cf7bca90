/**
 * gzip streams in constant memory, through `node:zlib` (measured faster than
 * Web `DecompressionStream("gzip")` here; see docs/containers.md).
 * Multi-member files (`cat a.gz b.gz`) decompress to the concatenation.
 *
 * @module
 */

import { constants, createGunzip, createGzip } from "node:zlib";
import { type ErrorFormat, FormatError, UnexpectedEofError } from "../errors.ts";
import { type ByteReader, PullByteReader } from "../io/byte_reader.ts";
import { OUTPUT_CHUNK_SIZE, zlibPullSource, zlibStreamCompressor } from "./_zlib_bridge.ts";
import type { StreamCompressor } from "./compressor.ts";

/** Options for {@linkcode gunzipReader}. */
export interface GunzipOptions {
  /** Format named in truncation errors of the decompressed data. @default {"migration"} */
  format?: ErrorFormat;
  /** Pause decompression while this many decompressed bytes wait to be read. @default {8388608} */
  highWaterMark?: number;
}

/**
 * Decompress a gzip stream read from `source`, as a {@linkcode ByteReader}
 * over the decompressed bytes. Offsets of the returned reader count
 * decompressed bytes from 0.
 *
 * @param source Reader positioned at the gzip magic.
 * @param options Error format and output queue size.
 * @returns A reader over the decompressed stream.
 * @throws {UnexpectedEofError} (when reading) if the gzip data is truncated.
 * @throws {FormatError} (when reading) on corrupt data or a bad CRC.
 *
 * @example
 * ```ts
 * import { gzipSync } from "node:zlib";
 * import { bytesReader } from "@vmem-dump/vmem-dump";
 * import { gunzipReader } from "@vmem-dump/vmem-dump/container";
 * const reader = gunzipReader(bytesReader(gzipSync(new TextEncoder().encode("QEVM"))));
 * console.log(new TextDecoder().decode(await reader.read(4))); // "QEVM"
 * ```
 */
export function gunzipReader(source: ByteReader, options: GunzipOptions = {}): PullByteReader {
  const start = source.offset;
  let inputEnd = -1;
  const { pull, cancel } = zlibPullSource(source, {
    // node:zlib's gunzip reads concatenated members itself.
    newTransform: () => createGunzip({ chunkSize: OUTPUT_CHUNK_SIZE }),
    onInputEnd: () => {
      inputEnd = source.offset;
    },
    mapError: (e, consumed) => mapGzipError(e, start + consumed, inputEnd),
    ...(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark }),
  });
  return new PullByteReader(pull, { format: options.format ?? "migration", onCancel: cancel });
}

/** Turn a zlib error into a `FormatError` (truncation into `UnexpectedEofError`). */
function mapGzipError(e: unknown, offset: number, inputEnd: number): FormatError {
  const message = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: unknown }).code;
  if (code === "Z_BUF_ERROR" || /unexpected end/i.test(message)) {
    return new UnexpectedEofError(
      "Cannot decompress gzip data: input ended inside a gzip member",
      "container",
      inputEnd >= 0 ? inputEnd : offset,
    );
  }
  return new FormatError(
    `Cannot decompress gzip data: ${message}`,
    { format: "container", code: "bad-record", offset },
    { cause: e },
  );
}

/** Options for {@linkcode createGzipCompressor}. */
export interface GzipCompressOptions {
  /** Compression level 1 (fast) to 9 (small). @default {6} */
  level?: number;
}

/**
 * A streaming gzip compressor writing one gzip member to `sink`.
 *
 * @param sink Receives compressed chunks, one call at a time.
 * @param options Level.
 * @returns `write` (resolves once the chunk was consumed) and `close`.
 *
 * @example
 * ```ts
 * import { gunzipSync } from "node:zlib";
 * import { createGzipCompressor } from "@vmem-dump/vmem-dump/container";
 * const out: number[] = [];
 * const gz = createGzipCompressor(async (c) => { out.push(...c); }, { level: 1 });
 * await gz.write(new TextEncoder().encode("QEVM"));
 * await gz.close();
 * console.log(gunzipSync(new Uint8Array(out)).length); // 4
 * ```
 */
export function createGzipCompressor(
  sink: (chunk: Uint8Array) => Promise<void>,
  options: GzipCompressOptions = {},
): StreamCompressor {
  const level = options.level ?? constants.Z_DEFAULT_COMPRESSION;
  if (
    level !== constants.Z_DEFAULT_COMPRESSION &&
    (!Number.isInteger(level) || level < 0 || level > 9)
  ) {
    throw new RangeError(`Cannot use gzip level ${level}: it must be 0 to 9`);
  }
  return zlibStreamCompressor(createGzip({ level, chunkSize: OUTPUT_CHUNK_SIZE }), sink);
}
