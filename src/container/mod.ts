/**
 * Containers of migration streams: raw, gzip, zstd and libvirt save images
 * (`virsh save`, managed save). {@linkcode openContainer} sniffs the input
 * and returns a reader over the decompressed migration stream;
 * {@linkcode createContainerWriter} packs a stream back into any container.
 * Decompression streams in constant memory through `node:zlib`.
 *
 * @example Re-pack a libvirt save image as a zstd-compressed stream
 * ```ts ignore
 * import { createAtomicOutput, openInput } from "@vmem-dump/vmem-dump";
 * import { createContainerWriter, openContainer } from "@vmem-dump/vmem-dump/container";
 * const input = await openInput("guest.save");
 * const opened = await openContainer(input.reader);
 * const out = await createAtomicOutput("guest.mig.zst");
 * const writer = createContainerWriter((c) => out.write(c), { kind: "zstd", level: 3 });
 * for (let c; (c = await opened.reader.readChunk(1 << 20)) !== undefined;) await writer.write(c);
 * await writer.close();
 * await out.commit();
 * ```
 *
 * Not exported (per symbol, see the root module for the rule):
 * `couldBeLibvirtMagic`, the sniffer's helper.
 *
 * @module
 */

export {
  GZIP_MAGIC_BYTES,
  LIBVIRT_SAVE_MAGIC,
  LIBVIRT_SAVE_PARTIAL_MAGIC,
  QEMU_VM_FILE_MAGIC_BYTES,
  SNIFF_LENGTH,
  sniffContainer,
  type SniffedContainer,
  ZSTD_MAGIC_BYTES,
} from "./detect.ts";
export {
  buildLibvirtSaveHeader,
  type BuildLibvirtSaveHeaderOptions,
  LIBVIRT_MAX_DATA_LENGTH,
  LIBVIRT_SAVE_HEADER_SIZE,
  LIBVIRT_XML_SLACK,
  libvirtCompressionName,
  type LibvirtSaveFixedHeader,
  type LibvirtSaveHeader,
  parseLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_BZIP2,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_LZOP,
  QEMU_SAVE_FORMAT_NAMES,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_SPARSE,
  QEMU_SAVE_FORMAT_XZ,
  QEMU_SAVE_FORMAT_ZSTD,
  QEMU_SAVE_VERSION,
  readLibvirtSaveFixedHeader,
  readLibvirtSaveHeader,
  withLibvirtCompression,
} from "./libvirt_save.ts";
export {
  createGzipCompressor,
  type GunzipOptions,
  gunzipReader,
  type GzipCompressOptions,
} from "./gzip.ts";
export {
  createZstdCompressor,
  type ZstdCompressOptions,
  type ZstdDecompressOptions,
  zstdDecompressReader,
} from "./zstd.ts";
export {
  DEFAULT_ZSTD_WINDOW_LOG_MAX,
  ZSTD_WINDOWLOG_MAX,
  type ZstdFrameInfo,
  ZstdFrameScanner,
  type ZstdFrameScannerOptions,
} from "./zstd_frames.ts";
export {
  type ContainerKind,
  type InnerCompression,
  openContainer,
  type OpenContainerOptions,
  type OpenedContainer,
} from "./open.ts";
export {
  type ContainerWriter,
  type ContainerWriterOptions,
  createContainerWriter,
} from "./write.ts";
export type { StreamCompressor } from "./compressor.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { ErrorFormat } from "../errors.ts";
export type { ByteReader, PullByteReader, ViewLifetime } from "../io/byte_reader.ts";
// END-TYPES
