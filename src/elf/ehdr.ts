/**
 * The ELF file header (Elf32_Ehdr / Elf64_Ehdr) of a core dump: decode with
 * class and byte order taken from `e_ident`, encode in the same shape.
 *
 * @module
 */

import { FormatError, UnexpectedEofError } from "../errors.ts";
import { viewOf } from "../io/endian.ts";
import {
  getWireBigUint,
  getWireUint,
  setWireUint,
  type WireField,
  type WireLayout,
  wireLayout,
} from "../io/wire.ts";
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

/** Integer fields of the ELF header, by {@linkcode ElfHeader} key. */
export type EhdrField =
  | "type"
  | "machine"
  | "version"
  | "entry"
  | "phdrFileOffset"
  | "shdrFileOffset"
  | "flags"
  | "ehdrByteLength"
  | "phdrEntrySize"
  | "phdrCount"
  | "shdrEntrySize"
  | "shdrCount"
  | "shstrIndex";

const EHDR_INTEGER_FIELDS: readonly EhdrField[] = [
  "type",
  "machine",
  "version",
  "entry",
  "phdrFileOffset",
  "shdrFileOffset",
  "flags",
  "ehdrByteLength",
  "phdrEntrySize",
  "phdrCount",
  "shdrEntrySize",
  "shdrCount",
  "shstrIndex",
];

/** `Elf64_Ehdr` after `e_ident` (16 bytes at 0). */
export const EHDR64: WireLayout<EhdrField> = wireLayout("Elf64_Ehdr", EHDR64_SIZE, {
  type: ["e_type", 16, 2],
  machine: ["e_machine", 18, 2],
  version: ["e_version", 20, 4],
  entry: ["e_entry", 24, 8],
  phdrFileOffset: ["e_phoff", 32, 8],
  shdrFileOffset: ["e_shoff", 40, 8],
  flags: ["e_flags", 48, 4],
  ehdrByteLength: ["e_ehsize", 52, 2],
  phdrEntrySize: ["e_phentsize", 54, 2],
  phdrCount: ["e_phnum", 56, 2],
  shdrEntrySize: ["e_shentsize", 58, 2],
  shdrCount: ["e_shnum", 60, 2],
  shstrIndex: ["e_shstrndx", 62, 2],
});

/** `Elf32_Ehdr` after `e_ident` (16 bytes at 0). */
export const EHDR32: WireLayout<EhdrField> = wireLayout("Elf32_Ehdr", EHDR32_SIZE, {
  type: ["e_type", 16, 2],
  machine: ["e_machine", 18, 2],
  version: ["e_version", 20, 4],
  entry: ["e_entry", 24, 4],
  phdrFileOffset: ["e_phoff", 28, 4],
  shdrFileOffset: ["e_shoff", 32, 4],
  flags: ["e_flags", 36, 4],
  ehdrByteLength: ["e_ehsize", 40, 2],
  phdrEntrySize: ["e_phentsize", 42, 2],
  phdrCount: ["e_phnum", 44, 2],
  shdrEntrySize: ["e_shentsize", 46, 2],
  shdrCount: ["e_shnum", 48, 2],
  shstrIndex: ["e_shstrndx", 50, 2],
});

/**
 * The ELF header layout of a class.
 *
 * @param elfClass 32 or 64.
 * @returns {@linkcode EHDR64} or {@linkcode EHDR32}.
 *
 * @example
 * ```ts
 * import { ehdrLayout } from "./ehdr.ts";
 * console.log(ehdrLayout(32).fields.phdrCount.offset); // 44
 * ```
 */
export function ehdrLayout(elfClass: 32 | 64): WireLayout<EhdrField> {
  return elfClass === 64 ? EHDR64 : EHDR32;
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
  return ehdrLayout(elfClass).byteLength;
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
 * import { type ElfHeader, readEhdr, writeEhdr } from "@vmem-dump/vmem-dump/elf";
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
  const layout = ehdrLayout(elfClass);
  if (bytes.byteLength < layout.byteLength) {
    throw new UnexpectedEofError(
      `Cannot read ELF header: input ended after ${bytes.byteLength} of ${layout.byteLength} bytes`,
      "elf",
      bytes.byteLength,
    );
  }
  const v = viewOf(bytes);
  const f = layout.fields;
  const where = { format: "elf", fileOffset: 0 } as const;
  const n = (field: WireField) => getWireUint(v, 0, field, le, where);
  return {
    elfClass,
    littleEndian: le,
    ident: bytes.slice(0, EI_NIDENT),
    type: n(f.type),
    machine: n(f.machine),
    version: n(f.version),
    entry: getWireBigUint(v, 0, f.entry, le),
    phdrFileOffset: n(f.phdrFileOffset),
    shdrFileOffset: n(f.shdrFileOffset),
    flags: n(f.flags),
    ehdrByteLength: n(f.ehdrByteLength),
    phdrEntrySize: n(f.phdrEntrySize),
    phdrCount: n(f.phdrCount),
    shdrEntrySize: n(f.shdrEntrySize),
    shdrCount: n(f.shdrCount),
    shstrIndex: n(f.shstrIndex),
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
  const f = ehdrLayout(value.elfClass).fields;
  for (const key of EHDR_INTEGER_FIELDS) setWireUint(view, at, f[key], value[key], le);
}
