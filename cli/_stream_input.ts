/**
 * Open the input of a stream command (`inspect`, `verify`, `filter`,
 * `scan`) through the library's one opener (`openInput`): a migration
 * stream in any container, or a mapped-ram file, which the command hands to
 * `_mapped_ram.ts` (loaded only then). A dump given to a stream command is a
 * typed error that says which command reads it.
 *
 * @module
 */

import type { ContainerKind, InnerCompression } from "../src/container/open.ts";
import type { LibvirtSaveHeader } from "../src/container/libvirt_save.ts";
import { FormatError } from "../src/errors.ts";
import type { ByteReader } from "../src/io/byte_reader.ts";
import { type Input, openInput, type OpenInputOptions } from "../src/input/open_input.ts";
import { lazyImport } from "./_lazy.ts";
import type { MappedRamInput } from "./_mapped_ram.ts";

/** An opened migration stream. */
export interface StreamInput {
  /** Always `migration`. */
  kind: "migration";
  /** The path given (`-` for standard input). */
  path: string;
  /** Reader over the (decompressed) migration stream. */
  reader: ByteReader;
  /** What wrapped it: `raw`, `gzip`, `zstd` or `libvirt-save`. */
  container: ContainerKind;
  /** How the payload is compressed inside its container. */
  innerCompression: InnerCompression;
  /** The libvirt save image header, for container `libvirt-save`. */
  libvirt: LibvirtSaveHeader | undefined;
  /** File size when the input is a regular file. */
  byteLength: number | undefined;
  /** Close the file. */
  close(): void;
}

/** A mapped-ram file (a regular file, plain or in a libvirt "sparse" image); read it in place. */
export interface MappedRamFileInput {
  /** Always `mapped-ram`. */
  kind: "mapped-ram";
  /** The path given. */
  path: string;
  /** `raw` or `libvirt-save` (a "sparse" image). */
  container: "raw" | "libvirt-save";
  /** File offset of the `QEVM` magic. */
  payloadOffset: number;
}

/** Options for {@linkcode openStreamInput}. */
export interface StreamInputOptions {
  /**
   * The fast path for consumers that finish each batch before pulling the
   * next (the record pipeline, inspect, scan): blocking reads of 256 KiB into a
   * ring of 4 reused buffers (see `syncReads` and `recycleChunks` of
   * `openFileReader`). Measured on the 231 MB `out` s3 stream: 37–48 ms of CPU to
   * read it, against 66–83 ms for asynchronous 1 MiB reads into a ring of
   * 16 (a thread hop per read, and buffers that no longer fit the cache).
   * A command-line run has nothing else for the event loop to do while it
   * waits for its input. @default {false}
   */
  recycle?: boolean;
  /** Called with every chunk read from the file (hashing standard input). @default {undefined} */
  onChunk?: (chunk: Uint8Array) => void;
  /** The command, for the error that names the command a dump needs. @default {"this command"} */
  command?: string;
  /**
   * The error for a dump, instead of the one that names the commands that
   * read dumps (for a command that reads dumps too, from a file only).
   * @default {undefined}
   */
  dumpError?: (kind: string) => Error;
}

/** What reads each kind of dump, for the error a stream command gives. */
const DUMP_READERS: Record<string, string> = {
  elf: "an ELF dump (scan, strip and convert --to kdump read dumps)",
  kdump: "a kdump dump (scan, strip and convert --to elf read dumps)",
  "kdump-flattened": "a flattened kdump dump (scan, strip and convert --to elf read dumps)",
};

/**
 * Open `path` (or `-`) as a migration stream, through its container; a
 * mapped-ram file is returned closed, as a {@linkcode MappedRamFileInput}.
 *
 * @param path File path or `-`.
 * @param options Read sizes and the command's name.
 * @returns The stream, or the mapped-ram file.
 * @throws {FormatError} for a dump or an input no format knows (code `bad-magic`).
 */
export async function openStreamInput(
  path: string,
  options: StreamInputOptions = {},
): Promise<StreamInput | MappedRamFileInput> {
  return asStreamInput(await openInput(path, streamOpenOptions(options)), options);
}

/**
 * The `openInput` options of a stream command's read: the fast path
 * (`recycle`) and the tap. A command that opens its input before it knows
 * the kind (scan) opens it with these and hands it to
 * {@linkcode asStreamInput}, so that a stream is opened once.
 *
 * @param options Read sizes and the tap.
 * @returns Options for `openInput`.
 */
export function streamOpenOptions(options: StreamInputOptions): OpenInputOptions {
  return {
    ...(options.recycle ? { recycleChunks: 4, chunkSize: 256 << 10, syncReads: true } : {}),
    ...(options.onChunk ? { onChunk: options.onChunk } : {}),
  };
}

/**
 * An opened input as a stream command takes it: the stream, or a mapped-ram
 * file (closed: it is read in place); anything else is closed and refused.
 *
 * @param input What `openInput` opened (with {@linkcode streamOpenOptions}).
 * @param options The command's name, for the error.
 * @returns The stream, or the mapped-ram file.
 * @throws {FormatError} for a dump or an input no format knows (code `bad-magic`).
 */
export function asStreamInput(
  input: Input,
  options: Pick<StreamInputOptions, "command" | "dumpError"> = {},
): StreamInput | MappedRamFileInput {
  const path = input.path;
  if (input.kind === "mapped-ram") {
    input.close();
    return {
      kind: "mapped-ram",
      path,
      container: input.container === "libvirt-save" ? "libvirt-save" : "raw",
      payloadOffset: input.payloadOffset,
    };
  }
  if (input.kind !== "migration") {
    input.close();
    if (input.kind !== "unknown" && options.dumpError) throw options.dumpError(input.kind);
    throw new FormatError(
      `Cannot read ${path} with ${options.command ?? "this command"}: it is ${
        DUMP_READERS[input.kind] ?? "not a migration stream"
      }, not a migration stream`,
      { format: "migration", code: "bad-magic", offset: input.payloadOffset },
    );
  }
  return {
    kind: "migration",
    path,
    reader: input.reader,
    container: input.container,
    innerCompression: input.innerCompression,
    libvirt: input.libvirt,
    byteLength: input.byteLength,
    close: input.close,
  };
}

/**
 * The size of a regular file, `null` for `-`, a pipe or a device (what a
 * report's `input.byteLength` says).
 *
 * @param path A path or `-`.
 * @returns The size, or `null`.
 */
export async function fileByteLength(path: string): Promise<number | null> {
  if (path === "-") return null;
  const info = await Deno.stat(path);
  return info.isFile ? info.size : null;
}

/**
 * Load the mapped-ram branch (`_mapped_ram.ts`, only now) and open the file
 * `openStreamInput` found; dispose it when done.
 *
 * @param found What `openStreamInput` returned for a mapped-ram file.
 * @returns The opened file, with the branch's functions as `branch`.
 */
export async function openMappedRam(
  found: MappedRamFileInput,
): Promise<MappedRamInput & { branch: typeof import("./_mapped_ram.ts") }> {
  const branch = await lazyImport<typeof import("./_mapped_ram.ts")>(
    "./_mapped_ram.ts",
    import.meta.url,
  );
  return Object.assign(await branch.openMappedRamInput(found), { branch });
}
