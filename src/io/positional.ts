/**
 * Random-access input for formats whose headers point anywhere in the file
 * (ELF cores): a {@linkcode PositionalReader} over a Deno file or over bytes
 * in memory, and {@linkcode copyRanges}, a double-buffered copier that moves
 * file ranges, zero runs and literal bytes to a sink in big chunks.
 *
 * Besides `src/io/file.ts`, this is the only module of `src/` that touches
 * `Deno.*` (in {@linkcode openPositional} only).
 *
 * @module
 */

import { checkPinnedIdentity } from "./pinned_files.ts";
import { type AtomicOutputOptions, createAtomicOutput, type FileIdentity } from "./file.ts";
import { isAllZero } from "./zero.ts";
import { type ErrorFormat, UnexpectedEofError } from "../errors.ts";

/** Reads at arbitrary file offsets. */
export interface PositionalReader {
  /** Size of the file in bytes. */
  readonly byteLength: number;
  /**
   * Fill `into` with the bytes at `fileOffset`. Returns how many bytes were
   * read: fewer than `into.byteLength` only at the end of the file.
   */
  readInto(fileOffset: number, into: Uint8Array): Promise<number>;
  /** Release the file. Safe to call twice. */
  close(): void;
  /**
   * Device and inode of the file when it is one, so that an output path
   * never replaces it ({@linkcode copyRangesTo}). @default {undefined}
   */
  readonly identity?: FileIdentity | undefined;
}

/** Anything with the `seek` and `read` of `Deno.FsFile`. */
interface SeekableFile {
  seek(offset: number, whence: Deno.SeekMode): Promise<number>;
  read(p: Uint8Array): Promise<number | null>;
  close(): void;
}

/** A {@linkcode PositionalReader} over a seekable file; reads are serialised. */
class FilePositionalReader implements PositionalReader {
  readonly byteLength: number;
  readonly identity: FileIdentity | undefined;
  #file: SeekableFile;
  #position = 0;
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(file: SeekableFile, byteLength: number, identity: FileIdentity | undefined) {
    this.#file = file;
    this.byteLength = byteLength;
    this.identity = identity;
  }

  readInto(fileOffset: number, into: Uint8Array): Promise<number> {
    const run = this.#queue.then(() => this.#read(fileOffset, into));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #read(fileOffset: number, into: Uint8Array): Promise<number> {
    if (!Number.isSafeInteger(fileOffset) || fileOffset < 0) {
      throw new RangeError(`Cannot read at file offset ${fileOffset}`);
    }
    if (this.#position !== fileOffset) {
      await this.#file.seek(fileOffset, Deno.SeekMode.Start);
      this.#position = fileOffset;
    }
    let filled = 0;
    while (filled < into.byteLength) {
      const n = await this.#file.read(into.subarray(filled));
      if (n === null) break;
      filled += n;
      this.#position += n;
    }
    return filled;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Open a regular file for positional reads.
 *
 * @param path The file.
 * @returns The reader; call `close()` (or use `using`) when done.
 * @throws {TypeError} when `path` is not a regular file (a pipe cannot be read at random).
 *
 * @example
 * ```ts ignore
 * import { openPositional } from "@vmem-dump/vmem-dump";
 * using input = await openPositional("dump.elf");
 * const head = new Uint8Array(64);
 * await input.readInto(0, head);
 * ```
 */
export async function openPositional(path: string): Promise<PositionalReader & Disposable> {
  // Told before opening: opening a FIFO would take its writer's data from the command that
  // reads it as a stream.
  const notRegular = () =>
    new TypeError(`Cannot read ${path} at random offsets: not a regular file`);
  if (!(await Deno.stat(path)).isFile) throw notRegular();
  const file = await Deno.open(path, { read: true });
  try {
    const info = await file.stat();
    if (!info.isFile) throw notRegular(); // replaced between the two
    checkPinnedIdentity(path, info);
    const identity = info.dev !== null && info.ino !== null
      ? {
        path,
        dev: info.dev,
        ino: info.ino,
        isFile: true,
        mode: info.mode === null ? null : info.mode & 0o7777,
      }
      : undefined;
    return new FilePositionalReader(file, info.size, identity);
  } catch (e) {
    file.close();
    throw e;
  }
}

/**
 * A {@linkcode PositionalReader} over bytes in memory (tests, small inputs).
 *
 * @param bytes The file contents.
 * @returns The reader.
 *
 * @example
 * ```ts
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * const r = bytesPositional(new Uint8Array([1, 2, 3, 4]));
 * const into = new Uint8Array(2);
 * console.log(await r.readInto(3, into)); // 1
 * ```
 */
export function bytesPositional(bytes: Uint8Array): PositionalReader & Disposable {
  return {
    byteLength: bytes.byteLength,
    readInto(fileOffset: number, into: Uint8Array): Promise<number> {
      if (!Number.isSafeInteger(fileOffset) || fileOffset < 0) {
        return Promise.reject(new RangeError(`Cannot read at file offset ${fileOffset}`));
      }
      const part = bytes.subarray(
        Math.min(fileOffset, bytes.byteLength),
        fileOffset + into.byteLength,
      );
      into.set(part);
      return Promise.resolve(part.byteLength);
    },
    close() {},
    [Symbol.dispose]() {},
  };
}

/**
 * A view of `file` that tells `onFileRead` where each read ended (the file
 * offset just past the bytes read), for progress. Closing the view closes
 * `file`.
 *
 * @param file The file.
 * @param onFileRead Told after every read.
 * @returns The observed view.
 *
 * @example
 * ```ts ignore
 * import { bytesPositional, observedPositional } from "./positional.ts";
 * const r = observedPositional(bytesPositional(new Uint8Array(8)), (end) => console.log(end));
 * await r.readInto(2, new Uint8Array(4)); // prints 6
 * ```
 */
export function observedPositional(
  file: PositionalReader,
  onFileRead: (fileOffsetReached: number) => void,
): PositionalReader {
  return {
    byteLength: file.byteLength,
    readInto: async (fileOffset: number, into: Uint8Array) => {
      const n = await file.readInto(fileOffset, into);
      onFileRead(fileOffset + n);
      return n;
    },
    close: () => file.close(),
    identity: file.identity,
  };
}

/** Options for {@linkcode readAt}. */
export interface ReadAtOptions {
  /** Format named in the truncation error. @default {"elf"} */
  format?: ErrorFormat;
  /** What is being read, for the error message. @default {"<n> bytes"} */
  what?: string;
}

/**
 * Read exactly `byteLength` bytes at `fileOffset` into a new buffer.
 *
 * @param reader The input.
 * @param range File offset and byte length.
 * @param options Error format and description.
 * @returns The bytes.
 * @throws {UnexpectedEofError} when the file ends first, at the offset where it ended.
 *
 * @example
 * ```ts
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * import { readAt } from "./positional.ts";
 * const r = bytesPositional(new Uint8Array([1, 2, 3, 4]));
 * console.log(await readAt(r, { fileOffset: 1, byteLength: 2 })); // Uint8Array [2, 3]
 * ```
 */
export async function readAt(
  reader: PositionalReader,
  range: { fileOffset: number; byteLength: number },
  options: ReadAtOptions = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const { fileOffset, byteLength } = range;
  if (byteLength > reader.byteLength - fileOffset || fileOffset > reader.byteLength) {
    const have = Math.max(0, reader.byteLength - fileOffset);
    throw new UnexpectedEofError(
      `Cannot read ${options.what ?? `${byteLength} bytes`} at 0x${fileOffset.toString(16)}: ` +
        `file ended after ${have} of ${byteLength} bytes`,
      options.format ?? "elf",
      // Where the file ended, even for a range that starts past it: an error's offset
      // names a byte of the input (the range itself is in the message).
      reader.byteLength,
    );
  }
  const out = new Uint8Array(byteLength);
  const n = await reader.readInto(fileOffset, out);
  if (n < byteLength) {
    throw new UnexpectedEofError(
      `Cannot read ${
        options.what ?? `${byteLength} bytes`
      }: file ended after ${n} of ${byteLength} bytes`,
      options.format ?? "elf",
      fileOffset + n,
    );
  }
  return out;
}

/** One step of a {@linkcode copyRanges} plan. */
export type CopyStep =
  /** Copy `byteLength` input bytes starting at `fileOffset`. */
  | { kind: "copy"; fileOffset: number; byteLength: number }
  /** Write `byteLength` zero bytes (padding). */
  | { kind: "zero"; byteLength: number }
  /** Leave `byteLength` bytes unwritten: a hole when the output can have one (see `onHole`), else zeros. */
  | { kind: "hole"; byteLength: number }
  /** Write these bytes (headers). */
  | { kind: "bytes"; data: Uint8Array }
  /** Read input bytes without writing them; `onData` sees each chunk (e.g. to count non-zero pages). */
  | {
    kind: "inspect";
    fileOffset: number;
    byteLength: number;
    onData: (data: Uint8Array, fileOffset: number) => void;
  };

/**
 * Receives output chunks. The chunk is only valid until the returned promise
 * settles (its buffer is reused afterwards): write it out or copy it.
 */
export type ChunkSink = (chunk: Uint8Array) => Promise<void>;

/** Options for {@linkcode copyRanges}. */
export interface CopyRangesOptions {
  /** Size of each read and write. @default {4194304} */
  chunkSize?: number;
  /** Format named in truncation errors. @default {"elf"} */
  format?: ErrorFormat;
  /** Called after each chunk with the number of input bytes read so far. @default {undefined} */
  onProgress?: (inputBytesRead: number) => void;
  /**
   * Makes `hole` steps holes: called, once every earlier chunk is written,
   * to move the output on by `byteLength` bytes without writing. Without it
   * holes are written as zeros. @default {undefined}
   */
  onHole?: (byteLength: number) => Promise<void>;
  /**
   * {@linkcode copyRangesTo} with a path: the output policy (inputs,
   * `force`, protected files). The reader's own file is always one of the
   * inputs. @default {{}}
   */
  outputPolicy?: AtomicOutputOptions;
}

/** Default size of the copy chunks: 4 MiB. */
export const COPY_CHUNK_SIZE = 4 << 20;

/**
 * Execute a copy plan: literal bytes, zero runs and input ranges, written to
 * `sink` in order. Reads of the next chunk overlap with writes of the
 * previous one (two buffers), and no step is ever held in memory whole.
 *
 * @param reader The input.
 * @param sink Where output chunks go (see {@linkcode ChunkSink} for buffer reuse).
 * @param steps The plan, in output order (a generator may compute it as it goes); ascending input offsets make reads sequential.
 * @param options Chunk size, error format, progress callback.
 * @returns Output bytes written.
 * @throws {UnexpectedEofError} when a copy step runs past the end of the input.
 *
 * @example Copy two ranges with padding
 * ```ts
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * import { copyRanges } from "./positional.ts";
 * const input = bytesPositional(new Uint8Array([1, 2, 3, 4, 5, 6]));
 * const out: number[] = [];
 * await copyRanges(input, (c) => { out.push(...c); return Promise.resolve(); }, [
 *   { kind: "copy", fileOffset: 0, byteLength: 2 },
 *   { kind: "zero", byteLength: 1 },
 *   { kind: "copy", fileOffset: 4, byteLength: 2 },
 * ]);
 * console.log(out); // [1, 2, 0, 5, 6]
 * ```
 */
export async function copyRanges(
  reader: PositionalReader,
  sink: ChunkSink,
  steps: Iterable<CopyStep> | AsyncIterable<CopyStep>,
  options: CopyRangesOptions = {},
): Promise<number> {
  const chunkSize = options.chunkSize ?? COPY_CHUNK_SIZE;
  const format = options.format ?? "elf";
  const buffers = [new Uint8Array(chunkSize), new Uint8Array(chunkSize)];
  let zeros: Uint8Array | undefined;
  let inFlight = -1; // index of the buffer the pending write uses, or -1
  let pending: Promise<void> = Promise.resolve();
  let written = 0;
  let inputRead = 0;

  const emit = async (chunk: Uint8Array, bufferIndex: number) => {
    await pending;
    written += chunk.byteLength;
    inFlight = bufferIndex;
    pending = sink(chunk);
    // It fails while the next read is awaited (ENOSPC): mark it handled here, or the process
    // dies of an unhandled rejection with a stack trace and leaves the temporary output behind.
    // The loop awaits it before the next write and at the end, so the error still surfaces.
    pending.catch(() => {});
  };

  try {
    for await (const step of steps) {
      if (step.kind === "bytes") {
        if (step.data.byteLength > 0) await emit(step.data, -1);
      } else if (step.kind === "hole" && options.onHole !== undefined) {
        if (step.byteLength > 0) {
          await pending;
          pending = Promise.resolve();
          inFlight = -1;
          written += step.byteLength;
          await options.onHole(step.byteLength);
        }
      } else if (step.kind === "zero" || step.kind === "hole") {
        let left = step.byteLength;
        while (left > 0) {
          zeros ??= new Uint8Array(chunkSize);
          const n = Math.min(left, chunkSize);
          await emit(zeros.subarray(0, n), -1);
          left -= n;
        }
      } else {
        let at = step.fileOffset;
        const end = step.fileOffset + step.byteLength;
        while (at < end) {
          // Fill the buffer that is not being written while the other one is.
          const index = inFlight === 0 ? 1 : 0;
          const buf = buffers[index]!;
          const want = Math.min(chunkSize, end - at);
          const n = await reader.readInto(at, buf.subarray(0, want));
          if (n < want) {
            throw new UnexpectedEofError(
              `Cannot copy input bytes 0x${step.fileOffset.toString(16)}..0x${end.toString(16)}: ` +
                `file ended at 0x${(at + n).toString(16)}`,
              format,
              at + n,
            );
          }
          inputRead += n;
          if (step.kind === "copy") await emit(buf.subarray(0, n), index);
          else step.onData(buf.subarray(0, n), at);
          options.onProgress?.(inputRead);
          at += n;
        }
      }
    }
  } finally {
    // Always settle the last write, so a failure does not leave a dangling promise.
    await pending.catch(() => {});
  }
  await pending;
  return written;
}

/**
 * Counts distinct non-zero pages in bytes fed in ascending order, for
 * `inspect` steps. A page is identified by its address in the space
 * `fileOffset + addressDelta` (e.g. gpa = file offset + delta).
 *
 * @example
 * ```ts
 * import { NonZeroPageCounter } from "./positional.ts";
 * const c = new NonZeroPageCounter(0, 4096);
 * const data = new Uint8Array(8192);
 * data[5000] = 1;
 * c.add(data, 0);
 * console.log(c.count); // 1
 * ```
 */
export class NonZeroPageCounter {
  #delta: number;
  #pageSize: number;
  #lastPage = -1;
  #count = 0;

  /**
   * Start counting.
   *
   * @param addressDelta Added to file offsets to get the address pages are aligned in.
   * @param pageSize Page size in bytes.
   */
  constructor(addressDelta: number, pageSize: number) {
    this.#delta = addressDelta;
    this.#pageSize = pageSize;
  }

  /** Non-zero pages seen so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * Feed bytes read at `fileOffset`.
   *
   * @param data The bytes.
   * @param fileOffset Where they were read.
   */
  add(data: Uint8Array, fileOffset: number): void {
    const base = fileOffset + this.#delta;
    let pos = 0;
    while (pos < data.byteLength) {
      const addr = base + pos;
      const page = Math.floor(addr / this.#pageSize);
      const stop = Math.min(data.byteLength, pos + (this.#pageSize - (addr % this.#pageSize)));
      if (page !== this.#lastPage && !isAllZero(data.subarray(pos, stop))) {
        this.#count++;
        this.#lastPage = page;
      }
      pos = stop;
    }
  }
}

/** Where {@linkcode copyRangesTo} writes: a path (atomic, `-` for stdout) or a sink. */
export type CopyOutput = string | ChunkSink | SparseSink;

/**
 * An output that can leave holes (an `AtomicOutput` is one): `copyRangesTo`
 * writes into it and skips over `hole` steps; the caller commits it.
 */
export interface SparseSink {
  /** Write a chunk (valid only until the promise settles). */
  write(chunk: Uint8Array): Promise<void>;
  /** Move on by `byteLength` bytes without writing them. */
  skip(byteLength: number): Promise<void>;
}

/**
 * {@linkcode copyRanges} into a path, written atomically (a temporary file
 * renamed on success, removed on failure), into a sink, or into a
 * {@linkcode SparseSink} (holes are skipped; the caller commits it). A path follows
 * the output policy of `createAtomicOutput` (`options.outputPolicy`, with
 * the reader's file as one more input): it never replaces an input nor,
 * without `force`, any existing file.
 *
 * @param reader The input.
 * @param output A path, `-`, a sink, or a sparse sink (an `AtomicOutput`).
 * @param steps What to copy, zero-fill or insert, in output order.
 * @param options Chunk size, error format, progress.
 * @returns The number of bytes written.
 * @example
 * ```ts ignore
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * import { copyRangesTo } from "./positional.ts";
 * await copyRangesTo(bytesPositional(new Uint8Array(8)), "out.bin", [{ kind: "copy", fileOffset: 0, byteLength: 8 }]);
 * ```
 */
export async function copyRangesTo(
  reader: PositionalReader,
  output: CopyOutput,
  steps: Iterable<CopyStep> | AsyncIterable<CopyStep>,
  options: CopyRangesOptions = {},
): Promise<number> {
  if (typeof output === "function") return await copyRanges(reader, output, steps, options);
  if (typeof output !== "string") {
    return await copyRanges(reader, (chunk) => output.write(chunk), steps, {
      ...options,
      onHole: (n) => output.skip(n),
    });
  }
  const policy = options.outputPolicy ?? {};
  const out = await createAtomicOutput(output, {
    ...policy,
    inputs: [...(policy.inputs ?? []), ...(reader.identity === undefined ? [] : [reader.identity])],
  });
  try {
    const written = await copyRanges(reader, (chunk) => out.write(chunk), steps, {
      ...options,
      onHole: (n) => out.skip(n),
    });
    await out.commit();
    return written;
  } catch (e) {
    await out.abort();
    throw e;
  }
}
