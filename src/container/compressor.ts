/**
 * The interface shared by the streaming compressors of this folder.
 *
 * @module
 */

/**
 * A streaming compressor that hands its output to a sink.
 *
 * @example
 * ```ts
 * import { createGzipCompressor, type StreamCompressor } from "@vmem-dump/vmem-dump/container";
 * const gz: StreamCompressor = createGzipCompressor(async () => {});
 * await gz.close();
 * ```
 */
export interface StreamCompressor {
  /** Compress `chunk`; resolves once the compressor has consumed it (the chunk may then be reused). */
  write(chunk: Uint8Array): Promise<void>;
  /** Finish the compressed stream and wait until the sink took every byte. */
  close(): Promise<void>;
}
