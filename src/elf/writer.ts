/**
 * Lays out an ELF core in the classic shape every dump reader accepts and
 * produces a streaming copy plan for it: ELF header, program headers at
 * `e_phoff` = header size, one PT_NOTE first, PT_LOADs sorted by `p_paddr`,
 * section header 0 only for extended numbering, then the notes and the
 * segment data.
 *
 * The plan is computed from headers alone; segment bytes are copied from the
 * input in ascending input file offset, so a multi-GiB dump streams through
 * in fixed-size chunks.
 *
 * @module
 */

import type { CopyStep } from "../io/positional.ts";
import { PN_XNUM, PT_LOAD, PT_NOTE } from "./constants.ts";
import { ehdrSize, type ElfHeader, writeEhdr } from "./ehdr.ts";
import { type ElfPhdr, phdrSize, writePhdr } from "./phdr.ts";
import { emptyShdr, shdrSize, writeShdr } from "./shdr.ts";

/** One PT_LOAD to write, with the input bytes it takes its data from. */
export interface PlannedLoad {
  /** `p_paddr`. */
  paddr: bigint;
  /** `p_vaddr`. */
  vaddr: bigint;
  /** `p_flags`. */
  flags: number;
  /** `p_align`. */
  align: bigint;
  /** `p_memsz`. */
  memByteLength: number;
  /** `p_filesz`: how many bytes come from the input. */
  fileByteLength: number;
  /** Input file offset of those bytes (ignored when `fileByteLength` is 0). */
  inputFileOffset: number;
  /** `p_offset` to write when `fileByteLength` is 0. @default {0n} */
  emptyFileOffset?: bigint;
  /** Caller's tag, handed back in {@linkcode ElfPlan.loads}. @default {undefined} */
  tag?: unknown;
}

/** Options for {@linkcode planElfCore}. */
export interface PlanElfCoreOptions {
  /**
   * Keep each run of segment data at an output offset congruent to its
   * `p_paddr` modulo this value (so tools can mmap pages); 0 or 1 packs data
   * without padding as QEMU does. @default {4096}
   */
  pageAlign?: number;
  /** `p_align` of the PT_NOTE (0 or 4; drgn reads 8 as 8-byte note alignment). @default {0n} */
  noteAlign?: bigint;
}

/** A planned output file. */
export interface ElfPlan {
  /** ELF header + program headers (+ section header 0) + notes. */
  headers: Uint8Array<ArrayBuffer>;
  /** The output program headers, PT_NOTE first. */
  phdrs: ElfPhdr[];
  /** Output PT_LOADs in output order, each with its input range and the caller's tag. */
  loads: Array<{ phdr: ElfPhdr; inputFileOffset: number; tag: unknown }>;
  /** Copy plan: headers, padding and input ranges, in output order. */
  steps: CopyStep[];
  /** Size of the output file. */
  byteLength: number;
}

/**
 * Size of the headers of a classic-layout core with `loadCount` PT_LOADs and
 * one PT_NOTE: ELF header, program headers and, with 0xffff or more program
 * headers, section header 0.
 *
 * @param elfClass 32 or 64.
 * @param loadCount Number of PT_LOADs.
 * @returns Bytes before the notes.
 *
 * @example
 * ```ts
 * import { classicHeadersByteLength } from "@vmem-dump/vmem-dump/elf";
 * console.log(classicHeadersByteLength(64, 4)); // 64 + 5 * 56 = 344
 * ```
 */
export function classicHeadersByteLength(elfClass: 32 | 64, loadCount: number): number {
  const count = loadCount + 1;
  return ehdrSize(elfClass) + count * phdrSize(elfClass) +
    (count >= PN_XNUM ? shdrSize(elfClass) : 0);
}

/**
 * Plan an ELF core: header bytes and a copy plan that moves each PT_LOAD's
 * bytes from the input. Program headers are sorted by `p_paddr` (ties keep
 * their order); the data area follows input file order, and input ranges
 * that overlap (paging-mode aliases) are copied once and shared.
 *
 * `template` provides `e_ident`, `e_type`, `e_machine`, `e_version`,
 * `e_entry` and `e_flags`; the rest is computed (`e_ehsize` is always the
 * real header size, `e_phoff` follows the ELF header).
 *
 * @param template Header fields to keep (class and byte order included).
 * @param notes PT_NOTE bytes, copied verbatim (may be empty: an empty PT_NOTE is still written).
 * @param loads The PT_LOADs.
 * @param options Page alignment of the data and PT_NOTE alignment.
 * @returns The plan.
 * @throws {RangeError} for more than 2^32 - 1 program headers or ELF32 values that do not fit.
 *
 * @example Plan a one-segment core over 16 input bytes
 * ```ts
 * import { planElfCore, readEhdr } from "@vmem-dump/vmem-dump/elf";
 * const ident = new Uint8Array(64);
 * ident.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 62, 0, 1]);
 * const plan = planElfCore(readEhdr(ident), new Uint8Array(0), [{
 *   paddr: 0x1000n, vaddr: 0x1000n, flags: 0, align: 0n,
 *   memByteLength: 16, fileByteLength: 16, inputFileOffset: 0,
 * }]);
 * console.log(plan.phdrs[1]!.fileOffset); // 4096n
 * ```
 */
export function planElfCore(
  template: ElfHeader,
  notes: Uint8Array,
  loads: readonly PlannedLoad[],
  options: PlanElfCoreOptions = {},
): ElfPlan {
  const { elfClass, littleEndian: le } = template;
  const pageAlign = options.pageAlign ?? 4096;
  if (!Number.isSafeInteger(pageAlign) || pageAlign < 0) {
    throw new RangeError(`Cannot align segment data to ${pageAlign}: not a non-negative integer`);
  }
  const count = loads.length + 1;
  if (count > 0xffff_ffff) {
    throw new RangeError(`Cannot write ${count} program headers: at most 2^32 - 1`);
  }
  const ehSize = ehdrSize(elfClass);
  const phEnt = phdrSize(elfClass);
  const xnum = count >= PN_XNUM;
  const headersLength = classicHeadersByteLength(elfClass, loads.length);
  const notesEnd = headersLength + notes.byteLength;

  // Data extents: union of the input ranges, in input order.
  const backed = loads.map((l, i) => ({ l, i })).filter(({ l }) => l.fileByteLength > 0)
    .sort((a, b) => a.l.inputFileOffset - b.l.inputFileOffset || a.i - b.i);
  interface Extent {
    inputFileOffset: number;
    inputEnd: number;
    delta: bigint; // inputFileOffset - paddr of the first load
    paddr: bigint;
    outputFileOffset: number;
  }
  const extents: Extent[] = [];
  const extentOf = new Array<Extent>(loads.length);
  for (const { l, i } of backed) {
    const end = l.inputFileOffset + l.fileByteLength;
    const delta = BigInt(l.inputFileOffset) - l.paddr;
    const last = extents.at(-1);
    if (
      last !== undefined &&
      (l.inputFileOffset < last.inputEnd ||
        (l.inputFileOffset === last.inputEnd && delta === last.delta))
    ) {
      last.inputEnd = Math.max(last.inputEnd, end);
    } else {
      extents.push({
        inputFileOffset: l.inputFileOffset,
        inputEnd: end,
        delta,
        paddr: l.paddr,
        outputFileOffset: 0,
      });
    }
    extentOf[i] = extents.at(-1)!;
  }

  const steps: CopyStep[] = [];
  let cursor = notesEnd;
  for (const e of extents) {
    let pad = 0;
    if (pageAlign > 1) {
      const want = Number(((e.paddr % BigInt(pageAlign)) + BigInt(pageAlign)) % BigInt(pageAlign));
      pad = (((want - cursor) % pageAlign) + pageAlign) % pageAlign;
    }
    if (pad > 0) steps.push({ kind: "zero", byteLength: pad });
    cursor += pad;
    e.outputFileOffset = cursor;
    steps.push({
      kind: "copy",
      fileOffset: e.inputFileOffset,
      byteLength: e.inputEnd - e.inputFileOffset,
    });
    cursor += e.inputEnd - e.inputFileOffset;
  }

  const order = loads.map((l, i) => ({ l, i })).sort((a, b) =>
    a.l.paddr < b.l.paddr ? -1 : a.l.paddr > b.l.paddr ? 1 : a.i - b.i
  );
  const outLoads = order.map(({ l, i }) => {
    const e = extentOf[i];
    const fileOffset = e === undefined
      ? (l.emptyFileOffset ?? 0n)
      : BigInt(e.outputFileOffset + (l.inputFileOffset - e.inputFileOffset));
    const phdr: ElfPhdr = {
      type: PT_LOAD,
      flags: l.flags,
      fileOffset,
      vaddr: l.vaddr,
      paddr: l.paddr,
      fileByteLength: BigInt(l.fileByteLength),
      memByteLength: BigInt(l.memByteLength),
      align: l.align,
    };
    return { phdr, inputFileOffset: l.inputFileOffset, tag: l.tag };
  });
  const notePhdr: ElfPhdr = {
    type: PT_NOTE,
    flags: 0,
    fileOffset: BigInt(headersLength),
    vaddr: 0n,
    paddr: 0n,
    fileByteLength: BigInt(notes.byteLength),
    memByteLength: BigInt(notes.byteLength),
    align: options.noteAlign ?? 0n,
  };
  const phdrs = [notePhdr, ...outLoads.map((l) => l.phdr)];

  const headers = new Uint8Array(notesEnd);
  const view = new DataView(headers.buffer);
  const ehdr: ElfHeader = {
    ...template,
    phdrFileOffset: ehSize,
    shdrFileOffset: xnum ? ehSize + count * phEnt : 0,
    ehdrByteLength: ehSize,
    phdrEntrySize: phEnt,
    phdrCount: xnum ? PN_XNUM : count,
    shdrEntrySize: xnum ? shdrSize(elfClass) : 0,
    shdrCount: xnum ? 1 : 0,
    shstrIndex: 0,
  };
  writeEhdr(view, 0, ehdr);
  for (let i = 0; i < phdrs.length; i++) {
    writePhdr(view, ehSize + i * phEnt, elfClass, le, phdrs[i]!);
  }
  if (xnum) writeShdr(view, ehSize + count * phEnt, elfClass, le, { ...emptyShdr(), info: count });
  headers.set(notes, headersLength);
  steps.unshift({ kind: "bytes", data: headers });
  return { headers, phdrs, loads: outLoads, steps, byteLength: cursor };
}
