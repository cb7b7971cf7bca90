/**
 * Web Worker body of {@linkcode PageCompressorPool}: compresses the page
 * batches it is sent and transfers the results back.
 *
 * @module
 */

import { compressPageBatch, type KdumpWriteCodec } from "./compress.ts";

interface Request {
  id: number;
  buffer: ArrayBuffer;
  count: number;
  blockSize: number;
  codec: KdumpWriteCodec;
  level: number;
}

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<Request>) => void) | null;
  postMessage(message: unknown, transfer: Transferable[]): void;
};

scope.onmessage = (e: MessageEvent<Request>) => {
  const { id, buffer, count, blockSize, codec, level } = e.data;
  try {
    const b = compressPageBatch(new Uint8Array(buffer), count, blockSize, codec, level);
    scope.postMessage(
      { id, data: b.data.buffer, sizes: b.sizes.buffer, flags: b.flags.buffer },
      [b.data.buffer, b.sizes.buffer, b.flags.buffer],
    );
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) }, []);
  }
};
