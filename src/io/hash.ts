/**
 * SHA-256 of a whole input, read in large chunks (for provenance records).
 *
 * @module
 */

import { pinnedIdentity } from "./pinned_files.ts";
import type { PositionalReader } from "./positional.ts";
import { InputChangedError, UnexpectedEofError } from "../errors.ts";
import { hexBytes } from "./text.ts";

/**
 * Inputs up to this size are read into one buffer and hashed by Web Crypto
 * (`crypto.subtle.digest`): no `node:crypto` to load, which costs ~30 ms of
 * CPU at start (Deno's Node compatibility layer comes with it) against a
 * few ms to hash 16 MiB. Larger inputs stream through `node:crypto`, loaded
 * only then.
 */
const ONE_SHOT_MAX = 16 << 20;

/**
 * Hash every byte of a positional input.
 *
 * @param reader The input.
 * @param chunkSize Read size. @default {4194304}
 * @returns The SHA-256 in lowercase hex.
 * @throws {UnexpectedEofError} when the input shrinks while it is read.
 *
 * @example
 * ```ts
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * import { sha256Positional } from "./hash.ts";
 * console.log((await sha256Positional(bytesPositional(new Uint8Array(0)))).slice(0, 8)); // e3b0c442
 * ```
 */
export async function sha256Positional(
  reader: PositionalReader,
  chunkSize = 4 << 20,
): Promise<string> {
  if (reader.byteLength <= ONE_SHOT_MAX) {
    const all = new Uint8Array(reader.byteLength);
    const n = all.byteLength > 0 ? await reader.readInto(0, all) : 0;
    if (n < all.byteLength) {
      throw new UnexpectedEofError("Cannot hash the input: it shrank while it was read", "raw", n);
    }
    return hexBytes(new Uint8Array(await crypto.subtle.digest("SHA-256", all))).replaceAll(" ", "");
  }
  const { createHash } = await import("node:crypto");
  const hash = createHash("sha256");
  const bufs = [new Uint8Array(chunkSize), new Uint8Array(chunkSize)];
  const read = async (at: number, buf: Uint8Array) => {
    const want = Math.min(buf.byteLength, reader.byteLength - at);
    const n = await reader.readInto(at, buf.subarray(0, want));
    if (n < want) {
      throw new UnexpectedEofError(
        "Cannot hash the input: it shrank while it was read",
        "raw",
        at + n,
      );
    }
    return buf.subarray(0, n);
  };
  let at = 0;
  let turn = 0;
  let pending = reader.byteLength > 0 ? read(0, bufs[0]!) : undefined;
  while (pending !== undefined) {
    const chunk = await pending;
    at += chunk.byteLength;
    turn ^= 1;
    pending = at < reader.byteLength ? read(at, bufs[turn]!) : undefined;
    hash.update(chunk);
  }
  return hash.digest("hex");
}

/**
 * SHA-256 of a file, computed on a Web Worker of its own so that the
 * calling thread goes on with other work (a rewrite hashes its input while
 * it converts it).
 *
 * @param path The file.
 * @returns The SHA-256 in lowercase hex.
 * @throws {UnexpectedEofError} when the file shrinks while it is read; the
 *   worker's error otherwise.
 *
 * @example
 * ```ts ignore
 * import { sha256File } from "@vmem-dump/vmem-dump";
 * console.log(await sha256File("guest.elf"));
 * ```
 */
export function sha256File(path: string): Promise<string> {
  const worker = new Worker(new URL("./_hash_worker.ts", import.meta.url).href, {
    type: "module",
  });
  return new Promise<string>((resolve, reject) => {
    worker.onmessage = (
      e: MessageEvent<{ sha256?: string; error?: string; eof?: number; changed?: string }>,
    ) => {
      worker.terminate();
      const { sha256, error, eof, changed } = e.data;
      if (sha256 !== undefined) resolve(sha256);
      else if (changed !== undefined) reject(new InputChangedError(path, changed));
      else if (eof !== undefined) {
        reject(new UnexpectedEofError(`Cannot hash ${path}: ${error}`, "raw", eof));
      } else reject(new Error(`Cannot hash ${path}: ${error}`));
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      worker.terminate();
      reject(new Error(`Cannot hash ${path}: ${e.message}`));
    };
    // The worker opens the file itself: it checks the pin there (pins are per thread).
    worker.postMessage({ path, pin: pinnedIdentity(path) });
  });
}
