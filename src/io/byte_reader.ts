/**
 * The pull interface every decoder reads through, and its implementation over
 * any source of byte chunks (a `ReadableStream`, a file, a socket).
 *
 * Two ways to read:
 *
 * - field by field, awaiting: `read`, `readOrEnd`, `peekByte`, `skip`,
 *   `readChunk` (headers of containers and other rare structures);
 * - window by window, for parsers that work synchronously over whatever is
 *   buffered (the migration decoder): `buffered()` shows the unread bytes,
 *   `advance(n)` consumes them, and `fill(n)` is the one await, which makes
 *   at least `n` unread bytes contiguous (pulling and, across a chunk
 *   boundary, copying just those bytes once).
 *
 * **Buffer lifetime.** Returned views point into the reader's chunks and are
 * read-only by contract. How long they stay valid is part of the reader's
 * type, {@linkcode ByteReader.viewLifetime}:
 *
 * - `"stable"`: chunks are never reused, a view stays valid as long as it is
 *   referenced (keeping many views keeps their chunks alive: copy with
 *   `.slice()` to keep bytes for long);
 * - `"until-refill"`: the source recycles its buffers (the file reader with
 *   `recycleChunks`, the proxy's socket reader), so a view is valid only
 *   until the reader pulls its next chunk, i.e. until the next `fill`,
 *   `read`, `readOrEnd`, `peekByte`, `readChunk` or `skip` that has to wait
 *   for input. A consumer that keeps bytes past that copies them.
 *
 * @module
 */

import { type ErrorFormat, UnexpectedEofError } from "../errors.ts";

/**
 * How long a view returned by a {@linkcode ByteReader} stays valid:
 * `"stable"` for as long as it is referenced, `"until-refill"` until the
 * reader pulls its next chunk from the source.
 */
export type ViewLifetime = "stable" | "until-refill";

/** A pull reader over a byte source that tracks its absolute offset. */
export interface ByteReader {
  /** Absolute offset of the next unread byte. */
  readonly offset: number;
  /** How long returned views stay valid (see the module documentation). */
  readonly viewLifetime: ViewLifetime;
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
  /** The unread bytes buffered contiguously right now (possibly none), without consuming them. */
  buffered(): Uint8Array;
  /** Consume `n` bytes of what {@linkcode ByteReader.buffered} shows (`n` at most its length). */
  advance(n: number): void;
  /**
   * Make at least `n` unread bytes contiguous in {@linkcode ByteReader.buffered},
   * pulling from the source as needed. Returns `false` when the input ends
   * first (what there was stays buffered).
   */
  fill(n: number): Promise<boolean>;
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
  /**
   * How long the chunks the source returns stay valid: `"until-refill"` when
   * the source reuses its buffers for later chunks. @default {"stable"}
   */
  viewLifetime?: ViewLifetime;
  /**
   * With `viewLifetime` `"until-refill"`: copy reads that span chunks into
   * two buffers used in turn instead of a fresh one each time (a stitched
   * view then stays valid only until the next read that spans chunks, which
   * the `"until-refill"` contract allows). For streams whose records are
   * larger than a chunk (multifd packets), where a fresh buffer per record
   * costs an allocation, zeroing and page faults per record.
   * @default {false}
   */
  reuseStitchBuffers?: boolean;
  /**
   * Reads from the source straight into a buffer (`null` at its end), for a
   * source that can (a socket): a read that spans chunks then copies only
   * the unread rest of the current chunk into its join buffer and reads the
   * remainder into place, instead of pulling chunks and copying them too.
   * @default {undefined}
   */
  readInto?: (buffer: Uint8Array) => Promise<number | null>;
}

/** Reads larger than this are refused (a caller bug, never a size from input). */
const MAX_CONTIGUOUS = 0x4000_0000;

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
 *
 * @example Parse from the buffered window
 * ```ts
 * import { bytesReader } from "@vmem-dump/vmem-dump";
 * const reader = bytesReader(new Uint8Array([0, 0, 0, 7, 0xaa]));
 * await reader.fill(4);
 * const w = reader.buffered();
 * const n = (w[0]! << 24 | w[1]! << 16 | w[2]! << 8 | w[3]!) >>> 0;
 * reader.advance(4);
 * console.log(n, reader.offset); // 7 4
 * ```
 */
export class PullByteReader implements ByteReader {
  #pull: PullSource;
  #format: ErrorFormat;
  #onCancel: ((reason?: unknown) => Promise<void> | void) | undefined;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #base: number; // offset of #chunk[0]
  /** The rest of a chunk whose head was copied into #chunk by a stitch; read after #chunk. */
  #next: Uint8Array | undefined;
  #ended = false;
  #reuseStitch: boolean;
  #readInto: ((buffer: Uint8Array) => Promise<number | null>) | undefined;
  /** The two stitch buffers (`reuseStitchBuffers`), used in turn. */
  #stitch: Uint8Array<ArrayBuffer>[] = [];
  #stitchTurn = 0;
  /** How long returned views stay valid. */
  readonly viewLifetime: ViewLifetime;

  /**
   * Construct it.
   *
   * @param pull Returns the next chunk, or `undefined` at the end.
   * @param options Error format, start offset, cancel hook, view lifetime.
   */
  constructor(pull: PullSource, options: PullByteReaderOptions = {}) {
    this.#pull = pull;
    this.#format = options.format ?? "migration";
    this.#base = options.startOffset ?? 0;
    this.#onCancel = options.onCancel;
    this.viewLifetime = options.viewLifetime ?? "stable";
    this.#reuseStitch = this.viewLifetime === "until-refill" &&
      (options.reuseStitchBuffers ?? false);
    this.#readInto = options.readInto;
  }

  /** Absolute offset of the next unread byte. */
  get offset(): number {
    return this.#base + this.#pos;
  }

  /** The next non-empty chunk (the stitch remainder first); `undefined` at the end. */
  async #pullChunk(): Promise<Uint8Array | undefined> {
    if (this.#next !== undefined) {
      const next = this.#next;
      this.#next = undefined;
      return next;
    }
    while (!this.#ended) {
      const next = await this.#pull();
      if (next === undefined) {
        this.#ended = true;
        return undefined;
      }
      if (next.byteLength > 0) return next;
    }
    return undefined;
  }

  /** The buffered unread bytes (a view into the current chunk). */
  buffered(): Uint8Array {
    return this.#pos === 0 ? this.#chunk : this.#chunk.subarray(this.#pos);
  }

  /** Consume `n` buffered bytes. */
  advance(n: number): void {
    if (n > this.#chunk.byteLength - this.#pos || n < 0) {
      throw new RangeError(`Cannot advance ${n} bytes: only what buffered() shows can be consumed`);
    }
    this.#pos += n;
  }

  /** Make at least `n` unread bytes contiguous; `false` when the input ends first. */
  async fill(n: number): Promise<boolean> {
    let have = this.#chunk.byteLength - this.#pos;
    if (have >= n) return true;
    if (n > MAX_CONTIGUOUS) {
      throw new RangeError(`Cannot buffer ${n} bytes at once: reads are limited to 1 GiB`);
    }
    if (have === 0) {
      // Nothing to keep: move on to the next chunk.
      const next = await this.#pullChunk();
      this.#base += this.#pos;
      this.#pos = 0;
      this.#chunk = next ?? EMPTY;
      if (next === undefined) return false;
      have = next.byteLength;
      if (have >= n) return true;
    }
    // Stitch: the unread bytes plus just enough of the following chunks, copied once.
    const out = this.#stitchBuffer(n);
    out.set(this.#chunk.subarray(this.#pos));
    this.#base += this.#pos;
    this.#pos = 0;
    const readInto = this.#readInto;
    while (have < n) {
      if (readInto !== undefined && this.#next === undefined && !this.#ended) {
        // Straight into place: no chunk to copy.
        const got = await readInto(out.subarray(have, n));
        if (got === null) this.#ended = true;
        else have += got;
        continue;
      }
      const next = await this.#pullChunk();
      if (next === undefined) {
        this.#chunk = out.subarray(0, have);
        return false;
      }
      const take = Math.min(next.byteLength, n - have);
      out.set(take === next.byteLength ? next : next.subarray(0, take), have);
      have += take;
      if (take < next.byteLength) this.#next = next.subarray(take);
    }
    this.#chunk = out;
    return true;
  }

  /**
   * A buffer for `n` stitched bytes: fresh, or with `reuseStitchBuffers` the
   * one not used last time (the current chunk may be the other one, and its
   * unread tail is copied first), grown when too small.
   */
  #stitchBuffer(n: number): Uint8Array {
    if (!this.#reuseStitch) return new Uint8Array(n);
    const turn = this.#stitchTurn;
    this.#stitchTurn = 1 - turn;
    let buf = this.#stitch[turn];
    if (buf === undefined || buf.byteLength < n) {
      buf = new Uint8Array(Math.min(MAX_CONTIGUOUS, Math.max(n, 2 * (buf?.byteLength ?? 0))));
      this.#stitch[turn] = buf;
    }
    return buf.subarray(0, n);
  }

  #eofError(n: number, have: number, what: string | undefined): UnexpectedEofError {
    return new UnexpectedEofError(
      `Cannot read ${what ?? `${n} bytes`}: input ended after ${have} of ${n} bytes`,
      this.#format,
      this.offset + have,
    );
  }

  /** Read exactly `n` bytes. */
  async read(n: number, what?: string): Promise<Uint8Array> {
    if (!(await this.fill(n))) throw this.#eofError(n, this.#chunk.byteLength - this.#pos, what);
    return this.tryReadSync(n)!;
  }

  /** Read exactly `n` bytes, or `undefined` at a clean end. */
  async readOrEnd(n: number, what?: string): Promise<Uint8Array | undefined> {
    if (!(await this.fill(n))) {
      const have = this.#chunk.byteLength - this.#pos;
      if (have === 0) return undefined;
      throw this.#eofError(n, have, what);
    }
    return this.tryReadSync(n)!;
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
    if (!(await this.fill(1))) return undefined;
    return this.#chunk[this.#pos];
  }

  /** Return up to `max` buffered bytes, pulling once if none are buffered. */
  async readChunk(max: number): Promise<Uint8Array | undefined> {
    if (!(await this.fill(1))) return undefined;
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
    this.#next = undefined;
    await this.#onCancel?.(reason);
  }
}

/**
 * A {@linkcode ByteReader} over a `ReadableStream<Uint8Array>`. The stream's
 * chunks are not reused, so views are `"stable"`.
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
    options: Omit<PullByteReaderOptions, "onCancel" | "viewLifetime"> = {},
  ) {
    const reader = stream.getReader();
    super(async () => {
      const { value, done } = await reader.read();
      return done ? undefined : value;
    }, { ...options, onCancel: (reason) => reader.cancel(reason) });
  }
}

/**
 * A {@linkcode ByteReader} over bytes already in memory (for tests and small
 * inputs); views are `"stable"`.
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
  options: Omit<PullByteReaderOptions, "onCancel" | "viewLifetime"> = {},
): PullByteReader {
  let given = false;
  return new PullByteReader(() => {
    if (given) return Promise.resolve(undefined);
    given = true;
    return Promise.resolve(bytes);
  }, options);
}
