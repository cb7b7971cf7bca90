/**
 * A {@linkcode ByteReader} over a {@linkcode PositionalReader} whose large
 * skips are seeks: the decoder can walk a file in which the stream jumps over
 * regions it does not read (QEMU's mapped-ram files reserve the pages of
 * every RAMBlock between two parts of the stream), at the cost of the bytes
 * it actually reads.
 *
 * @module
 */

import { type ErrorFormat, UnexpectedEofError } from "../errors.ts";
import { type ByteReader, PullByteReader, type ViewLifetime } from "./byte_reader.ts";
import type { PositionalReader } from "./positional.ts";

/** Options for {@linkcode positionalByteReader}. */
export interface PositionalByteReaderOptions {
  /** File offset of the first byte read; reader offsets are file offsets. @default {0} */
  startOffset?: number;
  /** Size of each read. @default {262144} */
  chunkSize?: number;
  /** Format named in truncation errors. @default {"migration"} */
  format?: ErrorFormat;
}

/** Default read size: small, because a mapped-ram file's stream parts are short. */
const DEFAULT_CHUNK = 1 << 18;

/**
 * A reader over `reader` starting at `startOffset`. Offsets are absolute
 * file offsets. A `skip` longer than one chunk moves the read position
 * without reading; reads are issued in `chunkSize` pieces, and each chunk is
 * a fresh buffer, so views stay valid (`viewLifetime` `"stable"`).
 *
 * @param reader The file.
 * @param options Start offset, read size, error format.
 * @returns The byte reader.
 *
 * @example Skip a hole without reading it
 * ```ts
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * import { positionalByteReader } from "./positional_byte_reader.ts";
 * const file = new Uint8Array(1 << 20);
 * file[file.length - 1] = 7;
 * const reader = positionalByteReader(bytesPositional(file));
 * await reader.skip(file.length - 1);
 * console.log((await reader.read(1))[0]); // 7
 * ```
 */
export function positionalByteReader(
  reader: PositionalReader,
  options: PositionalByteReaderOptions = {},
): ByteReader {
  return new PositionalByteReader(reader, options);
}

class PositionalByteReader implements ByteReader {
  #file: PositionalReader;
  #chunk: number;
  #format: ErrorFormat;
  #inner: PullByteReader;
  /** Each chunk is a fresh buffer, and a seek drops the old ones without reusing them. */
  readonly viewLifetime: ViewLifetime = "stable";

  constructor(file: PositionalReader, options: PositionalByteReaderOptions) {
    this.#file = file;
    this.#chunk = options.chunkSize ?? DEFAULT_CHUNK;
    this.#format = options.format ?? "migration";
    this.#inner = this.#at(options.startOffset ?? 0);
  }

  /** A pull reader whose next byte is the file byte at `fileOffset`. */
  #at(fileOffset: number): PullByteReader {
    let next = fileOffset;
    return new PullByteReader(async () => {
      const want = Math.min(this.#chunk, this.#file.byteLength - next);
      if (want <= 0) return undefined;
      const buf = new Uint8Array(want);
      const n = await this.#file.readInto(next, buf);
      next += n;
      return n === 0 ? undefined : buf.subarray(0, n);
    }, { format: this.#format, startOffset: fileOffset });
  }

  get offset(): number {
    return this.#inner.offset;
  }

  read(n: number, what?: string): Promise<Uint8Array> {
    return this.#inner.read(n, what);
  }

  readOrEnd(n: number, what?: string): Promise<Uint8Array | undefined> {
    return this.#inner.readOrEnd(n, what);
  }

  tryReadSync(n: number): Uint8Array | undefined {
    return this.#inner.tryReadSync(n);
  }

  peekByte(): Promise<number | undefined> {
    return this.#inner.peekByte();
  }

  readChunk(max: number): Promise<Uint8Array | undefined> {
    return this.#inner.readChunk(max);
  }

  buffered(): Uint8Array {
    return this.#inner.buffered();
  }

  advance(n: number): void {
    this.#inner.advance(n);
  }

  fill(n: number): Promise<boolean> {
    return this.#inner.fill(n);
  }

  async skip(n: number, what?: string): Promise<void> {
    if (n <= this.#chunk) return await this.#inner.skip(n, what);
    const from = this.offset;
    const target = from + n;
    if (!Number.isSafeInteger(target) || target > this.#file.byteLength) {
      throw new UnexpectedEofError(
        `Cannot skip ${what ?? `${n} bytes`} at 0x${from.toString(16)}: the file ends at 0x${
          this.#file.byteLength.toString(16)
        }`,
        this.#format,
        this.#file.byteLength,
      );
    }
    this.#inner = this.#at(target);
  }

  async cancel(reason?: unknown): Promise<void> {
    await this.#inner.cancel(reason);
  }
}
