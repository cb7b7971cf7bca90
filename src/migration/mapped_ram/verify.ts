/**
 * `verify` for mapped-ram files: a bit set in the bitmap of a RAMBlock page
 * that lies in an unplugged virtio-mem block is a violation, because QEMU
 * loads every page whose bit is set (migration/ram.c,
 * `read_ramblock_mapped_ram`), plug state or not. Only the bitmap words of
 * unplugged blocks are read for the check; the whole bitmaps are counted to
 * say how many pages the file carries.
 *
 * The verdict fails closed: the device state after the RAM must add up to
 * exactly what the vmdesc describes (otherwise bytes QEMU would read are
 * unaccounted for), and the file must carry a vmdesc.
 *
 * @module
 */

import { FormatError } from "../../errors.ts";
import type { PlugMap } from "../../vmem/plug_map.ts";
import type { PlugStateSource } from "../_filter_plug_state.ts";
import { forEachSetRun } from "../../io/bits.ts";
import { readBitmapPieces } from "./bitmap.ts";
import type { MappedRamFile } from "./file.ts";
import { countPagesPresent, type MappedRamBitmapOptions } from "./inspect.ts";
import { mappedRamPlugStates, unpluggedPages } from "./unplugged_pages.ts";

/** A page whose bit is set although it lies in an unplugged block. */
export interface MappedRamViolation {
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Device path P. */
  devicePath: string;
  /** Offset of the page inside the RAMBlock. */
  ramOffset: number;
  /** Guest-physical address of the page. */
  gpa: number;
  /** Device block index. */
  blockIndex: number;
  /** File offset of the page's data. */
  fileOffset: number;
  /** File offset of the bitmap byte holding the page's bit. */
  bitmapFileOffset: number;
  /** Which plug state says the block is unplugged. */
  detectedBy: PlugStateSource;
}

/** A virtio-mem device as the verification saw it. */
export interface MappedRamVerifiedDevice {
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Device path P. */
  devicePath: string;
  /** Guest-physical base. */
  gpa: number;
  /** Block size. */
  blockSize: number;
  /** Device blocks. */
  blocks: number;
  /** Blocks every plug state says are plugged. */
  pluggedBlocks: number;
  /** Sources of the plug state. */
  sources: PlugStateSource[];
}

/** Outcome of {@linkcode verifyMappedRam}. */
export interface MappedRamVerifyResult {
  /** No page of an unplugged block is present. */
  clean: boolean;
  /** Where the file's own plug state was: `early`, `late` or `none`. */
  layout: "early" | "late" | "none";
  /** Pages present in the file (bits set in every bitmap): what QEMU loads. */
  pagesPresent: number;
  /** Pages of unplugged blocks present (all of them counted). */
  violationCount: number;
  /** The first `maxViolations` of them, in file order. */
  violations: MappedRamViolation[];
  /** Devices checked. */
  devices: MappedRamVerifiedDevice[];
}

/** Options for {@linkcode verifyMappedRam}. */
export interface VerifyMappedRamOptions extends MappedRamBitmapOptions {
  /** Out-of-band plug map, checked in addition to the file's own. @default {undefined} */
  plugMap?: PlugMap;
  /** Violations listed at most (all are counted). @default {10000} */
  maxViolations?: number;
}

/**
 * Check that no page of an unplugged virtio-mem block is present in a
 * mapped-ram file.
 *
 * @param file The file, from `readMappedRamFile`.
 * @param options Out-of-band map, listing bound, bitmap byte order.
 * @returns The verdict, with every violation counted and the first ones listed.
 * @throws {FormatError} when the file cannot be proven either way (device
 *   state not accounted for by the vmdesc, a plug map that matches no block).
 *
 * @example
 * ```ts ignore
 * import { openPositional, readMappedRamFile, verifyMappedRam } from "@vmem-dump/vmem-dump";
 * using f = await openPositional("vm.mapped");
 * const r = await verifyMappedRam(await readMappedRamFile(f));
 * console.log(r.clean, r.violations.map((v) => v.gpa));
 * ```
 */
export async function verifyMappedRam(
  file: MappedRamFile,
  options: VerifyMappedRamOptions = {},
): Promise<MappedRamVerifyResult> {
  requireAccountedTail(file);
  const maxViolations = options.maxViolations ?? 10_000;
  const byteOrder = options.byteOrder ?? "little";
  const states = mappedRamPlugStates(file, options.plugMap);
  const result: MappedRamVerifyResult = {
    clean: true,
    layout: file.plugLayout,
    pagesPresent: 0,
    violationCount: 0,
    violations: [],
    devices: [],
  };
  for (const load of file.loads) {
    for (const b of load.blocks) result.pagesPresent += await countPagesPresent(file, b, options);
    for (const u of unpluggedPages(load, states)) {
      result.devices.push({
        ramBlock: u.block.idstr,
        devicePath: u.devicePath,
        gpa: u.gpa,
        blockSize: u.blockSize,
        blocks: u.blocks,
        pluggedBlocks: u.pluggedBlocks,
        sources: u.sources,
      });
      const m = u.block.mappedRam;
      for (const run of u.runs) {
        for await (const piece of readBitmapPieces(file.reader, m, run, { byteOrder })) {
          const from = Math.max(0, run.firstPage - piece.firstPage);
          const to = Math.min(piece.pageCount, run.firstPage + run.pageCount - piece.firstPage);
          forEachSetRun(piece.bits, from, to, (first, count) => {
            result.violationCount += count;
            for (let i = 0; i < count && result.violations.length < maxViolations; i++) {
              const bit = first + i;
              const page = piece.firstPage + bit;
              const ramOffset = page * m.pageSize;
              const byte = byteOrder === "big"
                ? 8 * (bit >>> 6) + 7 - ((bit & 63) >>> 3)
                : bit >>> 3;
              result.violations.push({
                ramBlock: u.block.idstr,
                devicePath: u.devicePath,
                ramOffset,
                gpa: u.gpa + ramOffset,
                blockIndex: Math.floor(ramOffset / u.blockSize),
                fileOffset: m.pagesOffset + ramOffset,
                bitmapFileOffset: piece.fileOffset + byte,
                detectedBy: run.detectedBy,
              });
            }
          });
        }
      }
    }
  }
  result.clean = result.violationCount === 0;
  return result;
}

/**
 * Fail unless the device state after the RAM adds up to what the vmdesc
 * describes: bytes the vmdesc does not account for could hold sections QEMU
 * loads (another RAMBlock list, for instance) that nobody checked.
 *
 * @param file The file.
 * @throws {FormatError} (code `verification`) when the tail is not accounted for.
 */
export function requireAccountedTail(file: MappedRamFile): void {
  const s = file.stream;
  if (s.vmdescBytes === null || s.tailMatchesVmdesc !== true) {
    throw new FormatError(
      `Cannot verify mapped-ram file: ${
        s.vmdescBytes === null
          ? "it has no vmdesc"
          : "its device state does not add up to what its vmdesc describes"
      }, so not every byte QEMU loads can be accounted for`,
      { format: "migration", code: "verification", offset: file.payloadOffset },
    );
  }
}
