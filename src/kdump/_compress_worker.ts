/**
 * Web Worker body of {@linkcode PageCompressorPool}: compresses the page
 * batches it is sent with one compression context for its whole life, and
 * transfers the results back with the pages buffer (for reuse).
 *
 * @module
 */

import { compressPageBatch, type KdumpWriteCodec, PageCompressor } from "./compress.ts";
import { loadNativeZeroCompare } from "../io/zero.ts";

interface Request {
  id: number;
  buffer: ArrayBuffer;
  out: ArrayBuffer | undefined;
  count: number;
  blockSize: number;
  codec: KdumpWriteCodec;
  level: number;
}

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<Request>) => void) | null;
  postMessage(message: unknown, transfer: Transferable[]): void;
};

// Zero pages are found by a native compare of 64 KiB windows, as on the calling thread
// (loaded while the first batch is on its way; the handler waits for it).
const nativeZero = loadNativeZeroCompare();

/** The compression context (a pool uses one codec and level). */
let compressor: PageCompressor | undefined;

scope.onmessage = async (e: MessageEvent<Request>) => {
  const { id, buffer, out, count, blockSize, codec, level } = e.data;
  try {
    await nativeZero;
    if (compressor === undefined || compressor.codec !== codec || compressor.level !== level) {
      compressor?.close();
      compressor = new PageCompressor(codec, level);
    }
    const b = compressPageBatch(
      new Uint8Array(buffer),
      count,
      blockSize,
      compressor,
      out === undefined ? undefined : new Uint8Array(out),
    );
    scope.postMessage(
      {
        id,
        pages: buffer,
        data: b.data.buffer,
        dataLength: b.data.byteLength,
        sizes: b.sizes.buffer,
        flags: b.flags.buffer,
      },
      [buffer, b.data.buffer, b.sizes.buffer, b.flags.buffer],
    );
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) }, []);
  }
};
