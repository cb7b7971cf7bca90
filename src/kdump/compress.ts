/**
 * Page compression for kdump writers: a batch of pages is zero-checked and
 * each non-zero page compressed on its own (zlib or zstd, one-shot
 * `node:zlib`), in Web Workers so that compression uses every core while the
 * main thread reads and writes.
 *
 * @module
 */

import { constants, deflateSync, zstdCompressSync } from "node:zlib";
import { DUMP_DH_COMPRESSED_ZLIB, DUMP_DH_COMPRESSED_ZSTD } from "./header.ts";

/** Page codecs the writer produces. `none` stores pages as they are. */
export type KdumpWriteCodec = "zlib" | "zstd" | "none";

/** Compression levels: zlib 1–9, zstd 1–19. */
export const KDUMP_LEVELS: Readonly<Record<KdumpWriteCodec, readonly [number, number, number]>> = {
  zlib: [1, 9, 1], // [lowest, highest, default]: makedumpfile -c uses the fastest level too
  zstd: [1, 19, 1],
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

/**
 * Compress `count` pages of `blockSize` bytes held back to back in `pages`.
 * A page that does not get smaller is stored as is (flag 0), as
 * makedumpfile does.
 *
 * @param pages The pages (`count × blockSize` bytes, 4-byte aligned).
 * @param count Number of pages.
 * @param blockSize Page size.
 * @param codec The codec.
 * @param level The level (see {@linkcode KDUMP_LEVELS}).
 * @returns The batch.
 *
 * @example
 * ```ts
 * import { compressPageBatch } from "@vmem-dump/vmem-dump/kdump";
 * const pages = new Uint8Array(8192);
 * pages.fill(7, 4096);
 * const b = compressPageBatch(pages, 2, 4096, "zstd", 1);
 * console.log(b.sizes[0], b.sizes[1]! < 100, b.flags[1]); // 0 true 32
 * ```
 */
export function compressPageBatch(
  pages: Uint8Array,
  count: number,
  blockSize: number,
  codec: KdumpWriteCodec,
  level: number,
): CompressedBatch {
  const sizes = new Int32Array(count);
  const flags = new Uint8Array(count);
  const parts: Uint8Array[] = [];
  let total = 0;
  const flag = kdumpCodecFlag(codec);
  const aligned = pages.byteOffset % 4 === 0;
  const words = new Int32Array(
    pages.buffer,
    aligned ? pages.byteOffset : 0,
    aligned ? count * blockSize / 4 : 0,
  );
  const perPage = blockSize / 4;
  const zstdOptions = { params: { [constants.ZSTD_c_compressionLevel]: level } };
  for (let i = 0; i < count; i++) {
    const page = pages.subarray(i * blockSize, (i + 1) * blockSize);
    let acc = 0;
    if (aligned) {
      for (let k = i * perPage, e = k + perPage; k < e && acc === 0; k++) acc |= words[k]!;
    } else {
      for (let k = 0; k < blockSize && acc === 0; k++) acc |= page[k]!;
    }
    if (acc === 0) continue;
    let stored: Uint8Array = page;
    if (codec !== "none") {
      const c = codec === "zlib"
        ? deflateSync(page, { level })
        : zstdCompressSync(page, zstdOptions);
      if (c.byteLength < blockSize) {
        stored = c;
        flags[i] = flag;
      }
    }
    sizes[i] = stored.byteLength;
    parts.push(stored);
    total += stored.byteLength;
  }
  const data = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.byteLength;
  }
  return { data, sizes, flags };
}

/** Options for {@linkcode PageCompressorPool}. */
export interface PageCompressorOptions {
  /** The codec. */
  codec: KdumpWriteCodec;
  /** The level. @default {the codec's default in KDUMP_LEVELS} */
  level?: number;
  /** Page size. */
  blockSize: number;
  /** Worker count; 0 compresses on the calling thread. @default {navigator.hardwareConcurrency} */
  workers?: number;
}

interface Job {
  resolve: (b: CompressedBatch) => void;
  reject: (e: unknown) => void;
}

/**
 * Compresses page batches on a pool of Web Workers; results come back as
 * promises, so a caller keeps a few batches in flight and awaits them in
 * order. Call {@linkcode close} (or `using`) when done.
 *
 * @example
 * ```ts ignore
 * import { PageCompressorPool } from "@vmem-dump/vmem-dump/kdump";
 * using pool = new PageCompressorPool({ codec: "zstd", blockSize: 4096 });
 * const batch = await pool.compress(new Uint8Array(4096 * 256), 256);
 * ```
 */
export class PageCompressorPool implements Disposable {
  readonly #options: Required<PageCompressorOptions>;
  readonly #workers: Worker[] = [];
  readonly #jobs = new Map<number, Job>();
  #next = 0;
  #failed: unknown;

  /**
   * Start the workers.
   *
   * @param options Codec, level, page size, worker count.
   */
  constructor(options: PageCompressorOptions) {
    const level = options.level ?? KDUMP_LEVELS[options.codec][2];
    const workers = options.workers ??
      Math.max(1, (globalThis.navigator?.hardwareConcurrency as number | undefined) ?? 1);
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
   * Compress a batch. The pages buffer is transferred to a worker (it is
   * unusable afterwards) unless there are no workers.
   *
   * @param pages `count × blockSize` bytes at offset 0 of their own buffer.
   * @param count Number of pages.
   * @returns The compressed batch.
   */
  compress(pages: Uint8Array<ArrayBuffer>, count: number): Promise<CompressedBatch> {
    const { codec, level, blockSize } = this.#options;
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#workers.length === 0) {
      try {
        return Promise.resolve(compressPageBatch(pages, count, blockSize, codec, level));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const id = this.#next++;
    const worker = this.#workers[id % this.#workers.length]!;
    return new Promise<CompressedBatch>((resolve, reject) => {
      this.#jobs.set(id, { resolve, reject });
      const buffer = pages.byteOffset === 0 && pages.byteLength === pages.buffer.byteLength
        ? pages.buffer
        : pages.slice().buffer;
      worker.postMessage({ id, buffer, count, blockSize, codec, level }, [buffer]);
    });
  }

  #done(
    msg: { id: number; error?: string; data: ArrayBuffer; sizes: ArrayBuffer; flags: ArrayBuffer },
  ) {
    const job = this.#jobs.get(msg.id);
    if (job === undefined) return;
    this.#jobs.delete(msg.id);
    if (msg.error !== undefined) {
      job.reject(new Error(`kdump compression failed: ${msg.error}`));
      return;
    }
    job.resolve({
      data: new Uint8Array(msg.data),
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
    this.#fail(new Error("kdump compression pool closed"));
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
