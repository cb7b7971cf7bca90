/**
 * `inspect` for mapped-ram files: the stream summary plus, per RAMBlock, its
 * mapped-ram header fields and the number of pages the file carries for it
 * (set bits of its bitmap: the pages QEMU loads).
 *
 * @module
 */

import type { InspectReport } from "../inspect.ts";
import { forEachSetRun } from "../../io/bits.ts";
import { type BitmapByteOrder, readBitmapPieces } from "./bitmap.ts";
import type { MappedRamBlockInfo, MappedRamFile } from "./file.ts";

/** One RAMBlock of a mapped-ram file. */
export interface MappedRamInspectBlock {
  /** Index of the MEM_SIZE list (0 in a file written by QEMU). */
  load: number;
  /** RAMBlock idstr. */
  idstr: string;
  /** Used length in bytes. */
  usedLength: number;
  /** File offset of the 28-byte header. */
  headerOffset: number;
  /** Header version. */
  version: number;
  /** Page size of the bitmap. */
  pageSize: number;
  /** `x-ignore-shared` block: nothing in the file. */
  ignored: boolean;
  /** File offset of the bitmap. */
  bitmapOffset: number;
  /** Bitmap bytes. */
  bitmapByteLength: number;
  /** File offset of page 0. */
  pagesOffset: number;
  /** Pages of the block. */
  pageCount: number;
  /** Pages whose bit is set: their data is in the file and QEMU loads them. */
  pagesPresent: number;
  /** File offset where the stream goes on after the block's pages. */
  areaEnd: number;
}

/** The `inspect --json` report of a mapped-ram file: the stream report plus `mappedRam`. */
export interface MappedRamInspectReport extends InspectReport {
  /** What is particular to mapped-ram files. */
  mappedRam: {
    /** File size (logical; the file is sparse). */
    fileByteLength: number;
    /** File offset of the `QEVM` magic. */
    payloadOffset: number;
    /** Target page size. */
    pageSize: number;
    /** Pages present in all blocks. */
    pagesPresent: number;
    /** Every block of every MEM_SIZE list. */
    blocks: MappedRamInspectBlock[];
  };
}

/** Options for {@linkcode inspectMappedRam} and the other mapped-ram commands. */
export interface MappedRamBitmapOptions {
  /** Byte order of the bitmaps' 64-bit words (that of the host that ran QEMU). @default {"little"} */
  byteOrder?: BitmapByteOrder;
}

/**
 * Count the set bits of a block's bitmap, reading it in pieces.
 *
 * @param file The file.
 * @param block The block.
 * @param options Bitmap byte order.
 * @returns Pages present.
 *
 * @example
 * ```ts ignore
 * const n = await countPagesPresent(file, file.loads[0]!.blocks[0]!);
 * ```
 */
export async function countPagesPresent(
  file: MappedRamFile,
  block: MappedRamBlockInfo,
  options: MappedRamBitmapOptions = {},
): Promise<number> {
  if (block.mappedRam.ignored) return 0;
  let n = 0;
  const add = (_first: number, count: number) => {
    n += count;
  };
  for await (
    const piece of readBitmapPieces(file.reader, block.mappedRam, undefined, {
      byteOrder: options.byteOrder ?? "little",
    })
  ) {
    forEachSetRun(piece.bits, 0, piece.pageCount, add);
  }
  return n;
}

/**
 * Summarise a mapped-ram file: its stream report, and per block the header
 * fields and the pages present.
 *
 * @param file The file, from `readMappedRamFile`.
 * @param options Bitmap byte order.
 * @returns The report.
 *
 * @example
 * ```ts ignore
 * import { inspectMappedRam, openPositional, readMappedRamFile } from "@vmem-dump/vmem-dump";
 * using f = await openPositional("vm.mapped");
 * const report = await inspectMappedRam(await readMappedRamFile(f));
 * console.log(report.mappedRam.pagesPresent);
 * ```
 */
export async function inspectMappedRam(
  file: MappedRamFile,
  options: MappedRamBitmapOptions = {},
): Promise<MappedRamInspectReport> {
  const blocks: MappedRamInspectBlock[] = [];
  let pagesPresent = 0;
  for (const [load, l] of file.loads.entries()) {
    for (const b of l.blocks) {
      const m = b.mappedRam;
      const present = await countPagesPresent(file, b, options);
      pagesPresent += present;
      blocks.push({
        load,
        idstr: b.idstr,
        usedLength: b.usedLength,
        headerOffset: m.headerOffset,
        version: m.version,
        pageSize: m.pageSize,
        ignored: m.ignored,
        bitmapOffset: m.bitmapOffset,
        bitmapByteLength: m.bitmapByteLength,
        pagesOffset: m.pagesOffset,
        pageCount: m.pageCount,
        pagesPresent: present,
        areaEnd: m.areaEnd,
      });
    }
  }
  return {
    ...file.stream,
    mappedRam: {
      fileByteLength: file.byteLength,
      payloadOffset: file.payloadOffset,
      pageSize: file.pageSize,
      pagesPresent,
      blocks,
    },
  };
}
