/**
 * SHA-256 helpers for tests that compare big outputs without keeping them in memory.
 *
 * @module
 */

import { createHash } from "node:crypto";

/**
 * SHA-256 of bytes, as lower-case hex.
 *
 * @param bytes Data to hash.
 * @returns Hex digest.
 * @example
 * ```ts
 * import { sha256Hex } from "./hashing.ts";
 * sha256Hex(new Uint8Array(0)); // "e3b0c442…"
 * ```
 */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Result of {@linkcode hashStream}. */
export interface StreamDigest {
  /** Lower-case hex SHA-256 of everything read. */
  sha256: string;
  /** Number of bytes read. */
  byteLength: number;
}

/**
 * Consume a byte stream, hashing it on the way (bounded memory).
 *
 * @param stream The stream to drain.
 * @returns Digest and length.
 * @example
 * ```ts
 * import { hashStream } from "./hashing.ts";
 * const { sha256, byteLength } = await hashStream(ReadableStream.from([new Uint8Array([1])]));
 * ```
 */
export async function hashStream(stream: ReadableStream<Uint8Array>): Promise<StreamDigest> {
  const hash = createHash("sha256");
  let byteLength = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    byteLength += chunk.length;
  }
  return { sha256: hash.digest("hex"), byteLength };
}

/**
 * A `WritableStream` sink that hashes what is written (for `pipeTo`).
 *
 * @returns The writable and a `digest()` to call after the pipe finished.
 * @example
 * ```ts
 * import { hashingSink } from "./hashing.ts";
 * const sink = hashingSink();
 * await ReadableStream.from([new Uint8Array([1, 2])]).pipeTo(sink.writable);
 * console.log(sink.digest().byteLength); // 2
 * ```
 */
export function hashingSink(): { writable: WritableStream<Uint8Array>; digest(): StreamDigest } {
  const hash = createHash("sha256");
  let byteLength = 0;
  let result: StreamDigest | undefined;
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      hash.update(chunk);
      byteLength += chunk.length;
    },
  });
  return {
    writable,
    digest() {
      result ??= { sha256: hash.digest("hex"), byteLength };
      return result;
    },
  };
}

/**
 * SHA-256 of a file, streamed.
 *
 * @param path File to hash.
 * @returns Lower-case hex digest.
 * @example
 * ```ts ignore
 * const hex = await sha256File("x.bin");
 * ```
 */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}
