/**
 * Files, pipes and atomic output. The only module of `src/` that touches
 * `Deno.*`: everything else works on `ByteReader`s and sinks.
 *
 * @module
 */

import { checkPinnedIdentity, pinnedIdentity } from "./pinned_files.ts";
import { type ErrorFormat, OutputError } from "../errors.ts";
import { type ByteReader, PullByteReader } from "./byte_reader.ts";

/** Size of the reads issued to files and pipes. Large reads are what make a pipe fast. */
export const READ_CHUNK_SIZE = 1 << 20;

/** An opened file or pipe: a reader plus what a seekable file can also tell. */
export interface OpenedFileReader {
  /** Reader positioned at the first byte. */
  reader: ByteReader;
  /** File size when the input is a regular file, else `undefined`. */
  byteLength: number | undefined;
  /** The path given, or `-` for standard input. */
  path: string;
  /** Close the underlying file. Safe to call twice. */
  close(): void;
}

/** Options for {@linkcode openFileReader}. */
export interface FileReaderOptions {
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
   * The source is a regular file: its blocking reads never wait for a
   * writer, so `syncReads` stays on while an output's signal listeners are
   * installed, and the event loop is let turn now and then so that they run.
   * Set by {@linkcode openFileReader}. @default {false}
   */
  regularFile?: boolean;
  /**
   * Read into a ring of this many (at least 4) reused buffers instead of
   * copying each read into fresh memory (which costs page faults and halves
   * throughput). The reader's `viewLifetime` is then `"until-refill"`: views
   * are only promised to stay valid until the next chunk is pulled, for
   * consumers that process each batch before asking for the next one
   * (filters, scanners, encoders), not for code that collects records. (The
   * ring keeps them intact for `recycleChunks − 2` further chunks, which
   * leaves room for read-ahead.) 0 disables it. @default {0}
   */
  recycleChunks?: number;
  /**
   * Called with every chunk read, in order, before it is handed out (to hash
   * the input as it goes by). The chunk is only valid during the call.
   * @default {undefined}
   */
  onChunk?: (chunk: Uint8Array) => void;
}

/**
 * Blocking reads of a regular file after which the event loop is let turn
 * while signal listeners are installed (256 reads of 256 KiB: 64 MiB, some
 * tens of milliseconds).
 */
const BLOCKING_RUN = 256;

/** Anything with the `read` of `Deno.FsFile` (and optionally its `readSync`). */
export interface Readable {
  /** Read into `p`; the count, or `null` at the end. */
  read(p: Uint8Array): Promise<number | null>;
  /** Blocking read, used for pipes when present. */
  readSync?(p: Uint8Array): number | null;
}

/**
 * A {@linkcode ByteReader} that issues large reads to a Deno file or pipe.
 * Each chunk is a fresh copy, so views handed out stay valid (`"stable"`),
 * unless `recycleChunks` is set (`"until-refill"`).
 *
 * @example
 * ```ts ignore
 * import { fileByteReader } from "./file.ts";
 * using file = await Deno.open("stream.mig");
 * const reader = fileByteReader(file);
 * ```
 */
export function fileByteReader(
  file: Readable,
  options: FileReaderOptions = {},
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
  const readAsync = (p: Uint8Array) => file.read(p);
  const regularFile = options.regularFile ?? false;
  const readInto = async (
    buf: Uint8Array,
    readOnce: (p: Uint8Array) => Promise<number | null> | number | null,
  ): Promise<number> => {
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
    const filled = readInto(buf, readAsync);
    // A consumer may stop early and close the file while this read is under
    // way: keep that rejection from being unhandled (awaiting it still throws).
    filled.catch(() => {});
    pending = { buf, filled };
  };
  // Blocking reads of a regular file since this reader last let the event loop turn (see `pull`).
  let blockingRun = 0;
  const pull = async (): Promise<Uint8Array | undefined> => {
    if (readSync !== undefined && pending === undefined) {
      // Blocking reads: no read-ahead (it would hold back the current chunk
      // until the next one arrived). While an output's signal listeners are
      // installed (they run between event-loop turns, and Ctrl-C must still
      // remove the unfinished output), a pipe gets asynchronous reads (it may
      // stall for ever), and a regular file (whose reads never wait for a
      // writer) lets the loop turn after every BLOCKING_RUN reads, in case
      // nothing else does (a filter that drops everything writes nothing).
      const listening = signalListenersInstalled();
      if (!listening || regularFile) {
        if (listening && ++blockingRun >= BLOCKING_RUN) {
          blockingRun = 0;
          await new Promise((resolve) => setTimeout(resolve, 0));
        }
        if (done) return undefined;
        const buf = ring[turn++ % ring.length]!;
        const filled = await readInto(buf, readSync);
        if (filled === 0) return undefined;
        return recycle > 0 ? buf.subarray(0, filled) : buf.slice(0, filled);
      }
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
  };
  const tap = options.onChunk;
  const source = tap === undefined ? pull : async () => {
    const chunk = await pull();
    if (chunk !== undefined) tap(chunk);
    return chunk;
  };
  return new PullByteReader(source, {
    format: options.format ?? "migration",
    startOffset: options.startOffset ?? 0,
    viewLifetime: recycle > 0 ? "until-refill" : "stable",
  });
}

/**
 * Open a path (or `-` for standard input) as a {@linkcode ByteReader} over
 * its bytes as they are (no container detection: `openInput` of the root
 * module does that).
 *
 * @param path File path or `-`.
 * @param options Error format, start offset, read size.
 * @returns The opened file; call `close()` when done.
 *
 * @example
 * ```ts
 * import { openFileReader } from "./file.ts";
 * const input = await openFileReader("testdata/migration/q72-tiny-unplugged.mig");
 * try {
 *   console.log(new TextDecoder().decode(await input.reader.read(4))); // QEVM
 * } finally {
 *   input.close();
 * }
 * ```
 */
export async function openFileReader(
  path: string,
  options: FileReaderOptions = {},
): Promise<OpenedFileReader> {
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
    if (info.isDirectory) throw new TypeError(`Cannot read ${path}: it is a directory`);
    checkPinnedIdentity(path, info);
    const startOffset = options.startOffset ?? 0;
    if (startOffset > 0) await file.seek(startOffset, Deno.SeekMode.Start);
    return {
      reader: fileByteReader(file, { ...options, startOffset, regularFile: info.isFile }),
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
 * import { readFileRange } from "./file.ts";
 * const tail = await readFileRange("s1.mig", 0, 16);
 * ```
 */
export async function readFileRange(
  path: string,
  fileOffset: number,
  byteLength: number,
): Promise<Uint8Array<ArrayBuffer>> {
  using file = await Deno.open(path, { read: true });
  if (pinnedIdentity(path) !== undefined) checkPinnedIdentity(path, await file.stat());
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

// ---------------------------------------------------------------------------
// Output: one policy for every file a command writes (docs/evidence.md).
//
// - An output never replaces one of the inputs: files are compared by device
//   and inode after following links, so `./ev.mig`, a symlink or a hard link
//   to the input are all recognised.
// - An existing output is replaced only with `force`.
// - The output's permission bits are the inputs' read/write bits (never
//   wider), narrowed by the umask; input from a pipe or a terminal gives 0600.
// - Bytes go to a temporary file in the same folder, renamed into place on
//   commit. While it exists, SIGINT, SIGTERM and SIGHUP remove it and end the
//   process with 130, 143 or 129.
// - Every failure is an `OutputError` naming the path and, for writes, the
//   offset; the temporary file is gone when it is thrown.
// ---------------------------------------------------------------------------

/** Identity of a file: device and inode after following links, type and permission bits. */
export interface FileIdentity {
  /** The path it was found under (`-` for standard input or output). */
  path: string;
  /** Device number. */
  dev: number;
  /** Inode number. */
  ino: number;
  /** Whether it is a regular file (not a pipe, terminal, socket or device). */
  isFile: boolean;
  /** Permission bits (`mode & 0o7777`), or `null` where the platform has none. */
  mode: number | null;
}

function identityOf(path: string, info: Deno.FileInfo): FileIdentity | undefined {
  if (info.dev === null || info.ino === null) return undefined;
  return {
    path,
    dev: info.dev,
    ino: info.ino,
    isFile: info.isFile,
    mode: info.mode === null ? null : info.mode & 0o7777,
  };
}

/**
 * The identity of `path` after following links (`-`: what standard input
 * is connected to), or `undefined` when it does not exist or the platform
 * has no inode numbers.
 *
 * @param path A path, or `-` for standard input.
 * @returns The identity, or `undefined`.
 *
 * @example
 * ```ts ignore
 * import { fileIdentity } from "./file.ts";
 * const a = await fileIdentity("ev.mig");
 * const b = await fileIdentity("./link-to-ev.mig");
 * console.log(a?.dev === b?.dev && a?.ino === b?.ino); // true
 * ```
 */
export async function fileIdentity(path: string): Promise<FileIdentity | undefined> {
  if (path === "-") return await stdioIdentity(0);
  try {
    return identityOf(path, await Deno.stat(path));
  } catch {
    return undefined;
  }
}

/**
 * What standard input (0) or output (1) is connected to, from the
 * descriptor itself: `Deno.stat("/dev/stdin")` needs `--allow-all` (Deno
 * guards /dev and /proc), which bin/vmem-dump does not give, and without
 * it `vmem-dump filter a.mig - >> a.mig` would write into its input.
 */
async function stdioIdentity(fd: 0 | 1): Promise<FileIdentity | undefined> {
  return (await stdioInfo(fd))?.identity;
}

/**
 * {@linkcode stdioIdentity} and whether the descriptor is a pipe or a socket
 * (where a write may wait for a reader), from one `fstat`.
 */
async function stdioInfo(
  fd: 0 | 1,
): Promise<{ identity: FileIdentity; pipe: boolean } | undefined> {
  try {
    const { fstatSync } = await import("node:fs");
    const info = fstatSync(fd);
    return {
      identity: {
        path: "-",
        dev: info.dev,
        ino: info.ino,
        isFile: info.isFile(),
        mode: info.mode & 0o7777,
      },
      pipe: info.isFIFO() || info.isSocket(),
    };
  } catch {
    return undefined; // closed, or no such descriptor: nothing to protect
  }
}

function sameFile(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** Options for {@linkcode createAtomicOutput}, {@linkcode createAtomicDirectory} and {@linkcode writeAtomically}. */
export interface AtomicOutputOptions {
  /**
   * The inputs the output is made from (paths, `-` for standard input, or
   * identities). The output never replaces any of them, and its permission
   * bits are never wider than theirs. @default {[]}
   */
  inputs?: readonly (string | FileIdentity)[];
  /**
   * Further files the output must never replace (plug maps, headers …),
   * without a say in its permissions. @default {[]}
   */
  protect?: readonly (string | FileIdentity)[];
  /** Replace an existing output. @default {false} */
  force?: boolean;
  /**
   * Permission bits when no input is given (before the umask). With inputs,
   * their read/write bits are used instead. @default {0o600}
   */
  mode?: number;
  /**
   * While the temporary output exists, let SIGINT, SIGTERM and SIGHUP remove
   * it and end the process (exit 130, 143, 129). Turn off only when the
   * caller removes its outputs on signals itself. @default {true}
   */
  exitOnSignal?: boolean;
  /**
   * Called by `commit()` before the output is put in place (standard
   * output, a FIFO or a device: before it is closed). What it throws aborts
   * the output (the temporary file is removed) and is rethrown: the last
   * check that the inputs did not change while they were read.
   * @default {undefined}
   */
  beforeCommit?: () => Promise<void>;
}

/** An output that appears under its final name only when committed. */
export interface AtomicOutput {
  /** The destination path (`-` for standard output). */
  readonly path: string;
  /** Bytes written so far. */
  readonly offset: number;
  /** Write a chunk (the writer may keep it until written). @throws {OutputError} */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Leave the next `byteLength` bytes unwritten: a hole in a regular file
   * (it reads as zeros and takes no disk space), zeros on standard output
   * and other streams. @throws {OutputError}
   */
  skip(byteLength: number): Promise<void>;
  /** Flush, close and rename into place (a no-op for stdout). @throws {OutputError} */
  commit(): Promise<void>;
  /** Close and delete the temporary file. Safe after commit (does nothing). */
  abort(): Promise<void>;
  /**
   * Files only (absent for standard output): random access to the
   * temporary file, for formats whose headers are written last (kdump).
   * Do not mix with `write`.
   */
  positional?: AtomicOutputPositional;
}

/** Random access to an {@linkcode AtomicOutput}'s temporary file. */
export interface AtomicOutputPositional {
  /** Write all of `chunk` at `fileOffset` (past the end leaves a hole of zeros). */
  writeAt(fileOffset: number, chunk: Uint8Array): Promise<void>;
  /** Read into `into` from `fileOffset`; returns the bytes read (fewer only at the end). */
  readAt(fileOffset: number, into: Uint8Array): Promise<number>;
  /** Cut or extend the file to `byteLength`. */
  truncate(byteLength: number): Promise<void>;
}

/** Words for an operating-system error: "no space left on device". */
function osErrorText(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const text = message
    .replace(/:\s*(open|write|close|rename|link|chmod|mkdir|remove|stat|lstat)\s+'.*$/, "")
    .replace(/\s*\(os error \d+\)/, "");
  return text.length > 0 ? text[0]!.toLowerCase() + text.slice(1) : "input/output error";
}

function osCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" ? code : undefined;
}

/** An `OutputError` for a failed operation on `path`. */
function ioError(e: unknown, doing: string, path: string, offset?: number): OutputError {
  if (e instanceof OutputError) return e;
  const at = offset === undefined ? "" : ` at offset 0x${offset.toString(16)}`;
  return new OutputError(`${osErrorText(e)} ${doing} ${path}${at}`, {
    code: "io",
    path,
    offset,
    osCode: osCode(e),
  }, { cause: e });
}

/** Resolve paths and identities; missing files protect nothing. */
async function identities(
  list: readonly (string | FileIdentity)[] | undefined,
): Promise<FileIdentity[]> {
  const out: FileIdentity[] = [];
  for (const x of list ?? []) {
    const id = typeof x === "string" ? await fileIdentity(x) : x;
    if (id !== undefined) out.push(id);
  }
  return out;
}

/** The permission bits of an output made from `inputs`: never wider than any of them. */
function outputMode(inputs: readonly FileIdentity[], fallback: number): number {
  let mode = inputs.length === 0 ? fallback & 0o666 : 0o666;
  // Guest memory from a pipe or a terminal: its permissions say nothing, keep it private.
  for (const i of inputs) mode &= i.isFile && i.mode !== null ? i.mode & 0o666 : 0o600;
  return mode & ~currentUmask();
}

/**
 * The process's umask. Without the permission to read it (`Deno.umask()`
 * needs `--allow-sys`), the narrowest one, 077: an output is never wider
 * than the umask would allow, whatever it is.
 */
function currentUmask(): number {
  try {
    return Deno.umask();
  } catch {
    return 0o077;
  }
}

function refuseInput(path: string, dest: FileIdentity, guarded: readonly FileIdentity[]): void {
  const hit = guarded.find((g) => sameFile(g, dest));
  if (hit === undefined) return;
  const input = hit.path === "-" ? "the file on standard input" : hit.path;
  throw new OutputError(
    `Cannot write ${path}: it is the input (${input}, the same file); refusing to write over evidence`,
    { code: "output-is-input", path },
  );
}

/** What exists at an output path. */
type Existing =
  | { kind: "none" }
  | { kind: "file" | "link" }
  | { kind: "direct"; identity: FileIdentity | undefined }; // a FIFO, character device, socket

async function existing(
  path: string,
  guarded: readonly FileIdentity[],
  force: boolean,
  what: "file" | "directory",
): Promise<Existing> {
  let link: Deno.FileInfo;
  try {
    link = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { kind: "none" };
    throw ioError(e, "looking at", path);
  }
  let info: Deno.FileInfo | undefined = link;
  if (link.isSymlink) {
    try {
      info = await Deno.stat(path);
    } catch {
      info = undefined; // a dangling link
    }
  }
  const id = info === undefined ? undefined : identityOf(path, info);
  if (id !== undefined) refuseInput(path, id, guarded);
  if (info !== undefined && what === "file") {
    if (info.isDirectory) {
      throw new OutputError(`Cannot write ${path}: it is a directory`, {
        code: "not-writable",
        path,
      });
    }
    if (info.isFifo || info.isCharDevice || info.isSocket) return { kind: "direct", identity: id };
    if (info.isBlockDevice && !force) {
      throw new OutputError(
        `Cannot write ${path}: it is a block device; refusing to overwrite it without --force`,
        { code: "output-exists", path },
      );
    }
    if (info.isBlockDevice) return { kind: "direct", identity: id };
  }
  if (!force) {
    throw new OutputError(
      `Cannot write ${path}: it exists; refusing to replace it without --force`,
      {
        code: "output-exists",
        path,
      },
    );
  }
  return { kind: link.isSymlink ? "link" : "file" };
}

// ---- temporary outputs and signals ----------------------------------------

interface LiveOutput {
  /** The temporary path to remove. */
  tmp: string;
  /** Whether it is a directory. */
  directory: boolean;
  /** Close its open file, if any. */
  close(): void;
}

const liveOutputs = new Set<LiveOutput>();
const SIGNAL_EXIT_CODES: ReadonlyArray<[Deno.Signal, number]> = [
  ["SIGINT", 130],
  ["SIGTERM", 143],
  ["SIGHUP", 129],
];
let signalListeners: Array<[Deno.Signal, () => void]> | undefined;

/** Remove every temporary output now (a signal ends the process next). */
function removeLiveOutputsSync(): void {
  for (const o of liveOutputs) {
    try {
      o.close();
    } catch { /* already closed */ }
    if (o.directory) removeDirectorySync(o.tmp);
    else {
      try {
        Deno.removeSync(o.tmp);
      } catch { /* already gone */ }
    }
  }
  liveOutputs.clear();
}

/**
 * Remove a temporary directory that asynchronous writes may still be filling
 * (their operations run on other threads while the signal listener runs):
 * rename it first, so that a file created after that fails instead of
 * landing in it, then remove it until it is gone (a file created in the
 * instant before the rename makes one removal fail with ENOTEMPTY).
 */
function removeDirectorySync(tmp: string): void {
  let doomed = tmp;
  try {
    Deno.renameSync(tmp, `${tmp}.removing`);
    doomed = `${tmp}.removing`;
  } catch { /* gone, or renaming failed: remove it where it is */ }
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      Deno.removeSync(doomed, { recursive: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      continue;
    }
    return;
  }
}

function track(o: LiveOutput, exitOnSignal: boolean): void {
  liveOutputs.add(o);
  if (!exitOnSignal || signalListeners !== undefined) return;
  signalListeners = [];
  for (const [signal, code] of SIGNAL_EXIT_CODES) {
    const listener = () => {
      removeLiveOutputsSync();
      Deno.exit(code);
    };
    try {
      Deno.addSignalListener(signal, listener);
      signalListeners.push([signal, listener]);
    } catch { /* a platform without this signal */ }
  }
}

function untrack(o: LiveOutput): void {
  liveOutputs.delete(o);
  if (liveOutputs.size > 0 || signalListeners === undefined) return;
  // Back to the default dispositions: a signal now simply ends the process.
  for (const [signal, listener] of signalListeners) Deno.removeSignalListener(signal, listener);
  signalListeners = undefined;
}

/**
 * Whether signal listeners for temporary outputs are installed. Blocking
 * reads would keep them from running (they run between event-loop turns),
 * so readers use asynchronous reads meanwhile.
 */
function signalListenersInstalled(): boolean {
  return signalListeners !== undefined;
}

let tempCounter = 0;

/** A temporary name beside `path` (short enough for NAME_MAX). */
function temporaryPath(path: string): string {
  const suffix = `.tmp-${Deno.pid}-${tempCounter++}`;
  const slash = path.lastIndexOf("/");
  const base = path.slice(slash + 1);
  if (base.length + suffix.length <= 255) return path + suffix;
  return `${path.slice(0, slash + 1)}.vmem-dump${suffix}`;
}

/** Put `tmp` at `path`: without `force` never over something that appeared meanwhile. */
async function putInPlace(tmp: string, path: string, force: boolean): Promise<void> {
  if (force) {
    await Deno.rename(tmp, path);
    return;
  }
  try {
    // link() fails when the name exists: no check-then-rename race.
    await Deno.link(tmp, path);
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new OutputError(`Cannot write ${path}: it appeared while it was written`, {
        code: "output-exists",
        path,
      });
    }
    // A file system without hard links: check, then rename.
    try {
      await Deno.lstat(path);
      throw new OutputError(`Cannot write ${path}: it appeared while it was written`, {
        code: "output-exists",
        path,
      });
    } catch (e2) {
      if (!(e2 instanceof Deno.errors.NotFound)) throw e2;
    }
    await Deno.rename(tmp, path);
    return;
  }
  await Deno.remove(tmp);
}

/** Write every byte of `chunk` at output offset `offset`, turning failures into `OutputError`. */
async function writeAllAt(
  w: { write(p: Uint8Array): Promise<number> },
  chunk: Uint8Array,
  path: string,
  offset: number,
): Promise<void> {
  let done = 0;
  try {
    while (done < chunk.byteLength) done += await w.write(chunk.subarray(done));
  } catch (e) {
    throw ioError(e, "writing", path, offset + done);
  }
}

/**
 * Check an output path against the policy of {@linkcode createAtomicOutput}
 * without creating anything, so that a command can refuse a bad output
 * before long work. `createAtomicOutput` checks again.
 *
 * @param path Destination path or `-`.
 * @param options The output policy.
 * @throws {OutputError} when the output would be refused.
 *
 * @example
 * ```ts ignore
 * import { checkOutput } from "./file.ts";
 * await checkOutput("out.elf", { inputs: ["in.elf"] }); // throws when out.elf exists
 * ```
 */
export async function checkOutput(path: string, options: AtomicOutputOptions = {}): Promise<void> {
  const guarded = [...await identities(options.inputs), ...await identities(options.protect)];
  if (path === "-") {
    const stdout = await stdioIdentity(1);
    if (stdout !== undefined) refuseInput("standard output", stdout, guarded);
    return;
  }
  await existing(path, guarded, options.force ?? false, "file");
}

/**
 * Create an output file under the evidence rules: bytes go to
 * `PATH.tmp-<pid>-<n>` and appear as `PATH` only on `commit()`.
 *
 * - Refuses (`OutputError` `output-is-input`) when `PATH`, or standard
 *   output for `-`, is one of `options.inputs`/`options.protect`: same
 *   device and inode, after following links.
 * - Refuses (`output-exists`) an existing `PATH` unless `options.force`;
 *   even then a file that appears while writing is not replaced silently.
 * - A FIFO or character device (`/dev/null`, a named pipe) is written
 *   directly; nothing is renamed.
 * - Permission bits: the inputs' read/write bits, never wider (a pipe or a
 *   terminal as input counts as 0600), narrowed by the umask. The temporary
 *   file is 0600 until commit.
 * - While the temporary file exists, SIGINT, SIGTERM and SIGHUP remove it
 *   and end the process with 130, 143 or 129 (see `exitOnSignal`).
 * - Write, close and rename failures throw `OutputError` (`io`) naming the
 *   path and the output offset, e.g. `no space left on device writing
 *   out.mig at offset 0x3f000`; call `abort()` then (it removes the file).
 *
 * @param path Destination path or `-` (standard output).
 * @param options Inputs to protect and derive permissions from, `force`.
 * @returns The output; call `commit()` on success and `abort()` on failure.
 * @throws {OutputError} when the output is refused or cannot be created.
 *
 * @example
 * ```ts ignore
 * import { createAtomicOutput } from "@vmem-dump/vmem-dump";
 * const out = await createAtomicOutput("out.elf", { inputs: ["in.elf"] });
 * try { await out.write(new Uint8Array(4)); await out.commit(); } catch (e) { await out.abort(); throw e; }
 * ```
 */
export async function createAtomicOutput(
  path: string,
  options: AtomicOutputOptions = {},
): Promise<AtomicOutput> {
  const inputs = await identities(options.inputs);
  const guarded = [...inputs, ...await identities(options.protect)];
  const force = options.force ?? false;
  if (path === "-") {
    const stdout = await stdioInfo(1);
    if (stdout !== undefined) refuseInput("standard output", stdout.identity, guarded);
    return directOutput("-", Deno.stdout, false, stdout?.pipe ?? false, options.beforeCommit);
  }
  const found = await existing(path, guarded, force, "file");
  if (found.kind === "direct") {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { write: true });
    } catch (e) {
      throw ioError(e, "opening", path);
    }
    let pipe = false;
    try {
      const info = await file.stat();
      pipe = info.isFifo === true || info.isSocket === true;
    } catch { /* unknown: blocking writes are right for anything */ }
    return directOutput(path, file, true, pipe, options.beforeCommit);
  }
  const mode = outputMode(inputs, options.mode ?? 0o600);
  const tmp = temporaryPath(path);
  let file: Deno.FsFile | undefined;
  const live: LiveOutput = {
    tmp,
    directory: false,
    close: () => file?.close(),
  };
  // Listen for signals before the file exists, so no window leaves it behind.
  track(live, options.exitOnSignal ?? true);
  try {
    file = await Deno.open(tmp, { read: true, write: true, createNew: true, mode: 0o600 });
  } catch (e) {
    untrack(live);
    throw ioError(e, "creating", path);
  }
  const opened = file;
  let state: "open" | "committed" | "aborted" = "open";
  let offset = 0;
  const closeQuietly = () => {
    try {
      opened.close();
    } catch { /* already closed */ }
  };
  let endsInHole = false;
  return {
    path,
    get offset() {
      return offset;
    },
    async write(chunk) {
      const at = offset;
      offset += chunk.byteLength;
      await writeAllAt(opened, chunk, path, at);
      endsInHole = false;
    },
    async skip(byteLength) {
      if (byteLength === 0) return;
      offset += byteLength;
      try {
        await opened.seek(offset, Deno.SeekMode.Start);
      } catch (e) {
        throw ioError(e, "seeking in", path, offset);
      }
      endsInHole = true;
    },
    async commit() {
      if (state !== "open") return;
      try {
        // A trailing hole only moved the position: give the file its length.
        if (endsInHole) {
          try {
            await opened.truncate(offset);
          } catch (e) {
            throw ioError(e, "extending", path, offset);
          }
        }
        try {
          opened.close();
        } catch (e) {
          throw ioError(e, "closing", path);
        }
        try {
          await Deno.chmod(tmp, mode);
        } catch { /* a file system without permission bits */ }
        await options.beforeCommit?.();
        // The inputs may have moved onto the destination meanwhile: look again.
        if (force) {
          const dest = await fileIdentity(path);
          if (dest !== undefined) refuseInput(path, dest, guarded);
        }
        try {
          await putInPlace(tmp, path, force);
        } catch (e) {
          throw ioError(e, "renaming the finished output to", path);
        }
        state = "committed";
      } catch (e) {
        state = "aborted";
        await Deno.remove(tmp).catch(() => {});
        throw e;
      } finally {
        untrack(live);
      }
    },
    async abort() {
      if (state !== "open") return;
      state = "aborted";
      closeQuietly();
      await Deno.remove(tmp).catch(() => {});
      untrack(live);
    },
    positional: {
      async writeAt(fileOffset, chunk) {
        try {
          await opened.seek(fileOffset, Deno.SeekMode.Start);
        } catch (e) {
          throw ioError(e, "seeking in", path, fileOffset);
        }
        await writeAllAt(opened, chunk, path, fileOffset);
      },
      async readAt(fileOffset, into) {
        let filled = 0;
        try {
          await opened.seek(fileOffset, Deno.SeekMode.Start);
          while (filled < into.byteLength) {
            const n = await opened.read(into.subarray(filled));
            if (n === null) break;
            filled += n;
          }
        } catch (e) {
          throw ioError(e, "reading back", path, fileOffset + filled);
        }
        return filled;
      },
      async truncate(byteLength) {
        try {
          await opened.truncate(byteLength);
        } catch (e) {
          throw ioError(e, "resizing", path, byteLength);
        }
      },
    },
  };
}

/** An output written in place: standard output, a FIFO, a character device. */
function directOutput(
  path: string,
  file: { write(p: Uint8Array): Promise<number>; writeSync(p: Uint8Array): number; close(): void },
  closeAtEnd: boolean,
  pipe: boolean,
  beforeCommit?: () => Promise<void>,
): AtomicOutput {
  const name = path === "-" ? "standard output" : path;
  // A pipe or socket gets asynchronous writes: Deno runs them on another
  // thread, so the command goes on decoding (and reading its own input)
  // while the reader drains the pipe. On the 231 MB real stream
  // `cat | filter - - | cat` took 0.41 s against 0.74 s with blocking writes,
  // at less CPU (1.3 cores busy instead of 0.8). Anything else (a terminal,
  // /dev/null, a regular file behind `> FILE`) never makes a write wait for
  // another process: blocking writes save the copy an asynchronous write
  // makes (to /dev/null 0.17 s against 0.22 s).
  const sink = {
    write: pipe
      ? (p: Uint8Array) => file.write(p)
      : (p: Uint8Array) => Promise.resolve(file.writeSync(p)),
  };
  let offset = 0;
  let closed = !closeAtEnd;
  const close = () => {
    if (closed) return;
    closed = true;
    file.close();
  };
  return {
    path,
    get offset() {
      return offset;
    },
    async write(chunk) {
      const at = offset;
      offset += chunk.byteLength;
      await writeAllAt(sink, chunk, name, at);
    },
    async skip(byteLength) {
      const zeros = new Uint8Array(Math.min(byteLength, 1 << 20));
      for (let left = byteLength; left > 0; left -= zeros.byteLength) {
        const n = Math.min(left, zeros.byteLength);
        const at = offset;
        offset += n;
        await writeAllAt(sink, zeros.subarray(0, n), name, at);
      }
    },
    async commit() {
      // What it throws leaves the output open for abort() to close.
      await beforeCommit?.();
      try {
        close();
      } catch (e) {
        throw ioError(e, "closing", name);
      }
    },
    abort() {
      try {
        close();
      } catch { /* already closed */ }
      return Promise.resolve();
    },
  };
}

/**
 * Run `produce` with a sink into an atomic output ({@linkcode createAtomicOutput}),
 * commit when it resolves, abort (remove the temporary file) when it throws.
 *
 * @param path Destination path or `-`.
 * @param options The output policy.
 * @param produce Writes the output through the sink it is given.
 * @returns What `produce` returned.
 * @throws {OutputError} when the output is refused or writing fails; whatever `produce` throws.
 *
 * @example
 * ```ts ignore
 * import { writeAtomically } from "@vmem-dump/vmem-dump";
 * await writeAtomically("out.bin", { inputs: ["in.bin"] }, (write) => write(new Uint8Array(8)));
 * ```
 */
export async function writeAtomically<T>(
  path: string,
  options: AtomicOutputOptions,
  produce: (write: (chunk: Uint8Array) => Promise<void>) => Promise<T>,
): Promise<T> {
  const out = await createAtomicOutput(path, options);
  try {
    const result = await produce((chunk) => out.write(chunk));
    await out.commit();
    return result;
  } catch (e) {
    await out.abort();
    throw e;
  }
}

/** A file being written inside an {@linkcode AtomicDirectory}. */
export interface AtomicDirectoryFile {
  /** Bytes written so far. */
  readonly offset: number;
  /** Append bytes. @throws {OutputError} */
  write(bytes: Uint8Array): Promise<void>;
  /** Close the file. @throws {OutputError} */
  close(): Promise<void>;
}

/** A directory that appears under its final name only when committed. */
export interface AtomicDirectory {
  /** The destination path. */
  readonly path: string;
  /**
   * Write a whole file into the directory (`name` has no `/`). @throws {OutputError}
   */
  writeFile(name: string, bytes: Uint8Array): Promise<void>;
  /**
   * Create a file in the directory to write piece by piece (`name` has no
   * `/`); close it before `commit()`. @throws {OutputError}
   */
  createFile(name: string): Promise<AtomicDirectoryFile>;
  /** Rename the finished directory into place. @throws {OutputError} */
  commit(): Promise<void>;
  /** Remove the temporary directory. Safe after commit (does nothing). */
  abort(): Promise<void>;
}

/** Options for {@linkcode createAtomicDirectory}. */
export interface AtomicDirectoryOptions extends AtomicOutputOptions {
  /**
   * With `force`, an existing directory is replaced only when it holds this
   * file (so that `--force` cannot remove an unrelated folder). @default {undefined}
   */
  replaceableIfContains?: string;
}

async function realPathOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await Deno.realPath(path);
  } catch {
    return undefined;
  }
}

/** Check a destination directory against the policy; whether it is to be replaced. */
async function directoryDestination(
  path: string,
  options: AtomicDirectoryOptions,
): Promise<{ inputs: FileIdentity[]; replace: boolean }> {
  const inputs = await identities(options.inputs);
  const guarded = [...inputs, ...await identities(options.protect)];
  const force = options.force ?? false;
  let replace = false;
  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw ioError(e, "looking at", path);
  }
  if (info !== undefined) {
    const id = identityOf(path, info);
    if (id !== undefined) refuseInput(path, id, guarded);
    if (!info.isDirectory) {
      throw new OutputError(
        `Cannot write the directory ${path}: it exists and is not a directory`,
        {
          code: "output-exists",
          path,
        },
      );
    }
    if (!force) {
      throw new OutputError(
        `Cannot write the directory ${path}: it exists; refusing to replace it without --force`,
        {
          code: "output-exists",
          path,
        },
      );
    }
    const marker = options.replaceableIfContains;
    if (marker !== undefined && (await realPathOrUndefined(`${path}/${marker}`)) === undefined) {
      throw new OutputError(
        `Cannot replace the directory ${path}: it does not hold ${marker}, so it is not an earlier output`,
        { code: "output-exists", path },
      );
    }
    const real = await realPathOrUndefined(path);
    for (const g of guarded) {
      if (g.path === "-") continue;
      const inner = await realPathOrUndefined(g.path);
      if (real !== undefined && inner !== undefined && inner.startsWith(real + "/")) {
        throw new OutputError(
          `Cannot replace the directory ${path}: the input ${g.path} is inside it`,
          { code: "output-is-input", path },
        );
      }
    }
    replace = true;
  }
  return { inputs, replace };
}

/**
 * Check an output directory against the policy of
 * {@linkcode createAtomicDirectory} without creating anything, so that a
 * command can refuse it before long work.
 *
 * @param path Destination directory.
 * @param options The output policy.
 * @throws {OutputError} when the directory would be refused.
 *
 * @example
 * ```ts ignore
 * import { checkOutputDirectory } from "./file.ts";
 * await checkOutputDirectory("evidence", { inputs: ["s3.mig"] });
 * ```
 */
export async function checkOutputDirectory(
  path: string,
  options: AtomicDirectoryOptions = {},
): Promise<void> {
  await directoryDestination(path, options);
}

/**
 * Create an output directory under the evidence rules of
 * {@linkcode createAtomicOutput}: files go to `DIR.tmp-<pid>-<n>/`, which is
 * renamed to `DIR` on commit. An existing `DIR` is replaced only with
 * `force`, only when it holds `replaceableIfContains`, and never when an
 * input lies inside it. Files get the inputs' read/write bits (never wider);
 * the directory adds search bits where it has read bits.
 *
 * @param path Destination directory.
 * @param options The output policy.
 * @returns The directory; call `commit()` on success and `abort()` on failure.
 * @throws {OutputError} when the directory is refused or cannot be created.
 *
 * @example
 * ```ts ignore
 * import { createAtomicDirectory } from "./file.ts";
 * const dir = await createAtomicDirectory("evidence", { inputs: ["s3.mig"] });
 * try { await dir.writeFile("a.bin", new Uint8Array(4)); await dir.commit(); } catch (e) { await dir.abort(); throw e; }
 * ```
 */
export async function createAtomicDirectory(
  path: string,
  options: AtomicDirectoryOptions = {},
): Promise<AtomicDirectory> {
  const { inputs, replace } = await directoryDestination(path, options);
  const fileMode = outputMode(inputs, options.mode ?? 0o600);
  const dirMode = fileMode | ((fileMode & 0o444) >> 2);
  const tmp = temporaryPath(path);
  const live: LiveOutput = { tmp, directory: true, close() {} };
  track(live, options.exitOnSignal ?? true);
  try {
    await Deno.mkdir(tmp, { mode: 0o700 });
  } catch (e) {
    untrack(live);
    throw ioError(e, "creating", path);
  }
  let state: "open" | "committed" | "aborted" = "open";
  const removeTmp = async () => {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    untrack(live);
  };
  const createFile = async (name: string): Promise<AtomicDirectoryFile> => {
    if (state !== "open") throw new TypeError(`Cannot write into ${path}: it is finished`);
    if (name.length === 0 || name.includes("/") || name === "." || name === "..") {
      throw new RangeError(`Cannot write ${JSON.stringify(name)} into ${path}: not a file name`);
    }
    const shown = `${path}/${name}`;
    let file: Deno.FsFile;
    try {
      // createNew: a repeated name fails instead of overwriting.
      file = await Deno.open(`${tmp}/${name}`, { write: true, createNew: true, mode: fileMode });
    } catch (e) {
      throw ioError(e, "creating", shown);
    }
    const out = directOutput(shown, file, true, false);
    return {
      get offset() {
        return out.offset;
      },
      write: (bytes) => out.write(bytes),
      close: () => out.commit(),
    };
  };
  return {
    path,
    createFile,
    async writeFile(name, bytes) {
      const file = await createFile(name);
      try {
        await file.write(bytes);
      } finally {
        await file.close();
      }
    },
    async commit() {
      if (state !== "open") return;
      try {
        await options.beforeCommit?.();
      } catch (e) {
        state = "aborted";
        await removeTmp();
        throw e;
      }
      state = "committed";
      try {
        try {
          await Deno.chmod(tmp, dirMode);
        } catch { /* a file system without permission bits */ }
        if (replace) {
          const old = temporaryPath(path);
          await Deno.rename(path, old);
          try {
            await Deno.rename(tmp, path);
          } catch (e) {
            await Deno.rename(old, path).catch(() => {});
            throw e;
          }
          await Deno.remove(old, { recursive: true });
        } else {
          try {
            await Deno.lstat(path);
            throw new OutputError(
              `Cannot write the directory ${path}: it appeared while it was written`,
              {
                code: "output-exists",
                path,
              },
            );
          } catch (e) {
            if (!(e instanceof Deno.errors.NotFound)) throw e;
          }
          await Deno.rename(tmp, path);
        }
      } catch (e) {
        state = "aborted";
        await removeTmp();
        throw ioError(e, "renaming the finished directory to", path);
      }
      untrack(live);
    },
    async abort() {
      if (state !== "open") return;
      state = "aborted";
      await removeTmp();
    },
  };
}

/** Write every byte of `chunk` to a Deno writer. */
export async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  chunk: Uint8Array,
): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) done += await w.write(chunk.subarray(done));
}
