/**
 * Which pages of the RAMBlocks of a mapped-ram file lie in unplugged
 * virtio-mem blocks, according to one or more plug states (the file's own,
 * an out-of-band plug map): the page runs `verify`, `scan` and `filter`
 * look at in the bitmaps.
 *
 * @module
 */

import { FormatError } from "../../errors.ts";
import type { PlugMap } from "../../vmem/plug_map.ts";
import { type BlockPlugTable, type PlugStateSource, PlugTables } from "../_filter_plug_state.ts";
import type { MappedRamBlockInfo, MappedRamFile, MappedRamLoad } from "./file.ts";

/** A plug state and where it came from. */
export interface PlugStateInput {
  /** The map. */
  plugMap: PlugMap;
  /** `early` / `device`: the file's own sections; `plugmap`: given out of band. */
  source: PlugStateSource;
}

/** A run of unplugged device blocks of one RAMBlock, in pages. */
export interface UnpluggedRun {
  /** First page (RAMBlock offset / page size). */
  firstPage: number;
  /** Pages in the run. */
  pageCount: number;
  /** The plug state that first said these blocks are unplugged. */
  detectedBy: PlugStateSource;
}

/** The unplugged pages of one virtio-mem RAMBlock of a load. */
export interface UnpluggedPages {
  /** The RAMBlock and its mapped-ram layout. */
  block: MappedRamBlockInfo;
  /** Device path P (`""` when unknown). */
  devicePath: string;
  /** Guest-physical base of the device region. */
  gpa: number;
  /** Device block size. */
  blockSize: number;
  /** Device blocks. */
  blocks: number;
  /** Blocks every plug state says are plugged. */
  pluggedBlocks: number;
  /** Sources of the plug state for this device. */
  sources: PlugStateSource[];
  /** Unplugged runs in ascending page order (runs of different sources are not merged). */
  runs: UnpluggedRun[];
}

/**
 * The plug states to check a mapped-ram file against: its own (when it has a
 * virtio-mem device) and an out-of-band map.
 *
 * @param file The opened file.
 * @param plugMap An out-of-band map. @default {undefined}
 * @returns The plug states, the file's own first.
 *
 * @example
 * ```ts ignore
 * const states = mappedRamPlugStates(file, givenMap);
 * ```
 */
export function mappedRamPlugStates(file: MappedRamFile, plugMap?: PlugMap): PlugStateInput[] {
  const out: PlugStateInput[] = [];
  if (file.plugMap.devices.length > 0) {
    out.push({ plugMap: file.plugMap, source: file.plugLayout === "late" ? "device" : "early" });
  }
  if (plugMap !== undefined) out.push({ plugMap, source: "plugmap" });
  return out;
}

/**
 * For every virtio-mem RAMBlock of `load`, the page runs that some plug
 * state marks unplugged.
 *
 * @param load One MEM_SIZE list of the file.
 * @param states The plug states (see {@linkcode mappedRamPlugStates}).
 * @returns One entry per virtio-mem RAMBlock (not ignored), in list order.
 * @throws {FormatError} when a plug map device matches no RAMBlock or has another size.
 *
 * @example
 * ```ts ignore
 * for (const u of unpluggedPages(file.loads[0]!, mappedRamPlugStates(file))) console.log(u.runs);
 * ```
 */
export function unpluggedPages(load: MappedRamLoad, states: PlugStateInput[]): UnpluggedPages[] {
  const perBlock = new Map<string, BlockPlugTable[]>();
  for (const s of states) {
    const tables = new PlugTables(s.plugMap);
    tables.setRamBlocks(load.blocks, load.fileOffset);
    for (const t of tables.values()) {
      const list = perBlock.get(t.ramBlock) ?? [];
      list.push({ ...t, source: s.source });
      perBlock.set(t.ramBlock, list);
    }
  }
  const out: UnpluggedPages[] = [];
  for (const block of load.blocks) {
    const tables = perBlock.get(block.idstr);
    if (tables === undefined || block.mappedRam.ignored) continue;
    const first = tables[0]!;
    for (const t of tables) {
      if (t.blockSize !== first.blockSize || t.gpa !== first.gpa) {
        throw new FormatError(
          `Cannot check RAMBlock ${JSON.stringify(block.idstr)}: its plug states disagree ` +
            `(${first.source}: gpa 0x${first.gpa.toString(16)}, blocks of 0x${
              first.blockSize.toString(16)
            }; ${t.source}: gpa 0x${t.gpa.toString(16)}, blocks of 0x${t.blockSize.toString(16)})`,
          { format: "migration", code: "invariant", offset: load.fileOffset },
        );
      }
    }
    const pagesPerBlock = first.blockSize / block.mappedRam.pageSize;
    const blocks = first.plugged.length;
    const runs: UnpluggedRun[] = [];
    let plugged = 0;
    for (let i = 0; i < blocks; i++) {
      const t = tables.find((x) => x.plugged[i] === 0);
      if (t === undefined) {
        plugged++;
        continue;
      }
      const last = runs[runs.length - 1];
      const firstPage = i * pagesPerBlock;
      if (last && last.detectedBy === t.source && last.firstPage + last.pageCount === firstPage) {
        last.pageCount += pagesPerBlock;
      } else {
        runs.push({ firstPage, pageCount: pagesPerBlock, detectedBy: t.source });
      }
    }
    out.push({
      block,
      devicePath: first.devicePath,
      gpa: first.gpa,
      blockSize: first.blockSize,
      blocks,
      pluggedBlocks: plugged,
      sources: tables.map((t) => t.source),
      runs,
    });
  }
  return out;
}
