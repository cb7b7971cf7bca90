/**
 * An ordered, failure-remembering sink: wraps an async "write this whole
 * chunk" function as a {@linkcode ByteSink} for a `ByteWriter`, for outputs
 * (files, pipes, sockets) that may fail while a pipeline is still encoding.
 *
 * @module
 */

import type { ByteSink } from "./byte_writer.ts";

/** A sink that writes in order, remembers its first failure and can be drained. */
export interface OrderedSink {
  /** Give this to a `ByteWriter`. Its promises never reject. */
  sink: ByteSink;
  /** Bytes written so far. */
  readonly written: number;
  /** Throw the first write error, if any. */
  check(): void;
  /** Wait until `total` bytes were written (or a write failed: then throw). */
  drain(total: number): Promise<void>;
}

/**
 * Wrap an async write function as a {@linkcode ByteSink}: one write at a
 * time, in order (a pipe or socket may take part of a chunk); a failed write
 * is kept and rethrown by `check()`/`drain()` instead of leaving a rejected
 * promise nobody awaits when a pipeline stops early; `drain(writer.offset)`
 * waits until every byte handed to a `ByteWriter` has been written.
 *
 * @param write Writes one whole chunk.
 * @returns The sink and its controls.
 *
 * @example
 * ```ts ignore
 * import { ByteWriter } from "@vmem-dump/vmem-dump";
 * import { orderedSink } from "./ordered_sink.ts";
 * const file = await Deno.create("out.bin");
 * const out = orderedSink(async (c) => { let n = 0; while (n < c.length) n += await file.write(c.subarray(n)); });
 * const w = new ByteWriter(out.sink, { reuseChunks: true });
 * w.u32(1);
 * await w.flush();
 * await out.drain(w.offset);
 * ```
 */
export function orderedSink(write: (chunk: Uint8Array<ArrayBuffer>) => Promise<void>): OrderedSink {
  let tail: Promise<void> = Promise.resolve();
  let written = 0;
  let failed: { error: unknown } | undefined;
  let waiters: { total: number; resolve: () => void }[] = [];
  const wake = () => {
    const still: typeof waiters = [];
    for (const w of waiters) {
      if (failed !== undefined || written >= w.total) w.resolve();
      else still.push(w);
    }
    waiters = still;
  };
  const check = () => {
    if (failed !== undefined) throw failed.error;
  };
  return {
    sink(chunk) {
      tail = tail.then(async () => {
        if (failed === undefined) {
          try {
            // Counted before the write: a write that transfers the buffer detaches it.
            const byteLength = chunk.byteLength;
            await write(chunk);
            written += byteLength;
          } catch (error) {
            failed = { error };
          }
        }
        wake();
      });
      return tail;
    },
    get written() {
      return written;
    },
    check,
    async drain(total) {
      if (failed === undefined && written < total) {
        await new Promise<void>((resolve) => waiters.push({ total, resolve }));
      }
      check();
    },
  };
}
