/**
 * One `node:zlib` compression or decompression context kept for many small,
 * independent buffers (kdump pages: each its own zlib stream or zstd frame).
 *
 * The one-shot functions (`deflateSync`, `inflateSync`, `zstdCompressSync`,
 * `zstdDecompressSync`) create and free a context per call, which costs more
 * than the work on a 4 KiB page (measured on real guest pages: zstd
 * compression 135 → 30-48 µs, inflate 30-55 → 9-17 µs, zstd decompression
 * 25-74 → 4-10 µs). A zlib stream object owns a native handle whose
 * `writeSync(flush, in, inOff, inLen, out, outOff, outLen)` runs the codec
 * synchronously on one context and whose `reset()` readies it for the next
 * stream; Node and Deno both have it, but it is not public API. So a context
 * is only handed out after a feature test, callers round-trip a sample
 * before trusting it, every call's result is checked (errors, bytes left
 * over, output that did not fit), and after any failure the context is
 * dropped: Deno's contexts do not recover from an error, a new one is made.
 *
 * Used by the kdump page codecs; not re-exported (an internal tool with a
 * runtime-dependent contract).
 *
 * @module
 */

import {
  constants,
  createDeflate,
  createInflate,
  createZstdCompress,
  createZstdDecompress,
} from "node:zlib";

/** What a context does. */
export type ZlibContextKind = "deflate" | "inflate" | "zstd-compress" | "zstd-decompress";

interface NativeHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOffset: number,
    inLength: number,
    output: Uint8Array,
    outOffset: number,
    outLength: number,
  ): void;
  reset(): void;
  close(): void;
  onerror?: (message: string, errno: number) => void;
}

/** The result of one {@linkcode ZlibContext.run}. */
export interface ZlibRunResult {
  /** Bytes written to the output. */
  written: number;
  /** Input bytes the codec did not take. */
  inputLeft: number;
  /** The codec's error message, when it failed. */
  error: string | undefined;
}

/**
 * A kept `node:zlib` context: compresses or decompresses one whole buffer
 * per {@linkcode run}, each into (or from) a complete zlib stream or zstd
 * frame.
 *
 * @example
 * ```ts ignore
 * import { inflateSync } from "node:zlib";
 * const c = ZlibContext.open("deflate", 1)!;
 * const out = new Uint8Array(5000);
 * const r = c.run(new Uint8Array(4096).fill(7), out, 0);
 * console.log(inflateSync(out.subarray(0, r.written)).length); // 4096
 * c.close();
 * ```
 */
export class ZlibContext {
  readonly kind: ZlibContextKind;
  /** The stream object owning the handle, kept referenced while the handle is used. */
  readonly #stream: unknown;
  readonly #handle: NativeHandle;
  readonly #state: Uint32Array;
  readonly #flush: number;
  #error: string | undefined;

  private constructor(
    kind: ZlibContextKind,
    stream: unknown,
    handle: NativeHandle,
    state: Uint32Array,
  ) {
    this.kind = kind;
    this.#stream = stream;
    this.#handle = handle;
    this.#state = state;
    this.#flush = kind === "deflate" || kind === "inflate"
      ? constants.Z_FINISH
      : constants.ZSTD_e_end;
    // Errors come through this callback (zlib) or as exceptions (zstd).
    handle.onerror = (message) => {
      this.#error = message;
    };
  }

  /**
   * A context, or `undefined` when this runtime's `node:zlib` streams have
   * no usable native handle (callers then use the one-shot functions).
   *
   * @param kind What it does.
   * @param level Compression level (compressors only).
   * @returns The context, or `undefined`.
   */
  static open(kind: ZlibContextKind, level?: number): ZlibContext | undefined {
    try {
      const stream = (kind === "deflate"
        ? createDeflate(level === undefined ? {} : { level })
        : kind === "inflate"
        ? createInflate()
        : kind === "zstd-compress"
        ? createZstdCompress(
          level === undefined ? {} : { params: { [constants.ZSTD_c_compressionLevel]: level } },
        )
        : createZstdDecompress()) as unknown as { _handle?: NativeHandle; _writeState?: unknown };
      const handle = stream._handle;
      const state = stream._writeState;
      if (
        typeof handle?.writeSync !== "function" || typeof handle.reset !== "function" ||
        typeof handle.close !== "function" || !(state instanceof Uint32Array) || state.length < 2
      ) {
        return undefined;
      }
      return new ZlibContext(kind, stream, handle, state);
    } catch {
      return undefined;
    }
  }

  /**
   * Run the codec over all of `input`, writing into `out` from `at` (as much
   * room as `out` has after `at`), and ready the context for the next call.
   * Check `error`, `inputLeft` and `written` (a full output means it may not
   * have fitted); after a failure, {@linkcode close} this context and open a
   * new one.
   *
   * @param input One whole buffer (a page, or one compressed page).
   * @param out The output buffer.
   * @param at Where in `out` to write.
   * @returns Bytes written, input left, error.
   */
  run(input: Uint8Array, out: Uint8Array, at: number): ZlibRunResult {
    this.#error = undefined;
    const room = out.byteLength - at;
    try {
      this.#handle.writeSync(this.#flush, input, 0, input.byteLength, out, at, room);
    } catch (e) {
      this.#error = e instanceof Error ? e.message : String(e);
    }
    const written = room - this.#state[0]!;
    const inputLeft = this.#state[1]!;
    if (this.#error === undefined) {
      try {
        this.#handle.reset();
      } catch (e) {
        this.#error = e instanceof Error ? e.message : String(e);
      }
    }
    return { written: this.#error === undefined ? written : 0, inputLeft, error: this.#error };
  }

  /** Free the native context. Safe to call twice. */
  close(): void {
    try {
      this.#handle.close();
    } catch { /* already closed */ }
    void this.#stream;
  }
}
