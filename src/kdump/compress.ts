/**
 * Page compression for kdump writers: a batch of pages is zero-checked and
 * each non-zero page compressed on its own (zlib or zstd, one-shot
 * `node:zlib`), in Web Workers so that compression uses every core while the
 * main thread reads and writes.
 *
 * @module
 */

import {
  constants,
  deflateSync,
  inflateSync,
  zstdCompressSync,
  zstdDecompressSync,
} from "node:zlib";
import { ZlibContext } from "../io/zlib_context.ts";
import { forEachNonZeroPage } from "../io/zero.ts";
import { DUMP_DH_COMPRESSED_ZLIB, DUMP_DH_COMPRESSED_ZSTD } from "./header.ts";

/** Page codecs the writer produces. `none` stores pages as they are. */
export type KdumpWriteCodec = "zlib" | "zstd" | "none";

/** Compression levels: zlib 1–9, zstd 1–19. */
export const KDUMP_LEVELS: Readonly<Record<KdumpWriteCodec, readonly [number, number, number]>> = {
  zlib: [1, 9, 1], // [lowest, highest, default]: makedumpfile -c uses the fastest level too
  // Level 2, not 1: on the real pages of a 344 MB QEMU dump it stores 1.3 % less page data for
  // 0-10 % more compression CPU, which takes the output below makedumpfile -c -d 1's while the
  // conversion stays cheaper than makedumpfile's (docs/dumps.md, "Speed").
  zstd: [1, 19, 2],
  none: [0, 0, 0],
};

/**
 * The `DUMP_DH_COMPRESSED_*` flag of a codec (0 for `none`).
 *
 * @param codec The codec.
 * @returns The flag.
 *
 * @example
 * ```ts
 * import { kdumpCodecFlag } from "@vmem-dump/vmem-dump/kdump";
 * console.log(kdumpCodecFlag("zstd")); // 32
 * ```
 */
export function kdumpCodecFlag(codec: KdumpWriteCodec): number {
  return codec === "zlib"
    ? DUMP_DH_COMPRESSED_ZLIB
    : codec === "zstd"
    ? DUMP_DH_COMPRESSED_ZSTD
    : 0;
}

/** A compressed batch: for page `i`, `sizes[i]` bytes of `data` (0 = all-zero page). */
export interface CompressedBatch {
  /** Stored bytes of the non-zero pages, back to back. */
  data: Uint8Array<ArrayBuffer>;
  /** Stored size per page; 0 for an all-zero page (nothing in `data`). */
  sizes: Int32Array<ArrayBuffer>;
  /** Flag per page: the codec's flag, or 0 when stored as is (compression did not help). */
  flags: Uint8Array<ArrayBuffer>;
}

/** Room a compressed page may take beyond the page size (zlib and zstd bounds for ≤ 64 KiB). */
const COMPRESS_SLACK = 1024;

/**
 * Compresses single pages, each into a complete zlib stream or zstd frame
 * (what makedumpfile's `compress2` and `ZSTD_compressCCtx` produce, and what
 * every reader decompresses page by page), through one kept context
 * ({@linkcode ZlibContext}: a fresh context per page costs more than the
 * page). When the runtime has no usable context, or a page fails on it, the
 * one-shot `deflateSync`/`zstdCompressSync` do the work.
 */
export class PageCompressor implements Disposable {
  readonly #codec: KdumpWriteCodec;
  readonly #level: number;
  #context: ZlibContext | undefined;

  /**
   * Set up the context (a self-test round trip decides between the kept
   * context and one-shot calls).
   *
   * @param codec The codec (`none` compresses nothing).
   * @param level The level (see {@linkcode KDUMP_LEVELS}).
   * @param options `oneShot`: use the one-shot functions (a fresh context
   *   per page), the fallback when the kept context is not available.
   */
  constructor(codec: KdumpWriteCodec, level: number, options: { oneShot?: boolean } = {}) {
    this.#codec = codec;
    this.#level = level;
    if (codec === "none" || options.oneShot) return;
    this.#context = this.#open();
  }

  /** The codec. */
  get codec(): KdumpWriteCodec {
    return this.#codec;
  }

  /** The level. */
  get level(): number {
    return this.#level;
  }

  /** Whether pages go through one long-lived context (else one-shot calls). */
  get persistent(): boolean {
    return this.#context !== undefined;
  }

  /** A context that passed a round trip of a patterned page (twice: contexts must be reusable). */
  #open(): ZlibContext | undefined {
    const context = ZlibContext.open(
      this.#codec === "zlib" ? "deflate" : "zstd-compress",
      this.#level,
    );
    if (context === undefined) return undefined;
    const page = new Uint8Array(4096);
    for (let i = 0; i < page.length; i++) page[i] = (i * 31 + (i >> 7)) & 0xff;
    const out = new Uint8Array(page.length + COMPRESS_SLACK);
    const oneShot = this.#oneShot(page).byteLength;
    for (let round = 0; round < 2; round++) {
      const r = context.run(page, out, 0);
      let ok = r.error === undefined && r.inputLeft === 0 && r.written > 0 &&
        r.written === oneShot; // same level, same bytes count as the one-shot call
      if (ok) {
        const back = this.#codec === "zlib"
          ? inflateSync(out.subarray(0, r.written))
          : zstdDecompressSync(out.subarray(0, r.written));
        ok = back.byteLength === page.byteLength && back.every((b, i) => b === page[i]);
      }
      if (!ok) {
        context.close();
        return undefined;
      }
    }
    return context;
  }

  #oneShot(page: Uint8Array): Uint8Array {
    return this.#codec === "zlib"
      ? deflateSync(page, { level: this.#level })
      : zstdCompressSync(page, { params: { [constants.ZSTD_c_compressionLevel]: this.#level } });
  }

  /**
   * Compress one page into `out` at `at` (at least the page size plus 1 KiB
   * of room). Returns the compressed size, or -1 when the page is better
   * stored as is (compression did not make it smaller).
   *
   * @param page The page.
   * @param out Where the compressed bytes go.
   * @param at Offset in `out`.
   * @returns Compressed byte count, or -1.
   */
  compressInto(page: Uint8Array, out: Uint8Array, at: number): number {
    if (this.#codec === "none") return -1;
    if (this.#context !== undefined) {
      const r = this.#context.run(page, out, at);
      if (r.error === undefined && r.inputLeft === 0 && r.written < out.byteLength - at) {
        return r.written > 0 && r.written < page.byteLength ? r.written : -1;
      }
      // Not expected for a page of plain bytes: drop the context, do this page one-shot.
      this.#context.close();
      this.#context = ZlibContext.open(
        this.#codec === "zlib" ? "deflate" : "zstd-compress",
        this.#level,
      );
    }
    const c = this.#oneShot(page);
    if (c.byteLength >= page.byteLength) return -1;
    out.set(c, at);
    return c.byteLength;
  }

  /** Release the context. */
  close(): void {
    this.#context?.close();
    this.#context = undefined;
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Compress `count` pages of `blockSize` bytes held back to back in `pages`.
 * All-zero pages are found word-wise and left out (size 0); a page that
 * does not get smaller is stored as is (flag 0), as makedumpfile does.
 *
 * @param pages The pages (`count × blockSize` bytes).
 * @param count Number of pages.
 * @param blockSize Page size.
 * @param compressor The compressor (its codec names the flag).
 * @param out Where the stored bytes go when it is large enough
 *   ({@linkcode batchDataByteLength}); else a new buffer.
 * @returns The batch (`data` is a view of `out` or of the new buffer).
 *
 * @example
 * ```ts
 * import { compressPageBatch, PageCompressor } from "@vmem-dump/vmem-dump/kdump";
 * const pages = new Uint8Array(8192);
 * pages.fill(7, 4096);
 * using c = new PageCompressor("zstd", 1);
 * const b = compressPageBatch(pages, 2, 4096, c);
 * console.log(b.sizes[0], b.sizes[1]! < 100, b.flags[1]); // 0 true 32
 * ```
 */
export function compressPageBatch(
  pages: Uint8Array,
  count: number,
  blockSize: number,
  compressor: PageCompressor,
  out?: Uint8Array<ArrayBuffer>,
): CompressedBatch {
  const sizes = new Int32Array(count);
  const flags = new Uint8Array(count);
  const flag = kdumpCodecFlag(compressor.codec);
  const need = batchDataByteLength(count, blockSize);
  const data = out !== undefined && out.byteLength >= need ? out : new Uint8Array(need);
  let total = 0;
  forEachNonZeroPage(pages.subarray(0, count * blockSize), blockSize, (start) => {
    const i = start / blockSize;
    const page = pages.subarray(start, start + blockSize);
    const n = compressor.compressInto(page, data, total);
    if (n > 0) {
      sizes[i] = n;
      flags[i] = flag;
      total += n;
    } else {
      data.set(page, total);
      sizes[i] = blockSize;
      total += blockSize;
    }
  });
  return { data: data.subarray(0, total), sizes, flags };
}

/**
 * Bytes a batch's stored data may need: every page stored as is, plus room
 * for the compressor to overshoot on the last one.
 *
 * @param count Pages in the batch.
 * @param blockSize Page size.
 * @returns The byte length.
 */
export function batchDataByteLength(count: number, blockSize: number): number {
  return count * blockSize + COMPRESS_SLACK;
}

/** Options for {@linkcode PageCompressorPool}. */
export interface PageCompressorOptions {
  /** The codec. */
  codec: KdumpWriteCodec;
  /** The level. @default {the codec's default in KDUMP_LEVELS} */
  level?: number;
  /** Page size. */
  blockSize: number;
  /**
   * Worker count; 0 compresses on the calling thread. The default is 0:
   * measured on a shared 2-core machine, workers cost 40-60 % more CPU
   * (their start, a message per batch) than the parallel compression saves
   * (docs/dumps.md). @default {0}
   */
  workers?: number;
}

/** A batch from {@linkcode PageCompressorPool.compress}, with its buffers for {@linkcode PageCompressorPool.release}. */
export interface PooledBatch extends CompressedBatch {
  /** The pages buffer the batch was made from (back from the worker). */
  pages: Uint8Array<ArrayBuffer>;
}

interface Job {
  resolve: (b: PooledBatch) => void;
  reject: (e: unknown) => void;
}

/** Buffers kept for reuse per kind (enough for the batches a caller keeps in flight). */
const MAX_SPARE_BUFFERS = 16;

/**
 * Compresses page batches on a pool of Web Workers; results come back as
 * promises, so a caller keeps a few batches in flight and awaits them in
 * order. When every worker already has two batches queued (while the
 * workers start, or when they fall behind), the calling thread compresses
 * the batch itself. Buffers go round: {@linkcode takePages} gives a zeroed pages
 * buffer (a recycled one when there is one), the worker hands it back with
 * the result, and {@linkcode release} keeps both for the next batches, so
 * a long conversion neither allocates nor page-faults per batch. Call
 * {@linkcode close} (or `using`) when done.
 *
 * @example
 * ```ts ignore
 * import { PageCompressorPool } from "@vmem-dump/vmem-dump/kdump";
 * using pool = new PageCompressorPool({ codec: "zstd", blockSize: 4096 });
 * const pages = pool.takePages(256);
 * const batch = await pool.compress(pages, 256);
 * pool.release(batch);
 * ```
 */
export class PageCompressorPool implements Disposable {
  readonly #options: Required<PageCompressorOptions>;
  readonly #workers: Worker[] = [];
  readonly #jobs = new Map<number, Job>();
  readonly #sparePages: Uint8Array<ArrayBuffer>[] = [];
  readonly #spareData: Uint8Array<ArrayBuffer>[] = [];
  #local: PageCompressor | undefined;
  #next = 0;
  #failed: unknown;

  /**
   * Start the workers.
   *
   * @param options Codec, level, page size, worker count.
   */
  constructor(options: PageCompressorOptions) {
    const level = options.level ?? KDUMP_LEVELS[options.codec][2];
    const workers = options.workers ?? 0;
    this.#options = { ...options, level, workers };
    for (let i = 0; i < workers; i++) {
      const w = new Worker(new URL("./_compress_worker.ts", import.meta.url).href, {
        type: "module",
      });
      w.onmessage = (e: MessageEvent) => this.#done(e.data);
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        this.#fail(new Error(`kdump compression worker failed: ${e.message}`));
      };
      this.#workers.push(w);
    }
  }

  /** Number of workers (0: compression runs on the calling thread). */
  get workerCount(): number {
    return this.#workers.length;
  }

  /**
   * A zeroed buffer for `count` pages, recycled when one is spare.
   *
   * @param count Pages it holds.
   * @returns `count × blockSize` zero bytes at offset 0 of their own buffer.
   */
  takePages(count: number): Uint8Array<ArrayBuffer> {
    const byteLength = count * this.#options.blockSize;
    const i = this.#sparePages.findIndex((b) => b.byteLength === byteLength);
    if (i < 0) return new Uint8Array(byteLength);
    const b = this.#sparePages.splice(i, 1)[0]!;
    return b.fill(0);
  }

  /**
   * Compress a batch. The pages buffer is transferred to a worker (it is
   * unusable afterwards; the result hands it back) unless there are no
   * workers.
   *
   * @param pages `count × blockSize` bytes at offset 0 of their own buffer ({@linkcode takePages}).
   * @param count Number of pages.
   * @returns The compressed batch.
   */
  compress(pages: Uint8Array<ArrayBuffer>, count: number): Promise<PooledBatch> {
    const { blockSize } = this.#options;
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    const spare = this.#spareData.pop();
    // The calling thread compresses too when every worker has two batches
    // queued: while the workers start (a worker takes a few hundred ms to
    // load node:zlib) and whenever they fall behind, it does not wait idle.
    if (this.#workers.length === 0 || this.#jobs.size >= 2 * this.#workers.length) {
      try {
        const { codec, level } = this.#options;
        this.#local ??= new PageCompressor(codec, level);
        const b = compressPageBatch(pages, count, blockSize, this.#local, spare);
        return Promise.resolve({ ...b, pages });
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const id = this.#next++;
    const worker = this.#workers[id % this.#workers.length]!;
    return new Promise<PooledBatch>((resolve, reject) => {
      this.#jobs.set(id, { resolve, reject });
      const buffer = pages.byteOffset === 0 && pages.byteLength === pages.buffer.byteLength
        ? pages.buffer
        : pages.slice().buffer;
      const out = spare?.buffer;
      const { codec, level } = this.#options;
      worker.postMessage(
        { id, buffer, out, count, blockSize, codec, level },
        out === undefined ? [buffer] : [buffer, out],
      );
    });
  }

  /**
   * Keep a batch's buffers for later batches (after its data was used).
   *
   * @param batch A batch from {@linkcode compress}.
   */
  release(batch: PooledBatch): void {
    if (this.#sparePages.length < MAX_SPARE_BUFFERS) this.#sparePages.push(batch.pages);
    const data = new Uint8Array(batch.data.buffer);
    if (this.#spareData.length < MAX_SPARE_BUFFERS) this.#spareData.push(data);
  }

  #done(
    msg: {
      id: number;
      error?: string;
      pages: ArrayBuffer;
      data: ArrayBuffer;
      dataLength: number;
      sizes: ArrayBuffer;
      flags: ArrayBuffer;
    },
  ) {
    const job = this.#jobs.get(msg.id);
    if (job === undefined) return;
    this.#jobs.delete(msg.id);
    if (msg.error !== undefined) {
      job.reject(new Error(`kdump compression failed: ${msg.error}`));
      return;
    }
    job.resolve({
      pages: new Uint8Array(msg.pages),
      data: new Uint8Array(msg.data, 0, msg.dataLength),
      sizes: new Int32Array(msg.sizes),
      flags: new Uint8Array(msg.flags),
    });
  }

  #fail(e: unknown) {
    this.#failed = e;
    for (const job of this.#jobs.values()) job.reject(e);
    this.#jobs.clear();
  }

  /** Stop the workers; batches still in flight are rejected. */
  close(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers.length = 0;
    this.#local?.close();
    this.#local = undefined;
    this.#fail(new Error("kdump compression pool closed"));
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
