/**
 * Messages between a multifd channel's proxy (main thread: sockets) and its
 * Worker (decode, pass/filter/verify, encode). Byte buffers move by
 * transfer, never by copy: input chunks go to the Worker and come back for
 * reuse once decoded; output chunks go to the main thread.
 *
 * Private to src/proxy.
 *
 * @module
 */

import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../errors.ts";
import type { ErrorFormat, FormatErrorCode } from "../errors.ts";
import type {
  MultifdControlRecord,
  MultifdPipelineMode,
  MultifdPipelineResult,
  MultifdPlugStateViolation,
  MultifdProgress,
} from "../migration/multifd/mod.ts";
import type { VmemDevice } from "../vmem/vmem_device.ts";

/** Main thread → Worker. */
export type ToMultifdWorker =
  | {
    type: "start";
    mode: MultifdPipelineMode;
    plugMapDevices: VmemDevice[] | undefined;
    /** Output bytes posted and not yet written to the destination before the Worker waits. */
    maxOutputInFlight: number;
  }
  | { type: "page-size"; pageSize: number }
  | { type: "control"; record: MultifdControlRecord }
  | { type: "setup-complete" }
  /** The main channel's stream is complete: no more plug state will come. */
  | { type: "main-complete" }
  | { type: "input"; chunk: Uint8Array<ArrayBuffer> }
  | { type: "input-end" }
  /** The migration was vetoed: forward packets without their pages from now on. */
  | { type: "strip" }
  /** An output chunk was written; its buffer comes back for reuse. */
  | { type: "written"; chunk: Uint8Array<ArrayBuffer> };

/** Worker → main thread. */
export type FromMultifdWorker =
  /** The Worker's modules are loaded (its first message). */
  | { type: "ready" }
  | { type: "progress"; progress: MultifdProgress }
  /** Input chunks the decoder is past, back for reuse. */
  | { type: "release"; chunks: Uint8Array<ArrayBuffer>[] }
  | { type: "output"; chunk: Uint8Array<ArrayBuffer> }
  | { type: "violations"; violations: MultifdPlugStateViolation[] }
  | { type: "done"; result: MultifdPipelineResult }
  | { type: "error"; error: SerializedError; channel: number | undefined };

/** An error as it crosses the thread boundary. */
export interface SerializedError {
  /** Class name. */
  name: string;
  /** The message (for `FormatError`s without the trailing offset). */
  message: string;
  /** `FormatError` fields. */
  format?: ErrorFormat;
  /** `FormatError` fields. */
  code?: FormatErrorCode;
  /** `FormatError` fields. */
  offset?: number;
}

const OFFSET_SUFFIX = / at offset 0x[0-9a-f]+$/;

/** Flatten an error for `postMessage`. */
export function serializeError(e: unknown): SerializedError {
  if (e instanceof FormatError) {
    return {
      name: e.name,
      message: e.message.replace(OFFSET_SUFFIX, ""),
      format: e.format,
      code: e.code,
      offset: e.offset,
    };
  }
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

/**
 * Rebuild an error from a Worker, its message prefixed with the channel
 * (`FormatError` offsets are offsets in that channel).
 */
export function deserializeError(e: SerializedError, label: string): Error {
  const message = `${label}: ${e.message}`;
  if (e.format !== undefined && e.code !== undefined && e.offset !== undefined) {
    if (e.name === "UnexpectedEofError") return new UnexpectedEofError(message, e.format, e.offset);
    if (e.name === "UnsupportedFeatureError") {
      return new UnsupportedFeatureError(message, e.format, e.offset);
    }
    return new FormatError(message, { format: e.format, code: e.code, offset: e.offset });
  }
  const out = new Error(message);
  out.name = e.name;
  return out;
}

/**
 * A copy of a control record that owns its bytes: structured clone copies a
 * view's whole buffer (a reader's arena), so views are sliced first.
 */
export function detachControlRecord(r: MultifdControlRecord): MultifdControlRecord {
  switch (r.kind) {
    case "ram-mem-size":
      return { ...r, blocks: r.blocks.map((b) => ({ ...b })) };
    case "virtio-mem-early":
      return { ...r, bitmap: r.bitmap.slice() };
    case "virtio-mem-device":
      return {
        ...r,
        data: r.data.slice(),
        state: { ...r.state, ...(r.state.bitmap ? { bitmap: r.state.bitmap.slice() } : {}) },
      };
  }
}
