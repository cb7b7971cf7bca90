/**
 * Scan a kdump-compressed dump (QEMU `kdump-*`, makedumpfile `-c/-l/-p`)
 * for non-zero data in unplugged virtio-mem blocks.
 *
 * QEMU >= 6.2 leaves unplugged memory out of its dumps (holes in both
 * bitmaps), so its dumps have nothing to find; makedumpfile output of an
 * older QEMU's dump or of a vmcore keeps unplugged pages it cannot classify.
 *
 * @module
 */

import { findProvenance } from "../dumps/provenance.ts";
import { parseNotes } from "../elf/note.ts";
import { intersectGpaRanges } from "../vmem/ranges.ts";
import { REMOVED_UNPLUGGED_REASON, removedMemory } from "./removed.ts";
import type { KdumpFile } from "../kdump/reader.ts";
import type { ScanReport } from "./findings.ts";
import { CoverageCounter, unpluggedRangesPerDevice } from "./coverage.ts";
import { dumpCollector, type ScanDumpOptions } from "./scan_raw.ts";
import { isAllZero } from "./zero.ts";

/** Why unplugged pages a kdump dump leaves out are absent, in words. */
export const KDUMP_NOT_IN_DUMP_DETAIL =
  "left out of the dump: not in its page bitmap (QEMU >= 6.2 leaves unplugged virtio-mem memory out; makedumpfile's -d filter excludes pages, zero pages with -d 1)";

/**
 * Scan the unplugged memory of a kdump dump. Only pfns of unplugged blocks
 * are visited: each one in the dump (2nd bitmap) is decompressed, and a page
 * that is not all zero is a finding; unplugged pfns the dump leaves out are
 * absent (`not-in-dump`: the verdict is then `inconclusive` unless there are
 * findings). Pages pointing at one shared page (the deduplicated zero page)
 * are decoded once per batch.
 *
 * @param dump A dump from `readKdump`.
 * @param options Plug map, listing bound, read size.
 * @returns The report (`input.kind` is `kdump`; `input.container` is `kdump` or `kdump-flattened`).
 * @throws {FormatError} for bad descriptors or corrupt page data.
 * @throws {UnsupportedFeatureError} when an unplugged page is LZO or Snappy compressed.
 *
 * @example
 * ```ts ignore
 * import { readKdump } from "@vmem-dump/vmem-dump/kdump";
 * import { scanKdump } from "@vmem-dump/vmem-dump/scan";
 * using dump = await readKdump("vmcore.kdump");
 * const report = await scanKdump(dump, { plugMap });
 * console.log(report.verdict, report.summary.findings);
 * ```
 */
export async function scanKdump(dump: KdumpFile, options: ScanDumpOptions): Promise<ScanReport> {
  const { plugMap } = options;
  const B = dump.blockSize;
  const collector = dumpCollector(options);
  const coverage = new CoverageCounter(plugMap);
  let total = 0;
  const pfnRanges: [number, number][] = [];
  const removed = removedMemory(
    findProvenance(parseNotes(dump.notes, dump.subHeader.offsetNote, dump.header.littleEndian)),
  );
  for (const r of unpluggedRangesPerDevice(plugMap)) {
    if (r.gpa % B !== 0 || r.byteLength % B !== 0) {
      throw new RangeError(
        `Cannot scan kdump pages of 0x${B.toString(16)} bytes: unplugged range 0x${
          r.gpa.toString(16)
        } + 0x${r.byteLength.toString(16)} is not page aligned`,
      );
    }
    const first = r.gpa / B;
    const end = first + r.byteLength / B;
    const inDump = countDumpable(dump, first, end);
    // Absent pfns may be anywhere in the range; only their sums are counted: those
    // in ranges our provenance note says were removed, and the rest.
    let removedAbsent = 0;
    for (const x of removed === undefined ? [] : intersectGpaRanges([r], removed.ranges)) {
      const f = Math.ceil(x.gpa / B);
      const e = Math.floor((x.gpa + x.byteLength) / B);
      if (e > f) removedAbsent += e - f - countDumpable(dump, f, e);
    }
    coverage.absent(
      { gpa: r.gpa, byteLength: removedAbsent * B },
      REMOVED_UNPLUGGED_REASON,
      removed?.detail ?? "",
    );
    coverage.absent(
      { gpa: r.gpa, byteLength: (end - first - inDump - removedAbsent) * B },
      "not-in-dump",
      KDUMP_NOT_IN_DUMP_DETAIL,
    );
    total += inDump * B;
    pfnRanges.push([first, end]);
  }
  let scanned = 0;
  const readOptions = options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize };
  for (const [first, end] of pfnRanges) {
    for await (const batch of dump.iteratePages(first, end, readOptions)) {
      for (const page of batch) {
        scanned += B;
        const gpa = page.pfn * B;
        coverage.examined({ gpa, byteLength: B });
        if (isAllZero(page.data)) continue;
        const device = plugMap.deviceForGpa(gpa);
        if (device === undefined) continue; // cannot happen: the range came from the map
        collector.addPage(device, {
          gpa,
          content: page.data,
          source: "memory",
          // the page's bytes sit in the file as they are only when stored uncompressed
          ...(page.desc.flags === 0 && dump.container === "raw"
            ? { fileOffset: page.desc.fileOffset }
            : {}),
        });
      }
      options.onProgress?.(scanned, total);
      if (collector.pageSink !== undefined) await collector.drain();
    }
  }
  return collector.report(plugMap, {
    input: {
      path: options.path ?? null,
      kind: "kdump",
      container: dump.container === "raw" ? "kdump" : "kdump-flattened",
      // The input as stored (docs/glossary.md), not the file a flattened dump's records describe.
      byteLength: dump.storedByteLength,
      baseGpa: null,
    },
    plugState: options.plugState ?? { source: "plugmap", detail: null },
    pageSize: B,
    coverage,
    sortPagesByGpa: true,
  });
}

/** Pfns of `[first, end)` in the dump. */
function countDumpable(dump: KdumpFile, first: number, end: number): number {
  let n = 0;
  const bitmapEnd = Math.min(end, dump.maxMapnr);
  if (first >= bitmapEnd) return 0;
  n = dump.dumpable.rank(bitmapEnd) - dump.dumpable.rank(first);
  if (dump.subHeader.split !== 0) {
    // split files hold only [startPfn, endPfn)
    const lo = Math.max(first, dump.subHeader.startPfn);
    const hi = Math.min(bitmapEnd, dump.subHeader.endPfn);
    n = hi > lo ? dump.dumpable.rank(hi) - dump.dumpable.rank(lo) : 0;
  }
  return n;
}
