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
 *   section is found through the vmdesc JSON at the end of the file; otherwise
 *   the stream is read once.
 *
 * Each device is matched to its RAMBlock (`P/…` with `usedLength ==
 * regionSize`) and checked against every plug-map invariant.
 *
 * @module
 */

import { type ByteReader, PullByteReader } from "../io/byte_reader.ts";
import { type OpenedInput, openInput, READ_CHUNK_SIZE, readFileRange } from "../io/file.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import { decodeMigrationBatches } from "./decoder.ts";
import type { MigrationRecord, VirtioMemDeviceState, VmdescRecord } from "./types.ts";
import { VIRTIO_MEM_DEVICE_SUFFIX } from "./constants.ts";
import { parseVirtioMemDeviceBody } from "./virtio_mem_device.ts";
import { PlugStateCollector } from "./_plug_state_collector.ts";

/**
 * Largest `P/virtio-mem` section body read by the vmdesc shortcut: the
 * transport part (PCIe config space, MSI-X table) and virtio state are a few
 * KiB, the bitmap of a 16 TiB region at 1 MiB blocks 2 MiB.
 */
const MAX_DEVICE_SECTION_BYTES = 4 << 20;

/** Options for {@linkcode extractPlugMap} and {@linkcode extractPlugMapFromFile}. */
export interface ExtractPlugMapOptions {
  /**
   * Early layout: read on to the late `P/virtio-mem` section for usable and
   * requested size (otherwise they stay `undefined` and reading stops at the
   * first RAM page).
   * @default {false}
   */
  complete?: boolean;
}

/** How a plug map was obtained, with the bytes it took. */
export interface ExtractPlugMapResult {
  /** The plug map (no devices when the stream has no virtio-mem device). */
  plugMap: PlugMap;
  /** `early` when early sections were found, `late` when only device sections, `none` without devices. */
  layout: "early" | "late" | "none";
  /**
   * `early`: stopped after the early sections; `vmdesc`: the device sections were
   * located through the vmdesc at the end of the file; `stream`: the stream was read to its end.
   */
  method: "early" | "vmdesc" | "stream";
  /** Stream bytes decoded from the start (the reader's offset when extraction ended). */
  streamBytes: number;
  /** Bytes read at other file offsets (vmdesc tail and device sections). */
  extraBytes: number;
}

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
 * import { decodeMigration, extractPlugMap, openInput } from "@vmem-dump/vmem-dump";
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

/** Where the vmdesc says the device sections are. */
interface VmdescLocation {
  /** The vmdesc record (parsed JSON), for the completeness check. */
  vmdesc: VmdescRecord;
  /** The `P/virtio-mem` sections: idstr, file offset of the header, body length from the vmdesc. */
  sections: { idstr: string; fileOffset: number; bodyLength: number }[];
  /** Bytes read from the tail. */
  bytesRead: number;
}

/** First guess of the vmdesc tail size (a q35 vmdesc is about 47 KB); grown ×4 up to {@linkcode MAX_TAIL}. */
const FIRST_TAIL = 1 << 17;
/** Largest tail searched for the vmdesc. */
const MAX_TAIL = 16 << 20;
/** Read size for files: small, so that the early layout reads little more than its sections. */
const FILE_CHUNK = 1 << 16;

/** Bytes a vmstate described in the vmdesc writes: its field sizes plus its subsections with their headers. */
function vmsdBytes(desc: unknown, depth = 0): number | undefined {
  if (typeof desc !== "object" || desc === null || depth > 16) return undefined;
  const d = desc as { fields?: unknown; subsections?: unknown };
  let total = 0;
  if (d.fields !== undefined) {
    if (!Array.isArray(d.fields)) return undefined;
    for (const f of d.fields) {
      const size = (f as { size?: unknown } | null)?.size;
      if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) return undefined;
      total += size;
    }
  }
  if (d.subsections !== undefined) {
    if (!Array.isArray(d.subsections)) return undefined;
    for (const s of d.subsections) {
      const name = (s as { vmsd_name?: unknown } | null)?.vmsd_name;
      const inner = vmsdBytes(s, depth + 1);
      if (typeof name !== "string" || inner === undefined) return undefined;
      total += 1 + 1 + new TextEncoder().encode(name).byteLength + 4 + inner;
    }
  }
  return total;
}

/**
 * Read the vmdesc at the end of a file and compute where each `P/virtio-mem`
 * section starts: the FULL sections the vmdesc lists end right before the
 * EOF byte, so summing their sizes backwards from there gives each offset.
 */
async function locateViaVmdesc(
  path: string,
  fileSize: number,
): Promise<VmdescLocation | undefined> {
  let bytesRead = 0;
  for (let tailLen = Math.min(fileSize, FIRST_TAIL);; tailLen = Math.min(fileSize, tailLen * 4)) {
    const tailStart = fileSize - tailLen;
    const tail = await readFileRange(path, tailStart, tailLen);
    bytesRead += tail.byteLength;
    const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    for (let p = tail.byteLength - 7; p >= 0; p--) {
      if (tail[p] !== 0x00 || tail[p + 1] !== 0x06 || tail[p + 6] !== 0x7b) continue;
      if (view.getUint32(p + 2) !== tail.byteLength - p - 6) continue;
      const json = tail.slice(p + 6);
      let parsed: unknown;
      try {
        parsed = JSON.parse(new TextDecoder().decode(json));
      } catch {
        return undefined;
      }
      const devices = (parsed as { devices?: unknown } | null)?.devices;
      if (!Array.isArray(devices)) return undefined;
      const eofOffset = tailStart + p;
      const nameOf = (d: unknown) => (d as { name?: unknown } | null)?.name;
      // Only the sections from the first virtio-mem device section to the end matter.
      let firstWanted = devices.length;
      for (let i = 0; i < devices.length; i++) {
        const name = nameOf(devices[i]);
        if (typeof name === "string" && name.endsWith(VIRTIO_MEM_DEVICE_SUFFIX)) {
          firstWanted = i;
          break;
        }
      }
      const sections: VmdescLocation["sections"] = [];
      let cursor = eofOffset;
      for (let i = devices.length - 1; i >= firstWanted; i--) {
        const name = nameOf(devices[i]);
        const body = vmsdBytes(devices[i]);
        if (typeof name !== "string" || body === undefined) return undefined;
        const header = 1 + 4 + 1 + new TextEncoder().encode(name).byteLength + 4 + 4;
        cursor -= header + body + 5;
        if (cursor < 0) return undefined;
        if (name.endsWith(VIRTIO_MEM_DEVICE_SUFFIX)) {
          // The vmdesc is input: a body it claims larger than any device
          // section can be is not read into memory (stream once instead).
          if (body > MAX_DEVICE_SECTION_BYTES) return undefined;
          sections.push({ idstr: name, fileOffset: cursor, bodyLength: body });
        }
      }
      sections.reverse();
      return {
        vmdesc: { kind: "vmdesc", streamOffset: eofOffset + 1, json, parsed },
        sections,
        bytesRead,
      };
    }
    if (tailLen >= fileSize || tailLen >= MAX_TAIL) return undefined;
  }
}

/** Read and parse the device sections the vmdesc points at; `undefined` when anything does not fit. */
async function readLocatedSections(
  path: string,
  loc: VmdescLocation,
  collector: PlugStateCollector,
): Promise<{ bytesRead: number } | undefined> {
  let bytesRead = 0;
  const found: { devicePath: string; state: VirtioMemDeviceState; streamOffset: number }[] = [];
  for (const s of loc.sections) {
    const idBytes = new TextEncoder().encode(s.idstr);
    const headerLength = 1 + 4 + 1 + idBytes.byteLength + 8;
    const bytes = await readFileRange(path, s.fileOffset, headerLength + s.bodyLength + 5);
    bytesRead += bytes.byteLength;
    if (bytes.byteLength !== headerLength + s.bodyLength + 5 || bytes[0] !== 0x04) return undefined;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const sectionId = view.getUint32(1);
    if (bytes[5] !== idBytes.byteLength) return undefined;
    for (let i = 0; i < idBytes.byteLength; i++) if (bytes[6 + i] !== idBytes[i]) return undefined;
    if (view.getUint32(6 + idBytes.byteLength + 4) !== 1) return undefined;
    const devicePath = s.idstr.slice(0, -VIRTIO_MEM_DEVICE_SUFFIX.length);
    const bodyOffset = s.fileOffset + headerLength;
    const parsed = parseVirtioMemDeviceBody(bytes.subarray(headerLength), {
      devicePath,
      ramBlocks: collector.ramBlocks ?? [],
      early: collector.early.get(devicePath),
      bodyStreamOffset: bodyOffset,
      sectionId,
    });
    if (parsed === undefined || parsed.bodyLength !== s.bodyLength) return undefined;
    found.push({ devicePath, state: parsed.state, streamOffset: bodyOffset });
  }
  for (const f of found) {
    collector.add({
      kind: "virtio-mem-device",
      streamOffset: f.streamOffset,
      devicePath: f.devicePath,
      data: new Uint8Array(0),
      state: f.state,
    });
  }
  collector.add(loc.vmdesc);
  return { bytesRead };
}

/**
 * Extract the plug map of a migration stream file (or `-` for standard
 * input) with the fewest bytes read, and say how.
 *
 * 1. Decode from the start to the first RAM page. Early layout: done
 *    (unless `complete`).
 * 2. Regular file: read the vmdesc at the end, compute the offsets of the
 *    `P/virtio-mem` sections from its field sizes, read and parse just those.
 * 3. Otherwise (pipe, no vmdesc, sizes that do not fit): keep decoding the
 *    same stream to its end.
 *
 * @param path File path or `-`.
 * @param options `complete` to also get usable/requested size in the early layout.
 * @returns The map, the layout, the method and the bytes read.
 * @throws {FormatError} when the stream or a device state is invalid.
 *
 * @example
 * ```ts ignore
 * import { extractPlugStateFromFile } from "@vmem-dump/vmem-dump";
 * const r = await extractPlugStateFromFile("s2-holes-100M.mig");
 * console.log(r.layout, r.method, r.streamBytes + r.extraBytes);
 * ```
 */
export async function extractPlugStateFromFile(
  path: string,
  options: ExtractPlugMapOptions = {},
): Promise<ExtractPlugMapResult> {
  const probe = await openInput(path);
  const byteLength = path === "-" ? undefined : probe.byteLength;
  if (byteLength === undefined) {
    // Standard input or a FIFO: read it as a stream.
    try {
      return await extractPlugStateFromReader(probe.reader, options);
    } finally {
      probe.close();
    }
  }
  probe.close(); // nothing was read yet: only the size was wanted
  const source = new FileRangeSource(path);
  try {
    return await extractPlugStateFromReader(source.reader, {
      ...options,
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
 * read-ahead file reader of `openInput` when the rest is to be streamed.
 */
class FileRangeSource {
  readonly reader: PullByteReader;
  #path: string;
  #fileOffset = 0;
  #size = FILE_CHUNK;
  #stream: OpenedInput | undefined;

  constructor(path: string) {
    this.#path = path;
    this.reader = new PullByteReader(async () => {
      if (this.#stream !== undefined) return await this.#stream.reader.readChunk(READ_CHUNK_SIZE);
      const chunk = await readFileRange(this.#path, this.#fileOffset, this.#size);
      this.#fileOffset += chunk.byteLength;
      this.#size = Math.min(this.#size * 2, READ_CHUNK_SIZE);
      return chunk.byteLength > 0 ? chunk : undefined;
    });
  }

  /** From here on, read the rest of the file with large read-ahead reads. */
  async streamOn(): Promise<void> {
    if (this.#stream === undefined) {
      this.#stream = await openInput(this.#path, { startOffset: this.#fileOffset });
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
 * @returns A reader at offset 0.
 *
 * @example
 * ```ts ignore
 * import { fileRangeReader } from "@vmem-dump/vmem-dump";
 * const reader = fileRangeReader("s1.mig");
 * console.log(await reader.read(4)); // "QEVM"
 * ```
 */
export function fileRangeReader(path: string): PullByteReader {
  return new FileRangeSource(path).reader;
}

/** Options for {@linkcode extractPlugStateFromReader}. */
export interface ExtractPlugStateFromReaderOptions extends ExtractPlugMapOptions {
  /**
   * The regular file whose end is the end of this stream (uncompressed; the
   * stream may start after a header, as in a libvirt save image). Enables the
   * vmdesc shortcut for the late layout.
   * @default {undefined}
   */
  seekableFile?: { path: string; byteLength: number };
  /** Called once before the rest of the stream is decoded (to switch to faster reads). @default {undefined} */
  beforeStreaming?: () => Promise<void>;
  /**
   * The reader is a mapped-ram file read by position (`positionalByteReader`,
   * offsets are file offsets): decode it with the decoder's `mappedRam` option.
   * @default {false}
   */
  mappedRam?: boolean;
}

/**
 * Extract the plug state from a reader positioned at the stream's `QEVM`
 * magic: early sections, then (late layout) the vmdesc shortcut when
 * `seekableFile` is given, else the stream to its end.
 *
 * @param reader The stream.
 * @param options `complete`, and the file the stream ends with.
 * @returns The map, the layout, the method and the bytes read.
 * @throws {FormatError} when the stream or a device state is invalid.
 *
 * @example
 * ```ts ignore
 * import { extractPlugStateFromReader, openInput } from "@vmem-dump/vmem-dump";
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
  const batches = decodeMigrationBatches(reader, { mappedRam: options.mappedRam ?? false })[
    Symbol.asyncIterator
  ]();
  try {
    // Phase 1: up to the first RAM page (or the tail).
    while (!collector.sawRam) {
      const next = await batches.next();
      if (next.done) {
        return {
          ...collector.finish(true),
          method: "stream",
          streamBytes: reader.offset,
          extraBytes: 0,
        };
      }
      for (const r of next.value) collector.add(r);
    }
    if (collector.early.size > 0 && !options.complete) {
      return {
        ...collector.finish(false),
        method: "early",
        streamBytes: reader.offset,
        extraBytes: 0,
      };
    }
    // Phase 2: the vmdesc of a regular file.
    if (file !== undefined && !collector.sawEnd) {
      const loc = await locateViaVmdesc(file.path, file.byteLength);
      if (loc !== undefined) {
        const got = await readLocatedSections(file.path, loc, collector);
        if (got !== undefined) {
          return {
            ...collector.finish(true),
            method: "vmdesc",
            streamBytes: reader.offset,
            extraBytes: loc.bytesRead + got.bytesRead,
          };
        }
      }
    }
    // Phase 3: stream on.
    await options.beforeStreaming?.();
    for (;;) {
      const next = await batches.next();
      if (next.done) break;
      for (const r of next.value) collector.add(r);
    }
    return {
      ...collector.finish(true),
      method: "stream",
      streamBytes: reader.offset,
      extraBytes: 0,
    };
  } finally {
    await batches.return?.(undefined);
  }
}

/**
 * Extract the plug map of a migration stream file (or `-`). See
 * {@linkcode extractPlugStateFromFile} for how the bytes are found.
 *
 * @param path File path or `-`.
 * @param options `complete` to also get usable/requested size in the early layout.
 * @returns The validated plug map.
 * @throws {FormatError} when the stream or a device state is invalid.
 *
 * @example
 * ```ts ignore
 * import { extractPlugMapFromFile } from "@vmem-dump/vmem-dump";
 * const map = await extractPlugMapFromFile("s1.mig");
 * console.log(JSON.stringify(map));
 * ```
 */
export async function extractPlugMapFromFile(
  path: string,
  options: ExtractPlugMapOptions = {},
): Promise<PlugMap> {
  return (await extractPlugStateFromFile(path, options)).plugMap;
}
