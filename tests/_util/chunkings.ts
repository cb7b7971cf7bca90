/**
 * Chunking matrix for decoder tests: the same bytes delivered as one chunk,
 * 1-byte chunks, a fixed odd size, and seeded random splits; plus a file
 * streamer that applies such splits to 100 MB real fixtures quickly.
 *
 * @example Run a decoder test under every chunking
 * ```ts ignore
 * import { BYTE_CHUNKINGS, chunkedStream } from "./chunkings.ts";
 * Deno.test("decodeMigration() reads the header under every chunking", async (t) => {
 *   for (const c of BYTE_CHUNKINGS) {
 *     await t.step(c.name, async () => {
 *       const records = await Array.fromAsync(decodeMigration(new StreamByteReader(chunkedStream(bytes, c))));
 *     });
 *   }
 * });
 * ```
 *
 * @module
 */

/** How to cut a byte sequence into chunks. */
export type Chunking =
  /** Everything in one chunk (for files: reads of 1 MiB, i.e. "as a pipe delivers"). */
  | { name: string; kind: "whole" }
  /** Chunks of exactly `size` bytes (the last one shorter). */
  | { name: string; kind: "fixed"; size: number }
  /**
   * Random sizes from a log-uniform distribution over `[minSize, maxSize]`:
   * many tiny chunks and some large ones, reproducible from `seed`.
   */
  | { name: string; kind: "random"; seed: number; minSize?: number; maxSize?: number }
  /**
   * For big files: random sizes `1..smallMax` over the first and last
   * `edgeBytes`, random sizes `bigMin..bigMax` in between.
   */
  | {
    name: string;
    kind: "edges";
    seed: number;
    edgeBytes?: number;
    smallMax?: number;
    bigMin?: number;
    bigMax?: number;
  };

/** One chunk for everything. */
export const WHOLE: Chunking = { name: "one chunk", kind: "whole" };
/** 1-byte chunks. */
export const ONE_BYTE: Chunking = { name: "1-byte chunks", kind: "fixed", size: 1 };
/** 4095-byte chunks: never aligned with 4 KiB pages. */
export const ODD_4095: Chunking = { name: "4095-byte chunks", kind: "fixed", size: 4095 };

/**
 * Seeded random split: log-uniform sizes in `[1, maxSize]`.
 *
 * @param seed PRNG seed.
 * @param maxSize Largest chunk.
 * @returns The chunking.
 * @example
 * ```ts
 * import { randomChunking } from "./chunkings.ts";
 * const c = randomChunking(7, 100);
 * ```
 */
export function randomChunking(seed: number, maxSize = 1 << 16): Chunking {
  return { name: `random splits (seed ${seed}, 1..${maxSize})`, kind: "random", seed, maxSize };
}

/**
 * The matrix for in-memory inputs (fixtures up to a few MiB): one chunk,
 * 1-byte chunks, 4095-byte chunks and three seeded random splits.
 */
export const BYTE_CHUNKINGS: readonly Chunking[] = [
  WHOLE,
  ONE_BYTE,
  ODD_4095,
  randomChunking(1, 64),
  randomChunking(2, 1 << 12),
  randomChunking(3, 1 << 16),
];

/**
 * The matrix for big real files (≈ 110 MB each): 1 MiB reads, 4095-byte
 * chunks, 1..17-byte chunks over the first and last MiB with 64 KiB..1 MiB
 * chunks in between, and log-uniform random splits 1 B..1 MiB.
 */
export const FILE_CHUNKINGS: readonly Chunking[] = [
  { name: "1 MiB reads", kind: "whole" },
  ODD_4095,
  {
    name: "edges 1..17 B (seed 11), middle 64 KiB..1 MiB",
    kind: "edges",
    seed: 11,
    edgeBytes: 1 << 20,
    smallMax: 17,
    bigMin: 1 << 16,
    bigMax: 1 << 20,
  },
  { name: "random splits (seed 12, 1 B..1 MiB)", kind: "random", seed: 12, maxSize: 1 << 20 },
];

/**
 * A small deterministic PRNG (mulberry32): returns floats in `[0, 1)`.
 *
 * @param seed Any 32-bit integer.
 * @returns A function producing the next number.
 * @example
 * ```ts
 * import { seededRandom } from "./chunkings.ts";
 * const rnd = seededRandom(42);
 * const x = rnd();
 * ```
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The chunk sizes a chunking gives for an input of `byteLength` bytes.
 * The sizes are positive and add up to `byteLength`.
 *
 * @param chunking How to cut.
 * @param byteLength Total input length.
 * @param wholeSize Size used by `kind: "whole"`. @default {Infinity}
 * @returns The sizes, in order.
 * @example
 * ```ts
 * import { chunkSizes, ODD_4095 } from "./chunkings.ts";
 * console.log([...chunkSizes(ODD_4095, 10000)]); // [4095, 4095, 1810]
 * ```
 */
export function* chunkSizes(
  chunking: Chunking,
  byteLength: number,
  wholeSize = Infinity,
): Generator<number> {
  let pos = 0;
  const logUniform = (rnd: () => number, min: number, max: number) => {
    const lo = Math.log(min), hi = Math.log(max + 1);
    return Math.min(max, Math.max(min, Math.floor(Math.exp(lo + rnd() * (hi - lo)))));
  };
  const uniform = (rnd: () => number, min: number, max: number) =>
    min + Math.floor(rnd() * (max - min + 1));
  const rnd = "seed" in chunking ? seededRandom(chunking.seed) : () => 0;
  while (pos < byteLength) {
    let size: number;
    switch (chunking.kind) {
      case "whole":
        size = wholeSize;
        break;
      case "fixed":
        size = chunking.size;
        break;
      case "random":
        size = logUniform(rnd, chunking.minSize ?? 1, chunking.maxSize ?? 1 << 16);
        break;
      case "edges": {
        const edge = chunking.edgeBytes ?? 1 << 20;
        if (pos < edge || pos >= byteLength - edge) {
          size = uniform(rnd, 1, chunking.smallMax ?? 17);
          // do not cross from the small-chunk head into the middle with a tiny chunk budget
        } else {
          size = uniform(rnd, chunking.bigMin ?? 1 << 16, chunking.bigMax ?? 1 << 20);
          size = Math.min(size, byteLength - edge - pos); // stop where the tail edge begins
        }
        break;
      }
    }
    if (!(size >= 1)) throw new RangeError(`Bad chunk size ${size} from ${chunking.name}`);
    size = Math.min(size, byteLength - pos);
    yield size;
    pos += size;
  }
}

/**
 * Cut `bytes` into views according to a chunking (no copies unless `copy`).
 *
 * @param bytes Input.
 * @param chunking How to cut.
 * @param options `copy: true` gives every chunk its own buffer.
 * @returns The chunks in order.
 * @example
 * ```ts
 * import { splitBytes, ONE_BYTE } from "./chunkings.ts";
 * console.log(splitBytes(new Uint8Array(3), ONE_BYTE).length); // 3
 * ```
 */
export function splitBytes(
  bytes: Uint8Array,
  chunking: Chunking,
  options: { copy?: boolean } = {},
): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (const size of chunkSizes(chunking, bytes.length)) {
    const view = bytes.subarray(pos, pos + size);
    out.push(options.copy ? view.slice() : view);
    pos += size;
  }
  return out;
}

/**
 * A `ReadableStream` delivering `bytes` cut by `chunking`. Chunks are views
 * into `bytes` (non-zero `byteOffset`, which catches `new DataView(u8.buffer)`
 * bugs) unless `copy` is set. The stream is pull-based: one chunk per pull.
 *
 * @param bytes Input.
 * @param chunking How to cut.
 * @param options `copy: true` gives every chunk its own buffer.
 * @returns A fresh stream (call again for each reader).
 * @example
 * ```ts
 * import { chunkedStream, ODD_4095 } from "./chunkings.ts";
 * const stream = chunkedStream(new Uint8Array(10000), ODD_4095);
 * ```
 */
export function chunkedStream(
  bytes: Uint8Array,
  chunking: Chunking,
  options: { copy?: boolean } = {},
): ReadableStream<Uint8Array> {
  const sizes = chunkSizes(chunking, bytes.length);
  let pos = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = sizes.next();
      if (next.done) {
        controller.close();
        return;
      }
      const view = bytes.subarray(pos, pos + next.value);
      pos += next.value;
      controller.enqueue(options.copy ? view.slice() : view);
    },
  }, { highWaterMark: 0 });
}

/** Options for {@linkcode chunkedFileStream}. */
export interface ChunkedFileStreamOptions {
  /** Size of each file read; chunks are views into fresh read buffers. @default {1048576} */
  readSize?: number;
}

/**
 * Stream a (big) file cut by `chunking`, with bounded memory. Reads 1 MiB at a
 * time into a fresh buffer and hands out views into it, so earlier chunks stay
 * valid. Use {@linkcode FILE_CHUNKINGS} for 100 MB fixtures: they keep a
 * round trip under a few seconds per chunking.
 *
 * @param path File to stream.
 * @param chunking How to cut; `whole` means one chunk per read.
 * @param options Read size.
 * @returns A stream that closes the file at the end or on cancel.
 * @example
 * ```ts ignore
 * import { chunkedFileStream, FILE_CHUNKINGS } from "./chunkings.ts";
 * const stream = await chunkedFileStream("s3-malicious.mig", FILE_CHUNKINGS[2]!);
 * ```
 */
export async function chunkedFileStream(
  path: string,
  chunking: Chunking,
  options: ChunkedFileStreamOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  const readSize = options.readSize ?? 1 << 20;
  const file = await Deno.open(path);
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      file.close();
    }
  };
  try {
    const byteLength = (await file.stat()).size;
    const sizes = chunkSizes(chunking, byteLength, readSize);
    let buf = new Uint8Array(0);
    let bufPos = 0;
    let want = 0; // bytes still owed to the current chunk size
    let pending: Uint8Array[] = []; // pieces of a chunk that spans reads
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        for (;;) {
          if (want === 0) {
            const next = sizes.next();
            if (next.done) {
              close();
              controller.close();
              return;
            }
            want = next.value;
          }
          if (bufPos === buf.length) {
            buf = new Uint8Array(readSize);
            let filled = 0;
            while (filled < readSize) {
              const n = await file.read(buf.subarray(filled));
              if (n === null) break;
              filled += n;
            }
            if (filled === 0) {
              close();
              controller.error(new Error(`${path} shrank while being streamed`));
              return;
            }
            buf = buf.subarray(0, filled);
            bufPos = 0;
          }
          const take = Math.min(want, buf.length - bufPos);
          const piece = buf.subarray(bufPos, bufPos + take);
          bufPos += take;
          want -= take;
          if (want > 0) {
            pending.push(piece);
            continue;
          }
          if (pending.length === 0) {
            controller.enqueue(piece);
          } else {
            pending.push(piece);
            controller.enqueue(concatBytes(pending));
            pending = [];
          }
          return;
        }
      },
      cancel() {
        close();
      },
    }, { highWaterMark: 0 });
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * Concatenate byte arrays into one new array.
 *
 * @param parts Pieces in order.
 * @returns A new array holding all pieces.
 * @example
 * ```ts
 * import { concatBytes } from "./chunkings.ts";
 * concatBytes([new Uint8Array([1]), new Uint8Array([2])]); // Uint8Array [1, 2]
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Read a whole byte stream into one array (for small outputs).
 *
 * @param stream The stream.
 * @returns All bytes.
 * @example
 * ```ts
 * import { chunkedStream, collectBytes, ONE_BYTE } from "./chunkings.ts";
 * const same = await collectBytes(chunkedStream(new Uint8Array([1, 2, 3]), ONE_BYTE));
 * ```
 */
export async function collectBytes(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return concatBytes(parts);
}
