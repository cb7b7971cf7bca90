/**
 * Web Worker body of `sha256File`: hashes the file it is sent and posts
 * the hex digest (or the error) back.
 *
 * @module
 */

import { UnexpectedEofError } from "../errors.ts";
import { sha256Positional } from "./hash.ts";
import { openPositional } from "./positional.ts";

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<{ path: string }>) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = async (e: MessageEvent<{ path: string }>) => {
  try {
    using reader = await openPositional(e.data.path);
    scope.postMessage({ sha256: await sha256Positional(reader) });
  } catch (err) {
    scope.postMessage({
      error: err instanceof Error ? err.message : String(err),
      ...(err instanceof UnexpectedEofError ? { eof: err.offset } : {}),
    });
  }
};
