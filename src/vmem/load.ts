/**
 * The two ways every command gets a plug map: `--plugmap FILE` (the JSON
 * exchange format, a QMP reply plus runs, or a plugged range list) and
 * `--plugmap-from STREAM` (extracted from a migration stream of the same
 * paused VM).
 *
 * This module reaches into `src/migration` and `src/container` for
 * `--plugmap-from`, the one place where `src/vmem` depends on format folders.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { openInput } from "../io/file.ts";
import { openPositional } from "../io/positional.ts";
import { positionalByteReader } from "../io/positional_byte_reader.ts";
import { isMappedRamStream } from "../migration/mapped_ram/file.ts";
import { openContainer } from "../container/open.ts";
import {
  type ExtractPlugMapResult,
  extractPlugStateFromFile,
  extractPlugStateFromReader,
  fileRangeReader,
} from "../migration/plug_state.ts";
import { parsePlugMapSource } from "./json.ts";
import type { PlugMap } from "./plug_map.ts";

export type { ExtractPlugMapResult } from "../migration/plug_state.ts";

/** Largest `--plugmap` file read (a 1 TiB device at 1 MiB blocks needs far less). */
const MAX_PLUGMAP_FILE = 64 << 20;

/** Where a command's plug map comes from. */
export interface PlugMapSourceOptions {
  /** `--plugmap FILE` (or `-`): JSON version 1, QMP reply + runs, or plugged range list. @default {undefined} */
  plugmap?: string | undefined;
  /** `--plugmap-from STREAM` (or `-`): a migration stream of the same paused VM. @default {undefined} */
  plugmapFrom?: string | undefined;
  /** With `plugmapFrom` in the early layout, also read usable/requested size from the end. @default {false} */
  complete?: boolean | undefined;
}

/**
 * Read a `--plugmap` file (or `-` for standard input) in any accepted format.
 *
 * @param path File path or `-`.
 * @returns The validated map.
 * @throws {FormatError} (format `plugmap`) for a malformed or impossible map or a file over 64 MiB.
 *
 * @example
 * ```ts ignore
 * import { readPlugMapFile } from "@vmem-dump/vmem-dump";
 * const map = await readPlugMapFile("plugmap.json");
 * ```
 */
export async function readPlugMapFile(path: string): Promise<PlugMap> {
  const input = await openInput(path, { format: "plugmap" });
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
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    throw new FormatError(`Cannot read plug map ${path}: not UTF-8 text`, {
      format: "plugmap",
      code: "bad-json",
      offset: 0,
    }, {
      cause: e,
    });
  }
  return parsePlugMapSource(text).map;
}

/**
 * Extract the plug state of a migration stream file (or `-`) in any
 * container `openContainer` understands (raw, gzip, zstd, libvirt save
 * image), or of a mapped-ram file (plain or in a libvirt "sparse" image).
 * Uncompressed regular files use the vmdesc shortcut for the late layout;
 * everything else is read once.
 *
 * @param path File path or `-`.
 * @param options `complete` to also read usable/requested size in the early layout.
 * @returns The map, the layout, how it was found and the bytes read.
 * @throws {FormatError} for a malformed stream or device state.
 *
 * @example
 * ```ts ignore
 * import { extractPlugStateFromStreamFile } from "@vmem-dump/vmem-dump";
 * const r = await extractPlugStateFromStreamFile("s1.mig.zst");
 * console.log(r.method, JSON.stringify(r.plugMap));
 * ```
 */
export async function extractPlugStateFromStreamFile(
  path: string,
  options: { complete?: boolean | undefined } = {},
): Promise<ExtractPlugMapResult> {
  const complete = options.complete ?? false;
  const probe = await openInput(path);
  const regular = path !== "-" && probe.byteLength !== undefined;
  if (!regular) {
    try {
      return await extractPlugStateFromReader((await openContainer(probe.reader)).reader, {
        complete,
      });
    } finally {
      probe.close();
    }
  }
  // A regular file: ranges are read on demand, so stopping early leaves no read pending.
  const byteLength = probe.byteLength!;
  probe.close();
  const container = await openContainer(fileRangeReader(path));
  if (container.sparse || container.kind === "raw") {
    using file = await openPositional(path);
    if (container.sparse || await isMappedRamStream(file)) {
      // A mapped-ram file: its sections are read in place, the RAM areas jumped over.
      return await extractPlugStateFromReader(
        positionalByteReader(file, { startOffset: container.payloadOffset }),
        { complete, mappedRam: true, seekableFile: { path, byteLength } },
      );
    }
  }
  if (container.kind === "raw") return await extractPlugStateFromFile(path, { complete });
  return await extractPlugStateFromReader(container.reader, {
    complete,
    // A libvirt save image with a raw stream ends with the stream: the vmdesc shortcut works.
    ...(container.innerCompression === "raw"
      ? { seekableFile: { path, byteLength, payloadOffset: container.payloadOffset } }
      : {}),
  });
}

/**
 * Load the plug map a command was given: `--plugmap FILE` or
 * `--plugmap-from STREAM`, or nothing.
 *
 * @param options The two flags (at most one).
 * @returns The validated map, or `undefined` when neither flag is set.
 * @throws {TypeError} when both flags are set (callers report it as a usage error).
 * @throws {FormatError} for a malformed map or stream.
 *
 * @example
 * ```ts ignore
 * import { loadPlugMap } from "@vmem-dump/vmem-dump";
 * const map = await loadPlugMap({ plugmapFrom: "s1.mig" });
 * console.log(map?.pluggedGpaRanges());
 * ```
 */
export async function loadPlugMap(options: PlugMapSourceOptions): Promise<PlugMap | undefined> {
  if (options.plugmap !== undefined && options.plugmapFrom !== undefined) {
    throw new TypeError("Cannot use --plugmap and --plugmap-from together: give one of them");
  }
  if (options.plugmap !== undefined) return await readPlugMapFile(options.plugmap);
  if (options.plugmapFrom !== undefined) {
    return (await extractPlugStateFromStreamFile(options.plugmapFrom, {
      complete: options.complete,
    })).plugMap;
  }
  return undefined;
}
