/**
 * zstd streams in constant memory, through the zstd of `node:zlib` (the
 * libzstd built into Deno; see docs/containers.md for the measurements that
 * chose it over WebAssembly ports).
 *
 * Two gaps of Deno 2.9's `node:zlib` zstd are closed here with a frame
 * walker ({@linkcode ZstdFrameScanner}): its decompressor stops after the
 * first frame (so `cat a.zst b.zst`, pzstd output or a leading skippable
 * frame lost data), and it ends quietly on a truncated frame. We cut the
 * input at frame ends, give every frame a fresh decompressor, and raise
 * `UnexpectedEofError` when the input stops inside a frame.
 *
 * @module
 */

import { constants, createZstdCompress, createZstdDecompress } from "node:zlib";
import { type ErrorFormat, FormatError, UnexpectedEofError } from "../errors.ts";
import { type ByteReader, PullByteReader } from "../io/byte_reader.ts";
import { OUTPUT_CHUNK_SIZE, zlibPullSource, zlibStreamCompressor } from "./_zlib_bridge.ts";
import type { StreamCompressor } from "./compressor.ts";
import {
  DEFAULT_ZSTD_WINDOW_LOG_MAX,
  formatByteSize,
  ZSTD_WINDOWLOG_MAX,
  ZstdFrameScanner,
} from "./zstd_frames.ts";

/** Options for {@linkcode zstdDecompressReader}. */
export interface ZstdDecompressOptions {
  /** Format named in truncation errors of the decompressed data. @default {"migration"} */
  format?: ErrorFormat;
  /**
   * Largest window log accepted (`ZSTD_d_windowLogMax`): 30 allows the 1 GiB
   * window of `zstd --long=30`; 27 is the `zstd` tool's own default. The
   * decoder allocates the window a frame asks for, up to this limit.
   * @default {30}
   */
  windowLogMax?: number;
  /** Pause decompression while this many decompressed bytes wait to be read. @default {8388608} */
  highWaterMark?: number;
}

/**
 * Decompress a zstd stream (one or more frames, skippable frames allowed)
 * read from `source`, as a {@linkcode ByteReader} over the decompressed bytes.
 * Offsets of the returned reader count decompressed bytes from 0.
 *
 * Memory stays bounded: the window (up to `2^windowLogMax`) plus
 * `highWaterMark` of queued output. Concatenated frames and skippable frames
 * are read like the `zstd` tool reads them.
 *
 * @param source Reader positioned at the first frame magic.
 * @param options Window limit, error format, output queue size.
 * @returns A reader over the decompressed stream.
 * @throws {UnexpectedEofError} (when reading) if the input ends inside a frame.
 * @throws {FormatError} (when reading) on corrupt data, trailing garbage or a window above the limit.
 *
 * @example Decompress a buffer
 * ```ts
 * import { zstdCompressSync } from "node:zlib";
 * import { bytesReader } from "@vmem-dump/vmem-dump";
 * import { zstdDecompressReader } from "@vmem-dump/vmem-dump/container";
 * const z = zstdCompressSync(new TextEncoder().encode("QEVM hello"));
 * const reader = zstdDecompressReader(bytesReader(z));
 * console.log(new TextDecoder().decode(await reader.read(10))); // "QEVM hello"
 * ```
 */
export function zstdDecompressReader(
  source: ByteReader,
  options: ZstdDecompressOptions = {},
): PullByteReader {
  const windowLogMax = options.windowLogMax ?? DEFAULT_ZSTD_WINDOW_LOG_MAX;
  const start = source.offset;
  const scanner = new ZstdFrameScanner({ startOffset: start, windowLogMax });
  const { pull, cancel } = zlibPullSource(source, {
    // One decompressor per frame: Deno's node:zlib zstd stops after the first frame.
    newTransform: () =>
      createZstdDecompress({
        chunkSize: OUTPUT_CHUNK_SIZE,
        params: { [constants.ZSTD_d_windowLogMax]: windowLogMax },
      }),
    split: (chunk) => {
      const ends = scanner.push(chunk);
      if (ends.length === 0) return [{ bytes: chunk, endsMember: false }];
      const pieces = [];
      let from = 0;
      for (const end of ends) {
        pieces.push({ bytes: chunk.subarray(from, end), endsMember: true });
        from = end;
      }
      if (from < chunk.byteLength) pieces.push({ bytes: chunk.subarray(from), endsMember: false });
      return pieces;
    },
    onInputEnd: () => scanner.finish(),
    mapError: (e, consumed) => mapZstdError(e, start + consumed, windowLogMax),
    ...(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark }),
  });
  return new PullByteReader(pull, { format: options.format ?? "migration", onCancel: cancel });
}

/** Turn a libzstd error from `node:zlib` into a `FormatError`. */
function mapZstdError(e: unknown, offset: number, windowLogMax: number): FormatError {
  const message = e instanceof Error ? e.message : String(e);
  if (/too much memory/i.test(message)) {
    return new FormatError(
      `Cannot decompress zstd data: a frame needs a window above ${
        formatByteSize(2 ** windowLogMax)
      } (windowLogMax ${windowLogMax}; the stream was written with a larger --long)`,
      { format: "container", code: "too-large", offset },
      { cause: e },
    );
  }
  if (/destination buffer is too small/i.test(message)) {
    // libzstd's dstSize_tooSmall when streaming: a single-segment frame holds more than the
    // content size its header declares (the decoder sized its window by that field).
    return new FormatError(
      "Cannot decompress zstd data: a frame holds more data than its header declares",
      { format: "container", code: "bad-record", offset },
      { cause: e },
    );
  }
  if (/(src size is incorrect|truncated|end of)/i.test(message)) {
    return new UnexpectedEofError(`Cannot decompress zstd data: ${message}`, "container", offset);
  }
  return new FormatError(
    `Cannot decompress zstd data: ${message.replace(/^Zstd decompress error: /, "")}`,
    { format: "container", code: "bad-record", offset },
    { cause: e },
  );
}

/** Options for {@linkcode createZstdCompressor}. */
export interface ZstdCompressOptions {
  /** Compression level, 1 (fast) to 19; negative levels are faster still. @default {3} */
  level?: number;
  /** Write a content checksum at the end of each frame, as the `zstd` tool does. @default {true} */
  checksum?: boolean;
  /** Window log (`--long=N` style long-distance matching when set). @default {undefined} */
  windowLog?: number;
}

/**
 * A streaming zstd compressor writing one frame to `sink`.
 *
 * @param sink Receives compressed chunks, one call at a time.
 * @param options Level, checksum, long window.
 * @returns `write` (compress a chunk; resolves once it was consumed) and
 *   `close` (finish the frame).
 *
 * @example
 * ```ts
 * import { zstdDecompressSync } from "node:zlib";
 * import { createZstdCompressor } from "@vmem-dump/vmem-dump/container";
 * const out: number[] = [];
 * const z = createZstdCompressor(async (c) => { out.push(...c); }, { level: 1 });
 * await z.write(new TextEncoder().encode("QEVM"));
 * await z.close();
 * console.log(zstdDecompressSync(new Uint8Array(out)).length); // 4
 * ```
 */
export function createZstdCompressor(
  sink: (chunk: Uint8Array) => Promise<void>,
  options: ZstdCompressOptions = {},
): StreamCompressor {
  const level = options.level ?? 3;
  if (!Number.isInteger(level) || level < -131072 || level > 22) {
    throw new RangeError(`Cannot use zstd level ${level}: it must be an integer up to 22`);
  }
  const params: Record<number, number> = {
    [constants.ZSTD_c_compressionLevel]: level,
    [constants.ZSTD_c_checksumFlag]: options.checksum === false ? 0 : 1,
  };
  if (options.windowLog !== undefined) {
    if (
      !Number.isInteger(options.windowLog) || options.windowLog < 10 ||
      options.windowLog > ZSTD_WINDOWLOG_MAX
    ) {
      throw new RangeError(`Cannot use zstd windowLog ${options.windowLog}: it must be 10 to 31`);
    }
    params[constants.ZSTD_c_windowLog] = options.windowLog;
    params[constants.ZSTD_c_enableLongDistanceMatching] = 1;
  }
  return zlibStreamCompressor(createZstdCompress({ chunkSize: OUTPUT_CHUNK_SIZE, params }), sink);
}
