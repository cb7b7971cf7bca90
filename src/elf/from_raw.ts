/**
 * Turns a raw image of guest-physical memory (QEMU `pmemsave`, a copy of a
 * memory-backend file) into an ELF core that holds only the ranges that are
 * not excluded: one PT_LOAD per kept run, `p_vaddr = p_paddr`, a PT_NOTE
 * first (empty, or the notes given), classic layout.
 *
 * @module
 */

import {
  type ChunkSink,
  copyRangesTo,
  openPositional,
  type PositionalReader,
} from "../io/positional.ts";
import { EI_NIDENT, ELFMAG, EM_X86_64, ET_CORE, EV_CURRENT } from "./constants.ts";
import { ehdrSize, type ElfHeader } from "./ehdr.ts";
import { type KeptSegment, normalizeGpaRanges } from "./rewrite.ts";
import type { GpaRange } from "../vmem/ranges.ts";
import { planElfCore, type PlannedLoad } from "./writer.ts";

/** Options for {@linkcode elfFromRawImage}. */
export interface ElfFromRawImageOptions {
  /** Guest-physical address of the image's first byte (`pmemsave` start). */
  baseGpa: number;
  /** Ranges to leave out (unplugged blocks). */
  exclude: readonly GpaRange[];
  /** `e_machine` of the output. @default {62} (EM_X86_64) */
  machine?: number;
  /** ELF class of the output. @default {64} */
  elfClass?: 32 | 64;
  /** Byte order of the output. @default {true} */
  littleEndian?: boolean;
  /** Page alignment of segment data. @default {4096} */
  pageAlign?: number;
  /** Size of each read and write. @default {4194304} */
  chunkSize?: number;
  /**
   * Called after each chunk with the input bytes read so far (of the
   * image's size; the excluded ranges are not read). @default {undefined}
   */
  onProgress?: (inputBytesRead: number) => void;
  /** The PT_NOTE contents (e.g. a provenance note). @default {empty} */
  notes?: Uint8Array;
}

/** What {@linkcode elfFromRawImage} wrote. */
export interface RawToElfReport {
  /** Input size. */
  inputByteLength: number;
  /** Output size. */
  outputByteLength: number;
  /** Output PT_LOADs. */
  kept: KeptSegment[];
  /** Ranges of the image left out, clipped to the image, ascending. */
  removed: GpaRange[];
  /** Total bytes left out. */
  removedByteLength: number;
}

/**
 * Write an ELF core holding the non-excluded parts of a raw memory image.
 *
 * @param input Path of the image or an open reader (left open).
 * @param output Output path (`-` = standard output; atomic for files) or a chunk sink.
 * @param options Base address, exclusions, ELF flavour.
 * @returns What was kept and left out.
 * @throws {RangeError} for a base address that does not fit the ELF class.
 *
 * @example Convert a pmemsave image of a virtio-mem region
 * ```ts ignore
 * import { elfFromRawImage } from "@vmem-dump/vmem-dump/elf";
 * const report = await elfFromRawImage("s2.vmem0.raw", "s2.vmem0.elf", {
 *   baseGpa: 0x100000000,
 *   exclude: [{ gpa: 0x101c00000, byteLength: 0x6400000 }, { gpa: 0x10c800000, byteLength: 0x3800000 }],
 * });
 * console.log(report.kept.length); // 2
 * ```
 */
export async function elfFromRawImage(
  input: string | PositionalReader,
  output: string | ChunkSink,
  options: ElfFromRawImageOptions,
): Promise<RawToElfReport> {
  const reader = typeof input === "string" ? await openPositional(input) : input;
  try {
    const elfClass = options.elfClass ?? 64;
    const base = options.baseGpa;
    const size = reader.byteLength;
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(base + size)) {
      throw new RangeError(
        `Cannot place the image at gpa ${base}: not a safe non-negative integer`,
      );
    }
    if (elfClass === 32 && base + size > 0x1_0000_0000) {
      throw new RangeError("Cannot write an ELF32 core for memory above 4 GiB");
    }
    const exclude = normalizeGpaRanges(options.exclude);
    const removed: GpaRange[] = [];
    const loads: PlannedLoad[] = [];
    const keep = (a: number, b: number) => {
      if (b <= a) return;
      loads.push({
        paddr: BigInt(a),
        vaddr: BigInt(a),
        flags: 0,
        align: 0n,
        memByteLength: b - a,
        fileByteLength: b - a,
        inputFileOffset: a - base,
      });
    };
    let cursor = base;
    const end = base + size;
    for (const x of exclude) {
      const xs = Math.max(x.gpa, base);
      const xe = Math.min(x.gpa + x.byteLength, end);
      if (xe <= xs) continue;
      keep(cursor, xs);
      removed.push({ gpa: xs, byteLength: xe - xs });
      cursor = xe;
    }
    keep(cursor, end);

    const ident = new Uint8Array(EI_NIDENT);
    ident.set(ELFMAG);
    const template: ElfHeader = {
      elfClass,
      littleEndian: options.littleEndian ?? true,
      ident,
      type: ET_CORE,
      machine: options.machine ?? EM_X86_64,
      version: EV_CURRENT,
      entry: 0n,
      phdrFileOffset: 0,
      shdrFileOffset: 0,
      flags: 0,
      ehdrByteLength: ehdrSize(elfClass),
      phdrEntrySize: 0,
      phdrCount: 0,
      shdrEntrySize: 0,
      shdrCount: 0,
      shstrIndex: 0,
    };
    ident[6] = EV_CURRENT;
    const plan = planElfCore(template, options.notes ?? new Uint8Array(0), loads, {
      pageAlign: options.pageAlign ?? 4096,
    });
    const copyOptions = {
      format: "raw" as const,
      ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
      ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
    };
    await copyRangesTo(reader, output, plan.steps, copyOptions);
    return {
      inputByteLength: size,
      outputByteLength: plan.byteLength,
      kept: plan.loads.map((l) => ({
        gpa: Number(l.phdr.paddr),
        vaddr: l.phdr.vaddr,
        byteLength: Number(l.phdr.memByteLength),
        fileByteLength: Number(l.phdr.fileByteLength),
        fileOffset: Number(l.phdr.fileOffset),
        inputFileOffset: l.inputFileOffset,
        inputSegmentIndex: -1,
      })),
      removed,
      removedByteLength: removed.reduce((n, r) => n + r.byteLength, 0),
    };
  } finally {
    if (typeof input === "string") reader.close();
  }
}
