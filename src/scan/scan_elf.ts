/**
 * Scan an ELF core dump (QEMU `dump-guest-memory`, a /proc/vmcore copy)
 * for non-zero data in unplugged virtio-mem blocks.
 *
 * QEMU >= 6.2 leaves unplugged memory out of its dumps, so its dumps have
 * nothing to find; older QEMUs and vmcore copies include the whole region,
 * and that is where data written into unplugged blocks shows up.
 *
 * @module
 */

import { type ElfCore, iterateGpaRange, planGpaRange } from "../elf/reader.ts";
import type { ScanReport } from "./findings.ts";
import { CoverageCounter, unpluggedRangesPerDevice } from "./coverage.ts";
import { type FilePiece, type FindingTarget, scanFilePieces } from "./_memory_pages.ts";
import { type ElfView, otherViews } from "./_elf_views.ts";
import { readAt } from "../io/positional.ts";
import { dumpCollector, SCAN_CHUNK_SIZE, type ScanDumpOptions } from "./scan_raw.ts";
import { SCAN_PAGE_SIZE } from "./zero.ts";
import { findProvenance } from "../dumps/provenance.ts";
import { countAbsent, removedMemory } from "./removed.ts";

/** Why unplugged memory that no PT_LOAD covers is absent, in words. */
export const ELF_NOT_IN_DUMP_DETAIL =
  "left out of the dump: no PT_LOAD covers it (QEMU >= 6.2 leaves unplugged virtio-mem memory out of its dumps)";

/** Why unplugged memory in a zero-fill tail is absent, in words. */
export const ELF_ZERO_FILL_DETAIL =
  "in a PT_LOAD's zero-fill tail (p_memsz > p_filesz): the dump claims zeros without holding the bytes";

/**
 * Scan the unplugged memory of an ELF core. Only the unplugged ranges of
 * the plug map are visited, through the PT_LOADs that cover them (plugged
 * memory is never read); each 4 KiB page there that is not all zero is a
 * finding. Reads are double-buffered chunks of `chunkSize` bytes.
 * Coverage: unplugged memory with file bytes is examined; memory no PT_LOAD
 * covers is absent as `not-in-dump` (or `removed-unplugged` where the
 * dump's provenance note says vmem-dump removed it), memory in a zero-fill tail
 * (`p_memsz > p_filesz`) as `zero-fill`: the report's verdict is then
 * `inconclusive` unless there are findings. Where program headers overlap,
 * the readers disagree on which one shows an address (crash the first, drgn
 * the last, and crash takes every header after the first as a PT_LOAD
 * whatever its type), so every such header's bytes in unplugged memory are
 * read too, and a non-zero page there is a finding.
 *
 * @param core A core from `readElfCore`.
 * @param options Plug map, listing bound, chunk size.
 * @returns The report (`input.kind` is `elf`).
 * @throws {FormatError} when the file shrinks while it is read.
 *
 * @example
 * ```ts ignore
 * import { readElfCore } from "@vmem-dump/vmem-dump/elf";
 * import { scanElfCore } from "@vmem-dump/vmem-dump/scan";
 * using core = await readElfCore("old-qemu.elf");
 * const report = await scanElfCore(core, { plugMap });
 * console.log(report.verdict, report.coverage);
 * ```
 */
export async function scanElfCore(core: ElfCore, options: ScanDumpOptions): Promise<ScanReport> {
  const { plugMap } = options;
  const chunkSize = options.chunkSize ?? SCAN_CHUNK_SIZE;
  if (!(chunkSize >= SCAN_PAGE_SIZE && chunkSize % SCAN_PAGE_SIZE === 0)) {
    throw new RangeError(`Cannot scan in chunks of ${chunkSize} bytes: use a multiple of 4096`);
  }
  const collector = dumpCollector(options);
  const coverage = new CoverageCounter(plugMap);
  const data: FilePiece[] = [];
  // Memory our provenance note says was removed is absent for that reason.
  const removed = removedMemory(findProvenance(core.notes));
  const ranges = unpluggedRangesPerDevice(plugMap);
  const plan = ranges.flatMap((range) => [...planGpaRange(core, range)]);
  for (const p of plan) {
    if (p.kind === "data") data.push(p);
    else if (p.kind === "zero") coverage.absent(p, "zero-fill", ELF_ZERO_FILL_DETAIL);
    else countAbsent(coverage, p, removed, "not-in-dump", ELF_NOT_IN_DUMP_DETAIL);
  }
  // What crash and drgn show where program headers overlap (or where crash takes a header
  // that is no PT_LOAD as one) is read too: a non-zero page there is a finding, unless the
  // plan's own view of that gpa already is one. Coverage stays the plan's.
  const others = otherViews(core, ranges, plan);
  const total = [...data, ...others.flatMap((o) => o.pieces)]
    .reduce((n, p) => n + p.byteLength, 0);
  // Pages found so far, by gpa: the plan's, then each view's that are not among them.
  const found = new Set<number>();
  const target = (skipFound: boolean): FindingTarget => ({
    addPage: (device, page) => {
      if (skipFound && found.has(page.gpa)) return;
      found.add(page.gpa);
      collector.addPage(device, page);
    },
    get pageSink() {
      return collector.pageSink;
    },
    drain: () => collector.drain(),
  });
  const progressFrom = (base: number) =>
    options.onProgress === undefined
      ? {}
      : { onBytes: (n: number) => options.onProgress!(base + n, total) };
  let done = await scanFilePieces(core.reader, data, {
    collector: target(false),
    coverage,
    plugMap,
    chunkSize,
    pageSize: SCAN_PAGE_SIZE,
    format: "elf",
    // A page that PT_LOAD boundaries cut (rare): put it together from its pieces.
    readPage: async (pageGpa) => {
      const page = new Uint8Array(SCAN_PAGE_SIZE);
      for await (const c of iterateGpaRange(core, { gpa: pageGpa, byteLength: SCAN_PAGE_SIZE })) {
        if (c.kind === "data") page.set(c.data, c.gpa - pageGpa);
      }
      return page;
    },
    ...progressFrom(0),
  });
  const unseen = target(true);
  for (const { view, pieces } of others) {
    // Buffers no larger than the view needs: a core may have very many small headers.
    const longest = pieces.reduce((n, p) => Math.max(n, p.byteLength), 0);
    const viewChunk = Math.min(
      chunkSize,
      Math.ceil((longest + SCAN_PAGE_SIZE) / SCAN_PAGE_SIZE) * SCAN_PAGE_SIZE,
    );
    done += await scanFilePieces(core.reader, pieces, {
      collector: unseen,
      coverage: new CoverageCounter(plugMap), // counted once, by the plan
      plugMap,
      chunkSize: viewChunk,
      pageSize: SCAN_PAGE_SIZE,
      format: "elf",
      readPage: (pageGpa) => readViewPage(core, view, pageGpa),
      ...progressFrom(done),
    });
  }
  return collector.report(plugMap, {
    input: {
      path: options.path ?? null,
      kind: "elf",
      container: null,
      byteLength: core.byteLength,
      baseGpa: null,
    },
    plugState: options.plugState ?? { source: "plugmap", detail: null },
    coverage,
    sortPagesByGpa: true,
  });
}

/** The page at `pageGpa` as `view` shows it (bytes outside the view read as zero). */
async function readViewPage(core: ElfCore, view: ElfView, pageGpa: number): Promise<Uint8Array> {
  const page = new Uint8Array(SCAN_PAGE_SIZE);
  const from = Math.max(pageGpa, view.gpa);
  const to = Math.min(pageGpa + SCAN_PAGE_SIZE, view.gpa + view.byteLength);
  if (from < to) {
    const bytes = await readAt(core.reader, {
      fileOffset: view.fileOffset + (from - view.gpa),
      byteLength: to - from,
    }, { format: "elf", what: `program header ${view.index}` });
    page.set(bytes, from - pageGpa);
  }
  return page;
}
