/**
 * Helpers for container tests: build small streams, compress them, drain readers.
 *
 * @module
 */

import { gzipSync, zstdCompressSync } from "node:zlib";
import type { ByteReader } from "../../src/io/byte_reader.ts";
import { StreamByteReader } from "../../src/io/byte_reader.ts";
import { chunkedStream, type Chunking, concatBytes } from "../_util/chunkings.ts";

/** A deterministic pseudo-migration stream: "QEVM", version 3, then mixed bytes. */
export function fakeStream(byteLength: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(byteLength);
  out.set([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3].slice(0, byteLength));
  let x = seed >>> 0 || 1;
  for (let i = 8; i < byteLength; i++) {
    // runs of zeros (compressible) mixed with noise, like RAM pages
    if ((i >> 12) % 3 === 0) continue;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** zstd-compress with node:zlib (one frame, content size recorded). */
export function zstd(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(zstdCompressSync(bytes));
}

/** gzip-compress with node:zlib. */
export function gzip(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(gzipSync(bytes));
}

/** A reader over `bytes` cut by `chunking`. */
export function chunkedReader(bytes: Uint8Array, chunking: Chunking): StreamByteReader {
  return new StreamByteReader(chunkedStream(bytes, chunking));
}

/** Read everything left in `reader`. */
export async function drain(reader: ByteReader): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  for (let c; (c = await reader.readChunk(1 << 20)) !== undefined;) parts.push(c.slice());
  return concatBytes(parts);
}

/** Collect what a sink-based writer produces. */
export function memorySink(): { sink: (c: Uint8Array) => Promise<void>; bytes(): Uint8Array } {
  const parts: Uint8Array[] = [];
  return {
    sink: (c) => {
      parts.push(c.slice());
      return Promise.resolve();
    },
    bytes: () => concatBytes(parts),
  };
}
