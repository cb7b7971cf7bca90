/**
 * Write a migration stream into a container: raw, gzip, zstd, or a libvirt
 * save image (header kept byte for byte, payload raw, gzip or zstd).
 *
 * @module
 */

import type { StreamCompressor } from "./compressor.ts";
import {
  type LibvirtSaveHeader,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_ZSTD,
  QEMU_SAVE_VERSION,
  withLibvirtCompression,
} from "./libvirt_save.ts";
import type { ContainerKind, InnerCompression } from "./open.ts";

/** Options for {@linkcode createContainerWriter}. */
export interface ContainerWriterOptions {
  /** The outer container. */
  kind: ContainerKind;
  /**
   * Payload compression inside a libvirt image. For the other kinds it must
   * be omitted or equal `kind`.
   * @default {the compression recorded in `libvirt` (raw when that is not raw, gzip or zstd)}
   */
  compression?: InnerCompression;
  /** Header of a libvirt image (required for `kind: "libvirt-save"`); written verbatim except `format`. */
  libvirt?: LibvirtSaveHeader;
  /** Compression level: gzip 1–9, zstd 1–19. @default {6 for gzip, 3 for zstd} */
  level?: number;
  /** zstd window log for long-distance matching (`zstd --long=N`). @default {undefined} */
  zstdWindowLog?: number;
}

/** Writes a stream into a container. */
export interface ContainerWriter {
  /**
   * Write the next bytes of the migration stream. Resolves once the chunk
   * was consumed (compressed, or taken by the sink for raw output).
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Finish the container (compressed trailer) and wait for the sink. */
  close(): Promise<void>;
}

const LIBVIRT_CODES: Record<InnerCompression, number> = {
  raw: QEMU_SAVE_FORMAT_RAW,
  gzip: QEMU_SAVE_FORMAT_GZIP,
  zstd: QEMU_SAVE_FORMAT_ZSTD,
};

function libvirtInner(header: LibvirtSaveHeader): InnerCompression {
  if (header.version < QEMU_SAVE_VERSION) return "raw";
  if (header.compression === QEMU_SAVE_FORMAT_GZIP) return "gzip";
  if (header.compression === QEMU_SAVE_FORMAT_ZSTD) return "zstd";
  return "raw";
}

/**
 * Create a writer that packs a migration stream into a container and hands
 * the container's bytes to `sink`, one call at a time.
 *
 * For a libvirt image the header's bytes are written unchanged, except the
 * `format` field when `compression` differs from the header's. So a raw
 * image read with `openContainer` and written back with the same header and
 * payload is identical byte for byte. The finished magic
 * (`LibvirtQemudSave`) is written at once; write to a temporary file and
 * rename it (`createAtomicOutput`) to keep unfinished images invisible.
 *
 * @param sink Receives the container's bytes.
 * @param options Container kind, compression, libvirt header, level.
 * @returns The writer; call `close()` at the end.
 * @throws {TypeError} when the options contradict each other.
 * @throws {RangeError} from the first `write()` or `close()`, for a level or
 *   window log out of range (the compressor, and `node:zlib` with it, loads
 *   only then: raw output never pays for it).
 *
 * @example zstd-compress a stream into memory
 * ```ts
 * import { createContainerWriter } from "@vmem-dump/vmem-dump/container";
 * const chunks: Uint8Array[] = [];
 * const writer = createContainerWriter(async (c) => { chunks.push(c.slice()); }, { kind: "zstd", level: 1 });
 * await writer.write(new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]));
 * await writer.close();
 * console.log(chunks[0]![0]!.toString(16)); // "28"
 * ```
 */
export function createContainerWriter(
  sink: (chunk: Uint8Array) => Promise<void>,
  options: ContainerWriterOptions,
): ContainerWriter {
  let inner: InnerCompression;
  let header: Uint8Array | undefined;
  if (options.kind === "libvirt-save") {
    const libvirt = options.libvirt;
    if (libvirt === undefined) {
      throw new TypeError("Cannot write a libvirt save image without a header (options.libvirt)");
    }
    inner = options.compression ?? libvirtInner(libvirt);
    if (inner !== "raw" && libvirt.version < QEMU_SAVE_VERSION) {
      throw new TypeError(
        `Cannot write a ${inner} payload under a version ${libvirt.version} libvirt header: ` +
          "only version 2 images are compressed",
      );
    }
    const code = LIBVIRT_CODES[inner];
    header = libvirt.compression === code || libvirt.version < QEMU_SAVE_VERSION
      ? libvirt.headerBytes
      : withLibvirtCompression(libvirt, code);
  } else {
    if (options.compression !== undefined && options.compression !== options.kind) {
      throw new TypeError(
        `Cannot write a ${options.kind} container with ${options.compression} compression`,
      );
    }
    if (options.libvirt !== undefined) {
      throw new TypeError(`Cannot write a libvirt header into a ${options.kind} container`);
    }
    inner = options.kind;
  }

  let headerWritten = header === undefined;
  const writeHeader = async () => {
    if (!headerWritten) {
      headerWritten = true;
      await sink(header!);
    }
  };
  if (inner === "raw") {
    return {
      async write(chunk) {
        await writeHeader();
        if (chunk.byteLength > 0) await sink(chunk);
      },
      async close() {
        await writeHeader();
      },
    };
  }
  // Loaded on first use: node:zlib brings Deno's Node compatibility layer (~25 ms of CPU).
  let loading: Promise<StreamCompressor> | undefined;
  const compressor = () =>
    loading ??= inner === "gzip"
      ? import("./gzip.ts").then((m) =>
        m.createGzipCompressor(sink, options.level === undefined ? {} : { level: options.level })
      )
      : import("./zstd.ts").then((m) =>
        m.createZstdCompressor(sink, {
          ...(options.level === undefined ? {} : { level: options.level }),
          ...(options.zstdWindowLog === undefined ? {} : { windowLog: options.zstdWindowLog }),
        })
      );
  return {
    async write(chunk) {
      const c = await compressor();
      await writeHeader();
      await c.write(chunk);
    },
    async close() {
      const c = await compressor();
      await writeHeader();
      await c.close();
    },
  };
}
