/**
 * `filter` for mapped-ram files: clear the bitmap bits of pages in unplugged
 * virtio-mem blocks and leave those pages out. The output is a sparse file
 * with the input's layout (every offset stays valid): it holds the stream
 * parts (and a libvirt header) byte for byte, every bitmap (with the
 * unplugged bits cleared), and the data of every page whose bit is still
 * set. Everything else is a hole: the dropped pages, the padding after each
 * bitmap, and the page slots whose bit was already clear (QEMU never reads
 * them; a slot may hold the stale copy of a page that later became zero).
 *
 * The output is written in one ascending pass through the atomic-output
 * helper, bitmaps a piece at a time.
 *
 * @module
 */

import { type CopyOutput, copyRangesTo, type CopyStep } from "../../io/positional.ts";
import type { PlugMap } from "../../vmem/plug_map.ts";
import { clearBitRange, forEachSetRun } from "../../io/bits.ts";
import { type BitmapPiece, readBitmapPieces, setRunBatches, swapBitmapWords } from "./bitmap.ts";
import { MAPPED_RAM_HEADER_SIZE } from "./header.ts";
import type { MappedRamBlockInfo, MappedRamFile } from "./file.ts";
import type { MappedRamBitmapOptions } from "./inspect.ts";
import { mappedRamPlugStates, unpluggedPages, type UnpluggedRun } from "./unplugged_pages.ts";

/** A page left out of the output. */
export interface MappedRamDroppedPage {
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Offset of the page inside the RAMBlock. */
  ramOffset: number;
  /** Guest-physical address. */
  gpa: number;
  /** Device block index. */
  blockIndex: number;
  /** File offset of the page's data in the input (a hole in the output). */
  fileOffset: number;
}

/** What {@linkcode filterMappedRam} did. */
export interface MappedRamFilterResult {
  /** Pages whose bit was cleared (all counted). */
  droppedPages: number;
  /** The first `maxListed` of them, in file order. */
  dropped: MappedRamDroppedPage[];
  /** Pages still present in the output. */
  keptPages: number;
  /** Output size (the input's size: the layout is kept). */
  byteLength: number;
  /** Bytes written as data; the rest of the output is holes. */
  dataBytes: number;
  /** Where the plug state came from: the file's own layout, or `plugmap` only. */
  plugStateSources: string[];
}

/** Options for {@linkcode filterMappedRam}. */
export interface FilterMappedRamOptions extends MappedRamBitmapOptions {
  /** Out-of-band plug map, used in addition to the file's own. @default {undefined} */
  plugMap?: PlugMap;
  /** Dropped pages listed at most (all are counted). @default {10000} */
  maxListed?: number;
  /**
   * Called as the copy goes with how far into the file it has got: the
   * output's bytes done, data, bitmaps and holes alike (the output keeps the
   * input's layout, so this is a file offset; it ends at the file's size).
   * @default {undefined}
   */
  onProgress?: (fileOffsetReached: number) => void;
}

/** A stretch of the file that belongs to a block: its bitmap and pages. */
interface Area {
  block: MappedRamBlockInfo;
  /** Unplugged runs to clear, ascending. */
  runs: UnpluggedRun[];
  /** Guest-physical base of its virtio-mem device (0 when it is none). */
  gpa: number;
  /** Device block size (1 when it is no virtio-mem block). */
  blockSize: number;
  /** First byte after the header (start of the reserved space). */
  start: number;
}

/**
 * Write the filtered copy of a mapped-ram file to `output`.
 *
 * @param file The input, from `readMappedRamFile`.
 * @param output A path (written atomically; `-` for standard output, where holes become
 *   zeros), an `AtomicOutput` (holes skipped; the caller commits it) or a chunk sink (holes as zeros).
 * @param options Out-of-band plug map, listing bound, bitmap byte order, progress.
 * @returns What was dropped and written.
 * @throws {FormatError} when a plug map does not fit the file; the output is then not created.
 *
 * @example
 * ```ts ignore
 * import { filterMappedRam, openPositional, readMappedRamFile } from "@vmem-dump/vmem-dump";
 * using f = await openPositional("vm.mapped");
 * const r = await filterMappedRam(await readMappedRamFile(f), "vm-filtered.mapped");
 * console.log(r.droppedPages);
 * ```
 */
export async function filterMappedRam(
  file: MappedRamFile,
  output: CopyOutput,
  options: FilterMappedRamOptions = {},
): Promise<MappedRamFilterResult> {
  const maxListed = options.maxListed ?? 10_000;
  // Told in order, never backwards (a hole is counted when handed over, just before it is done).
  let reached = 0;
  const onProgress = (fileOffset: number) => {
    if (fileOffset <= reached) return;
    reached = fileOffset;
    options.onProgress?.(reached);
  };
  const byteOrder = options.byteOrder ?? "little";
  const states = mappedRamPlugStates(file, options.plugMap);
  const result: MappedRamFilterResult = {
    droppedPages: 0,
    dropped: [],
    keptPages: 0,
    byteLength: file.byteLength,
    dataBytes: 0,
    plugStateSources: states.map((s) => s.source),
  };
  // Every block's reserved space, in file order (the decoder only moves forward).
  // The plug states are matched against the blocks here, before anything is written.
  const areas: Area[] = [];
  for (const load of file.loads) {
    const unplugged = new Map(unpluggedPages(load, states).map((u) => [u.block.idstr, u]));
    for (const block of load.blocks) {
      const m = block.mappedRam;
      if (m.ignored) continue;
      const u = unplugged.get(block.idstr);
      areas.push({
        block,
        runs: u?.runs ?? [],
        gpa: u?.gpa ?? 0,
        blockSize: u?.blockSize ?? 1,
        start: m.headerOffset + MAPPED_RAM_HEADER_SIZE,
      });
    }
  }

  /** Clear the unplugged bits of a piece, listing the pages whose bit was set. */
  const applyDrops = (area: Area, piece: BitmapPiece, list: boolean) => {
    const m = area.block.mappedRam;
    for (const run of area.runs) {
      const from = Math.max(0, run.firstPage - piece.firstPage);
      const to = Math.min(piece.pageCount, run.firstPage + run.pageCount - piece.firstPage);
      if (from >= to) continue;
      if (list) {
        forEachSetRun(piece.bits, from, to, (first, count) => {
          result.droppedPages += count;
          for (let i = 0; i < count && result.dropped.length < maxListed; i++) {
            const ramOffset = (piece.firstPage + first + i) * m.pageSize;
            result.dropped.push({
              ramBlock: area.block.idstr,
              ramOffset,
              gpa: area.gpa + ramOffset,
              blockIndex: Math.floor(ramOffset / area.blockSize),
              fileOffset: m.pagesOffset + ramOffset,
            });
          }
        });
      }
      clearBitRange(piece.bits, from, to);
    }
  };

  /** Output bytes of the bitmap and hole steps handed to the copy (the rest is data it read). */
  let notRead = 0;
  async function* steps(): AsyncGenerator<CopyStep> {
    let cursor = 0;
    const copyTo = function* (end: number): Generator<CopyStep> {
      if (end > cursor) {
        result.dataBytes += end - cursor;
        yield { kind: "copy", fileOffset: cursor, byteLength: end - cursor };
        cursor = end;
      }
    };
    const holeTo = function* (end: number): Generator<CopyStep> {
      if (end > cursor) {
        notRead += end - cursor;
        yield { kind: "hole", byteLength: end - cursor };
        cursor = end;
      }
    };
    for (const area of areas) {
      const m = area.block.mappedRam;
      yield* copyTo(area.start); // stream bytes up to and including the header
      yield* holeTo(m.bitmapOffset);
      for await (const piece of readBitmapPieces(file.reader, m, undefined, { byteOrder })) {
        applyDrops(area, piece, true);
        const bytes = piece.bits;
        if (byteOrder === "big") swapBitmapWords(bytes);
        result.dataBytes += bytes.byteLength;
        notRead += bytes.byteLength;
        yield { kind: "bytes", data: bytes };
        cursor += bytes.byteLength;
      }
      // The pages whose bit is still set: the bitmap again, piece by piece (never held whole).
      for await (const piece of readBitmapPieces(file.reader, m, undefined, { byteOrder })) {
        applyDrops(area, piece, false);
        for (const runs of setRunBatches(piece.bits, 0, piece.pageCount)) {
          for (let i = 0; i < runs.length; i += 2) {
            const first = piece.firstPage + runs[i]!;
            const count = runs[i + 1]!;
            result.keptPages += count;
            yield* holeTo(m.pagesOffset + first * m.pageSize);
            yield* copyTo(m.pagesOffset + (first + count) * m.pageSize);
          }
        }
      }
      yield* holeTo(m.areaEnd);
    }
    yield* copyTo(file.byteLength); // the rest of the stream: device state, EOF, vmdesc
  }

  await copyRangesTo(file.reader, output, steps(), {
    format: "migration",
    ...(options.onProgress ? { onProgress: (read: number) => onProgress(notRead + read) } : {}),
  });
  if (options.onProgress) onProgress(file.byteLength);
  return result;
}
