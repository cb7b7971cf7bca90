/**
 * Strip pages out of a kdump-compressed file without recompressing: the
 * pfns of excluded guest-physical ranges are cleared in both bitmaps, their
 * descriptors and data are left out, and every kept page's stored bytes are
 * copied as they are. Headers, notes (or a replacement), VMCOREINFO, erase
 * information and the split range are carried over; a file of a split dump
 * keeps the set's 2nd bitmap outside its own range (minus the removed pfns).
 *
 * @module
 */

import { type GpaRange, mergeGpaRanges } from "../vmem/ranges.ts";
import type { KdumpFile } from "./reader.ts";
import { type KdumpSink, KdumpWriter, type KdumpWriteResult } from "./writer.ts";
import { readAt } from "../io/positional.ts";

/** Options for {@linkcode stripKdump}. */
export interface StripKdumpOptions {
  /** Guest-physical ranges to remove. */
  exclude: readonly GpaRange[];
  /** Notes area to write instead of the input's. */
  notes?: Uint8Array;
  /** Called with pfns processed so far. */
  onProgress?: (pfns: number) => void;
  /** Awaited after the last page, before the headers and notes are written (notes may change in place). */
  beforeFinish?: () => Promise<void>;
}

/** What {@linkcode stripKdump} did. */
export interface StripKdumpReport extends KdumpWriteResult {
  /** Pages of the input (descriptors). */
  inputPageCount: number;
  /** Pages removed from the 2nd bitmap (they had data). */
  removedPages: number;
  /** Pages cleared from the 1st bitmap. */
  removedPresentPages: number;
  /** Bytes of stored page data removed. */
  removedDataByteLength: number;
  /** The removed memory: excluded ranges clipped to pages the input had in its 1st bitmap. */
  removed: GpaRange[];
}

/**
 * Write `dump` without the pages of `exclude`.
 *
 * @param dump The input (left open).
 * @param sink Where the output goes.
 * @param options Ranges to remove and a notes override.
 * @returns What was removed and written.
 * @throws {FormatError} for corrupt input (descriptors, data offsets).
 *
 * @example
 * ```ts ignore
 * import { readKdump, stripKdump } from "@vmem-dump/vmem-dump/kdump";
 * using dump = await readKdump("vmcore");
 * await stripKdump(dump, sink, { exclude: [{ gpa: 0x140000000, byteLength: 0x8000000 }] });
 * ```
 */
export async function stripKdump(
  dump: KdumpFile,
  sink: KdumpSink,
  options: StripKdumpOptions,
): Promise<StripKdumpReport> {
  const B = dump.blockSize;
  const maxMapnr = dump.maxMapnr;
  // Excluded pfn runs (only whole pages: unplugged blocks are page-aligned; a
  // partial page is kept).
  const runs: Array<[number, number]> = [];
  for (const r of mergeGpaRanges(options.exclude)) {
    const first = Math.ceil(r.gpa / B);
    const end = Math.min(maxMapnr, Math.floor((r.gpa + r.byteLength) / B));
    if (first < end) runs.push([first, end]);
  }
  const present = dump.present.copyBytes();
  // A split file carries the whole set's 2nd bitmap: the bits of the other
  // files' pages are kept (minus the removed pfns), so the set stays one dump.
  const setDumpable = dump.subHeader.split !== 0 ? dump.dumpable.copyBytes() : undefined;
  let removedPresentPages = 0;
  let removedPages = 0;
  const removed: GpaRange[] = [];
  for (const [first, end] of runs) {
    let runStart = -1;
    for (let pfn = first; pfn < end; pfn++) {
      const had = dump.isPresent(pfn);
      if (had) {
        present[pfn >>> 3]! &= ~(1 << (pfn & 7));
        if (setDumpable) setDumpable[pfn >>> 3]! &= ~(1 << (pfn & 7));
        removedPresentPages++;
        if (dump.isDumpable(pfn)) removedPages++;
        if (runStart < 0) runStart = pfn;
      }
      if ((!had || pfn === end - 1) && runStart >= 0) {
        const stop = had ? pfn + 1 : pfn;
        removed.push({ gpa: runStart * B, byteLength: (stop - runStart) * B });
        runStart = -1;
      }
    }
  }
  const excluded = (pfn: number) => {
    let lo = 0;
    let hi = runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (runs[mid]![1] <= pfn) lo = mid + 1;
      else hi = mid;
    }
    return lo < runs.length && runs[lo]![0] <= pfn;
  };
  const sub = dump.subHeader;
  const eraseinfo = sub.sizeEraseinfo > 0
    ? await readAt(
      dump.reader,
      { fileOffset: sub.offsetEraseinfo, byteLength: sub.sizeEraseinfo },
      {
        format: "kdump",
        what: "erase information",
      },
    )
    : undefined;
  const h = dump.header;
  const writer = new KdumpWriter(sink, {
    wordSize: h.wordSize,
    littleEndian: h.littleEndian,
    blockSize: B,
    maxMapnr,
    present,
    maxPageCount: dump.pageCount - removedPages,
    utsname: h.utsname,
    status: h.status,
    nrCpus: h.nrCpus,
    currentCpu: h.currentCpu,
    timestampSeconds: h.timestampSeconds,
    timestampMicroseconds: h.timestampMicroseconds,
    physBase: sub.physBase,
    dumpLevel: sub.dumpLevel,
    notes: options.notes ?? dump.notes,
    ...(dump.vmcoreinfo !== undefined
      ? { vmcoreinfo: new TextEncoder().encode(dump.vmcoreinfo) }
      : {}),
    // VMCOREINFO inside the notes stays there (the notes before it are kept as they are).
    ...(sub.sizeVmcoreinfo > 0 && sub.offsetVmcoreinfo >= sub.offsetNote &&
        sub.offsetVmcoreinfo + sub.sizeVmcoreinfo <= sub.offsetNote + sub.sizeNote
      ? { vmcoreinfoInNotes: sub.offsetVmcoreinfo - sub.offsetNote }
      : {}),
    ...(eraseinfo !== undefined ? { eraseinfo } : {}),
    ...(setDumpable !== undefined
      ? { split: { startPfn: sub.startPfn, endPfn: sub.endPfn, dumpable: setDumpable } }
      : {}),
  });
  let removedDataByteLength = 0;
  for await (const batch of dump.iteratePages(0, maxMapnr, { raw: true })) {
    for (const p of batch) {
      if (excluded(p.pfn)) {
        removedDataByteLength += p.desc.byteLength;
        continue;
      }
      writer.addSharedPage(p.pfn, p.data, p.desc.flags, p.desc.fileOffset);
      if (writer.needsDrain) await writer.drain();
    }
    await writer.drain();
    options.onProgress?.(batch.at(-1)!.pfn);
  }
  await options.beforeFinish?.();
  const result = await writer.finish();
  return {
    ...result,
    inputPageCount: dump.pageCount,
    removedPages,
    removedPresentPages,
    removedDataByteLength,
    removed,
  };
}
