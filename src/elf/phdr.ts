/**
 * Program headers (Elf32_Phdr / Elf64_Phdr). Values are kept lossless as
 * `bigint` so that sentinels such as an all-ones `p_offset` survive; the core
 * reader derives checked `number` views for PT_LOAD segments.
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
import { PHDR32_SIZE, PHDR64_SIZE } from "./constants.ts";

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

/** Fields of a program header, by {@linkcode ElfPhdr} key. */
export type PhdrField = keyof ElfPhdr;

/** `Elf64_Phdr`. */
export const PHDR64: WireLayout<PhdrField> = wireLayout("Elf64_Phdr", PHDR64_SIZE, {
  type: ["p_type", 0, 4],
  flags: ["p_flags", 4, 4],
  fileOffset: ["p_offset", 8, 8],
  vaddr: ["p_vaddr", 16, 8],
  paddr: ["p_paddr", 24, 8],
  fileByteLength: ["p_filesz", 32, 8],
  memByteLength: ["p_memsz", 40, 8],
  align: ["p_align", 48, 8],
});

/** `Elf32_Phdr` (`p_flags` moves to 24). */
export const PHDR32: WireLayout<PhdrField> = wireLayout("Elf32_Phdr", PHDR32_SIZE, {
  type: ["p_type", 0, 4],
  fileOffset: ["p_offset", 4, 4],
  vaddr: ["p_vaddr", 8, 4],
  paddr: ["p_paddr", 12, 4],
  fileByteLength: ["p_filesz", 16, 4],
  memByteLength: ["p_memsz", 20, 4],
  flags: ["p_flags", 24, 4],
  align: ["p_align", 28, 4],
});

const PHDR_FIELDS: readonly PhdrField[] = [
  "type",
  "flags",
  "fileOffset",
  "vaddr",
  "paddr",
  "fileByteLength",
  "memByteLength",
  "align",
];

/**
 * The program header layout of a class.
 *
 * @param elfClass 32 or 64.
 * @returns {@linkcode PHDR64} or {@linkcode PHDR32}.
 *
 * @example
 * ```ts
 * import { phdrLayout } from "./phdr.ts";
 * console.log(phdrLayout(64).fields.paddr.offset); // 24
 * ```
 */
export function phdrLayout(elfClass: 32 | 64): WireLayout<PhdrField> {
  return elfClass === 64 ? PHDR64 : PHDR32;
}

function readWithLayout(
  layout: WireLayout<PhdrField>,
  view: DataView,
  at: number,
  le: boolean,
): ElfPhdr {
  const f = layout.fields;
  return {
    type: getWireUint(view, at, f.type, le),
    flags: getWireUint(view, at, f.flags, le),
    fileOffset: getWireBigUint(view, at, f.fileOffset, le),
    vaddr: getWireBigUint(view, at, f.vaddr, le),
    paddr: getWireBigUint(view, at, f.paddr, le),
    fileByteLength: getWireBigUint(view, at, f.fileByteLength, le),
    memByteLength: getWireBigUint(view, at, f.memByteLength, le),
    align: getWireBigUint(view, at, f.align, le),
  };
}

function writeWithLayout(
  layout: WireLayout<PhdrField>,
  view: DataView,
  at: number,
  le: boolean,
  value: ElfPhdr,
): void {
  for (const key of PHDR_FIELDS) setWireUint(view, at, layout.fields[key], value[key], le);
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
  return phdrLayout(elfClass).byteLength;
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
 * import { readPhdr64, writePhdr64 } from "./phdr.ts";
 * const v = new DataView(new ArrayBuffer(56));
 * writePhdr64(v, 0, true, {
 *   type: 1, flags: 0, fileOffset: 0x1000n, vaddr: 0n, paddr: 0n,
 *   fileByteLength: 0x2000n, memByteLength: 0x2000n, align: 0n,
 * });
 * console.log(readPhdr64(v, 0, true).fileOffset); // 4096n
 * ```
 */
export function readPhdr64(view: DataView, at: number, littleEndian: boolean): ElfPhdr {
  return readWithLayout(PHDR64, view, at, littleEndian);
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
 * import { writePhdr64 } from "./phdr.ts";
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
  writeWithLayout(PHDR64, view, at, littleEndian, value);
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
 * import { readPhdr32, writePhdr32 } from "./phdr.ts";
 * const v = new DataView(new ArrayBuffer(32));
 * writePhdr32(v, 0, true, {
 *   type: 1, flags: 4, fileOffset: 0x100n, vaddr: 0x1000n, paddr: 0x1000n,
 *   fileByteLength: 0x20n, memByteLength: 0x20n, align: 0n,
 * });
 * console.log(readPhdr32(v, 0, true).flags); // 4
 * ```
 */
export function readPhdr32(view: DataView, at: number, littleEndian: boolean): ElfPhdr {
  return readWithLayout(PHDR32, view, at, littleEndian);
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
 * import { writePhdr32 } from "./phdr.ts";
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
  writeWithLayout(PHDR32, view, at, littleEndian, value);
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
  return readWithLayout(phdrLayout(elfClass), view, at, littleEndian);
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
  writeWithLayout(phdrLayout(elfClass), view, at, littleEndian, value);
}
