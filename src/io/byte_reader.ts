/**
 * The pull interface every decoder reads through, and its implementation over
 * any source of byte chunks (a `ReadableStream`, a file, a socket).
 *
 * Returned views point into the reader's chunks and are read-only by
 * contract. They stay valid (chunks are never reused), but a consumer that
 * keeps many of them keeps their chunks alive: copy with `.slice()` to keep
 * bytes for long.
 *
 * @module
 */

import { type ErrorFormat, UnexpectedEofError } from "../errors.ts";

/** A pull reader over a byte source that tracks its absolute offset. */
export interface ByteReader {
  /** Absolute offset of the next unread byte. */
  readonly offset: number;
  /**
   * Read exactly `n` bytes.
   * @throws {UnexpectedEofError} when the input ends first.
   */
  read(n: number, what?: string): Promise<Uint8Array>;
  /** Read exactly `n` bytes, or `undefined` when the input ends cleanly before the first one. */
  readOrEnd(n: number, what?: string): Promise<Uint8Array | undefined>;
  /** Return `n` bytes without awaiting when they are already buffered, else `undefined`. */
  tryReadSync(n: number): Uint8Array | undefined;
  /** Look at the next byte without consuming it; `undefined` at the end of input. */
  peekByte(): Promise<number | undefined>;
  /** Return whatever is buffered (at most `max` bytes), pulling once if nothing is; `undefined` at the end. */
  readChunk(max: number): Promise<Uint8Array | undefined>;
  /** Skip exactly `n` bytes. @throws {UnexpectedEofError} when the input ends first. */
  skip(n: number, what?: string): Promise<void>;
  /** Release the source. */
  cancel(reason?: unknown): Promise<void>;
}

/** A function that returns the next chunk of a source, or `undefined` at its end. */
export type PullSource = () => Promise<Uint8Array | undefined>;

/** Options for {@linkcode PullByteReader}. */
export interface PullByteReaderOptions {
  /** Format named in truncation errors. @default {"migration"} */
  format?: ErrorFormat;
  /** Offset of the first byte of the source. @default {0} */
  startOffset?: number;
  /** Called by `cancel()`. @default {undefined} */
  onCancel?: (reason?: unknown) => Promise<void> | void;
}

const EMPTY = new Uint8Array(0);

/**
 * A {@linkcode ByteReader} over a {@linkcode PullSource}. Reads that fit in the
 * current chunk return a zero-copy view; reads that span chunks copy once.
 *
 * @example Read a header
 * ```ts
 * import { PullByteReader } from "@vmem-dump/vmem-dump";
 * const chunks = [new Uint8Array([0x51, 0x45]), new Uint8Array([0x56, 0x4d])];
 * const reader = new PullByteReader(() => Promise.resolve(chunks.shift()));
 * console.log(await reader.read(4)); // the 4 bytes "QEVM"
 * ```
 */
export class PullByteReader implements ByteReader {
  #pull: PullSource;
  #format: ErrorFormat;
  #onCancel: ((reason?: unknown) => Promise<void> | void) | undefined;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #base: number; // offset of #chunk[0]
  #ended = false;

  /**
   * Construct it.
   *
   * @param pull Returns the next chunk, or `undefined` at the end.
   * @param options Error format, start offset, cancel hook.
   */
  constructor(pull: PullSource, options: PullByteReaderOptions = {}) {
    this.#pull = pull;
    this.#format = options.format ?? "migration";
    this.#base = options.startOffset ?? 0;
    this.#onCancel = options.onCancel;
  }

  /** Absolute offset of the next unread byte. */
  get offset(): number {
    return this.#base + this.#pos;
  }

  /** Pull the next non-empty chunk into the (empty) current slot; false at the end. */
  async #fill(): Promise<boolean> {
    while (!this.#ended) {
      const next = await this.#pull();
      if (next === undefined) {
        this.#ended = true;
        return false;
      }
      if (next.byteLength === 0) continue;
      this.#chunk = next;
      this.#pos = 0;
      return true;
    }
    return false;
  }

  #eof(n: number, what: string | undefined): never {
    const have = this.#chunk.byteLength - this.#pos;
    throw new UnexpectedEofError(
      `Cannot read ${what ?? `${n} bytes`}: input ended after ${have} of ${n} bytes`,
      this.#format,
      this.offset + have,
    );
  }

  /** Read exactly `n` bytes. */
  async read(n: number, what?: string): Promise<Uint8Array> {
    const got = await this.readOrEnd(n, what);
    if (got === undefined) this.#eof(n, what);
    return got;
  }

  /** Read exactly `n` bytes, or `undefined` at a clean end. */
  async readOrEnd(n: number, what?: string): Promise<Uint8Array | undefined> {
    const sync = this.tryReadSync(n);
    if (sync !== undefined) return sync;
    if (n > 0x4000_0000) {
      throw new RangeError(`Cannot read ${n} bytes at once: reads are limited to 1 GiB`);
    }
    // Gather across chunks into one new buffer.
    const out = new Uint8Array(n);
    let have = 0;
    while (have < n) {
      const avail = this.#chunk.byteLength - this.#pos;
      if (avail === 0) {
        if (!(await this.#fillEmpty())) {
          if (have === 0) return undefined;
          throw new UnexpectedEofError(
            `Cannot read ${what ?? `${n} bytes`}: input ended after ${have} of ${n} bytes`,
            this.#format,
            this.offset,
          );
        }
        continue;
      }
      const take = Math.min(avail, n - have);
      out.set(this.#chunk.subarray(this.#pos, this.#pos + take), have);
      this.#pos += take;
      have += take;
    }
    return out;
  }

  /** Replace an exhausted chunk with the next one. */
  async #fillEmpty(): Promise<boolean> {
    this.#base += this.#pos;
    this.#chunk = EMPTY;
    this.#pos = 0;
    return await this.#fill();
  }

  /** Return `n` buffered bytes without awaiting, or `undefined`. */
  tryReadSync(n: number): Uint8Array | undefined {
    const end = this.#pos + n;
    if (end > this.#chunk.byteLength) return undefined;
    const view = this.#chunk.subarray(this.#pos, end);
    this.#pos = end;
    return view;
  }

  /** Look at the next byte without consuming it. */
  async peekByte(): Promise<number | undefined> {
    if (this.#pos >= this.#chunk.byteLength && !(await this.#fillEmpty())) return undefined;
    return this.#chunk[this.#pos];
  }

  /** Return up to `max` buffered bytes, pulling once if none are buffered. */
  async readChunk(max: number): Promise<Uint8Array | undefined> {
    if (this.#pos >= this.#chunk.byteLength && !(await this.#fillEmpty())) return undefined;
    const take = Math.min(max, this.#chunk.byteLength - this.#pos);
    return this.tryReadSync(take);
  }

  /** Skip exactly `n` bytes without copying them. */
  async skip(n: number, what?: string): Promise<void> {
    let left = n;
    while (left > 0) {
      const got = await this.readChunk(left);
      if (got === undefined) {
        throw new UnexpectedEofError(
          `Cannot skip ${what ?? `${n} bytes`}: input ended after ${n - left} of ${n} bytes`,
          this.#format,
          this.offset,
        );
      }
      left -= got.byteLength;
    }
  }

  /** Release the source. */
  async cancel(reason?: unknown): Promise<void> {
    this.#ended = true;
    await this.#onCancel?.(reason);
  }
}

/**
 * A {@linkcode ByteReader} over a `ReadableStream<Uint8Array>`.
 *
 * @example
 * ```ts
 * import { StreamByteReader } from "@vmem-dump/vmem-dump";
 * const reader = new StreamByteReader(new Blob(["QEVM"]).stream());
 * console.log(new TextDecoder().decode(await reader.read(4)));
 * ```
 */
export class StreamByteReader extends PullByteReader {
  /**
   * Construct it.
   *
   * @param stream The byte stream to read.
   * @param options Error format and start offset.
   */
  constructor(
    stream: ReadableStream<Uint8Array>,
    options: Omit<PullByteReaderOptions, "onCancel"> = {},
  ) {
    const reader = stream.getReader();
    super(async () => {
      const { value, done } = await reader.read();
      return done ? undefined : value;
    }, { ...options, onCancel: (reason) => reader.cancel(reason) });
  }
}

/**
 * A {@linkcode ByteReader} over bytes already in memory (for tests and small inputs).
 *
 * @example
 * ```ts
 * import { bytesReader } from "@vmem-dump/vmem-dump";
 * const reader = bytesReader(new Uint8Array([1, 2, 3]));
 * console.log((await reader.read(2)).length); // 2
 * ```
 */
export function bytesReader(
  bytes: Uint8Array,
  options: Omit<PullByteReaderOptions, "onCancel"> = {},
): PullByteReader {
  let given = false;
  return new PullByteReader(() => {
    if (given) return Promise.resolve(undefined);
    given = true;
    return Promise.resolve(bytes);
  }, options);
}
