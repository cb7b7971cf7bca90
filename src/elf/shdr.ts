/**
 * Section headers (Elf32_Shdr / Elf64_Shdr). Core dumps use them only for
 * extended numbering (PN_XNUM: the real program header count sits in
 * section header 0's `sh_info`) and, in QEMU >= 7.2, for a `.shstrtab`.
 *
 * @module
 */

import { SHDR32_SIZE, SHDR64_SIZE } from "./constants.ts";
import { u32 } from "./_fields.ts";

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
  return elfClass === 64 ? SHDR64_SIZE : SHDR32_SIZE;
}

/**
 * A section header with every field zero (section 0, SHT_NULL).
 *
 * @returns A new header.
 *
 * @example Section 0 for extended numbering
 * ```ts
 * import { emptyShdr } from "@vmem-dump/vmem-dump/elf";
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
 * import { readShdr, writeShdr, emptyShdr } from "@vmem-dump/vmem-dump/elf";
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
  if (elfClass === 64) {
    return {
      nameIndex: view.getUint32(at, le), // sh_name: 4 bytes at 0
      type: view.getUint32(at + 4, le), // sh_type: 4 bytes at 4
      flags: view.getBigUint64(at + 8, le), // sh_flags: 8 bytes at 8
      vaddr: view.getBigUint64(at + 16, le), // sh_addr: 8 bytes at 16
      fileOffset: view.getBigUint64(at + 24, le), // sh_offset: 8 bytes at 24
      byteLength: view.getBigUint64(at + 32, le), // sh_size: 8 bytes at 32
      link: view.getUint32(at + 40, le), // sh_link: 4 bytes at 40
      info: view.getUint32(at + 44, le), // sh_info: 4 bytes at 44
      addrAlign: view.getBigUint64(at + 48, le), // sh_addralign: 8 bytes at 48
      entrySize: view.getBigUint64(at + 56, le), // sh_entsize: 8 bytes at 56
    };
  }
  return {
    nameIndex: view.getUint32(at, le), // sh_name: 4 bytes at 0
    type: view.getUint32(at + 4, le), // sh_type: 4 bytes at 4
    flags: BigInt(view.getUint32(at + 8, le)), // sh_flags: 4 bytes at 8
    vaddr: BigInt(view.getUint32(at + 12, le)), // sh_addr: 4 bytes at 12
    fileOffset: BigInt(view.getUint32(at + 16, le)), // sh_offset: 4 bytes at 16
    byteLength: BigInt(view.getUint32(at + 20, le)), // sh_size: 4 bytes at 20
    link: view.getUint32(at + 24, le), // sh_link: 4 bytes at 24
    info: view.getUint32(at + 28, le), // sh_info: 4 bytes at 28
    addrAlign: BigInt(view.getUint32(at + 32, le)), // sh_addralign: 4 bytes at 32
    entrySize: BigInt(view.getUint32(at + 36, le)), // sh_entsize: 4 bytes at 36
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
 * import { writeShdr, emptyShdr } from "@vmem-dump/vmem-dump/elf";
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
  const le = littleEndian;
  view.setUint32(at, value.nameIndex, le);
  view.setUint32(at + 4, value.type, le);
  if (elfClass === 64) {
    view.setBigUint64(at + 8, value.flags, le);
    view.setBigUint64(at + 16, value.vaddr, le);
    view.setBigUint64(at + 24, value.fileOffset, le);
    view.setBigUint64(at + 32, value.byteLength, le);
    view.setUint32(at + 40, value.link, le);
    view.setUint32(at + 44, value.info, le);
    view.setBigUint64(at + 48, value.addrAlign, le);
    view.setBigUint64(at + 56, value.entrySize, le);
  } else {
    view.setUint32(at + 8, u32(value.flags, "sh_flags"), le);
    view.setUint32(at + 12, u32(value.vaddr, "sh_addr"), le);
    view.setUint32(at + 16, u32(value.fileOffset, "sh_offset"), le);
    view.setUint32(at + 20, u32(value.byteLength, "sh_size"), le);
    view.setUint32(at + 24, value.link, le);
    view.setUint32(at + 28, value.info, le);
    view.setUint32(at + 32, u32(value.addrAlign, "sh_addralign"), le);
    view.setUint32(at + 36, u32(value.entrySize, "sh_entsize"), le);
  }
}
