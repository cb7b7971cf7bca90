/**
 * Magic numbers of the containers a migration stream can come in, and a
 * sniffing function that names the container from the first bytes.
 *
 * Sources: QEMU migration/savevm.h (`QEMU_VM_FILE_MAGIC`), RFC 1952 (gzip),
 * RFC 8878 (zstd frames and skippable frames), libvirt
 * src/qemu/qemu_saveimage.h (`QEMU_SAVE_MAGIC`, `QEMU_SAVE_PARTIAL`).
 *
 * @module
 */

/** `QEMU_VM_FILE_MAGIC`: "QEVM", the first 4 bytes of a migration stream. */
export const QEMU_VM_FILE_MAGIC_BYTES: Uint8Array<ArrayBuffer> = new Uint8Array([
  0x51,
  0x45,
  0x56,
  0x4d,
]);

/** gzip member magic (RFC 1952 ID1, ID2). */
export const GZIP_MAGIC_BYTES: Uint8Array<ArrayBuffer> = new Uint8Array([0x1f, 0x8b]);

/** zstd frame magic 0xFD2FB528, as stored (little-endian). */
export const ZSTD_MAGIC_BYTES: Uint8Array<ArrayBuffer> = new Uint8Array([0x28, 0xb5, 0x2f, 0xfd]);

/** `QEMU_SAVE_MAGIC`: a complete libvirt save image. */
export const LIBVIRT_SAVE_MAGIC = "LibvirtQemudSave";

/** `QEMU_SAVE_PARTIAL`: a libvirt save image that was never finished. */
export const LIBVIRT_SAVE_PARTIAL_MAGIC = "LibvirtQemudPart";

/** Length of the longest magic we sniff (the libvirt one). */
export const SNIFF_LENGTH = 16;

/** What {@linkcode sniffContainer} can recognise. */
export type SniffedContainer =
  | "raw"
  | "gzip"
  | "zstd"
  | "libvirt-save"
  | "libvirt-partial";

/**
 * Whether `bytes` starts with a zstd skippable frame (magic 0x184D2A50–0x184D2A5F,
 * little-endian). zstd tools accept such a frame in front of the data.
 */
function isZstdSkippable(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && (bytes[0]! & 0xf0) === 0x50 && bytes[1] === 0x2a &&
    bytes[2] === 0x4d && bytes[3] === 0x18;
}

function startsWith(bytes: Uint8Array, magic: Uint8Array): boolean {
  if (bytes.length < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[i] !== magic[i]) return false;
  return true;
}

function startsWithAscii(bytes: Uint8Array, magic: string): boolean {
  if (bytes.length < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[i] !== magic.charCodeAt(i)) return false;
  return true;
}

/**
 * Name the container from its first bytes (at least 4; 16 to recognise a
 * libvirt save image).
 *
 * @param head The first bytes of the input.
 * @returns The container, or `undefined` when no magic matches.
 *
 * @example Sniff a migration stream
 * ```ts
 * import { sniffContainer } from "@vmem-dump/vmem-dump/container";
 * console.log(sniffContainer(new TextEncoder().encode("QEVM\0\0\0\x03"))); // "raw"
 * console.log(sniffContainer(new Uint8Array([0x1f, 0x8b, 8, 0]))); // "gzip"
 * ```
 */
export function sniffContainer(head: Uint8Array): SniffedContainer | undefined {
  if (startsWith(head, QEMU_VM_FILE_MAGIC_BYTES)) return "raw";
  if (startsWith(head, GZIP_MAGIC_BYTES)) return "gzip";
  if (startsWith(head, ZSTD_MAGIC_BYTES) || isZstdSkippable(head)) return "zstd";
  if (startsWithAscii(head, LIBVIRT_SAVE_MAGIC)) return "libvirt-save";
  if (startsWithAscii(head, LIBVIRT_SAVE_PARTIAL_MAGIC)) return "libvirt-partial";
  return undefined;
}

/**
 * Whether `head` could still become a libvirt magic once more bytes are read
 * (used to decide how many bytes to sniff).
 *
 * @param head The first bytes read so far.
 * @returns `true` when `head` is a prefix of "LibvirtQemud".
 *
 * @example
 * ```ts
 * import { couldBeLibvirtMagic } from "./detect.ts";
 * console.log(couldBeLibvirtMagic(new TextEncoder().encode("Libv"))); // true
 * ```
 */
export function couldBeLibvirtMagic(head: Uint8Array): boolean {
  const common = "LibvirtQemud";
  const n = Math.min(head.length, common.length);
  for (let i = 0; i < n; i++) if (head[i] !== common.charCodeAt(i)) return false;
  return true;
}
