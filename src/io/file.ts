/**
 * Files, pipes and atomic output. The only module of `src/` that touches
 * `Deno.*`: everything else works on `ByteReader`s and sinks.
 *
 * @module
 */

import type { ErrorFormat } from "../errors.ts";
import { type ByteReader, PullByteReader } from "./byte_reader.ts";

/** Size of the reads issued to files and pipes. Large reads are what make a pipe fast. */
export const READ_CHUNK_SIZE = 1 << 20;

/** An opened input: a reader plus what a seekable file can also tell. */
export interface OpenedInput {
  /** Reader positioned at the first byte. */
  reader: ByteReader;
  /** File size when the input is a regular file, else `undefined`. */
  byteLength: number | undefined;
  /** The path given, or `-` for standard input. */
  path: string;
  /** Close the underlying file. Safe to call twice. */
  close(): void;
}

/** Options for {@linkcode openInput}. */
export interface OpenInputOptions {
  /** Format named in truncation errors. @default {"migration"} */
  format?: ErrorFormat;
  /** Start reading at this file offset (regular files only). @default {0} */
  startOffset?: number;
  /** Size of each read. @default {READ_CHUNK_SIZE} */
  chunkSize?: number;
  /**
   * Use blocking reads (`readSync`) when the source has them. Deno's
   * asynchronous reads of a pipe come back in small pieces, one event-loop
   * turn each, at a third of the pipe's speed; a blocking read fills a whole
   * buffer. For standard input of a command-line run, where nothing else
   * needs the event loop while it waits for input. @default {false}
   */
  syncReads?: boolean;
  /**
   * Read into a ring of this many (at least 4) reused buffers instead of
   * copying each read into fresh memory (which costs page faults and halves
   * throughput). Views handed out then stay valid only until
   * `recycleChunks − 2` further chunks have been read: for consumers that
   * process each batch before asking for the next one (filters, scanners,
   * encoders), not for code that collects records. 0 disables it. @default {0}
   */
  recycleChunks?: number;
}

/** Anything with the `read` of `Deno.FsFile` (and optionally its `readSync`). */
export interface Readable {
  /** Read into `p`; the count, or `null` at the end. */
  read(p: Uint8Array): Promise<number | null>;
  /** Blocking read, used for pipes when present. */
  readSync?(p: Uint8Array): number | null;
}

/**
 * A {@linkcode ByteReader} that issues large reads to a Deno file or pipe.
 * Each chunk is a fresh copy, so views handed out stay valid.
 *
 * @example
 * ```ts ignore
 * import { fileByteReader } from "@vmem-dump/vmem-dump";
 * using file = await Deno.open("stream.mig");
 * const reader = fileByteReader(file);
 * ```
 */
export function fileByteReader(
  file: Readable,
  options: Omit<OpenInputOptions, "chunkSize"> & { chunkSize?: number } = {},
): PullByteReader {
  const chunkSize = options.chunkSize ?? READ_CHUNK_SIZE;
  // Reading straight into fresh buffers is ten times slower (first-touch page
  // faults in the kernel), so reads go into reused buffers: a ring whose views
  // are handed out as they are (`recycleChunks`), or two scratch buffers that
  // are copied out. The next read is always under way while the caller works
  // on the current chunk.
  const recycle = options.recycleChunks ?? 0;
  const ring = Array.from(
    { length: recycle > 0 ? Math.max(recycle, 4) : 2 },
    () => new Uint8Array(chunkSize),
  );
  let turn = 0;
  let done = false;
  const readSync = options.syncReads && file.readSync ? file.readSync.bind(file) : undefined;
  const readOnce = readSync ?? ((p: Uint8Array) => file.read(p));
  const readInto = async (buf: Uint8Array): Promise<number> => {
    let filled = 0;
    // Fill most of the buffer so that pipes do not hand us 64 KiB slivers.
    while (filled < chunkSize) {
      const n = await readOnce(buf.subarray(filled));
      if (n === null) {
        done = true;
        break;
      }
      filled += n;
      if (filled >= chunkSize / 2) break;
    }
    return filled;
  };
  let pending: { buf: Uint8Array; filled: Promise<number> } | undefined;
  const start = () => {
    const buf = ring[turn++ % ring.length]!;
    const filled = readInto(buf);
    // A consumer may stop early and close the file while this read is under
    // way: keep that rejection from being unhandled (awaiting it still throws).
    filled.catch(() => {});
    pending = { buf, filled };
  };
  return new PullByteReader(async () => {
    if (readSync !== undefined) {
      // Blocking reads: no read-ahead (it would hold back the current chunk
      // until the next one arrived).
      if (done) return undefined;
      const buf = ring[turn++ % ring.length]!;
      const filled = await readInto(buf);
      if (filled === 0) return undefined;
      return recycle > 0 ? buf.subarray(0, filled) : buf.slice(0, filled);
    }
    if (pending === undefined) {
      if (done) return undefined;
      start();
    }
    const { buf, filled: filledPromise } = pending!;
    const filled = await filledPromise;
    pending = undefined;
    if (filled === 0) return undefined;
    if (!done) start();
    return recycle > 0 ? buf.subarray(0, filled) : buf.slice(0, filled);
  }, { format: options.format ?? "migration", startOffset: options.startOffset ?? 0 });
}

/**
 * Open a path (or `-` for standard input) as a {@linkcode ByteReader}.
 *
 * @param path File path or `-`.
 * @param options Error format, start offset, read size.
 * @returns The opened input; call `close()` when done.
 *
 * @example
 * ```ts ignore
 * import { openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * try { console.log(input.byteLength); } finally { input.close(); }
 * ```
 */
export async function openInput(
  path: string,
  options: OpenInputOptions = {},
): Promise<OpenedInput> {
  if (path === "-") {
    return {
      reader: fileByteReader(Deno.stdin, { syncReads: true, ...options }),
      byteLength: undefined,
      path,
      close() {},
    };
  }
  const file = await Deno.open(path, { read: true });
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      file.close();
    }
  };
  try {
    const info = await file.stat();
    const startOffset = options.startOffset ?? 0;
    if (startOffset > 0) await file.seek(startOffset, Deno.SeekMode.Start);
    return {
      reader: fileByteReader(file, { ...options, startOffset }),
      byteLength: info.isFile ? info.size : undefined,
      path,
      close,
    };
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * Read `byteLength` bytes at `fileOffset` from a regular file (for trailers
 * such as the migration vmdesc). Returns fewer bytes only at the end of file.
 *
 * @example
 * ```ts ignore
 * import { readFileRange } from "@vmem-dump/vmem-dump";
 * const tail = await readFileRange("s1.mig", 0, 16);
 * ```
 */
export async function readFileRange(
  path: string,
  fileOffset: number,
  byteLength: number,
): Promise<Uint8Array<ArrayBuffer>> {
  using file = await Deno.open(path, { read: true });
  await file.seek(fileOffset, Deno.SeekMode.Start);
  const out = new Uint8Array(byteLength);
  let filled = 0;
  while (filled < byteLength) {
    const n = await file.read(out.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return out.subarray(0, filled);
}

/** An output that appears under its final name only when committed. */
export interface AtomicOutput {
  /** Write a chunk (the writer may keep it until written). */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Leave the next `byteLength` bytes unwritten: a hole in a regular file
   * (it reads as zeros and takes no disk space), zeros on standard output.
   */
  skip(byteLength: number): Promise<void>;
  /** Flush, close and rename into place (a no-op rename for stdout). */
  commit(): Promise<void>;
  /** Close and delete the temporary file. Safe after commit (does nothing). */
  abort(): Promise<void>;
}

/**
 * Create an output file atomically: bytes go to `PATH.tmp-<pid>-<n>` and are
 * renamed to `PATH` by `commit()`. `-` writes to standard output.
 *
 * @param path Destination path or `-`.
 * @returns The output; call `commit()` on success and `abort()` on failure.
 *
 * @example
 * ```ts ignore
 * import { createAtomicOutput } from "@vmem-dump/vmem-dump";
 * const out = await createAtomicOutput("out.elf");
 * try { await out.write(new Uint8Array(4)); await out.commit(); } catch (e) { await out.abort(); throw e; }
 * ```
 */
export async function createAtomicOutput(path: string): Promise<AtomicOutput> {
  if (path === "-") {
    return {
      async write(chunk) {
        await writeAll(Deno.stdout, chunk);
      },
      async skip(byteLength) {
        await writeZeros(Deno.stdout, byteLength);
      },
      async commit() {},
      async abort() {},
    };
  }
  const tmp = `${path}.tmp-${Deno.pid}-${tempCounter++}`;
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
  let state: "open" | "committed" | "aborted" = "open";
  let position = 0;
  let endsInHole = false;
  return {
    async write(chunk) {
      await writeAll(file, chunk);
      position += chunk.byteLength;
      endsInHole = false;
    },
    async skip(byteLength) {
      if (byteLength === 0) return;
      position += byteLength;
      await file.seek(position, Deno.SeekMode.Start);
      endsInHole = true;
    },
    async commit() {
      if (state !== "open") return;
      state = "committed";
      // A trailing hole only moved the position: give the file its length.
      if (endsInHole) await file.truncate(position);
      file.close();
      await Deno.rename(tmp, path);
    },
    async abort() {
      if (state !== "open") return;
      state = "aborted";
      try {
        file.close();
      } catch { /* already closed */ }
      await Deno.remove(tmp).catch(() => {});
    },
  };
}

let tempCounter = 0;

/** Write `byteLength` zero bytes to a Deno writer. */
async function writeZeros(
  w: { write(p: Uint8Array): Promise<number> },
  byteLength: number,
): Promise<void> {
  const zeros = new Uint8Array(Math.min(byteLength, 1 << 20));
  for (let left = byteLength; left > 0; left -= zeros.byteLength) {
    await writeAll(w, zeros.subarray(0, Math.min(left, zeros.byteLength)));
  }
}

/** Write every byte of `chunk` to a Deno writer. */
export async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  chunk: Uint8Array,
): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) done += await w.write(chunk.subarray(done));
}
