/**
 * Web Worker body of `sha256File`: hashes the file it is sent and posts
 * the hex digest (or the error) back.
 *
 * @module
 */

import { InputChangedError, UnexpectedEofError } from "../errors.ts";
import { pinFileIdentity, type PinnedIdentity } from "./pinned_files.ts";
import { sha256Positional } from "./hash.ts";
import { openPositional } from "./positional.ts";

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<{ path: string; pin?: PinnedIdentity }>) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = async (e: MessageEvent<{ path: string; pin?: PinnedIdentity }>) => {
  try {
    using _pin = e.data.pin === undefined ? undefined : pinFileIdentity(e.data.path, e.data.pin);
    using reader = await openPositional(e.data.path);
    scope.postMessage({ sha256: await sha256Positional(reader) });
  } catch (err) {
    if (err instanceof InputChangedError) {
      scope.postMessage({ changed: "another file was opened under its name" });
      return;
    }
    scope.postMessage({
      error: err instanceof Error ? err.message : String(err),
      ...(err instanceof UnexpectedEofError ? { eof: err.offset } : {}),
    });
  }
};
