/**
 * The libvirt save image header (`virsh save`, managed save): a 92-byte fixed
 * header, then `data_len` bytes holding the domain XML, an optional cookie XML
 * and zero padding, then the QEMU migration stream, raw or compressed.
 *
 * Layout from libvirt src/qemu/qemu_saveimage.h (`virQEMUSaveHeader`) and
 * src/qemu/qemu_saveimage_format.h (`virQEMUSaveFormat`); see
 * spec/migration-stream.md §9. The u32 fields are in the byte order of the
 * host that wrote the image: libvirt reads them natively and byte-swaps them
 * all when the version reads as more than 2. We read them little-endian and
 * swap the same way, so `littleEndian` tells which order the file uses.
 *
 * @module
 */

import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../errors.ts";
import type { ByteReader } from "../io/byte_reader.ts";
import { viewOf } from "../io/endian.ts";
import { latin1Decode } from "../io/text.ts";
import { LIBVIRT_SAVE_MAGIC, LIBVIRT_SAVE_PARTIAL_MAGIC } from "./detect.ts";

/** Size of `virQEMUSaveHeader`: 16 magic + 5 × u32 + 14 × u32 unused. */
export const LIBVIRT_SAVE_HEADER_SIZE = 92;

/** `QEMU_SAVE_VERSION`: the version libvirt writes. */
export const QEMU_SAVE_VERSION = 2;

/** `QEMU_SAVE_FORMAT_RAW`: the stream follows uncompressed. */
export const QEMU_SAVE_FORMAT_RAW = 0;
/** `QEMU_SAVE_FORMAT_GZIP`: `gzip -c` output. */
export const QEMU_SAVE_FORMAT_GZIP = 1;
/** `QEMU_SAVE_FORMAT_BZIP2`: `bzip2 -c` output. */
export const QEMU_SAVE_FORMAT_BZIP2 = 2;
/** `QEMU_SAVE_FORMAT_XZ`: `xz -c` output. */
export const QEMU_SAVE_FORMAT_XZ = 3;
/** `QEMU_SAVE_FORMAT_LZOP`: `lzop -c` output. */
export const QEMU_SAVE_FORMAT_LZOP = 4;
/** `QEMU_SAVE_FORMAT_ZSTD`: `zstd -c` output. */
export const QEMU_SAVE_FORMAT_ZSTD = 5;
/** `QEMU_SAVE_FORMAT_SPARSE`: a QEMU mapped-ram stream written in place (not a pipe format). */
export const QEMU_SAVE_FORMAT_SPARSE = 6;

/** Names of the `format` values, indexed by value (libvirt's `qemuSaveFormat` enum strings). */
export const QEMU_SAVE_FORMAT_NAMES: readonly string[] = [
  "raw",
  "gzip",
  "bzip2",
  "xz",
  "lzop",
  "zstd",
  "sparse",
];

/**
 * Largest `data_len` we accept. libvirt writes the XML plus 64 KiB of slack;
 * a domain XML of megabytes is already unusual, so 64 MiB is far above any
 * real image and keeps a corrupt field from driving a huge allocation.
 */
export const LIBVIRT_MAX_DATA_LENGTH = 64 * 1024 * 1024;

/** Slack libvirt adds after the XML so that the XML can be edited in place later. */
export const LIBVIRT_XML_SLACK = 64 * 1024;

/** The fixed part of the header, as read from the first 92 bytes. */
export interface LibvirtSaveFixedHeader {
  /** The 16-byte magic as text: `LibvirtQemudSave` (a `LibvirtQemudPart` image is rejected when reading). */
  magic: string;
  /** Header version after the byte order fix: 2 (1 = old images, never compressed). */
  version: number;
  /** `data_len`: bytes of XML, cookie and padding after the 92-byte header. */
  dataLength: number;
  /** `was_running`: 1 when the domain was running when saved. */
  wasRunning: number;
  /** `format`: compression of the stream, a `QEMU_SAVE_FORMAT_*` value. */
  compression: number;
  /** `cookieOffset`: where the cookie starts inside the data (0 = no cookie). */
  cookieOffset: number;
  /** Byte order of the u32 fields as found in the file. */
  littleEndian: boolean;
}

/** A parsed libvirt save image header. */
export interface LibvirtSaveHeader extends LibvirtSaveFixedHeader {
  /** The domain XML, without its terminating NUL. */
  xml: string;
  /** The cookie XML without its terminating NUL, when `cookieOffset` is not 0. */
  cookie?: string;
  /** The 92-byte header and the `data_len` bytes after it, verbatim. */
  headerBytes: Uint8Array;
}

function printableMagic(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
  return s;
}

/**
 * Read the fixed 92-byte header from `bytes` (which must hold at least 92 bytes).
 *
 * Checks the magic (a `LibvirtQemudPart` image was never finished and is
 * rejected), fixes the byte order like libvirt does (a version above 2 means
 * the other byte order), and checks version, format and `data_len`.
 *
 * @param bytes At least the first 92 bytes of the image.
 * @param options `fileOffset` of `bytes[0]`, used in error offsets.
 * @returns The fixed header fields.
 * @throws {FormatError} on a bad magic, version, `data_len` or `cookieOffset`.
 * @throws {UnsupportedFeatureError} on an unfinished (`LibvirtQemudPart`) image.
 *
 * @example Parse a header built by {@linkcode buildLibvirtSaveHeader}
 * ```ts
 * import { buildLibvirtSaveHeader, readLibvirtSaveFixedHeader } from "@vmem-dump/vmem-dump/container";
 * const built = buildLibvirtSaveHeader({ xml: "<domain/>", compression: 0 });
 * console.log(readLibvirtSaveFixedHeader(built.headerBytes).dataLength); // 65546
 * ```
 */
export function readLibvirtSaveFixedHeader(
  bytes: Uint8Array,
  options: { fileOffset?: number } = {},
): LibvirtSaveFixedHeader {
  const base = options.fileOffset ?? 0;
  if (bytes.length < LIBVIRT_SAVE_HEADER_SIZE) {
    throw new RangeError(`Cannot read a libvirt save header from ${bytes.length} bytes: need 92`);
  }
  const magic = latin1Decode(bytes.subarray(0, 16));
  if (magic === LIBVIRT_SAVE_PARTIAL_MAGIC) {
    throw new UnsupportedFeatureError(
      "Cannot open libvirt save image: it is incomplete (magic LibvirtQemudPart: libvirt " +
        "never finished writing it)",
      "container",
      base,
    );
  }
  if (magic !== LIBVIRT_SAVE_MAGIC) {
    throw new FormatError(
      `Cannot open libvirt save image: bad magic "${printableMagic(bytes.subarray(0, 16))}"`,
      { format: "container", code: "bad-magic", offset: base },
    );
  }
  const view = viewOf(bytes);
  // version: 4 bytes at 16, host byte order; libvirt swaps all u32s when it reads > 2.
  let littleEndian = true;
  let version = view.getUint32(16, true);
  if (version > QEMU_SAVE_VERSION) {
    littleEndian = false;
    version = view.getUint32(16, false);
  }
  if (version > QEMU_SAVE_VERSION || version === 0) {
    throw new FormatError(
      `Cannot open libvirt save image: unsupported header version 0x${
        view.getUint32(16, true).toString(16)
      } (expected 1 or 2 in either byte order)`,
      { format: "container", code: "bad-version", offset: base + 16 },
    );
  }
  const dataLength = view.getUint32(20, littleEndian); // data_len: 4 bytes at 20
  const wasRunning = view.getUint32(24, littleEndian); // was_running: 4 bytes at 24
  const compression = view.getUint32(28, littleEndian); // format: 4 bytes at 28
  const cookieOffset = view.getUint32(32, littleEndian); // cookieOffset: 4 bytes at 32
  // unused[14]: 56 bytes at 36, not checked (libvirt does not check them either).
  if (dataLength === 0) {
    throw new FormatError("Cannot open libvirt save image: data_len is 0", {
      format: "container",
      code: "bad-header",
      offset: base + 20,
    });
  }
  if (dataLength > LIBVIRT_MAX_DATA_LENGTH) {
    throw new FormatError(
      `Cannot open libvirt save image: data_len 0x${dataLength.toString(16)} exceeds the ` +
        `limit of 0x${LIBVIRT_MAX_DATA_LENGTH.toString(16)} bytes (64 MiB)`,
      { format: "container", code: "too-large", offset: base + 20 },
    );
  }
  if (cookieOffset > dataLength) {
    throw new FormatError(
      `Cannot open libvirt save image: cookieOffset 0x${cookieOffset.toString(16)} lies ` +
        `beyond data_len 0x${dataLength.toString(16)}`,
      { format: "container", code: "out-of-range", offset: base + 32 },
    );
  }
  return { magic, version, dataLength, wasRunning, compression, cookieOffset, littleEndian };
}

/** Text up to the first NUL (or the end), decoded as UTF-8. */
function cString(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return new TextDecoder("utf-8", { fatal: false }).decode(
    nul < 0 ? bytes : bytes.subarray(0, nul),
  );
}

/**
 * Split the `data_len` bytes after the fixed header into domain XML and cookie.
 *
 * @param fixed The fixed header.
 * @param data The `data_len` bytes after it.
 * @returns The XML and, when `cookieOffset` is set, the cookie.
 */
function splitData(
  fixed: LibvirtSaveFixedHeader,
  data: Uint8Array,
): { xml: string; cookie?: string } {
  if (fixed.cookieOffset === 0) return { xml: cString(data) };
  return {
    xml: cString(data.subarray(0, fixed.cookieOffset)),
    cookie: cString(data.subarray(fixed.cookieOffset)),
  };
}

/**
 * Read a libvirt save image header (fixed part, XML, cookie and padding)
 * from `reader`, leaving it at the first byte of the stream payload.
 *
 * @param reader Positioned at the magic.
 * @returns The parsed header with `headerBytes` holding all bytes read.
 * @throws {FormatError} on a malformed header; `UnexpectedEofError` when the input ends inside it.
 * @throws {UnsupportedFeatureError} on an incomplete image.
 *
 * @example
 * ```ts
 * import { bytesReader } from "@vmem-dump/vmem-dump";
 * import { buildLibvirtSaveHeader, readLibvirtSaveHeader } from "@vmem-dump/vmem-dump/container";
 * const built = buildLibvirtSaveHeader({ xml: "<domain/>", compression: 0 });
 * const header = await readLibvirtSaveHeader(bytesReader(built.headerBytes));
 * console.log(header.xml); // "<domain/>"
 * ```
 */
export async function readLibvirtSaveHeader(reader: ByteReader): Promise<LibvirtSaveHeader> {
  const start = reader.offset;
  const fixedBytes = await reader.read(LIBVIRT_SAVE_HEADER_SIZE, "libvirt save header");
  const fixed = readLibvirtSaveFixedHeader(fixedBytes, { fileOffset: start });
  const data = await reader.read(fixed.dataLength, "libvirt save image XML and padding");
  const headerBytes = new Uint8Array(LIBVIRT_SAVE_HEADER_SIZE + fixed.dataLength);
  headerBytes.set(fixedBytes);
  headerBytes.set(data, LIBVIRT_SAVE_HEADER_SIZE);
  return { ...fixed, ...splitData(fixed, data), headerBytes };
}

/**
 * Parse a whole libvirt save header held in memory (`headerBytes` of a
 * {@linkcode LibvirtSaveHeader}, or the start of an image file).
 *
 * @param bytes At least 92 + `data_len` bytes.
 * @returns The parsed header; `headerBytes` is a view of `bytes`.
 * @throws {FormatError} on a malformed or truncated header.
 *
 * @example
 * ```ts
 * import { buildLibvirtSaveHeader, parseLibvirtSaveHeader } from "@vmem-dump/vmem-dump/container";
 * const built = buildLibvirtSaveHeader({ xml: "<domain/>", cookie: "<cookie/>", compression: 5 });
 * console.log(parseLibvirtSaveHeader(built.headerBytes).cookie); // "<cookie/>"
 * ```
 */
export function parseLibvirtSaveHeader(bytes: Uint8Array): LibvirtSaveHeader {
  if (bytes.length < LIBVIRT_SAVE_HEADER_SIZE) {
    throw new UnexpectedEofError(
      `Cannot open libvirt save image: only ${bytes.length} of 92 header bytes`,
      "container",
      bytes.length,
    );
  }
  const fixed = readLibvirtSaveFixedHeader(bytes);
  const end = LIBVIRT_SAVE_HEADER_SIZE + fixed.dataLength;
  if (bytes.length < end) {
    throw new UnexpectedEofError(
      `Cannot open libvirt save image: data_len 0x${
        fixed.dataLength.toString(16)
      } runs past the end of the header bytes`,
      "container",
      bytes.length,
    );
  }
  const headerBytes = bytes.subarray(0, end);
  return {
    ...fixed,
    ...splitData(fixed, headerBytes.subarray(LIBVIRT_SAVE_HEADER_SIZE)),
    headerBytes,
  };
}

/** Options for {@linkcode buildLibvirtSaveHeader}. */
export interface BuildLibvirtSaveHeaderOptions {
  /** Domain XML (written NUL-terminated). */
  xml: string;
  /** Cookie XML (written NUL-terminated after the XML). @default {undefined} */
  cookie?: string;
  /** Compression, a `QEMU_SAVE_FORMAT_*` value. */
  compression: number;
  /** `was_running`. @default {1} */
  wasRunning?: number;
  /** Byte order of the u32 fields (libvirt writes host order; x86 is little-endian). @default {true} */
  littleEndian?: boolean;
  /** `data_len`; 0 means XML + cookie + 64 KiB of slack, as libvirt does. @default {0} */
  dataLength?: number;
}

/**
 * Lay out a libvirt save header the way libvirt's `virQEMUSaveDataWrite` does:
 * fixed header, NUL-terminated XML, NUL-terminated cookie, zero padding (64
 * KiB of slack unless `dataLength` is given). The magic is the finished one,
 * `LibvirtQemudSave`.
 *
 * @param options XML, cookie, compression and layout.
 * @returns The header, with `headerBytes` ready to be written before the stream.
 * @throws {RangeError} when the XML and cookie do not fit into `dataLength`.
 *
 * @example
 * ```ts
 * import { buildLibvirtSaveHeader } from "@vmem-dump/vmem-dump/container";
 * const h = buildLibvirtSaveHeader({ xml: "<domain type='kvm'/>", compression: 0 });
 * console.log(h.headerBytes.length); // 92 + 21 + 65536
 * ```
 */
export function buildLibvirtSaveHeader(options: BuildLibvirtSaveHeaderOptions): LibvirtSaveHeader {
  const encoder = new TextEncoder();
  const xmlBytes = encoder.encode(options.xml);
  const cookieBytes = options.cookie === undefined ? undefined : encoder.encode(options.cookie);
  if (xmlBytes.includes(0) || cookieBytes?.includes(0)) {
    throw new RangeError("Cannot build a libvirt save header: the XML contains a NUL byte");
  }
  const xmlLength = xmlBytes.length + 1;
  const used = xmlLength + (cookieBytes === undefined ? 0 : cookieBytes.length + 1);
  const dataLength = options.dataLength || used + LIBVIRT_XML_SLACK;
  if (used > dataLength) {
    throw new RangeError(
      `Cannot build a libvirt save header: ${used} bytes of XML do not fit into data_len ${dataLength}`,
    );
  }
  if (dataLength > LIBVIRT_MAX_DATA_LENGTH) {
    throw new RangeError(
      `Cannot build a libvirt save header: data_len ${dataLength} exceeds 64 MiB`,
    );
  }
  const littleEndian = options.littleEndian ?? true;
  const wasRunning = options.wasRunning ?? 1;
  const cookieOffset = cookieBytes === undefined ? 0 : xmlLength;
  const headerBytes = new Uint8Array(LIBVIRT_SAVE_HEADER_SIZE + dataLength);
  headerBytes.set(encoder.encode(LIBVIRT_SAVE_MAGIC));
  const view = viewOf(headerBytes);
  view.setUint32(16, QEMU_SAVE_VERSION, littleEndian);
  view.setUint32(20, dataLength, littleEndian);
  view.setUint32(24, wasRunning, littleEndian);
  view.setUint32(28, options.compression, littleEndian);
  view.setUint32(32, cookieOffset, littleEndian);
  headerBytes.set(xmlBytes, LIBVIRT_SAVE_HEADER_SIZE);
  if (cookieBytes !== undefined) headerBytes.set(cookieBytes, LIBVIRT_SAVE_HEADER_SIZE + xmlLength);
  const header: LibvirtSaveHeader = {
    magic: LIBVIRT_SAVE_MAGIC,
    version: QEMU_SAVE_VERSION,
    dataLength,
    wasRunning,
    compression: options.compression,
    cookieOffset,
    littleEndian,
    xml: options.xml,
    headerBytes,
  };
  if (options.cookie !== undefined) header.cookie = options.cookie;
  return header;
}

/**
 * Copy of `header.headerBytes` with the `format` field set to `compression`
 * (in the header's own byte order). Everything else stays byte-identical.
 *
 * @param header A parsed header.
 * @param compression The new `QEMU_SAVE_FORMAT_*` value.
 * @returns New header bytes.
 *
 * @example
 * ```ts
 * import { buildLibvirtSaveHeader, QEMU_SAVE_FORMAT_ZSTD, withLibvirtCompression } from "@vmem-dump/vmem-dump/container";
 * const h = buildLibvirtSaveHeader({ xml: "<domain/>", compression: 0 });
 * console.log(withLibvirtCompression(h, QEMU_SAVE_FORMAT_ZSTD)[28]); // 5
 * ```
 */
export function withLibvirtCompression(
  header: LibvirtSaveHeader,
  compression: number,
): Uint8Array<ArrayBuffer> {
  const bytes = header.headerBytes.slice();
  viewOf(bytes).setUint32(28, compression, header.littleEndian);
  return bytes;
}

/**
 * Name of a libvirt `format` value (`"zstd"` for 5), or `format N` when unknown.
 *
 * @param compression A `QEMU_SAVE_FORMAT_*` value.
 * @returns The libvirt name.
 *
 * @example
 * ```ts
 * import { libvirtCompressionName } from "@vmem-dump/vmem-dump/container";
 * console.log(libvirtCompressionName(3)); // "xz"
 * ```
 */
export function libvirtCompressionName(compression: number): string {
  return QEMU_SAVE_FORMAT_NAMES[compression] ?? `format ${compression}`;
}
