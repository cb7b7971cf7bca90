/**
 * Put bytes that were read for sniffing back in front of a reader. Private.
 *
 * @module
 */

import type { ErrorFormat } from "../errors.ts";
import { type ByteReader, PullByteReader } from "../io/byte_reader.ts";

/** Chunk size asked of the underlying reader; it hands out its own chunks unchanged. */
const PASS_CHUNK_SIZE = 1 << 30;

/** Options for {@linkcode prefixedReader}. */
export interface PrefixedReaderOptions {
  /** Format named in truncation errors. */
  format: ErrorFormat;
  /** Offset of the prefix's first byte. */
  startOffset: number;
}

/**
 * A reader that yields `prefix` and then everything `source` still holds,
 * passing the source's chunks through without copying (so it has the
 * source's view lifetime).
 *
 * @param prefix Bytes already consumed from `source` (copied by the caller if needed).
 * @param source The rest of the input.
 * @param options Format and offset of the prefix.
 * @returns A new reader.
 */
export function prefixedReader(
  prefix: Uint8Array,
  source: ByteReader,
  options: PrefixedReaderOptions,
): PullByteReader {
  let first: Uint8Array | undefined = prefix.byteLength > 0 ? prefix : undefined;
  return new PullByteReader(() => {
    if (first !== undefined) {
      const chunk = first;
      first = undefined;
      return Promise.resolve(chunk);
    }
    return source.readChunk(PASS_CHUNK_SIZE);
  }, {
    format: options.format,
    startOffset: options.startOffset,
    onCancel: (reason) => source.cancel(reason),
    viewLifetime: source.viewLifetime,
  });
}

/**
 * A reader over the rest of `source` whose offsets start at 0 (for a payload
 * that follows a header, e.g. the raw stream inside a libvirt save image).
 *
 * @param source Positioned at the payload.
 * @param format Format named in truncation errors.
 * @returns A new reader.
 */
export function rebasedReader(source: ByteReader, format: ErrorFormat): PullByteReader {
  return new PullByteReader(() => source.readChunk(PASS_CHUNK_SIZE), {
    format,
    startOffset: 0,
    onCancel: (reason) => source.cancel(reason),
    viewLifetime: source.viewLifetime,
  });
}
