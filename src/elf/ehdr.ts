/**
 * The ELF file header (Elf32_Ehdr / Elf64_Ehdr) of a core dump: decode with
 * class and byte order taken from `e_ident`, encode in the same shape.
 *
 * @module
 */

import { FormatError, UnexpectedEofError } from "../errors.ts";
import { getSafeU64, setU64, viewOf } from "../io/endian.ts";
import {
  EHDR32_SIZE,
  EHDR64_SIZE,
  EI_CLASS,
  EI_DATA,
  EI_NIDENT,
  EI_VERSION,
  ELFCLASS32,
  ELFCLASS64,
  ELFDATA2LSB,
  ELFDATA2MSB,
  ELFMAG,
  EV_CURRENT,
} from "./constants.ts";
import { u32 } from "./_fields.ts";

/** A decoded ELF header. Field comments give the ELF name. */
export interface ElfHeader {
  /** 32 or 64, from `e_ident[EI_CLASS]`. */
  elfClass: 32 | 64;
  /** Byte order, from `e_ident[EI_DATA]`. */
  littleEndian: boolean;
  /** `e_ident`: all 16 bytes (a copy). */
  ident: Uint8Array<ArrayBuffer>;
  /** `e_type` (4 = ET_CORE). */
  type: number;
  /** `e_machine` (62 = EM_X86_64). */
  machine: number;
  /** `e_version`. */
  version: number;
  /** `e_entry`. */
  entry: bigint;
  /** `e_phoff`: file offset of the program header table. */
  phdrFileOffset: number;
  /** `e_shoff`: file offset of the section header table, 0 when there is none. */
  shdrFileOffset: number;
  /** `e_flags`. */
  flags: number;
  /** `e_ehsize` as stored (QEMU >= 7.2 stores 8; readers ignore it). */
  ehdrByteLength: number;
  /** `e_phentsize`. */
  phdrEntrySize: number;
  /** `e_phnum` as stored (0xffff = PN_XNUM: the real count is in section header 0). */
  phdrCount: number;
  /** `e_shentsize`. */
  shdrEntrySize: number;
  /** `e_shnum` as stored. */
  shdrCount: number;
  /** `e_shstrndx` as stored. */
  shstrIndex: number;
}

/**
 * Size of the ELF header for a class: 64 for ELF64, 52 for ELF32.
 *
 * @param elfClass 32 or 64.
 * @returns The header size in bytes.
 *
 * @example
 * ```ts
 * import { ehdrSize } from "@vmem-dump/vmem-dump/elf";
 * console.log(ehdrSize(64)); // 64
 * ```
 */
export function ehdrSize(elfClass: 32 | 64): number {
  return elfClass === 64 ? EHDR64_SIZE : EHDR32_SIZE;
}

/**
 * Decode `e_ident` far enough to know class and byte order. Checks the
 * magic, class, data encoding and `EI_VERSION`.
 *
 * @param bytes At least the first 16 bytes of the file.
 * @returns Class and byte order.
 * @throws {FormatError} for a bad magic, class, encoding or version.
 * @throws {UnexpectedEofError} when fewer than 16 bytes are given.
 *
 * @example
 * ```ts
 * import { readIdent } from "@vmem-dump/vmem-dump/elf";
 * const ident = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
 * console.log(readIdent(ident)); // { elfClass: 64, littleEndian: true }
 * ```
 */
export function readIdent(bytes: Uint8Array): { elfClass: 32 | 64; littleEndian: boolean } {
  if (bytes.byteLength < EI_NIDENT) {
    throw new UnexpectedEofError(
      `Cannot read ELF identification: input ended after ${bytes.byteLength} of 16 bytes`,
      "elf",
      bytes.byteLength,
    );
  }
  for (let i = 0; i < ELFMAG.byteLength; i++) {
    if (bytes[i] !== ELFMAG[i]) {
      throw new FormatError("Cannot read ELF file: bad magic, not an ELF file", {
        format: "elf",
        code: "bad-magic",
        offset: 0,
      });
    }
  }
  const cls = bytes[EI_CLASS];
  if (cls !== ELFCLASS32 && cls !== ELFCLASS64) {
    throw new FormatError(`Cannot read ELF header: unknown class ${cls}`, {
      format: "elf",
      code: "bad-header",
      offset: EI_CLASS,
    });
  }
  const data = bytes[EI_DATA];
  if (data !== ELFDATA2LSB && data !== ELFDATA2MSB) {
    throw new FormatError(`Cannot read ELF header: unknown data encoding ${data}`, {
      format: "elf",
      code: "bad-header",
      offset: EI_DATA,
    });
  }
  if (bytes[EI_VERSION] !== EV_CURRENT) {
    throw new FormatError(`Cannot read ELF header: unknown ident version ${bytes[EI_VERSION]}`, {
      format: "elf",
      code: "bad-version",
      offset: EI_VERSION,
    });
  }
  return { elfClass: cls === ELFCLASS64 ? 64 : 32, littleEndian: data === ELFDATA2LSB };
}

/**
 * Decode an ELF header (either class, either byte order) from the first
 * bytes of a file. Only `e_ident` is validated here; field semantics are
 * checked by the core reader.
 *
 * @param bytes The first 52 (ELF32) or 64 (ELF64) bytes of the file, or more.
 * @returns The decoded header.
 * @throws {FormatError} for a bad `e_ident` or a 64-bit offset above 2^53.
 * @throws {UnexpectedEofError} when `bytes` is shorter than the header.
 *
 * @example Decode a header we wrote
 * ```ts
 * import { readEhdr, writeEhdr, type ElfHeader } from "@vmem-dump/vmem-dump/elf";
 * const ident = new Uint8Array(16);
 * ident.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
 * const ehdr: ElfHeader = {
 *   elfClass: 64, littleEndian: true, ident, type: 4, machine: 62, version: 1, entry: 0n,
 *   phdrFileOffset: 64, shdrFileOffset: 0, flags: 0, ehdrByteLength: 64, phdrEntrySize: 56,
 *   phdrCount: 1, shdrEntrySize: 0, shdrCount: 0, shstrIndex: 0,
 * };
 * const bytes = new Uint8Array(64);
 * writeEhdr(new DataView(bytes.buffer), 0, ehdr);
 * console.log(readEhdr(bytes).machine); // 62
 * ```
 */
export function readEhdr(bytes: Uint8Array): ElfHeader {
  const { elfClass, littleEndian: le } = readIdent(bytes);
  const size = ehdrSize(elfClass);
  if (bytes.byteLength < size) {
    throw new UnexpectedEofError(
      `Cannot read ELF header: input ended after ${bytes.byteLength} of ${size} bytes`,
      "elf",
      bytes.byteLength,
    );
  }
  const v = viewOf(bytes);
  const ident = bytes.slice(0, EI_NIDENT);
  if (elfClass === 64) {
    return {
      elfClass,
      littleEndian: le,
      ident,
      type: v.getUint16(16, le), // e_type: 2 bytes at 16
      machine: v.getUint16(18, le), // e_machine: 2 bytes at 18
      version: v.getUint32(20, le), // e_version: 4 bytes at 20
      entry: v.getBigUint64(24, le), // e_entry: 8 bytes at 24
      phdrFileOffset: getSafeU64(v, 32, le, { format: "elf", offset: 32 }), // e_phoff: 8 at 32
      shdrFileOffset: getSafeU64(v, 40, le, { format: "elf", offset: 40 }), // e_shoff: 8 at 40
      flags: v.getUint32(48, le), // e_flags: 4 bytes at 48
      ehdrByteLength: v.getUint16(52, le), // e_ehsize: 2 bytes at 52
      phdrEntrySize: v.getUint16(54, le), // e_phentsize: 2 bytes at 54
      phdrCount: v.getUint16(56, le), // e_phnum: 2 bytes at 56
      shdrEntrySize: v.getUint16(58, le), // e_shentsize: 2 bytes at 58
      shdrCount: v.getUint16(60, le), // e_shnum: 2 bytes at 60
      shstrIndex: v.getUint16(62, le), // e_shstrndx: 2 bytes at 62
    };
  }
  return {
    elfClass,
    littleEndian: le,
    ident,
    type: v.getUint16(16, le), // e_type: 2 bytes at 16
    machine: v.getUint16(18, le), // e_machine: 2 bytes at 18
    version: v.getUint32(20, le), // e_version: 4 bytes at 20
    entry: BigInt(v.getUint32(24, le)), // e_entry: 4 bytes at 24
    phdrFileOffset: v.getUint32(28, le), // e_phoff: 4 bytes at 28
    shdrFileOffset: v.getUint32(32, le), // e_shoff: 4 bytes at 32
    flags: v.getUint32(36, le), // e_flags: 4 bytes at 36
    ehdrByteLength: v.getUint16(40, le), // e_ehsize: 2 bytes at 40
    phdrEntrySize: v.getUint16(42, le), // e_phentsize: 2 bytes at 42
    phdrCount: v.getUint16(44, le), // e_phnum: 2 bytes at 44
    shdrEntrySize: v.getUint16(46, le), // e_shentsize: 2 bytes at 46
    shdrCount: v.getUint16(48, le), // e_shnum: 2 bytes at 48
    shstrIndex: v.getUint16(50, le), // e_shstrndx: 2 bytes at 50
  };
}

/**
 * Encode an ELF header at `at` in `view`, in the class and byte order the
 * header names. `ident` is written as given except class and data, which
 * follow `elfClass` and `littleEndian`.
 *
 * @param view Destination.
 * @param at Offset in `view`.
 * @param value The header.
 * @throws {RangeError} when a field does not fit its width.
 *
 * @example
 * ```ts
 * import { readEhdr, writeEhdr } from "@vmem-dump/vmem-dump/elf";
 * const src = new Uint8Array(52);
 * src.set([0x7f, 0x45, 0x4c, 0x46, 1, 2, 1]);
 * const ehdr = readEhdr(src);
 * const out = new Uint8Array(52);
 * writeEhdr(new DataView(out.buffer), 0, { ...ehdr, machine: 3 });
 * console.log(out[19]); // 3 (big-endian e_machine)
 * ```
 */
export function writeEhdr(view: DataView, at: number, value: ElfHeader): void {
  const le = value.littleEndian;
  for (let i = 0; i < EI_NIDENT; i++) view.setUint8(at + i, value.ident[i] ?? 0);
  for (let i = 0; i < ELFMAG.byteLength; i++) view.setUint8(at + i, ELFMAG[i]!);
  view.setUint8(at + EI_CLASS, value.elfClass === 64 ? ELFCLASS64 : ELFCLASS32);
  view.setUint8(at + EI_DATA, le ? ELFDATA2LSB : ELFDATA2MSB);
  view.setUint16(at + 16, value.type, le);
  view.setUint16(at + 18, value.machine, le);
  view.setUint32(at + 20, value.version, le);
  if (value.elfClass === 64) {
    view.setBigUint64(at + 24, value.entry, le);
    setU64(view, at + 32, value.phdrFileOffset, le);
    setU64(view, at + 40, value.shdrFileOffset, le);
    view.setUint32(at + 48, value.flags, le);
    view.setUint16(at + 52, value.ehdrByteLength, le);
    view.setUint16(at + 54, value.phdrEntrySize, le);
    view.setUint16(at + 56, value.phdrCount, le);
    view.setUint16(at + 58, value.shdrEntrySize, le);
    view.setUint16(at + 60, value.shdrCount, le);
    view.setUint16(at + 62, value.shstrIndex, le);
  } else {
    view.setUint32(at + 24, u32(value.entry, "e_entry"), le);
    view.setUint32(at + 28, u32(value.phdrFileOffset, "e_phoff"), le);
    view.setUint32(at + 32, u32(value.shdrFileOffset, "e_shoff"), le);
    view.setUint32(at + 36, value.flags, le);
    view.setUint16(at + 40, value.ehdrByteLength, le);
    view.setUint16(at + 42, value.phdrEntrySize, le);
    view.setUint16(at + 44, value.phdrCount, le);
    view.setUint16(at + 46, value.shdrEntrySize, le);
    view.setUint16(at + 48, value.shdrCount, le);
    view.setUint16(at + 50, value.shstrIndex, le);
  }
}
