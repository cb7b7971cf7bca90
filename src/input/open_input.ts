/**
 * One way to open any input: a file or standard input, unwrapped from its
 * container (gzip, zstd, libvirt save image), and told apart by its first
 * bytes: a migration stream, a mapped-ram file, an ELF or kdump dump.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import type { ByteReader } from "../io/byte_reader.ts";
import { type FileReaderOptions, openFileReader } from "../io/file.ts";
import { bytesPositional, openPositional, type PositionalReader } from "../io/positional.ts";
import { hexBytes } from "../io/text.ts";
import {
  type ContainerKind,
  type InnerCompression,
  openContainer,
  type OpenedContainer,
} from "../container/open.ts";
import type { LibvirtSaveHeader } from "../container/libvirt_save.ts";
import { QEMU_VM_FILE_MAGIC_BYTES } from "../container/detect.ts";

/**
 * What an input holds:
 *
 * - `migration`: a QEMU migration stream (`QEVM`), read front to back;
 * - `mapped-ram`: a migration stream with the `mapped-ram` capability
 *   (`migrate file:`, or a libvirt "sparse" image), whose pages sit at fixed
 *   file offsets: read it with `readMappedRamFile` at `payloadOffset`;
 * - `elf`, `kdump`, `kdump-flattened`: a guest memory dump (read it with
 *   `readElfCore` or `readKdump`);
 * - `unknown`: no known magic (a raw memory image, say); only with
 *   `allowUnknown`.
 */
export type InputKind =
  | "migration"
  | "mapped-ram"
  | "elf"
  | "kdump"
  | "kdump-flattened"
  | "unknown";

/**
 * Each {@linkcode InputKind} as an error message names it ("it is an ELF
 * dump, not a migration stream").
 */
export const INPUT_KIND_NAMES: Readonly<Record<InputKind, string>> = {
  migration: "a migration stream",
  "mapped-ram": "a mapped-ram migration file",
  elf: "an ELF dump",
  kdump: "a kdump-compressed dump",
  "kdump-flattened": "a flattened kdump dump",
  unknown: "of no known format",
};

/** Options for {@linkcode openInput}. */
export interface OpenInputOptions extends Omit<FileReaderOptions, "startOffset" | "format"> {
  /**
   * Give kind `unknown` for an input whose first bytes match no known magic
   * instead of throwing (for callers that accept raw memory images).
   * @default {false}
   */
  allowUnknown?: boolean;
  /** Largest zstd window log accepted (30 = 1 GiB, enough for `zstd --long=30`). @default {30} */
  zstdWindowLogMax?: number;
  /** Decompressed bytes queued ahead of the reader at most. @default {8388608} */
  highWaterMark?: number;
}

/** An opened input. Close it (or let `using` do it) when done. */
export interface Input extends Disposable {
  /** The path given, or `-` for standard input. */
  path: string;
  /** What the input holds (see {@linkcode InputKind}). */
  kind: InputKind;
  /** The outer container: `raw` for anything not compressed and not a libvirt image. */
  container: ContainerKind;
  /** How the payload is compressed inside its container. */
  innerCompression: InnerCompression;
  /** The libvirt save image header, for container `libvirt-save`. */
  libvirt: LibvirtSaveHeader | undefined;
  /** File offset where the (possibly compressed) payload starts: 0, or after a libvirt header. */
  payloadOffset: number;
  /** Size of the file when the input is a regular file, else `undefined`. */
  byteLength: number | undefined;
  /**
   * Reader over the payload, decompressed, from its first byte (`QEVM` for a
   * migration stream). Its offsets are payload offsets (stream offsets for a
   * stream). Views it returns live as long as the options say
   * (`recycleChunks`: until the next refill).
   */
  reader: ByteReader;
  /** Close the file. Safe to call twice. */
  close(): void;
}

/** Bytes of the payload looked at to tell the kinds apart (the flattened kdump header needs 24). */
const HEAD_LENGTH = 24;

/** Bytes of a stream held to read its configuration section (mapped-ram or not) without a reopen. */
const CONFIGURATION_HEAD_LENGTH = 4096;

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return bytes.byteLength >= prefix.byteLength && prefix.every((b, i) => bytes[i] === b);
}

/**
 * A positional view of the file `path` that answers from `head` (the
 * payload's first bytes, already read, at `payloadOffset`) and opens the
 * file only for a read beyond them: the configuration section that says
 * whether a stream is a mapped-ram file comes right after the header, so
 * the file is mostly not opened a second time.
 */
function headFirst(
  path: string,
  byteLength: number,
  payloadOffset: number,
  head: Uint8Array,
): PositionalReader & Disposable {
  let file: Promise<PositionalReader & Disposable> | undefined;
  const close = () => void file?.then((f) => f.close(), () => {});
  return {
    byteLength,
    async readInto(fileOffset, into) {
      const at = fileOffset - payloadOffset;
      const end = Math.min(at + into.byteLength, byteLength - payloadOffset); // not past EOF
      if (at >= 0 && end <= head.byteLength) {
        into.set(head.subarray(at, end));
        return Math.max(0, end - at);
      }
      file ??= openPositional(path);
      return await (await file).readInto(fileOffset, into);
    },
    close,
    [Symbol.dispose]: close,
  };
}

/** Tell a payload's kind from its first bytes (and, for a stream in a file, its configuration). */
async function payloadKind(
  path: string,
  byteLength: number | undefined,
  opened: OpenedContainer,
  head: Uint8Array,
): Promise<InputKind | undefined> {
  if (opened.sparse) return "mapped-ram";
  if (startsWith(head, QEMU_VM_FILE_MAGIC_BYTES)) {
    // Only a regular, uncompressed file can be a mapped-ram file (its pages sit at file offsets).
    if (path === "-" || byteLength === undefined || opened.innerCompression !== "raw") {
      return "migration";
    }
    const { isMappedRamStream } = await import("../migration/mapped_ram/is_mapped_ram_stream.ts");
    // Its configuration section follows the 8-byte header: the first 4 KiB hold it.
    await opened.reader.fill(CONFIGURATION_HEAD_LENGTH);
    using file = headFirst(path, byteLength, opened.payloadOffset, opened.reader.buffered());
    return await isMappedRamStream(file, opened.payloadOffset) ? "mapped-ram" : "migration";
  }
  // The dump readers load only when a dump is seen: a stream does not pay for them.
  const { sniffDump } = await import("../dumps/detect.ts");
  return await sniffDump(bytesPositional(head));
}

/**
 * Open a file (or `-` for standard input) of any kind vmem-dump reads:
 * unwrap its container (raw, gzip, zstd, libvirt save image) and tell what
 * the payload is (a migration stream, a mapped-ram file, an ELF, kdump or
 * flattened kdump dump) from its first bytes. Decompression streams in
 * constant memory; nothing is read beyond what detection needs until the
 * reader is used.
 *
 * @param path File path or `-`.
 * @param options Read sizes and buffer recycling (see `openFileReader`),
 * zstd limits, and `allowUnknown`.
 * @returns The opened input; `close()` it when done.
 * @throws {FormatError} (format `container`, code `bad-magic`) when no known
 * magic matches (unless `allowUnknown`), or for a malformed container.
 * @throws {UnexpectedEofError} for an empty input.
 * @throws {UnsupportedFeatureError} for a libvirt image with an unsupported payload compression.
 *
 * @example Count the RAM pages of the zstd-compressed demo stream
 * ```ts
 * import { decodeMigrationBatches, openInput } from "@vmem-dump/vmem-dump";
 * using input = await openInput("testdata/migration/q10-s3-malicious.mig.zst");
 * console.log(input.container, input.kind); // zstd migration
 * let pages = 0;
 * for await (const batch of decodeMigrationBatches(input.reader)) {
 *   for (const r of batch) if (r.kind === "ram-page") pages++;
 * }
 * console.log(pages > 0); // true
 * ```
 */
export async function openInput(path: string, options: OpenInputOptions = {}): Promise<Input> {
  const { allowUnknown, zstdWindowLogMax, highWaterMark, ...readerOptions } = options;
  const file = await openFileReader(path, readerOptions);
  try {
    const opened = await openContainer(file.reader, {
      acceptUnknown: true,
      ...(zstdWindowLogMax === undefined ? {} : { zstdWindowLogMax }),
      ...(highWaterMark === undefined ? {} : { highWaterMark }),
    });
    await opened.reader.fill(HEAD_LENGTH);
    const head = opened.reader.buffered().subarray(0, HEAD_LENGTH);
    const kind = await payloadKind(path, file.byteLength, opened, head);
    if (kind === undefined && !allowUnknown) {
      throw new FormatError(
        `Cannot open ${path === "-" ? "standard input" : path}: unknown magic ${
          hexBytes(head.subarray(0, 4))
        }${
          opened.kind === "raw" ? "" : ` inside the ${opened.kind} container`
        }; expected a QEMU migration stream ("QEVM"), gzip, zstd, a libvirt save image, or an ` +
          "ELF or kdump dump",
        { format: "container", code: "bad-magic", offset: opened.payloadOffset },
      );
    }
    return {
      path,
      kind: kind ?? "unknown",
      container: opened.kind,
      innerCompression: opened.innerCompression,
      libvirt: opened.libvirt,
      payloadOffset: opened.payloadOffset,
      byteLength: file.byteLength,
      reader: opened.reader,
      close: file.close,
      [Symbol.dispose]: file.close,
    };
  } catch (e) {
    file.close();
    throw e;
  }
}
