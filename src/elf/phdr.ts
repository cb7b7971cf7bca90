/**
 * Program headers (Elf32_Phdr / Elf64_Phdr). Values are kept lossless as
 * `bigint` so that sentinels such as an all-ones `p_offset` survive; the core
 * reader derives checked `number` views for PT_LOAD segments.
 *
 * @module
 */

import { PHDR32_SIZE, PHDR64_SIZE } from "./constants.ts";
import { u32 } from "./_fields.ts";

/** One program header, lossless. Field comments give the ELF name. */
export interface ElfPhdr {
  /** `p_type` (1 = PT_LOAD, 4 = PT_NOTE). */
  type: number;
  /** `p_flags` (PF_R | PF_W | PF_X). */
  flags: number;
  /** `p_offset`: where the segment's bytes start in the file. */
  fileOffset: bigint;
  /** `p_vaddr`: virtual address (QEMU non-paging dumps: equal to `paddr`). */
  vaddr: bigint;
  /** `p_paddr`: guest-physical address. */
  paddr: bigint;
  /** `p_filesz`: bytes present in the file. */
  fileByteLength: bigint;
  /** `p_memsz`: bytes of memory described (more than `fileByteLength` = zero-fill tail). */
  memByteLength: bigint;
  /** `p_align`. */
  align: bigint;
}

/**
 * Size of one program header for a class: 56 for ELF64, 32 for ELF32.
 *
 * @param elfClass 32 or 64.
 * @returns The entry size in bytes.
 *
 * @example
 * ```ts
 * import { phdrSize } from "@vmem-dump/vmem-dump/elf";
 * console.log(phdrSize(32)); // 32
 * ```
 */
export function phdrSize(elfClass: 32 | 64): number {
  return elfClass === 64 ? PHDR64_SIZE : PHDR32_SIZE;
}

/**
 * Decode an Elf64_Phdr at `at`.
 *
 * @param view Source.
 * @param at Offset in `view`.
 * @param littleEndian Byte order of the file.
 * @returns The header.
 *
 * @example
 * ```ts
 * import { readPhdr64, writePhdr64 } from "@vmem-dump/vmem-dump/elf";
 * const v = new DataView(new ArrayBuffer(56));
 * writePhdr64(v, 0, true, {
 *   type: 1, flags: 0, fileOffset: 0x1000n, vaddr: 0n, paddr: 0n,
 *   fileByteLength: 0x2000n, memByteLength: 0x2000n, align: 0n,
 * });
 * console.log(readPhdr64(v, 0, true).fileOffset); // 4096n
 * ```
 */
export function readPhdr64(view: DataView, at: number, littleEndian: boolean): ElfPhdr {
  const le = littleEndian;
  return {
    type: view.getUint32(at, le), // p_type: 4 bytes at 0
    flags: view.getUint32(at + 4, le), // p_flags: 4 bytes at 4
    fileOffset: view.getBigUint64(at + 8, le), // p_offset: 8 bytes at 8
    vaddr: view.getBigUint64(at + 16, le), // p_vaddr: 8 bytes at 16
    paddr: view.getBigUint64(at + 24, le), // p_paddr: 8 bytes at 24
    fileByteLength: view.getBigUint64(at + 32, le), // p_filesz: 8 bytes at 32
    memByteLength: view.getBigUint64(at + 40, le), // p_memsz: 8 bytes at 40
    align: view.getBigUint64(at + 48, le), // p_align: 8 bytes at 48
  };
}

/**
 * Encode an Elf64_Phdr at `at`.
 *
 * @param view Destination.
 * @param at Offset in `view`.
 * @param littleEndian Byte order of the file.
 * @param value The header.
 *
 * @example
 * ```ts
 * import { writePhdr64 } from "@vmem-dump/vmem-dump/elf";
 * const v = new DataView(new ArrayBuffer(56));
 * writePhdr64(v, 0, false, {
 *   type: 4, flags: 0, fileOffset: 0x100n, vaddr: 0n, paddr: 0n,
 *   fileByteLength: 0x20n, memByteLength: 0x20n, align: 0n,
 * });
 * console.log(v.getUint32(0)); // 4
 * ```
 */
export function writePhdr64(
  view: DataView,
  at: number,
  littleEndian: boolean,
  value: ElfPhdr,
): void {
  const le = littleEndian;
  view.setUint32(at, value.type, le);
  view.setUint32(at + 4, value.flags, le);
  view.setBigUint64(at + 8, value.fileOffset, le);
  view.setBigUint64(at + 16, value.vaddr, le);
  view.setBigUint64(at + 24, value.paddr, le);
  view.setBigUint64(at + 32, value.fileByteLength, le);
  view.setBigUint64(at + 40, value.memByteLength, le);
  view.setBigUint64(at + 48, value.align, le);
}

/**
 * Decode an Elf32_Phdr at `at` (note that `p_flags` sits at 24 in ELF32).
 *
 * @param view Source.
 * @param at Offset in `view`.
 * @param littleEndian Byte order of the file.
 * @returns The header, widened to `bigint`.
 *
 * @example
 * ```ts
 * import { readPhdr32, writePhdr32 } from "@vmem-dump/vmem-dump/elf";
 * const v = new DataView(new ArrayBuffer(32));
 * writePhdr32(v, 0, true, {
 *   type: 1, flags: 4, fileOffset: 0x100n, vaddr: 0x1000n, paddr: 0x1000n,
 *   fileByteLength: 0x20n, memByteLength: 0x20n, align: 0n,
 * });
 * console.log(readPhdr32(v, 0, true).flags); // 4
 * ```
 */
export function readPhdr32(view: DataView, at: number, littleEndian: boolean): ElfPhdr {
  const le = littleEndian;
  return {
    type: view.getUint32(at, le), // p_type: 4 bytes at 0
    fileOffset: BigInt(view.getUint32(at + 4, le)), // p_offset: 4 bytes at 4
    vaddr: BigInt(view.getUint32(at + 8, le)), // p_vaddr: 4 bytes at 8
    paddr: BigInt(view.getUint32(at + 12, le)), // p_paddr: 4 bytes at 12
    fileByteLength: BigInt(view.getUint32(at + 16, le)), // p_filesz: 4 bytes at 16
    memByteLength: BigInt(view.getUint32(at + 20, le)), // p_memsz: 4 bytes at 20
    flags: view.getUint32(at + 24, le), // p_flags: 4 bytes at 24
    align: BigInt(view.getUint32(at + 28, le)), // p_align: 4 bytes at 28
  };
}

/**
 * Encode an Elf32_Phdr at `at`.
 *
 * @param view Destination.
 * @param at Offset in `view`.
 * @param littleEndian Byte order of the file.
 * @param value The header; every field must fit 32 bits.
 * @throws {RangeError} when a field does not fit 32 bits.
 *
 * @example
 * ```ts
 * import { writePhdr32 } from "@vmem-dump/vmem-dump/elf";
 * const v = new DataView(new ArrayBuffer(32));
 * writePhdr32(v, 0, true, {
 *   type: 1, flags: 0, fileOffset: 0x74n, vaddr: 0n, paddr: 0n,
 *   fileByteLength: 0x1000n, memByteLength: 0x1000n, align: 0n,
 * });
 * console.log(v.getUint32(4, true)); // 116
 * ```
 */
export function writePhdr32(
  view: DataView,
  at: number,
  littleEndian: boolean,
  value: ElfPhdr,
): void {
  const le = littleEndian;
  view.setUint32(at, value.type, le);
  view.setUint32(at + 4, u32(value.fileOffset, "p_offset"), le);
  view.setUint32(at + 8, u32(value.vaddr, "p_vaddr"), le);
  view.setUint32(at + 12, u32(value.paddr, "p_paddr"), le);
  view.setUint32(at + 16, u32(value.fileByteLength, "p_filesz"), le);
  view.setUint32(at + 20, u32(value.memByteLength, "p_memsz"), le);
  view.setUint32(at + 24, value.flags, le);
  view.setUint32(at + 28, u32(value.align, "p_align"), le);
}

/**
 * Decode a program header of either class.
 *
 * @param view Source.
 * @param at Offset in `view`.
 * @param elfClass 32 or 64.
 * @param littleEndian Byte order of the file.
 * @returns The header.
 *
 * @example
 * ```ts
 * import { readPhdr } from "@vmem-dump/vmem-dump/elf";
 * const v = new DataView(new ArrayBuffer(56));
 * console.log(readPhdr(v, 0, 64, true).type); // 0
 * ```
 */
export function readPhdr(
  view: DataView,
  at: number,
  elfClass: 32 | 64,
  littleEndian: boolean,
): ElfPhdr {
  return elfClass === 64 ? readPhdr64(view, at, littleEndian) : readPhdr32(view, at, littleEndian);
}

/**
 * Encode a program header of either class.
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
 * import { writePhdr } from "@vmem-dump/vmem-dump/elf";
 * const v = new DataView(new ArrayBuffer(32));
 * writePhdr(v, 0, 32, true, {
 *   type: 4, flags: 0, fileOffset: 0n, vaddr: 0n, paddr: 0n,
 *   fileByteLength: 0n, memByteLength: 0n, align: 0n,
 * });
 * ```
 */
export function writePhdr(
  view: DataView,
  at: number,
  elfClass: 32 | 64,
  littleEndian: boolean,
  value: ElfPhdr,
): void {
  if (elfClass === 64) writePhdr64(view, at, littleEndian, value);
  else writePhdr32(view, at, littleEndian, value);
}
