/**
 * Bridges between `node:zlib` transform streams (gzip, zstd) and our pull and
 * sink interfaces, in constant memory: a decompressor is fed one compressed
 * chunk at a time and only while less than `highWaterMark` bytes of output
 * wait to be read; a compressor's output goes to the sink with backpressure.
 *
 * Private: not re-exported.
 *
 * @module
 */

import type { Transform } from "node:stream";
import type { ByteReader, PullSource } from "../io/byte_reader.ts";
import type { StreamCompressor } from "./compressor.ts";

/** Size of the compressed chunks taken from the source reader. */
export const INPUT_CHUNK_SIZE = 1 << 20;

/** Output buffer size given to zlib (`chunkSize`): fewer, larger chunks. */
export const OUTPUT_CHUNK_SIZE = 1 << 20;

/** One piece of compressed input, from {@linkcode ZlibPullHooks.split}. */
export interface InputPiece {
  /** The bytes. */
  bytes: Uint8Array;
  /** Whether a compressed member (a zstd frame) ends with this piece. */
  endsMember: boolean;
}

/** Hooks of {@linkcode zlibPullSource}. */
export interface ZlibPullHooks {
  /** A fresh decompressor (one per member when `split` reports member ends). */
  newTransform(): Transform;
  /**
   * Sees each compressed chunk before zlib does and cuts it where members
   * end; each member then goes to its own decompressor. May throw to stop.
   * Without it the whole input goes to one decompressor.
   */
  split?(chunk: Uint8Array): InputPiece[];
  /** Called at the end of the compressed input; may throw (e.g. truncation). */
  onInputEnd?(): void;
  /** Turns a zlib error into a typed one; `consumed` counts compressed bytes fed before it. */
  mapError(error: unknown, consumed: number): Error;
  /** Pause zlib while this many output bytes are queued. @default {8 MiB} */
  highWaterMark?: number;
}

const EMPTY = new Uint8Array(0);

/**
 * A {@linkcode PullSource} yielding the decompressed output of `source`.
 * Output chunks are zlib's own buffers (never reused), so views into them
 * stay valid.
 *
 * Memory stays bounded even for input that expands a millionfold (zstd RLE
 * blocks of zeros): zlib is paused while `highWaterMark` bytes of output are
 * queued, and the next compressed piece is written only after zlib has
 * processed the previous one.
 *
 * Members (zstd frames) can each get their own decompressor: the zstd of
 * Deno's `node:zlib` stops after the first frame, so `split` cuts the input
 * at frame ends and a new decompressor takes the next frame, after the
 * previous one has delivered all of its output.
 *
 * @param source Compressed input.
 * @param hooks Decompressor factory, splitter, truncation check, error mapping.
 * @returns The pull function and a cancel function.
 */
export function zlibPullSource(
  source: ByteReader,
  hooks: ZlibPullHooks,
): { pull: PullSource; cancel: (reason?: unknown) => Promise<void> } {
  const highWaterMark = hooks.highWaterMark ?? 8 << 20;
  let queue: Uint8Array[] = [];
  let head = 0;
  let queued = 0;
  let paused = false;
  let ended = false; // every decompressor finished and the input is done
  let failure: Error | undefined;
  let started = false;
  let consumed = 0; // compressed bytes fully written to decompressors
  let current: Transform | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const setFailure = (e: Error) => {
    failure ??= e;
    notify();
  };

  /** The decompressor of the current member, and a promise of its end. */
  let currentEnd: Promise<void> = Promise.resolve();
  const open = (): Transform => {
    const t = hooks.newTransform();
    routeNativeWriteErrors(t);
    t.on("data", (chunk: Uint8Array) => {
      if (chunk.byteLength === 0) return;
      queue.push(chunk);
      queued += chunk.byteLength;
      if (queued >= highWaterMark && !paused) {
        paused = true;
        t.pause();
      }
      notify();
    });
    currentEnd = new Promise<void>((resolve) => {
      t.once("end", () => resolve());
      t.once("close", () => resolve());
      t.once("error", (e: unknown) => {
        setFailure(hooks.mapError(e, consumed));
        resolve();
      });
    });
    paused = false;
    current = t;
    return t;
  };
  /** End the current member's decompressor and wait until it delivered everything. */
  const finishMember = async () => {
    const t = current;
    if (t === undefined) return;
    t.end();
    await currentEnd;
    current = undefined;
  };

  /** Feed compressed pieces, one in flight at a time, until the input ends. */
  const pump = async () => {
    try {
      for (;;) {
        const chunk = await source.readChunk(INPUT_CHUNK_SIZE);
        if (failure !== undefined) return;
        if (chunk === undefined) {
          hooks.onInputEnd?.();
          await finishMember();
          if (failure === undefined) {
            ended = true;
            notify();
          }
          return;
        }
        const pieces = hooks.split ? hooks.split(chunk) : [{ bytes: chunk, endsMember: false }];
        for (const piece of pieces) {
          if (piece.bytes.byteLength > 0) {
            const t = current ?? open();
            // A decompressor that fails is destroyed without calling back: its end settles too.
            const ok = await Promise.race([
              new Promise<boolean>((resolve) => {
                t.write(piece.bytes, (e?: Error | null) => resolve(!e));
              }),
              currentEnd.then(() => false),
            ]);
            if (!ok || failure !== undefined) return;
            consumed += piece.bytes.byteLength;
          }
          if (piece.endsMember) {
            await finishMember();
            if (failure !== undefined) return;
          }
        }
      }
    } catch (e) {
      setFailure(e instanceof Error ? e : new Error(String(e)));
      current?.destroy();
    }
  };

  const pull: PullSource = async () => {
    if (!started) {
      started = true;
      void pump();
    }
    for (;;) {
      if (head < queue.length) {
        const chunk = queue[head]!;
        queue[head++] = EMPTY;
        if (head === queue.length) {
          queue = [];
          head = 0;
        }
        queued -= chunk.byteLength;
        if (paused && queued < highWaterMark / 2) {
          paused = false;
          current?.resume();
        }
        return chunk;
      }
      if (failure !== undefined) throw failure;
      if (ended) return undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  };

  const cancel = async (reason?: unknown) => {
    failure ??= new Error("Decompression was cancelled", { cause: reason });
    current?.destroy();
    notify();
    await source.cancel(reason);
  };
  return { pull, cancel };
}

/**
 * Make a native zlib handle's failures reach the stream's `error` event.
 *
 * Deno 2.9's `node:zlib` zstd handle throws from its native `write` instead
 * of reporting through `onerror`. The first write of a chunk is guarded by the
 * stream, but when the output buffer fills, the handle's completion callback
 * calls `write` again from a `process.nextTick`: a corrupt frame found there
 * (a wrong content size, a checksum mismatch, a bad block after the first
 * MiB of output) escaped as an uncaught exception that killed the process.
 * Wrapping the handle's `write` turns such a throw into `destroy(error)`,
 * which emits `error` like gzip's handle does. A transform without that
 * private handle shape is left alone.
 *
 * @param transform A fresh decompressor or compressor.
 */
function routeNativeWriteErrors(transform: Transform): void {
  const handle = (transform as unknown as { _handle?: Record<PropertyKey, unknown> })._handle;
  if (handle === undefined || handle === null) return;
  // The stream calls the handle's native write through a symbol-keyed method (Deno 2.9).
  const keys: PropertyKey[] = Object.getOwnPropertySymbols(handle)
    .filter((k) => k.description === "kNativeWrite");
  for (const key of keys) {
    const write = handle[key];
    if (typeof write !== "function") continue;
    handle[key] = function (this: unknown, ...args: unknown[]): unknown {
      try {
        return write.apply(this, args);
      } catch (e) {
        transform.destroy(e instanceof Error ? e : new Error(String(e)));
        return undefined;
      }
    };
  }
}

/**
 * Drive a compressing transform: input through `write` (which resolves once
 * zlib has consumed the chunk), output to `sink`, one sink call at a time.
 *
 * @param transform A fresh compressor.
 * @param sink Receives compressed chunks.
 * @returns The writer.
 */
export function zlibStreamCompressor(
  transform: Transform,
  sink: (chunk: Uint8Array) => Promise<void>,
): StreamCompressor {
  let failure: unknown;
  let closed = false;
  const drained = async () => {
    for await (const chunk of transform as AsyncIterable<Uint8Array>) {
      if (chunk.byteLength > 0) await sink(chunk);
    }
  };
  const consumer = drained().catch((e) => {
    failure ??= e;
    transform.destroy();
  });
  const check = () => {
    if (failure !== undefined) throw failure;
  };
  return {
    async write(chunk) {
      check();
      if (closed) throw new TypeError("Cannot write to a closed compressor");
      if (chunk.byteLength === 0) return;
      // Resolve once zlib has consumed the chunk, so callers may reuse it.
      await Promise.race([
        new Promise<void>((resolve) => transform.write(chunk, () => resolve())),
        consumer,
      ]);
      check();
    },
    async close() {
      check();
      if (closed) return;
      closed = true;
      transform.end();
      await consumer;
      check();
    },
  };
}
