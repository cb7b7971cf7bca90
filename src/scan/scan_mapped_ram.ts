/**
 * Scan a mapped-ram migration file: every page of an unplugged virtio-mem
 * block whose bitmap bit is set is a finding (QEMU loads it), reported with
 * the file offset of its data, its SHA-256 and a hexdump. Only the bitmap
 * words of unplugged blocks and the pages they mark are read.
 *
 * @module
 */

import { readAt } from "../io/positional.ts";
import type { MappedRamFile } from "../migration/mapped_ram/file.ts";
import { readBitmapPieces, setRunBatches } from "../migration/mapped_ram/bitmap.ts";
import type { MappedRamBitmapOptions } from "../migration/mapped_ram/inspect.ts";
import { unpluggedPages } from "../migration/mapped_ram/unplugged_pages.ts";
import { countPagesPresent } from "../migration/mapped_ram/inspect.ts";
import { PlugMap } from "../vmem/plug_map.ts";
import {
  FindingCollector,
  type FindingPageSink,
  type PlugStateInfo,
  type ScanReport,
} from "./findings.ts";
import { sameDevice } from "./scan_stream.ts";
import { conflictReason } from "./verdict.ts";

/** Options for {@linkcode scanMappedRam}. */
export interface ScanMappedRamOptions extends MappedRamBitmapOptions {
  /** Plug state to use when the file carries none. @default {undefined} */
  plugMap?: PlugMap;
  /** How the report names `plugMap`. @default {{ source: "plugmap", detail: null }} */
  plugState?: PlugStateInfo;
  /** Pages listed at most (totals stay exact). @default {100} */
  maxFindings?: number;
  /** Bytes of page content in each listed finding's hexdump (0 to 4096). @default {32} */
  hexdumpBytes?: number;
  /** Also hand every finding with its content to this sink (`scan --extract`). @default {undefined} */
  pageSink?: FindingPageSink;
  /** Path the report names as input. @default {null} */
  path?: string | null;
  /** Outer container the report names. @default {null} */
  container?: string | null;
}

/** Pages read at once. */
const PAGES_PER_READ = 256;

/**
 * Scan a mapped-ram file for pages of unplugged blocks. The file's own plug
 * state is used when it has one (a given map that differs is a warning);
 * `options.plugMap` otherwise.
 *
 * @param file The file, from `readMappedRamFile`.
 * @param options Fallback plug map, listing bound, names for the report, bitmap byte order.
 * @returns The report (`pageRecords` counts the pages the file carries), and the plug map used.
 *
 * @example
 * ```ts ignore
 * import { openPositional, readMappedRamFile } from "@vmem-dump/vmem-dump";
 * import { scanMappedRam } from "@vmem-dump/vmem-dump/scan";
 * using f = await openPositional("vm.mapped");
 * const { report } = await scanMappedRam(await readMappedRamFile(f));
 * console.log(report.summary.findings);
 * ```
 */
export async function scanMappedRam(
  file: MappedRamFile,
  options: ScanMappedRamOptions = {},
): Promise<{ report: ScanReport; plugMap: PlugMap | undefined }> {
  const byteOrder = options.byteOrder ?? "little";
  const own = file.plugMap.devices.length > 0 ? file.plugMap : undefined;
  const plugMap = own ?? options.plugMap;
  const warnings: string[] = [];
  const collector = new FindingCollector({
    ...(options.maxFindings === undefined ? {} : { maxFindings: options.maxFindings }),
    ...(options.hexdumpBytes === undefined ? {} : { hexdumpBytes: options.hexdumpBytes }),
    ...(options.pageSink === undefined ? {} : { pageSink: options.pageSink }),
  });
  let pagesPresent = 0;
  const conflicts: string[] = [];
  if (own !== undefined && options.plugMap !== undefined) {
    for (const d of options.plugMap.devices) {
      if (own.deviceForGpa(d.gpa) !== undefined) continue;
      conflicts.push(d.path || d.ramBlock);
      warnings.push(
        `The plug map given has device ${d.path || d.ramBlock} at 0x${
          d.gpa.toString(16)
        }, which the file's own plug state does not have; the file's state was used`,
      );
    }
    for (const d of own.devices) {
      const given = options.plugMap.deviceForGpa(d.gpa);
      if (given === undefined || !sameDevice(given, d)) {
        conflicts.push(d.path || d.ramBlock);
        warnings.push(
          `The plug map given differs from the file's own plug state for device ${
            d.path || d.ramBlock
          } at 0x${d.gpa.toString(16)}; the file's state was used`,
        );
      }
    }
  }
  for (const load of file.loads) {
    for (const b of load.blocks) pagesPresent += await countPagesPresent(file, b, options);
    if (plugMap === undefined) continue;
    for (const u of unpluggedPages(load, [{ plugMap, source: own ? "early" : "plugmap" }])) {
      const device = plugMap.deviceForGpa(u.gpa)!;
      const m = u.block.mappedRam;
      /** Read pages `firstPage …` of the block and record each as a finding. */
      const addPages = async (firstPage: number, count: number) => {
        for (let p = firstPage; p < firstPage + count; p += PAGES_PER_READ) {
          const n = Math.min(PAGES_PER_READ, firstPage + count - p);
          const fileOffset = m.pagesOffset + p * m.pageSize;
          const data = await readAt(file.reader, { fileOffset, byteLength: n * m.pageSize }, {
            format: "migration",
            what: "mapped-ram pages",
          });
          for (let i = 0; i < n; i++) {
            collector.addPage(device, {
              gpa: u.gpa + (p + i) * m.pageSize,
              content: data.subarray(i * m.pageSize, (i + 1) * m.pageSize),
              source: "mapped-ram-page",
              fileOffset: fileOffset + i * m.pageSize,
            });
          }
          await collector.drain();
        }
      };
      for (const run of u.runs) {
        for await (const piece of readBitmapPieces(file.reader, m, run, { byteOrder })) {
          const from = Math.max(0, run.firstPage - piece.firstPage);
          const to = Math.min(piece.pageCount, run.firstPage + run.pageCount - piece.firstPage);
          for (const runs of setRunBatches(piece.bits, from, to)) {
            for (let r = 0; r < runs.length; r += 2) {
              await addPages(piece.firstPage + runs[r]!, runs[r + 1]!);
            }
          }
        }
      }
    }
  }
  if (plugMap === undefined) {
    warnings.push(
      "The file carries no virtio-mem plug state and no plug map was given: nothing was checked",
    );
  }
  const plugState: PlugStateInfo = own !== undefined
    ? { source: file.plugLayout === "late" ? "stream-late" : "stream-early", detail: null }
    : options.plugState ?? { source: plugMap === undefined ? "none" : "plugmap", detail: null };
  const report = collector.report(plugMap ?? new PlugMap([]), {
    plugStateConflict: conflictReason(conflicts, "file"),
    input: {
      path: options.path ?? null,
      kind: "mapped-ram",
      container: options.container ?? null,
      byteLength: file.byteLength,
      baseGpa: null,
    },
    plugState,
    pageSize: file.pageSize,
    pageRecords: pagesPresent,
    warnings,
  });
  return { report, plugMap };
}
