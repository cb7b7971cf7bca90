/**
 * `inspect` of a kdump-compressed dump: header and sub-header, the page
 * compression, the dump level (what makedumpfile `-d` left out), the pages
 * present (1st bitmap) and dumped (2nd bitmap) by gpa range, the notes, the
 * VMCOREINFO summary and our provenance note, as one JSON-ready object.
 *
 * @module
 */

import { parseNotes } from "../elf/note.ts";
import {
  DUMP_DH_COMPRESSED_INCOMPLETE,
  DUMP_DH_COMPRESSED_LZO,
  DUMP_DH_COMPRESSED_SNAPPY,
  DUMP_DH_COMPRESSED_ZLIB,
  DUMP_DH_COMPRESSED_ZSTD,
  DUMP_DH_EXCLUDED_VMEMMAP,
  type KdumpUtsname,
} from "../kdump/header.ts";
import type { KdumpBitmap } from "../kdump/bitmap.ts";
import type { KdumpFile } from "../kdump/reader.ts";
import type { GpaRange } from "../vmem/ranges.ts";
import { describeNotes, type ElfNoteDescription } from "./describe_elf.ts";
import { findProvenance, type Provenance } from "./provenance.ts";
import { summarizeVmcoreinfo, type VmcoreinfoSummary } from "./vmcoreinfo_summary.ts";

/** makedumpfile `-d` bits and what each leaves out. */
const DUMP_LEVEL_BITS: ReadonlyArray<[number, string]> = [
  [1, "zero pages"],
  [2, "cache pages without private data"],
  [4, "cache pages with private data"],
  [8, "user process pages"],
  [16, "free pages"],
];

/** What `inspect` says about a kdump-compressed dump. */
export interface KdumpDumpDescription {
  /** Always `kdump`. */
  format: "kdump";
  /** `raw` (a plain file) or `flattened` (makedumpfile -F, QEMU kdump to a pipe). */
  container: "raw" | "flattened";
  /** Size of the file as stored (flattened: of the flattened file). */
  byteLength: number;
  /** `disk_dump_header` fields. */
  header: {
    signature: string;
    headerVersion: number;
    utsname: KdumpUtsname;
    timestampSeconds: number;
    status: number;
    /** `block_size`: the page size of the dump. */
    pageSize: number;
    subHdrSize: number;
    bitmapBlocks: number;
    nrCpus: number;
    currentCpu: number;
    wordSize: number;
    littleEndian: boolean;
  };
  /**
   * The page codec named by `status`: `zlib`, `lzo`, `snappy`, `zstd`, or
   * `none` (pages stored as they are; a page may also be stored as is when
   * compression did not help).
   */
  compression: string;
  /** `status` says the dump was cut short (ENOSPC while dumping). */
  incomplete: boolean;
  /** `status` says the vmemmap was left out (makedumpfile -e). */
  excludedVmemmap: boolean;
  /** `kdump_sub_header` fields. */
  subHeader: {
    physBase: string;
    dumpLevel: number;
    split: boolean;
    startPfn: number;
    endPfn: number;
    offsetVmcoreinfo: number;
    sizeVmcoreinfo: number;
    offsetNote: number;
    sizeNote: number;
    offsetEraseinfo: number;
    sizeEraseinfo: number;
  };
  /**
   * The kinds of page makedumpfile `-d` filters at this dump level, in
   * words. In kdump files makedumpfile stores zero pages (`-d 1`) as
   * descriptors of one shared zero page, so they stay in the 2nd bitmap;
   * the page counts say what is really there.
   */
  dumpLevelExcludes: string[];
  /** Pfns covered by the bitmaps. */
  maxMapnr: number;
  /** Pages that exist (1st bitmap). */
  presentPages: number;
  /** Pages with data in this file (2nd bitmap; for a split file, inside its pfn range). */
  dumpedPages: number;
  /**
   * Pages that exist but were left out (filtered, zero, removed by strip):
   * 1st bitmap minus 2nd (for a split file, of the whole set).
   */
  excludedPages: number;
  /** Memory that exists, as gpa ranges (1st bitmap runs). */
  present: GpaRange[];
  /** Memory with data in this file (2nd bitmap runs; for a split file, inside its range). */
  dumped: GpaRange[];
  /** File offset of the page descriptors and of the page data. */
  descTableOffset: number;
  /** File offset where page data starts. */
  dataOffset: number;
  /** The notes of the notes area (offsets inside it). */
  notes: ElfNoteDescription[];
  /** The VMCOREINFO summary, or `null`. */
  vmcoreinfo: VmcoreinfoSummary | null;
  /** Our provenance note, or `null`. */
  provenance: Provenance | null;
}

function compressionName(status: number): string {
  if (status & DUMP_DH_COMPRESSED_ZLIB) return "zlib";
  if (status & DUMP_DH_COMPRESSED_LZO) return "lzo";
  if (status & DUMP_DH_COMPRESSED_SNAPPY) return "snappy";
  if (status & DUMP_DH_COMPRESSED_ZSTD) return "zstd";
  return "none";
}

function runs(bitmap: KdumpBitmap, from: number, end: number, blockSize: number): GpaRange[] {
  const out: GpaRange[] = [];
  bitmap.forEachRun(
    from,
    end,
    (pfn, n) => out.push({ gpa: pfn * blockSize, byteLength: n * blockSize }),
  );
  return out;
}

/**
 * Describe an opened kdump dump (reads nothing more: the bitmaps and notes
 * are in memory already).
 *
 * @param dump The dump.
 * @param fileByteLength Size of the file as stored (for a flattened file,
 *   the flattened size). @default {dump.byteLength}
 * @returns The description.
 * @throws {FormatError} when the notes area or our provenance note is not valid.
 *
 * @example
 * ```ts ignore
 * import { readKdump } from "@vmem-dump/vmem-dump/kdump";
 * import { describeKdumpDump } from "@vmem-dump/vmem-dump/dumps";
 * using dump = await readKdump("vmcore");
 * console.log(describeKdumpDump(dump).compression);
 * ```
 */
export function describeKdumpDump(
  dump: KdumpFile,
  fileByteLength: number = dump.byteLength,
): KdumpDumpDescription {
  const h = dump.header;
  const s = dump.subHeader;
  const notes = dump.notes.byteLength === 0
    ? []
    : parseNotes(dump.notes, s.offsetNote, h.littleEndian);
  const B = dump.blockSize;
  return {
    format: "kdump",
    container: dump.container,
    byteLength: fileByteLength,
    header: {
      signature: h.signature,
      headerVersion: h.headerVersion,
      utsname: h.utsname,
      timestampSeconds: h.timestampSeconds,
      status: h.status,
      pageSize: h.blockSize,
      subHdrSize: h.subHdrSize,
      bitmapBlocks: h.bitmapBlocks,
      nrCpus: h.nrCpus,
      currentCpu: h.currentCpu,
      wordSize: h.wordSize,
      littleEndian: h.littleEndian,
    },
    compression: compressionName(h.status),
    incomplete: (h.status & DUMP_DH_COMPRESSED_INCOMPLETE) !== 0,
    excludedVmemmap: (h.status & DUMP_DH_EXCLUDED_VMEMMAP) !== 0,
    subHeader: {
      physBase: `0x${s.physBase.toString(16)}`,
      dumpLevel: s.dumpLevel,
      split: s.split !== 0,
      startPfn: s.startPfn,
      endPfn: s.endPfn,
      offsetVmcoreinfo: s.offsetVmcoreinfo,
      sizeVmcoreinfo: s.sizeVmcoreinfo,
      offsetNote: s.offsetNote,
      sizeNote: s.sizeNote,
      offsetEraseinfo: s.offsetEraseinfo,
      sizeEraseinfo: s.sizeEraseinfo,
    },
    dumpLevelExcludes: DUMP_LEVEL_BITS.filter(([bit]) => (s.dumpLevel & bit) !== 0)
      .map(([, what]) => what),
    maxMapnr: dump.maxMapnr,
    presentPages: dump.present.count,
    dumpedPages: dump.pageCount,
    excludedPages: dump.present.count - dump.dumpable.count,
    present: runs(dump.present, 0, dump.maxMapnr, B),
    dumped: s.split !== 0
      ? runs(dump.dumpable, s.startPfn, Math.min(s.endPfn, dump.maxMapnr), B)
      : runs(dump.dumpable, 0, dump.maxMapnr, B),
    descTableOffset: dump.descTableOffset,
    dataOffset: dump.dataOffset,
    notes: describeNotes(notes),
    vmcoreinfo: dump.vmcoreinfo === undefined ? null : summarizeVmcoreinfo(dump.vmcoreinfo),
    provenance: findProvenance(notes) ?? null,
  };
}
