/**
 * Rewrites an ELF core so it no longer holds given guest-physical ranges
 * (unplugged virtio-mem blocks): every PT_LOAD that overlaps an excluded
 * range is split into the parts outside it. Excluded memory becomes a gap
 * between PT_LOADs (readers report it as absent), never a zero-fill tail.
 *
 * The output has the classic layout that crash, gdb, makedumpfile, drgn and
 * libkdumpfile all accept (see {@linkcode planElfCore}); notes are copied
 * byte for byte; PT_LOAD `p_flags` are kept and `p_align` is written as 0.
 * Stripping an already stripped file reproduces it exactly.
 *
 * @module
 */

import { FormatError, UnsupportedFeatureError } from "../errors.ts";
import type { AtomicOutputOptions } from "../io/file.ts";
import {
  type ChunkSink,
  copyRangesTo,
  type CopyStep,
  NonZeroPageCounter,
  type PositionalReader,
} from "../io/positional.ts";
import { PT_LOAD, PT_NOTE, PT_NULL, U64_ALL_ONES } from "./constants.ts";
import { parseNotes } from "./note.ts";
import { phdrLayout, phdrSize } from "./phdr.ts";
import {
  concatNoteSegments,
  type ElfCore,
  type ElfCoreLayout,
  type LoadSegment,
  readElfCore,
} from "./reader.ts";
import { type ElfPlan, planElfCore, type PlannedLoad } from "./writer.ts";
import { type GpaRange, mergeGpaRanges } from "../vmem/ranges.ts";

/** Options for {@linkcode planStrip} and {@linkcode stripElf}. */
export interface StripOptions {
  /** Guest-physical ranges to remove (unplugged blocks). Sorted and merged here if needed. */
  exclude: readonly GpaRange[];
  /** Page alignment of output segment data, see {@linkcode planElfCore}. @default {4096} */
  pageAlign?: number;
  /** Size of each read and write. @default {4194304} */
  chunkSize?: number;
  /**
   * Read the file bytes of removed ranges and count the non-zero pages in
   * them (data a guest left in unplugged memory). Costs a read of those bytes.
   * @default {false}
   */
  countNonZero?: boolean;
  /** Page size for `countNonZero`. @default {4096} */
  pageSize?: number;
  /** Called with input bytes read so far. @default {undefined} */
  onProgress?: (inputBytesRead: number) => void;
  /** Notes to write instead of the input's PT_NOTE bytes (e.g. with a provenance note added). */
  notes?: Uint8Array;
  /** With a path as output: the output policy (inputs, `force`); the input is always protected. @default {{}} */
  outputPolicy?: AtomicOutputOptions;
}

/** A part of a PT_LOAD that the rewrite removed. */
export interface RemovedRange {
  /** Guest-physical start. */
  gpa: number;
  /** Bytes of memory removed (`p_memsz` share). */
  byteLength: number;
  /** Bytes of file data removed (the rest was a zero-fill tail). */
  fileByteLength: number;
  /** Program header index of the input segment. */
  segmentIndex: number;
  /** Input file offset of the removed file bytes (when `fileByteLength` > 0). */
  inputFileOffset: number | undefined;
  /** Non-zero pages among the removed file bytes; only with `countNonZero`. */
  nonZeroPages?: number;
}

/** An output PT_LOAD. */
export interface KeptSegment {
  /** Guest-physical start (`p_paddr`), `undefined` for a non-physical segment. */
  gpa: number | undefined;
  /** `p_vaddr`. */
  vaddr: bigint;
  /** `p_memsz`. */
  byteLength: number;
  /** `p_filesz`. */
  fileByteLength: number;
  /** Output `p_offset`. */
  fileOffset: number;
  /** Input file offset of the bytes. */
  inputFileOffset: number;
  /** Program header index of the input segment it came from. */
  inputSegmentIndex: number;
}

/** What a strip did. */
export interface StripReport {
  /** Input file size. */
  inputByteLength: number;
  /** Output file size. */
  outputByteLength: number;
  /** Input PT_LOAD count. */
  inputLoadCount: number;
  /** Output PT_LOAD count. */
  outputLoadCount: number;
  /** Removed parts, ascending gpa. */
  removed: RemovedRange[];
  /** Total memory removed. */
  removedByteLength: number;
  /** Total file bytes removed. */
  removedFileByteLength: number;
  /** Output PT_LOADs, in output order (ascending gpa). */
  kept: KeptSegment[];
  /** Notes copied: count and bytes. */
  notes: { count: number; byteLength: number };
  /** Layout of the input. */
  inputLayout: ElfCoreLayout;
  /** Output program headers use extended numbering (PN_XNUM). */
  extendedNumbering: boolean;
}

/** A computed strip: the output layout plus the report (before any byte moved). */
export interface StripPlan {
  /** Output layout and copy steps. */
  plan: ElfPlan;
  /** Report; `nonZeroPages` is filled in while copying. */
  report: StripReport;
}

/**
 * Sort ranges by gpa and merge overlapping or touching ones; empty ranges go.
 *
 * @param ranges Any ranges.
 * @returns Sorted, disjoint, non-touching ranges.
 * @throws {RangeError} for negative or unsafe values.
 *
 * @example
 * ```ts
 * import { normalizeGpaRanges } from "@vmem-dump/vmem-dump/elf";
 * console.log(normalizeGpaRanges([{ gpa: 8, byteLength: 8 }, { gpa: 0, byteLength: 8 }]));
 * // [{ gpa: 0, byteLength: 16 }]
 * ```
 */
export function normalizeGpaRanges(ranges: readonly GpaRange[]): GpaRange[] {
  for (const r of ranges) {
    if (
      !Number.isSafeInteger(r.gpa) || !Number.isSafeInteger(r.byteLength) || r.gpa < 0 ||
      r.byteLength < 0 || !Number.isSafeInteger(r.gpa + r.byteLength)
    ) {
      throw new RangeError(
        `Cannot use gpa range ${r.gpa}+${r.byteLength}: not safe non-negative integers`,
      );
    }
  }
  return mergeGpaRanges(ranges);
}

/** Index of the first range whose end is past `gpa`. */
function firstEndingAfter(ranges: readonly GpaRange[], gpa: number): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const r = ranges[mid]!;
    if (r.gpa + r.byteLength <= gpa) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A PT_LOAD whose end lies past 2^53 has no gpa and is kept whole, but crash
 * and drgn read its file bytes from `p_paddr` on: when its memory
 * (`p_paddr` + `p_memsz`, unwrapped) reaches an excluded range, the output
 * would show them at an unplugged gpa. No dumper writes such a header.
 */
function refuseUncut(core: ElfCore, s: LoadSegment, exclude: readonly GpaRange[]): void {
  const start = s.phdr.paddr;
  const end = start + BigInt(s.byteLength);
  const hit = exclude.find((x) => BigInt(x.gpa) < end && start < BigInt(x.gpa + x.byteLength));
  if (hit === undefined) return;
  const { ehdr } = core;
  throw new FormatError(
    `Cannot strip PT_LOAD ${s.index}: p_paddr 0x${start.toString(16)} + p_memsz 0x${
      s.byteLength.toString(16)
    } runs past 2^53 and covers the excluded gpa 0x${
      Math.max(hit.gpa, Number(start)).toString(16)
    } (crash and drgn read its bytes there)`,
    {
      format: "elf",
      code: "too-large",
      offset: ehdr.phdrFileOffset + s.index * ehdr.phdrEntrySize +
        phdrLayout(ehdr.elfClass).fields.memByteLength.offset,
    },
  );
}

/**
 * Compute the output of a strip from the input headers alone: output
 * program headers, copy plan and report.
 *
 * @param core The parsed input.
 * @param options Ranges to exclude and layout options.
 * @returns The plan and report.
 * @throws {UnsupportedFeatureError} for program header types other than PT_NULL, PT_NOTE, PT_LOAD.
 * @throws {FormatError} `too-large` for a PT_LOAD without a gpa (its end past 2^53) whose
 *   memory reaches an excluded range: crash and drgn show its bytes there, and it cannot be cut.
 *
 * @example
 * ```ts ignore
 * import { planStrip, readElfCore } from "@vmem-dump/vmem-dump/elf";
 * using core = await readElfCore("dump.elf");
 * const { report } = planStrip(core, { exclude: [{ gpa: 0x101c00000, byteLength: 0x6400000 }] });
 * console.log(report.removedByteLength);
 * ```
 */
export function planStrip(core: ElfCore, options: StripOptions): StripPlan {
  const exclude = normalizeGpaRanges(options.exclude);
  const { ehdr } = core;
  const phEnt = phdrSize(ehdr.elfClass);
  for (let i = 0; i < core.phdrs.length; i++) {
    const t = core.phdrs[i]!.type;
    if (t !== PT_LOAD && t !== PT_NOTE && t !== PT_NULL) {
      throw new UnsupportedFeatureError(
        `Cannot rewrite ELF core: program header ${i} has type 0x${
          t.toString(16)
        }; only PT_LOAD and PT_NOTE are supported`,
        "elf",
        ehdr.phdrFileOffset + i * phEnt,
      );
    }
  }
  const addressMask = ehdr.elfClass === 64 ? U64_ALL_ONES : 0xffff_ffffn;
  const removed: RemovedRange[] = [];
  const planned: PlannedLoad[] = [];

  const keep = (s: LoadSegment, a: number, b: number) => {
    // a, b: offsets inside the segment's memory.
    const p = s.phdr;
    const v = p.vaddr;
    const noVirtual = v === addressMask || (v === 0n && p.paddr !== 0n);
    const fileByteLength = Math.max(0, Math.min(b, s.fileByteLength) - a);
    planned.push({
      paddr: p.paddr + BigInt(a),
      vaddr: noVirtual ? v : (v + BigInt(a)) & addressMask,
      flags: p.flags,
      // crash takes an ELF with page-aligned data and a non-zero p_align for the old
      // netdump layout (spec dumps.md §3.2): always 0, as QEMU and Linux write it.
      align: 0n,
      memByteLength: b - a,
      fileByteLength,
      inputFileOffset: fileByteLength > 0 ? s.fileOffset! + a : 0,
      emptyFileOffset: s.fileByteLength === 0 ? p.fileOffset : 0n,
      tag: s.index,
    });
  };

  for (const s of core.loads) {
    if (s.gpa === undefined && s.byteLength > 0) refuseUncut(core, s, exclude);
    if (s.gpa === undefined || s.byteLength === 0) {
      keep(s, 0, s.byteLength);
      continue;
    }
    const start = s.gpa;
    const end = s.gpa + s.byteLength;
    let cursor = start;
    for (let i = firstEndingAfter(exclude, start); i < exclude.length; i++) {
      const x = exclude[i]!;
      if (x.gpa >= end) break;
      const xs = Math.max(x.gpa, start);
      const xe = Math.min(x.gpa + x.byteLength, end);
      if (xs > cursor) keep(s, cursor - start, xs - start);
      const fileEnd = start + s.fileByteLength;
      const fileByteLength = Math.max(0, Math.min(xe, fileEnd) - xs);
      removed.push({
        gpa: xs,
        byteLength: xe - xs,
        fileByteLength,
        segmentIndex: s.index,
        inputFileOffset: fileByteLength > 0 ? s.fileOffset! + (xs - start) : undefined,
      });
      cursor = xe;
    }
    if (cursor < end) keep(s, cursor - start, end - start);
  }

  const notes = options.notes ?? concatNoteSegments(core);
  const noteAlign = core.noteSegments.length > 0
    ? (core.phdrs[core.noteSegments[0]!.index]!.align === 4n ? 4n : 0n)
    : 0n;
  const plan = planElfCore(ehdr, notes, planned, {
    pageAlign: options.pageAlign ?? 4096,
    noteAlign,
  });
  removed.sort((a, b) => a.gpa - b.gpa || a.segmentIndex - b.segmentIndex);
  const report: StripReport = {
    inputByteLength: core.byteLength,
    outputByteLength: plan.byteLength,
    inputLoadCount: core.loads.length,
    outputLoadCount: plan.loads.length,
    removed,
    removedByteLength: removed.reduce((n, r) => n + r.byteLength, 0),
    removedFileByteLength: removed.reduce((n, r) => n + r.fileByteLength, 0),
    kept: plan.loads.map((l) => ({
      gpa: l.phdr.paddr + l.phdr.memByteLength <= BigInt(Number.MAX_SAFE_INTEGER)
        ? Number(l.phdr.paddr)
        : undefined,
      vaddr: l.phdr.vaddr,
      byteLength: Number(l.phdr.memByteLength),
      fileByteLength: Number(l.phdr.fileByteLength),
      fileOffset: l.phdr.fileByteLength > 0n ? Number(l.phdr.fileOffset) : 0,
      inputFileOffset: l.inputFileOffset,
      inputSegmentIndex: l.tag as number,
    })),
    notes: {
      count: options.notes ? parseNotes(notes, 0, ehdr.littleEndian).length : core.notes.length,
      byteLength: notes.byteLength,
    },
    inputLayout: core.layout,
    extendedNumbering: plan.phdrs.length >= 0xffff,
  };
  return { plan, report };
}

/**
 * Check a plan by parsing its header bytes with our own reader, as a file of
 * the planned size: every output PT_LOAD must be inside the file, sorted,
 * and clear of the excluded ranges.
 */
async function verifyPlan(
  plan: ElfPlan,
  exclude: readonly GpaRange[],
  notesCount: number,
): Promise<void> {
  const headers = plan.headers;
  const virtual: PositionalReader = {
    byteLength: plan.byteLength,
    readInto(fileOffset, into) {
      into.fill(0);
      if (fileOffset < headers.byteLength) {
        into.set(headers.subarray(fileOffset, fileOffset + into.byteLength));
      }
      return Promise.resolve(Math.max(0, Math.min(into.byteLength, plan.byteLength - fileOffset)));
    },
    close() {},
  };
  const out = await readElfCore(virtual);
  const fail = (what: string) => {
    throw new Error(`Internal error: the planned ELF output is wrong: ${what}`);
  };
  if (out.phdrs[0]?.type !== PT_NOTE) fail("PT_NOTE is not the first program header");
  if (out.notes.length !== notesCount) fail("notes changed");
  let last = -1n;
  for (const s of out.loads) {
    if (s.phdr.paddr < last) fail("PT_LOADs are not sorted");
    last = s.phdr.paddr;
    if (s.gpa === undefined) continue;
    const i = firstEndingAfter(exclude, s.gpa);
    const x = exclude[i];
    if (x !== undefined && x.gpa < s.gpa + s.byteLength) {
      fail(`PT_LOAD ${s.index} overlaps an excluded range`);
    }
  }
}

/**
 * Strip guest-physical ranges out of an ELF core dump, streaming.
 *
 * Reads the input headers, computes the output from them
 * ({@linkcode planStrip}), checks the planned headers by re-reading them,
 * then copies segment data in ascending input offset in `chunkSize` chunks.
 * With a path as output the file appears only when complete (temporary file
 * + rename); on any error nothing is left behind.
 *
 * @param input Input path, open reader, or parsed core (left open).
 * @param output Output path (`-` = standard output) or a chunk sink.
 * @param options Ranges to exclude and layout options.
 * @returns What was removed and kept.
 * @throws {FormatError} for an invalid input (nothing is written).
 * @throws {UnsupportedFeatureError} for program header types we cannot carry over.
 *
 * @example Remove the unplugged blocks of a virtio-mem device
 * ```ts ignore
 * import { stripElf } from "@vmem-dump/vmem-dump/elf";
 * const report = await stripElf("in.elf", "out.elf", {
 *   exclude: [{ gpa: 0x101c00000, byteLength: 0x6400000 }, { gpa: 0x10c800000, byteLength: 0x3800000 }],
 * });
 * console.log(report.removedFileByteLength);
 * ```
 */
export async function stripElf(
  input: string | PositionalReader | ElfCore,
  output: string | ChunkSink,
  options: StripOptions,
): Promise<StripReport> {
  const core = isCore(input) ? input : await readElfCore(input);
  try {
    const exclude = normalizeGpaRanges(options.exclude);
    const { plan, report } = planStrip(core, { ...options, exclude });
    await verifyPlan(plan, exclude, report.notes.count);

    let steps: CopyStep[] = plan.steps;
    const counters: Array<{ r: RemovedRange; c: NonZeroPageCounter }> = [];
    if (options.countNonZero) {
      const pageSize = options.pageSize ?? 4096;
      const inspect: CopyStep[] = [];
      for (const r of report.removed) {
        if (r.fileByteLength === 0) continue;
        const c = new NonZeroPageCounter(r.gpa - r.inputFileOffset!, pageSize);
        counters.push({ r, c });
        inspect.push({
          kind: "inspect",
          fileOffset: r.inputFileOffset!,
          byteLength: r.fileByteLength,
          onData: (d, o) => c.add(d, o),
        });
      }
      steps = interleaveByInputOffset(plan.steps, inspect);
    }

    const copyOptions = {
      format: "elf" as const,
      ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
      ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
      ...(options.outputPolicy !== undefined ? { outputPolicy: options.outputPolicy } : {}),
    };
    await copyRangesTo(core.reader, output, steps, copyOptions);
    for (const { r, c } of counters) r.nonZeroPages = c.count;
    return report;
  } finally {
    if (!isCore(input)) core.close();
  }
}

function isCore(x: unknown): x is ElfCore {
  return typeof x === "object" && x !== null && "phdrs" in x && "loads" in x && "reader" in x;
}

/** Merge inspect steps into the copy plan so reads stay in ascending input order. */
function interleaveByInputOffset(steps: CopyStep[], inspect: CopyStep[]): CopyStep[] {
  const key = (s: CopyStep) => (s.kind === "copy" || s.kind === "inspect" ? s.fileOffset : -1);
  const out: CopyStep[] = [];
  let j = 0;
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]!;
    if (s.kind === "copy") {
      // Inspect steps write nothing, so they can go anywhere in the output order.
      while (j < inspect.length && key(inspect[j]!) < s.fileOffset) out.push(inspect[j++]!);
    }
    out.push(s);
  }
  while (j < inspect.length) out.push(inspect[j++]!);
  return out;
}
