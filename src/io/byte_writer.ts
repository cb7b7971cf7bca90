/**
 * A coalescing writer: small writes land in one buffer, full buffers go to a
 * sink. Encoders write through it so a page record costs a copy, not a chunk.
 *
 * @module
 */

import { setU64 } from "./endian.ts";

/** Receives full chunks from a {@linkcode ByteWriter}. It owns each chunk it receives. */
export type ByteSink = (chunk: Uint8Array<ArrayBuffer>) => Promise<void> | void;

/** Options for {@linkcode ByteWriter}. */
export interface ByteWriterOptions {
  /** Size of the chunks handed to the sink. @default {1048576} */
  chunkSize?: number;
  /**
   * Reuse a chunk once the sink's promise for it has resolved (for sinks that
   * are done with a chunk when they resolve, like file writes). Fresh memory
   * costs page faults; reuse keeps a copy at memcpy speed. @default {false}
   */
  reuseChunks?: boolean;
  /**
   * Supplies a fresh `chunkSize`-byte buffer when none can be reused, e.g.
   * from a pool of buffers a sink hands back after transferring them.
   * @default {undefined} (`new Uint8Array(chunkSize)`)
   */
  allocate?: () => Uint8Array<ArrayBuffer>;
}

/**
 * Coalesces writes into chunks of `chunkSize` bytes and hands them to a sink.
 * Writes never await; `flushIfFull()` and `flush()` do.
 *
 * @example Write a header
 * ```ts
 * import { ByteWriter } from "@vmem-dump/vmem-dump";
 * const out: Uint8Array[] = [];
 * const w = new ByteWriter((c) => { out.push(c); });
 * w.u32(0x5145564d); w.u32(3);
 * await w.flush();
 * console.log(out[0]!.length); // 8
 * ```
 */
export class ByteWriter {
  #sink: ByteSink;
  #chunkSize: number;
  #buf: Uint8Array<ArrayBuffer>;
  #view: DataView;
  #pos = 0;
  #flushed = 0;
  #reuse: boolean;
  #free: Uint8Array<ArrayBuffer>[] = [];
  #allocate: () => Uint8Array<ArrayBuffer>;

  /**
   * Construct it.
   *
   * @param sink Where full chunks go.
   * @param options Chunk size.
   */
  constructor(sink: ByteSink, options: ByteWriterOptions = {}) {
    this.#sink = sink;
    this.#chunkSize = options.chunkSize ?? 1 << 20;
    this.#reuse = options.reuseChunks ?? false;
    const chunkSize = this.#chunkSize;
    this.#allocate = options.allocate ?? (() => new Uint8Array(chunkSize));
    this.#buf = this.#allocate();
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Total bytes written so far (flushed or buffered). */
  get offset(): number {
    return this.#flushed + this.#pos;
  }

  /** Bytes waiting in the buffer. */
  get buffered(): number {
    return this.#pos;
  }

  #room(n: number): void {
    if (this.#pos + n > this.#buf.byteLength) this.#spill();
  }

  /** Move the buffered bytes out as a chunk; the sink's promise is kept for the next flush. */
  #pending: Promise<void>[] = [];
  #spill(): void {
    if (this.#pos === 0) return;
    const full = this.#buf;
    const chunk = full.subarray(0, this.#pos);
    this.#flushed += this.#pos;
    this.#buf = this.#free.pop() ?? this.#allocate();
    this.#view = new DataView(this.#buf.buffer);
    this.#pos = 0;
    this.#send(chunk, this.#reuse ? full : undefined);
  }

  /** Hand a chunk to the sink after every earlier one (sinks may be async: keep order). */
  #tail: Promise<void> | undefined;
  #send(chunk: Uint8Array<ArrayBuffer>, recycle: Uint8Array<ArrayBuffer> | undefined): void {
    const p = this.#tail === undefined
      ? this.#sink(chunk)
      : this.#tail.then(() => this.#sink(chunk));
    if (p) {
      // The buffer goes back to the free list only once the sink is done with it;
      // a failed write is reported by flushIfFull()/flush(), not as an unhandled rejection.
      const tracked = recycle ? p.then(() => void this.#free.push(recycle)) : p;
      tracked.catch(() => {});
      this.#tail = tracked;
      this.#pending.push(tracked);
    } else if (recycle) {
      this.#free.push(recycle);
    }
  }

  /**
   * Hand the buffered bytes to the sink now, without waiting for the write
   * (a relay does this before it waits for more input, so nothing sits in
   * the buffer while the other side waits for it). Await `flushIfFull()` or
   * `flush()` later as usual.
   */
  sendBuffered(): void {
    this.#spill();
  }

  /** Append bytes (copied). */
  bytes(data: Uint8Array): void {
    if (data.byteLength >= this.#chunkSize) {
      this.#spill();
      const copy = data.slice();
      this.#flushed += copy.byteLength;
      this.#send(copy, undefined);
      return;
    }
    this.#room(data.byteLength);
    this.#buf.set(data, this.#pos);
    this.#pos += data.byteLength;
  }

  /** Append a u8. */
  u8(value: number): void {
    this.#room(1);
    this.#buf[this.#pos++] = value;
  }

  /** Append a u16 in the given byte order (big-endian by default). */
  u16(value: number, littleEndian = false): void {
    this.#room(2);
    this.#view.setUint16(this.#pos, value, littleEndian);
    this.#pos += 2;
  }

  /** Append a u32 in the given byte order (big-endian by default). */
  u32(value: number, littleEndian = false): void {
    this.#room(4);
    this.#view.setUint32(this.#pos, value, littleEndian);
    this.#pos += 4;
  }

  /** Append a safe non-negative integer as a u64. */
  u64(value: number, littleEndian = false): void {
    this.#room(8);
    setU64(this.#view, this.#pos, value, littleEndian);
    this.#pos += 8;
  }

  /** Append a bigint as a u64. */
  bigU64(value: bigint, littleEndian = false): void {
    this.#room(8);
    this.#view.setBigUint64(this.#pos, value, littleEndian);
    this.#pos += 8;
  }

  /**
   * Await the sink when too many chunks are pending. With `reuseChunks`, up
   * to two writes stay in flight while the caller goes on encoding.
   */
  async flushIfFull(): Promise<void> {
    const inFlight = this.#reuse ? 2 : 0;
    // Writes complete in order: wait for the oldest until few enough remain,
    // so the sink always has the next chunk queued while the caller encodes.
    while (this.#pending.length > inFlight) await this.#pending.shift();
    if (this.#pending.length === 0) this.#tail = undefined;
  }

  /** Hand every buffered byte to the sink and await every pending write. */
  async flush(): Promise<void> {
    this.#spill();
    while (this.#pending.length > 0) {
      const pending = this.#pending;
      this.#pending = [];
      await Promise.all(pending);
    }
    this.#tail = undefined;
  }
}
