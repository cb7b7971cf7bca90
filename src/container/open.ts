/**
 * Open whatever container a migration stream comes in: a raw stream, a
 * gzip or zstd file (or pipe), or a libvirt save image (raw, gzip or zstd
 * inside), and hand out a reader over the migration stream itself.
 *
 * @module
 */

import {
  type ErrorFormat,
  FormatError,
  UnexpectedEofError,
  UnsupportedFeatureError,
} from "../errors.ts";
import type { ByteReader } from "../io/byte_reader.ts";
import { hexBytes } from "../io/text.ts";
import { prefixedReader, rebasedReader } from "./_prefix_reader.ts";
import { couldBeLibvirtMagic, SNIFF_LENGTH, sniffContainer } from "./detect.ts";
import {
  libvirtCompressionName,
  type LibvirtSaveHeader,
  QEMU_SAVE_FORMAT_BZIP2,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_LZOP,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_SPARSE,
  QEMU_SAVE_FORMAT_XZ,
  QEMU_SAVE_FORMAT_ZSTD,
  QEMU_SAVE_VERSION,
  readLibvirtSaveHeader,
} from "./libvirt_save.ts";

export type { LibvirtSaveHeader } from "./libvirt_save.ts";

/** The outer container of a stream. */
export type ContainerKind = "raw" | "gzip" | "zstd" | "libvirt-save";

/** Compression of a stream inside its container. */
export type InnerCompression = "raw" | "gzip" | "zstd";

/** An opened container. */
export interface OpenedContainer {
  /** The outer container. */
  kind: ContainerKind;
  /** How the payload is compressed: equals `kind` for raw/gzip/zstd; from the header for libvirt. */
  innerCompression: InnerCompression;
  /** The libvirt header, for `kind: "libvirt-save"`. */
  libvirt?: LibvirtSaveHeader;
  /** Input offset where the (possibly compressed) payload starts: 0, or 92 + data_len for libvirt. */
  payloadOffset: number;
  /**
   * libvirt's "sparse" format (6): the payload is a QEMU mapped-ram file
   * written in place, whose RAM pages sit at absolute file offsets. It is
   * not a stream: read it from the file with `readMappedRamFile` at
   * `payloadOffset` (`reader` gives the payload bytes as they are).
   */
  sparse?: boolean;
  /**
   * Reader over the decompressed migration stream. Its offsets are offsets
   * in the decompressed stream (0 = the "QEVM" magic); errors about the
   * compressed data carry input offsets and format "container".
   */
  reader: ByteReader;
}

/** Options for {@linkcode openContainer}. */
export interface OpenContainerOptions {
  /** Format named in truncation errors of the inner stream. @default {"migration"} */
  format?: ErrorFormat;
  /** Treat an input whose first bytes match no magic as a raw stream. @default {false} */
  acceptUnknown?: boolean;
  /** Largest zstd window log accepted (30 = 1 GiB, enough for `zstd --long=30`). @default {30} */
  zstdWindowLogMax?: number;
  /** Decompressed bytes queued ahead of the reader at most. @default {8388608} */
  highWaterMark?: number;
}

const LIBVIRT_UNSUPPORTED: Record<number, string> = {
  [QEMU_SAVE_FORMAT_BZIP2]: "bzip2",
  [QEMU_SAVE_FORMAT_XZ]: "xz",
  [QEMU_SAVE_FORMAT_LZOP]: "lzop",
};

/** Read up to `n` bytes into `head` (from `have`), stopping early at the end of input. */
async function fill(
  reader: ByteReader,
  head: Uint8Array,
  have: number,
  n: number,
): Promise<number> {
  while (have < n) {
    const chunk = await reader.readChunk(n - have);
    if (chunk === undefined) break;
    head.set(chunk, have);
    have += chunk.byteLength;
  }
  return have;
}

/**
 * Sniff the container of `reader` and return a reader over the migration
 * stream inside: `QEVM` is a raw stream, `1f 8b` gzip, `28 b5 2f fd` zstd,
 * `LibvirtQemudSave` a libvirt save image (raw, gzip or zstd payload).
 * Decompression streams in constant memory.
 *
 * @param reader The input, positioned at its first byte.
 * @param options Error format, zstd window limit, unknown-magic handling.
 * @returns The container kind, the libvirt header if any, and the inner reader.
 * @throws {UnsupportedFeatureError} for libvirt images that are incomplete
 *   (`LibvirtQemudPart`) or use bzip2, xz or lzop payloads. A sparse
 *   (mapped-ram) payload is opened with `sparse` set.
 * @throws {FormatError} for an empty input, an unknown magic or a malformed libvirt header.
 *
 * @example Open a zstd-compressed stream
 * ```ts
 * import { zstdCompressSync } from "node:zlib";
 * import { bytesReader } from "@vmem-dump/vmem-dump";
 * import { openContainer } from "@vmem-dump/vmem-dump/container";
 * const stream = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
 * const opened = await openContainer(bytesReader(zstdCompressSync(stream)));
 * console.log(opened.kind, (await opened.reader.read(8)).length); // "zstd" 8
 * ```
 *
 * @example Open a file
 * ```ts ignore
 * import { openInput } from "@vmem-dump/vmem-dump";
 * import { openContainer } from "@vmem-dump/vmem-dump/container";
 * const input = await openInput("guest.save");
 * const { kind, libvirt, reader } = await openContainer(input.reader);
 * ```
 */
export async function openContainer(
  reader: ByteReader,
  options: OpenContainerOptions = {},
): Promise<OpenedContainer> {
  const format = options.format ?? "migration";
  const start = reader.offset;
  const head = new Uint8Array(SNIFF_LENGTH);
  let have = await fill(reader, head, 0, 4);
  if (couldBeLibvirtMagic(head.subarray(0, have))) {
    have = await fill(reader, head, have, SNIFF_LENGTH);
  }
  const sniffed = head.subarray(0, have);
  if (have === 0) {
    throw new UnexpectedEofError("Cannot open input: it is empty", "container", start);
  }
  const kind = sniffContainer(sniffed);
  // The decompressors are loaded only when needed: node:zlib takes ~40 ms to
  // load, a fifth of what a whole `inspect` of a 200 MB raw stream costs.
  const rewound = prefixedReader(sniffed, reader, { format, startOffset: start });
  const decompressOptions = {
    format,
    ...(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark }),
  };
  const zstdOptions = {
    ...decompressOptions,
    ...(options.zstdWindowLogMax === undefined ? {} : { windowLogMax: options.zstdWindowLogMax }),
  };
  switch (kind) {
    case "raw":
      return { kind, innerCompression: "raw", payloadOffset: start, reader: rewound };
    case "gzip":
      return {
        kind,
        innerCompression: "gzip",
        payloadOffset: start,
        reader: (await import("./gzip.ts")).gunzipReader(rewound, decompressOptions),
      };
    case "zstd":
      return {
        kind,
        innerCompression: "zstd",
        payloadOffset: start,
        reader: (await import("./zstd.ts")).zstdDecompressReader(rewound, zstdOptions),
      };
    case "libvirt-save":
    case "libvirt-partial": {
      // readLibvirtSaveHeader rejects the partial magic with UnsupportedFeatureError.
      const libvirt = await readLibvirtSaveHeader(rewound);
      const payloadOffset = rewound.offset;
      const compression = libvirt.version < QEMU_SAVE_VERSION
        ? QEMU_SAVE_FORMAT_RAW // version 1 images were never compressed; libvirt ignores format
        : libvirt.compression;
      const opened = (innerCompression: InnerCompression, inner: ByteReader): OpenedContainer => ({
        kind: "libvirt-save",
        innerCompression,
        libvirt,
        payloadOffset,
        reader: inner,
      });
      switch (compression) {
        case QEMU_SAVE_FORMAT_RAW:
          return opened("raw", rebasedReader(rewound, format));
        case QEMU_SAVE_FORMAT_GZIP:
          return opened(
            "gzip",
            (await import("./gzip.ts")).gunzipReader(rewound, decompressOptions),
          );
        case QEMU_SAVE_FORMAT_ZSTD:
          return opened(
            "zstd",
            (await import("./zstd.ts")).zstdDecompressReader(rewound, zstdOptions),
          );
        case QEMU_SAVE_FORMAT_SPARSE:
          return { ...opened("raw", rebasedReader(rewound, format)), sparse: true };
        default: {
          const name = LIBVIRT_UNSUPPORTED[compression];
          if (name !== undefined) {
            throw new UnsupportedFeatureError(
              `Cannot open libvirt save image: ${name} compression (format ${compression}) is ` +
                `not supported; decompress the payload first, e.g. ` +
                `'tail -c +${payloadOffset + 1} IMAGE | ${name} -dc > stream.mig'`,
              "container",
              start + 28,
            );
          }
          throw new FormatError(
            `Cannot open libvirt save image: unknown compression format ${compression} (${
              libvirtCompressionName(compression)
            })`,
            { format: "container", code: "bad-header", offset: start + 28 },
          );
        }
      }
    }
    default:
      if (options.acceptUnknown) {
        return { kind: "raw", innerCompression: "raw", payloadOffset: start, reader: rewound };
      }
      throw new FormatError(
        `Cannot open input: unknown magic ${hexBytes(sniffed.subarray(0, 4))}; expected a QEMU ` +
          `migration stream ("QEVM"), gzip, zstd or a libvirt save image`,
        { format: "container", code: "bad-magic", offset: start },
      );
  }
}
