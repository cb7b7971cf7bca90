/**
 * Extract the virtio-mem plug state (a {@linkcode PlugMap}) from a decoded
 * migration stream, in every layout:
 *
 * - early layout (QEMU ≥ 8.0 machine types): the `P/virtio-mem-device-early`
 *   sections right after the `ram` START section give geometry, size and
 *   bitmap before any RAM page; reading stops there unless `complete` asks
 *   for usable and requested size, which only the late `P/virtio-mem`
 *   section at the end carries;
 * - late layout (QEMU 7.2, compat machine types): everything is in the
 *   `P/virtio-mem` device section after all RAM. For a seekable file the
 *   decoder jumps from the early sections to the device state, which the
 *   vmdesc at the end of the file locates; otherwise the stream is read once.
 *
 * The device section is found by its section header and its structure,
 * never by the vmdesc: the device state is walked by the decoder exactly as
 * in a full decode (section by section, footers checked), so the shortcut and
 * a full read see the same sections. A vmdesc that names them differently is
 * reported (`vmdescDisagreements`) and tolerated, since it changes nothing
 * QEMU loads; device state that cannot be proven, and a device whose plug
 * state is stated twice, are errors (a map must never be a silent choice).
 * The shortcuts do not read the RAM in between: a section hidden among the
 * RAM sections is seen only by a full read (of a pipe or a compressed
 * stream, or by `verify`, which always reads everything).
 *
 * Each device is matched to its RAMBlock (`P/…` with `usedLength ==
 * regionSize`) and checked against every plug-map invariant.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { type ByteReader, PullByteReader } from "../io/byte_reader.ts";
import {
  type OpenedFileReader,
  openFileReader,
  READ_CHUNK_SIZE,
  readFileRange,
} from "../io/file.ts";
import { observedPositional, openPositional, type PositionalReader } from "../io/positional.ts";
import { positionalByteReader } from "../io/positional_byte_reader.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import { decodeMigrationBatches, type DecodeOptions } from "./decoder.ts";
import { isPageRecord, type MigrationRecord, type TailProblemRecord } from "./types.ts";
import { fullHeaderLength, type VmdescSection } from "./vmdesc.ts";
import { findVmdescAtEnd, MAX_VMDESC } from "./_tail.ts";
import { PlugStateCollector } from "./_plug_state_collector.ts";

/** Options for {@linkcode extractPlugMap} and {@linkcode extractPlugStateFromFile}. */
export interface ExtractPlugMapOptions {
  /**
   * Early layout: read on to the late `P/virtio-mem` section for usable and
   * requested size (otherwise they stay `undefined` and reading stops at the
   * first RAM page).
   * @default {false}
   */
  complete?: boolean;
}

/** Options for {@linkcode extractPlugStateFromFile}. */
export interface ExtractPlugStateFromFileOptions
  extends ExtractPlugMapOptions, Pick<ExtractPlugStateFromReaderOptions, "onFileRead"> {
  /**
   * The size of `path`, when the caller knows it is a regular file (it
   * opened it already): the file is then not opened once more to find out.
   * @default {undefined}
   */
  regularFileByteLength?: number;
}

/** How a plug map was obtained, with the bytes it took. */
export interface ExtractPlugMapResult {
  /** The plug map (no devices when the stream has no virtio-mem device). */
  plugMap: PlugMap;
  /** `early` when early sections were found, `late` when only device sections, `none` without devices. */
  layout: "early" | "late" | "none";
  /**
   * `early`: stopped after the early sections; `vmdesc`: the decoder jumped
   * from the early sections to the device state, which the vmdesc at the end
   * of the file located (the RAM between was not read); `stream`: the stream
   * was read to its end.
   */
  method: "early" | "vmdesc" | "stream";
  /** Stream bytes decoded from the start (before a jump, if any). */
  streamBytes: number;
  /** Bytes read at other file offsets (the vmdesc probe and the device state). */
  extraBytes: number;
  /** Where the vmdesc disagrees with the sections (tolerated: the sections count). */
  vmdescDisagreements: TailProblemRecord[];
}

/** Decoder options of plug-state extraction: describe the tail, let the collector judge it. */
const DESCRIBE: DecodeOptions = { deviceState: "describe" };

/**
 * Extract the plug map from decoded migration records.
 *
 * Early layout: returns as soon as the early sections are behind (at the
 * first RAM page or `ram` PART/END section), leaving usable and requested
 * size `undefined`, unless `complete` is set. Late layout: reads to the
 * `P/virtio-mem` device section (in practice to the end of the stream). A
 * stream without a virtio-mem device gives a map without devices.
 *
 * When the stream was read to its end and its vmdesc names a `P/virtio-mem`
 * section that the decoder did not recognise, extraction fails instead of
 * returning a map without that device.
 *
 * @param records Records from `decodeMigration`, in stream order.
 * @param options `complete` to read the whole stream in the early layout.
 * @returns The validated plug map.
 * @throws {FormatError} (code `bad-virtio-mem`) when a device state is invalid, does not match
 * the RAMBlock list, or a device section could not be parsed.
 *
 * @example
 * ```ts ignore
 * import { decodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * import { extractPlugMap } from "@vmem-dump/vmem-dump/migration";
 * const input = await openInput("s2.mig");
 * try {
 *   const map = await extractPlugMap(decodeMigration(input.reader));
 *   console.log(map.pluggedGpaRanges());
 * } finally {
 *   input.close();
 * }
 * ```
 */
export async function extractPlugMap(
  records: AsyncIterable<MigrationRecord>,
  options: ExtractPlugMapOptions = {},
): Promise<PlugMap> {
  const collector = new PlugStateCollector();
  let stoppedEarly = false;
  for await (const r of records) {
    collector.add(r);
    if (!options.complete && collector.earlyDone) {
      stoppedEarly = true;
      break;
    }
  }
  return collector.finish(!stoppedEarly).plugMap;
}

/** First guess of the vmdesc probe at the end of a file (a q35 vmdesc is about 47 KB); grown ×4. */
const FIRST_TAIL = 1 << 17;
/** The longest tail the vmdesc probe reads: EOF, the vmdesc marker, its be32 length, the largest vmdesc. */
const MAX_TAIL = MAX_VMDESC + 6;
/** Read size for files: small, so that the early layout reads little more than its sections. */
const FILE_CHUNK = 1 << 16;

/** A positional view of a file that starts at `payloadOffset` (stream offset 0 = file offset there). */
function payloadView(file: PositionalReader, payloadOffset: number): PositionalReader {
  if (payloadOffset === 0) return file;
  return {
    byteLength: file.byteLength - payloadOffset,
    readInto: (at: number, into: Uint8Array) => file.readInto(at + payloadOffset, into),
    close: () => {}, // the caller closes the file
  };
}

/**
 * The shortcut for a regular file: find EOF and the vmdesc at the end of the
 * file, compute where the device state begins (the vmdesc's section sizes
 * after the early sections, summed back from EOF), and decode the stream
 * again with a jump from `ramFrom` (the first RAM section) to there. The
 * device state is then decoded exactly as by a full read. `undefined` when
 * anything does not fit (then the caller reads the whole stream, which
 * decides).
 */
async function viaVmdesc(
  file: { path: string; byteLength: number; payloadOffset?: number },
  ramFrom: number,
  earlySections: number,
  onFileRead: ((fileOffsetReached: number) => void) | undefined,
): Promise<ExtractPlugMapResult | undefined> {
  using handle = await openPositional(file.path);
  const view = payloadView(
    onFileRead === undefined ? handle : observedPositional(handle, onFileRead),
    file.payloadOffset ?? 0,
  );
  let probeBytes = 0;
  let eofAt = -1;
  let sections: VmdescSection[] | undefined;
  for (
    let length = Math.min(view.byteLength, FIRST_TAIL);;
    // Never more than a vmdesc can take: the file's size is no bound (a 100 GB stream).
    length = Math.min(length * 4, view.byteLength, MAX_TAIL)
  ) {
    const bytes = new Uint8Array(length);
    const got = await view.readInto(view.byteLength - length, bytes);
    probeBytes += got;
    const found = findVmdescAtEnd(bytes.subarray(0, got), true);
    if (found !== undefined) {
      eofAt = view.byteLength - got + found.eofAt;
      sections = found.sections;
      break;
    }
    if (length >= view.byteLength || length >= MAX_TAIL) return undefined;
  }
  if (sections === undefined) return undefined;
  let tailLength = 0;
  for (const s of sections.slice(earlySections)) {
    tailLength += fullHeaderLength(s.idstr) + s.bodyLength + 5;
  }
  const tailStart = eofAt - tailLength;
  if (!(tailStart >= ramFrom)) return undefined;
  const collector = new PlugStateCollector();
  try {
    const reader = positionalByteReader(view, { chunkSize: FILE_CHUNK });
    for await (
      const batch of decodeMigrationBatches(reader, {
        ...DESCRIBE,
        skipRange: { from: ramFrom, to: tailStart },
      })
    ) {
      for (const r of batch) if (!isPageRecord(r)) collector.add(r);
    }
    return {
      ...collector.finish(true),
      method: "vmdesc",
      streamBytes: ramFrom,
      extraBytes: probeBytes + (view.byteLength - tailStart),
      vmdescDisagreements: collector.vmdescDisagreements,
    };
  } catch (e) {
    if (e instanceof FormatError) return undefined; // the whole stream decides
    throw e;
  }
}

/**
 * Extract the plug map of a migration stream file (or `-` for standard
 * input) with the fewest bytes read, and say how.
 *
 * 1. Decode from the start to the first RAM section. Early layout: done
 *    (unless `complete`).
 * 2. Regular file: read the vmdesc at the end, compute where the device
 *    state begins, and decode again with a jump from the first RAM section to
 *    there (the device state is walked as by a full read).
 * 3. Otherwise (pipe, no vmdesc, anything that does not fit): keep decoding
 *    the same stream to its end.
 *
 * @param path File path or `-`.
 * @param options `complete` to also get usable/requested size in the early layout; `onFileRead`.
 * @returns The map, the layout, the method and the bytes read.
 * @throws {FormatError} when the stream or a device state is invalid.
 *
 * @example
 * ```ts ignore
 * import { extractPlugStateFromFile } from "./plug_state.ts";
 * const r = await extractPlugStateFromFile("s2-holes-100M.mig");
 * console.log(r.layout, r.method, r.streamBytes + r.extraBytes);
 * ```
 */
export async function extractPlugStateFromFile(
  path: string,
  options: ExtractPlugStateFromFileOptions = {},
): Promise<ExtractPlugMapResult> {
  const { regularFileByteLength, ...rest } = options;
  const onFileRead = options.onFileRead;
  let byteLength = regularFileByteLength;
  if (byteLength === undefined) {
    let piped = 0;
    const probe = await openFileReader(
      path,
      onFileRead === undefined ? {} : { onChunk: (chunk) => onFileRead(piped += chunk.byteLength) },
    );
    byteLength = path === "-" ? undefined : probe.byteLength;
    if (byteLength === undefined) {
      // Standard input or a FIFO: read it as a stream.
      try {
        return await extractPlugStateFromReader(probe.reader, rest);
      } finally {
        probe.close();
      }
    }
    probe.close(); // nothing was read yet: only the size was wanted
  }
  const source = new FileRangeSource(path, onFileRead);
  try {
    return await extractPlugStateFromReader(source.reader, {
      ...rest,
      seekableFile: { path, byteLength },
      beforeStreaming: () => source.streamOn(),
    });
  } finally {
    source.close();
  }
}

/**
 * Reads a regular file by ranges on demand (64 KiB first, doubling), so that
 * stopping early reads little and leaves no read pending; switches to the
 * read-ahead file reader of `openFileReader` when the rest is to be streamed.
 */
class FileRangeSource {
  readonly reader: PullByteReader;
  #path: string;
  #fileOffset = 0;
  #size = FILE_CHUNK;
  #stream: OpenedFileReader | undefined;
  #onFileRead: ((fileOffsetReached: number) => void) | undefined;

  constructor(path: string, onFileRead?: (fileOffsetReached: number) => void) {
    this.#path = path;
    this.#onFileRead = onFileRead;
    this.reader = new PullByteReader(async () => {
      if (this.#stream !== undefined) return await this.#stream.reader.readChunk(READ_CHUNK_SIZE);
      const chunk = await readFileRange(this.#path, this.#fileOffset, this.#size);
      this.#fileOffset += chunk.byteLength;
      this.#onFileRead?.(this.#fileOffset);
      this.#size = Math.min(this.#size * 2, READ_CHUNK_SIZE);
      return chunk.byteLength > 0 ? chunk : undefined;
    });
  }

  /** From here on, read the rest of the file with large read-ahead reads. */
  async streamOn(): Promise<void> {
    if (this.#stream === undefined) {
      const tell = this.#onFileRead;
      this.#stream = await openFileReader(this.#path, {
        startOffset: this.#fileOffset,
        ...(tell === undefined
          ? {}
          : { onChunk: (chunk) => tell(this.#fileOffset += chunk.byteLength) }),
      });
    }
  }

  close(): void {
    this.#stream?.close();
  }
}

/**
 * A reader over a regular file that reads ranges on demand, starting small
 * (64 KiB, so the early layout reads little) and doubling up to 1 MiB. It
 * holds no open file between reads, so stopping early leaves nothing behind.
 *
 * @param path A regular file.
 * @param onFileRead Told the file offset just past each read (for progress).
 * @returns A reader at offset 0.
 *
 * @example
 * ```ts ignore
 * import { fileRangeReader } from "./plug_state.ts";
 * const reader = fileRangeReader("s1.mig");
 * console.log(await reader.read(4)); // "QEVM"
 * ```
 */
export function fileRangeReader(
  path: string,
  onFileRead?: (fileOffsetReached: number) => void,
): PullByteReader {
  return new FileRangeSource(path, onFileRead).reader;
}

/** Options for {@linkcode extractPlugStateFromReader}. */
export interface ExtractPlugStateFromReaderOptions extends ExtractPlugMapOptions {
  /**
   * The regular file whose end is the end of this stream (uncompressed; the
   * stream starts at `payloadOffset`, after the header of a libvirt save
   * image). Enables the vmdesc shortcut for the late layout.
   * @default {undefined}
   */
  seekableFile?: { path: string; byteLength: number; payloadOffset?: number };
  /** Called once before the rest of the stream is decoded (to switch to faster reads). @default {undefined} */
  beforeStreaming?: () => Promise<void>;
  /**
   * The reader is a mapped-ram file read by position (`positionalByteReader`,
   * offsets are file offsets): decode it with the decoder's `mappedRam` option.
   * @default {false}
   */
  mappedRam?: boolean;
  /**
   * Called after every read from the file with the file offset just past
   * the bytes read (for progress: the largest value is how far reading has
   * got; reads of a regular file may jump to the vmdesc at its end). Here
   * only the reads of `seekableFile` are told: the reader's own are the
   * caller's to count. @default {undefined}
   */
  onFileRead?: (fileOffsetReached: number) => void;
}

/**
 * Extract the plug state from a reader positioned at the stream's `QEVM`
 * magic: early sections, then (late layout, or `complete`) the vmdesc
 * shortcut when `seekableFile` is given, else the stream to its end.
 * The stream is decoded with `deviceState: "describe"`: a vmdesc that
 * disagrees with the sections is reported in `vmdescDisagreements`, any other
 * problem of the device state is an error (code `unproven`).
 *
 * @param reader The stream.
 * @param options `complete`, the file the stream ends with, `onFileRead`.
 * @returns The map, the layout, the method and the bytes read.
 * @throws {FormatError} when the stream or a device state is invalid.
 *
 * @example
 * ```ts ignore
 * import { extractPlugStateFromReader } from "@vmem-dump/vmem-dump/migration";
 * import { openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("-");
 * const r = await extractPlugStateFromReader(input.reader);
 * console.log(r.method); // "early" or "stream"
 * ```
 */
export async function extractPlugStateFromReader(
  reader: ByteReader,
  options: ExtractPlugStateFromReaderOptions = {},
): Promise<ExtractPlugMapResult> {
  const file = options.seekableFile;
  const collector = new PlugStateCollector();
  const batches = decodeMigrationBatches(reader, {
    ...DESCRIBE,
    mappedRam: options.mappedRam ?? false,
  })[Symbol.asyncIterator]();
  const result = (
    method: ExtractPlugMapResult["method"],
    toEnd: boolean,
  ): ExtractPlugMapResult => ({
    ...collector.finish(toEnd),
    method,
    streamBytes: reader.offset,
    extraBytes: 0,
    vmdescDisagreements: collector.vmdescDisagreements,
  });
  try {
    // Phase 1: up to the first RAM section (or the device state).
    let ramFrom: number | undefined;
    while (!collector.sawRam) {
      const next = await batches.next();
      if (next.done) return result("stream", true);
      for (const r of next.value) {
        if (
          ramFrom === undefined && !collector.sawRam &&
          (r.kind === "section-part" || r.kind === "section-end" ||
            (r.kind === "section-full" && !r.idstr.endsWith("-early")))
        ) ramFrom = r.streamOffset;
        collector.add(r);
      }
    }
    if (collector.early.size > 0 && !options.complete) return result("early", false);
    // Phase 2: jump to the device state of a regular file.
    if (file !== undefined && !collector.sawEnd && ramFrom !== undefined && !options.mappedRam) {
      const fast = await viaVmdesc(file, ramFrom, collector.earlySectionCount, options.onFileRead);
      if (fast !== undefined) return fast;
    }
    // Phase 3: stream on.
    await options.beforeStreaming?.();
    for (;;) {
      const next = await batches.next();
      if (next.done) break;
      for (const r of next.value) if (!isPageRecord(r)) collector.add(r);
    }
    return result("stream", true);
  } finally {
    await batches.return?.(undefined);
  }
}
