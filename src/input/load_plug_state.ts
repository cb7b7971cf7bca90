/**
 * One way to load the virtio-mem plug state of a VM, from either place it
 * can come from: a plug-map file (the JSON exchange format, a QMP reply plus
 * block runs, or a plugged range list), or a migration stream of the same
 * paused VM (in any container, or a mapped-ram file), which carries the
 * state itself.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { openFileReader } from "../io/file.ts";
import { observedPositional, openPositional } from "../io/positional.ts";
import { positionalByteReader } from "../io/positional_byte_reader.ts";
import { type ContainerKind, openContainer } from "../container/open.ts";
import { INPUT_KIND_NAMES, openInput } from "./open_input.ts";
import {
  type ExtractPlugMapResult,
  extractPlugStateFromFile,
  extractPlugStateFromReader,
  fileRangeReader,
} from "../migration/plug_state.ts";
import { parsePlugMapSource, type PlugMapSourceFormat } from "../vmem/plug_map_source.ts";
import type { PlugMap } from "../vmem/plug_map.ts";

/** Largest plug-map file read (a 1 TiB device at 1 MiB blocks needs far less). */
const MAX_PLUGMAP_FILE = 64 << 20;

/** Load the plug state in a plug-map file. */
export interface PlugMapFileSource {
  /** A plug-map file, or `-` for standard input. */
  plugMapFile: string;
}

/** Load the plug state a migration stream carries. */
export interface StreamSource {
  /** A migration stream or mapped-ram file (any container), or `-` for standard input. */
  stream: string;
  /**
   * Early layout: read on to the device section at the end for usable and
   * requested size (otherwise they stay `undefined` and reading stops
   * before the first RAM page). @default {false}
   */
  complete?: boolean | undefined;
  /**
   * Progress: called as the input is read with how far into the file (or
   * standard input) reading has got, in bytes of the file as stored
   * (compressed bytes for a compressed stream): the furthest file offset
   * read so far, never more than the file's size. Reading a regular file may
   * jump ahead (to the vmdesc at its end, over the RAM of a mapped-ram file)
   * and end before the file's size. @default {undefined}
   */
  onProgress?: ((fileOffsetReached: number) => void) | undefined;
}

/**
 * Where to load a plug state from: a plug-map file in any accepted format,
 * or a migration stream of the same paused VM.
 */
export type PlugStateOrigin = PlugMapFileSource | StreamSource;

/** A plug state read from a plug-map file. */
export interface PlugStateFromFile {
  /** Where it came from. */
  source: "plug-map-file";
  /** The file (or `-`). */
  path: string;
  /** The format the file was read as. */
  format: PlugMapSourceFormat;
  /** The validated map. */
  plugMap: PlugMap;
}

/**
 * A plug state extracted from a migration stream: the map, its layout, how
 * it was found (`early`, `vmdesc`, `stream`) and the bytes read.
 */
export interface PlugStateFromStream extends ExtractPlugMapResult {
  /** Where it came from. */
  source: "stream";
  /** The file (or `-`). */
  path: string;
  /** The stream's container. */
  container: ContainerKind;
  /** Whether the file is a mapped-ram file (read in place). */
  mappedRam: boolean;
}

/** A loaded plug state; `source` tells which kind. */
export type LoadedPlugState = PlugStateFromFile | PlugStateFromStream;

/**
 * Load the plug state a migration stream carries (as the CLI's
 * `--plugmap-from` does).
 *
 * A stream is read as little as possible: in the early layout (QEMU ≥ 8.0
 * machine types) up to the first RAM page; in the late layout (QEMU 7.2) a
 * regular uncompressed file is read at its end, through the vmdesc, and
 * anything else once to its end. A stream without a virtio-mem device gives
 * a map without devices (`layout: "none"`).
 *
 * @param source `{ stream, complete?, onProgress? }`.
 * @returns The validated map, and where and how it was found.
 * @throws {FormatError} for a malformed stream or device state.
 *
 * @example The plug state of the bundled demo stream (zstd, early layout)
 * ```ts
 * import { loadPlugState } from "@vmem-dump/vmem-dump";
 * const state = await loadPlugState({ stream: "testdata/migration/q10-s3-malicious.mig.zst" });
 * console.log(state.container, state.layout, state.method); // zstd early early
 * console.log(state.plugMap.unpluggedGpaRanges().length > 0); // true
 * ```
 */
export function loadPlugState(source: StreamSource): Promise<PlugStateFromStream>;
/**
 * Load the plug state in a plug-map file (JSON version 1, a QMP reply plus
 * block runs, or a plugged range list).
 *
 * @param source `{ plugMapFile }`.
 * @returns The validated map and the format it was read as.
 * @throws {FormatError} (format `plugmap`) for a malformed or impossible map, or a file over 64 MiB.
 *
 * @example
 * ```ts
 * import { loadPlugState } from "@vmem-dump/vmem-dump";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "0x100000000-0x100400000\n");
 * const state = await loadPlugState({ plugMapFile: path });
 * console.log(state.format, state.plugMap.pluggedGpaRanges()); // range-list [{ gpa: 4294967296, byteLength: 4194304 }]
 * await Deno.remove(path);
 * ```
 */
export function loadPlugState(source: PlugMapFileSource): Promise<PlugStateFromFile>;
/**
 * Load a plug state from either source; `source` of the result tells which.
 *
 * @param source `{ plugMapFile }` or `{ stream, complete?, onProgress? }`.
 * @returns The validated map, and where and how it was found.
 * @throws {FormatError} for a malformed plug-map file, stream or device state.
 */
export function loadPlugState(source: PlugStateOrigin): Promise<LoadedPlugState>;
export async function loadPlugState(source: PlugStateOrigin): Promise<LoadedPlugState> {
  if ("plugMapFile" in source) {
    const { map, format } = parsePlugMapSource(await readPlugMapText(source.plugMapFile));
    return { source: "plug-map-file", path: source.plugMapFile, format, plugMap: map };
  }
  return await fromStream(source.stream, source.complete ?? false, source.onProgress);
}

/** The text of a plug-map file (or `-`), at most 64 MiB of UTF-8. */
async function readPlugMapText(path: string): Promise<string> {
  const input = await openFileReader(path, { format: "plugmap" });
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const chunk = await input.reader.readChunk(1 << 20);
      if (chunk === undefined) break;
      total += chunk.byteLength;
      if (total > MAX_PLUGMAP_FILE) {
        throw new FormatError(`Cannot read plug map ${path}: larger than 64 MiB`, {
          format: "plugmap",
          code: "too-large",
          offset: MAX_PLUGMAP_FILE,
        });
      }
      chunks.push(chunk.slice());
    }
  } finally {
    input.close();
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    throw new FormatError(`Cannot read plug map ${path}: not UTF-8 text`, {
      format: "plugmap",
      code: "bad-json",
      offset: 0,
    }, {
      cause: e,
    });
  }
}

/**
 * Extract the plug state of a stream file (or `-`) in any container, or of a
 * mapped-ram file (plain or in a libvirt "sparse" image). What the input is
 * comes from {@linkcode openInput}, as for every other reader of inputs; a
 * regular file is then read again, ranges on demand: uncompressed streams
 * use the vmdesc shortcut for the late layout, and stopping early leaves no
 * read pending. Anything else is read once, from the opened input.
 */
async function fromStream(
  path: string,
  complete: boolean,
  onProgress: ((fileOffsetReached: number) => void) | undefined,
): Promise<PlugStateFromStream> {
  const found = (
    r: ExtractPlugMapResult,
    container: ContainerKind,
    mappedRam = false,
  ): PlugStateFromStream => ({ ...r, source: "stream", path, container, mappedRam });
  // Every read tells where it ended; progress is the furthest point (reads may jump back).
  let reached = 0;
  const onFileRead = onProgress === undefined ? undefined : (fileOffset: number) => {
    if (fileOffset <= reached) return;
    reached = fileOffset;
    onProgress(reached);
  };
  const tell = onFileRead === undefined ? {} : { onFileRead };
  let piped = 0;
  const input = await openInput(
    path,
    onFileRead === undefined ? {} : { onChunk: (c) => onFileRead(piped += c.byteLength) },
  );
  const { kind, container, innerCompression, payloadOffset, byteLength } = input;
  try {
    if (kind !== "migration" && kind !== "mapped-ram") {
      throw new FormatError(
        `Cannot read the plug state of ${path === "-" ? "standard input" : path}: it is ${
          INPUT_KIND_NAMES[kind]
        }, not a migration stream`,
        { format: "migration", code: "bad-magic", offset: payloadOffset },
      );
    }
    if (path === "-" || byteLength === undefined) {
      return found(
        await extractPlugStateFromReader(input.reader, { complete, ...tell }),
        container,
      );
    }
  } finally {
    input.close();
  }
  if (kind === "mapped-ram") {
    // A mapped-ram file: its sections are read in place, the RAM areas jumped over.
    using file = await openPositional(path);
    const read = onFileRead === undefined ? file : observedPositional(file, onFileRead);
    return found(
      await extractPlugStateFromReader(
        positionalByteReader(read, { startOffset: payloadOffset }),
        { complete, mappedRam: true, seekableFile: { path, byteLength } },
      ),
      container,
      true,
    );
  }
  if (container === "raw") {
    return found(
      await extractPlugStateFromFile(path, {
        complete,
        regularFileByteLength: byteLength,
        ...tell,
      }),
      "raw",
    );
  }
  const opened = await openContainer(fileRangeReader(path, onFileRead));
  return found(
    await extractPlugStateFromReader(opened.reader, {
      complete,
      ...tell,
      // A libvirt save image with a raw stream ends with the stream: the vmdesc shortcut works.
      ...(innerCompression === "raw" ? { seekableFile: { path, byteLength, payloadOffset } } : {}),
    }),
    container,
  );
}
