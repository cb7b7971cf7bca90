/**
 * Section headers (Elf32_Shdr / Elf64_Shdr). Core dumps use them only for
 * extended numbering (PN_XNUM: the real program header count sits in
 * section header 0's `sh_info`) and, in QEMU >= 7.2, for a `.shstrtab`.
 *
 * @module
 */

import {
  getWireBigUint,
  getWireUint,
  setWireUint,
  type WireLayout,
  wireLayout,
} from "../io/wire.ts";
import { SHDR32_SIZE, SHDR64_SIZE } from "./constants.ts";

/** One section header, lossless. Field comments give the ELF name. */
export interface ElfShdr {
  /** `sh_name`: offset of the name in the section name string table. */
  nameIndex: number;
  /** `sh_type` (0 = SHT_NULL, 3 = SHT_STRTAB). */
  type: number;
  /** `sh_flags`. */
  flags: bigint;
  /** `sh_addr`. */
  vaddr: bigint;
  /** `sh_offset`: file offset of the section's bytes. */
  fileOffset: bigint;
  /** `sh_size`: byte length (for section 0 with PN_XNUM-style escapes: the real e_shnum). */
  byteLength: bigint;
  /** `sh_link` (section 0: the real e_shstrndx when e_shstrndx = SHN_XINDEX). */
  link: number;
  /** `sh_info` (section 0: the real e_phnum when e_phnum = PN_XNUM). */
  info: number;
  /** `sh_addralign`. */
  addrAlign: bigint;
  /** `sh_entsize`. */
  entrySize: bigint;
}

/** Fields of a section header, by {@linkcode ElfShdr} key. */
export type ShdrField = keyof ElfShdr;

/** `Elf64_Shdr`. */
export const SHDR64: WireLayout<ShdrField> = wireLayout("Elf64_Shdr", SHDR64_SIZE, {
  nameIndex: ["sh_name", 0, 4],
  type: ["sh_type", 4, 4],
  flags: ["sh_flags", 8, 8],
  vaddr: ["sh_addr", 16, 8],
  fileOffset: ["sh_offset", 24, 8],
  byteLength: ["sh_size", 32, 8],
  link: ["sh_link", 40, 4],
  info: ["sh_info", 44, 4],
  addrAlign: ["sh_addralign", 48, 8],
  entrySize: ["sh_entsize", 56, 8],
});

/** `Elf32_Shdr`. */
export const SHDR32: WireLayout<ShdrField> = wireLayout("Elf32_Shdr", SHDR32_SIZE, {
  nameIndex: ["sh_name", 0, 4],
  type: ["sh_type", 4, 4],
  flags: ["sh_flags", 8, 4],
  vaddr: ["sh_addr", 12, 4],
  fileOffset: ["sh_offset", 16, 4],
  byteLength: ["sh_size", 20, 4],
  link: ["sh_link", 24, 4],
  info: ["sh_info", 28, 4],
  addrAlign: ["sh_addralign", 32, 4],
  entrySize: ["sh_entsize", 36, 4],
});

const SHDR_FIELDS: readonly ShdrField[] = [
  "nameIndex",
  "type",
  "flags",
  "vaddr",
  "fileOffset",
  "byteLength",
  "link",
  "info",
  "addrAlign",
  "entrySize",
];

/**
 * The section header layout of a class.
 *
 * @param elfClass 32 or 64.
 * @returns {@linkcode SHDR64} or {@linkcode SHDR32}.
 *
 * @example
 * ```ts
 * import { shdrLayout } from "./shdr.ts";
 * console.log(shdrLayout(32).fields.info.offset); // 28
 * ```
 */
export function shdrLayout(elfClass: 32 | 64): WireLayout<ShdrField> {
  return elfClass === 64 ? SHDR64 : SHDR32;
}

/**
 * Size of one section header for a class: 64 for ELF64, 40 for ELF32.
 *
 * @param elfClass 32 or 64.
 * @returns The entry size in bytes.
 *
 * @example
 * ```ts
 * import { shdrSize } from "@vmem-dump/vmem-dump/elf";
 * console.log(shdrSize(64)); // 64
 * ```
 */
export function shdrSize(elfClass: 32 | 64): number {
  return shdrLayout(elfClass).byteLength;
}

/**
 * A section header with every field zero (section 0, SHT_NULL).
 *
 * @returns A new header.
 *
 * @example Section 0 for extended numbering
 * ```ts
 * import { emptyShdr } from "./shdr.ts";
 * const zero = { ...emptyShdr(), info: 70001 }; // sh_info = real e_phnum
 * console.log(zero.type); // 0
 * ```
 */
export function emptyShdr(): ElfShdr {
  return {
    nameIndex: 0,
    type: 0,
    flags: 0n,
    vaddr: 0n,
    fileOffset: 0n,
    byteLength: 0n,
    link: 0,
    info: 0,
    addrAlign: 0n,
    entrySize: 0n,
  };
}

/**
 * Decode a section header of either class.
 *
 * @param view Source.
 * @param at Offset in `view`.
 * @param elfClass 32 or 64.
 * @param littleEndian Byte order of the file.
 * @returns The header.
 *
 * @example
 * ```ts
 * import { readShdr, writeShdr } from "@vmem-dump/vmem-dump/elf";
 * import { emptyShdr } from "./shdr.ts";
 * const v = new DataView(new ArrayBuffer(64));
 * writeShdr(v, 0, 64, true, { ...emptyShdr(), info: 70000 });
 * console.log(readShdr(v, 0, 64, true).info); // 70000
 * ```
 */
export function readShdr(
  view: DataView,
  at: number,
  elfClass: 32 | 64,
  littleEndian: boolean,
): ElfShdr {
  const le = littleEndian;
  const f = shdrLayout(elfClass).fields;
  return {
    nameIndex: getWireUint(view, at, f.nameIndex, le),
    type: getWireUint(view, at, f.type, le),
    flags: getWireBigUint(view, at, f.flags, le),
    vaddr: getWireBigUint(view, at, f.vaddr, le),
    fileOffset: getWireBigUint(view, at, f.fileOffset, le),
    byteLength: getWireBigUint(view, at, f.byteLength, le),
    link: getWireUint(view, at, f.link, le),
    info: getWireUint(view, at, f.info, le),
    addrAlign: getWireBigUint(view, at, f.addrAlign, le),
    entrySize: getWireBigUint(view, at, f.entrySize, le),
  };
}

/**
 * Encode a section header of either class.
 *
 * @param view Destination.
 * @param at Offset in `view`.
 * @param elfClass 32 or 64.
 * @param littleEndian Byte order of the file.
 * @param value The header.
 * @throws {RangeError} when an ELF32 field does not fit 32 bits.
 *
 * @example
 * ```ts
 * import { writeShdr } from "@vmem-dump/vmem-dump/elf";
 * import { emptyShdr } from "./shdr.ts";
 * const v = new DataView(new ArrayBuffer(40));
 * writeShdr(v, 0, 32, false, { ...emptyShdr(), info: 0x10000 });
 * console.log(v.getUint32(28)); // 65536
 * ```
 */
export function writeShdr(
  view: DataView,
  at: number,
  elfClass: 32 | 64,
  littleEndian: boolean,
  value: ElfShdr,
): void {
  const f = shdrLayout(elfClass).fields;
  for (const key of SHDR_FIELDS) setWireUint(view, at, f[key], value[key], littleEndian);
}
