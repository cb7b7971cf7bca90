/**
 * Plug tables shared by the send-side filter and the receive-side verifier:
 * for every virtio-mem RAMBlock, one byte per device block (1 = plugged),
 * built from an out-of-band {@linkcode PlugMap}, an early
 * `virtio-mem-device-early` record or a late `virtio-mem-device` record.
 * Lookups on the page path are a string compare, a division and an index.
 *
 * @module
 */

import { hex } from "../io/text.ts";
import { FormatError, formatErrorSentence } from "../errors.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import { validateVmemDevice, type VmemDevice } from "../vmem/vmem_device.ts";
import type { RamBlockInfo, VirtioMemDeviceRecord, VirtioMemEarlyRecord } from "./types.ts";
import { findVirtioMemRamBlock } from "./virtio_mem_device.ts";
import { bitmapFromWireWords } from "./wire_bitmap.ts";
import { virtioMemGeometry } from "./_plug_state_collector.ts";

/** Where a plug table came from. */
export type PlugStateSource = "plugmap" | "early" | "device";

/** Plug state of one virtio-mem RAMBlock, one byte per device block. */
export interface BlockPlugTable {
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Device path P (`""` when unknown). */
  devicePath: string;
  /** Guest-physical base of the region. */
  gpa: number;
  /** Region size in bytes. */
  regionSize: number;
  /** Device block size in bytes. */
  blockSize: number;
  /** 1 = plugged, 0 = unplugged; one entry per device block. */
  plugged: Uint8Array;
  /** Where the state came from. */
  source: PlugStateSource;
}

/**
 * Largest number of device blocks accepted for one device: 32 Mi blocks (32 TiB
 * at 1 MiB blocks) keeps the one-byte-per-block table at 32 MiB.
 */
const MAX_BLOCKS = 1 << 25;

/** One byte per block from an LSB-first bitmap (PlugMap form). */
export function flagsFromLsbBitmap(bitmap: Uint8Array, blocks: number): Uint8Array {
  const out = new Uint8Array(blocks);
  for (let i = 0; i < blocks; i++) out[i] = (bitmap[i >>> 3]! >>> (i & 7)) & 1;
  return out;
}

/** One byte per block from QEMU's wire bitmap (be64 words, bit i in word i >> 6, bit i & 63). */
export function flagsFromWireBitmap(wire: Uint8Array, blocks: number): Uint8Array {
  const out = new Uint8Array(blocks);
  for (let i = 0; i < blocks; i++) {
    const byte = wire[8 * (i >>> 6) + 7 - ((i & 63) >>> 3)] ?? 0;
    out[i] = (byte >>> (i & 7)) & 1;
  }
  return out;
}

/** The plug-map device that describes RAMBlock `block`, if any. */
function deviceForBlock(map: PlugMap, block: RamBlockInfo): VmemDevice | undefined {
  const direct = map.deviceForRamBlock(block.idstr);
  if (direct !== undefined) return direct;
  const cut = block.idstr.lastIndexOf("/");
  if (cut <= 0) return undefined;
  const path = block.idstr.slice(0, cut);
  return map.devices.find((d) =>
    d.ramBlock === "" && d.path === path && d.regionSize === block.usedLength
  );
}

/**
 * The plug tables of one stream. The MEM_SIZE list must arrive before
 * in-band state; an out-of-band map is resolved against it.
 */
export class PlugTables {
  #tables = new Map<string, BlockPlugTable>();
  #blocks: readonly RamBlockInfo[] = [];
  #map: PlugMap | undefined;
  #format: "migration";

  /** @param map Out-of-band plug map, resolved when the MEM_SIZE list arrives. */
  constructor(map: PlugMap | undefined) {
    this.#map = map;
    this.#format = "migration";
  }

  /** Whether any plug state is known (an out-of-band map counts, even with no devices). */
  get known(): boolean {
    return this.#map !== undefined || this.#tables.size > 0;
  }

  /** The MEM_SIZE list, for resolving device paths. */
  get ramBlocks(): readonly RamBlockInfo[] {
    return this.#blocks;
  }

  /** The table of a RAMBlock. */
  get(ramBlock: string): BlockPlugTable | undefined {
    return this.#tables.get(ramBlock);
  }

  /** All tables. */
  values(): IterableIterator<BlockPlugTable> {
    return this.#tables.values();
  }

  /**
   * Take the MEM_SIZE list and resolve the out-of-band map against it.
   * @throws {FormatError} when a map device matches no RAMBlock or its size differs.
   */
  setRamBlocks(blocks: readonly RamBlockInfo[], streamOffset: number): void {
    this.#blocks = blocks;
    this.#tables.clear();
    const map = this.#map;
    if (map === undefined) return;
    const used = new Set<VmemDevice>();
    for (const b of blocks) {
      const d = deviceForBlock(map, b);
      if (d === undefined) continue;
      if (d.regionSize !== b.usedLength) {
        throw new FormatError(
          `Cannot apply the plug map: device ${d.path || d.ramBlock} has region size ${
            hex(d.regionSize)
          } but RAMBlock ${JSON.stringify(b.idstr)} is ${hex(b.usedLength)} long`,
          { format: this.#format, code: "invariant", offset: streamOffset },
        );
      }
      used.add(d);
      const blocksCount = d.regionSize / d.blockSize;
      if (blocksCount > MAX_BLOCKS) {
        throw new FormatError(
          `Cannot apply the plug map: device ${
            d.path || d.ramBlock
          } has ${blocksCount} blocks, too many`,
          { format: this.#format, code: "too-large", offset: streamOffset },
        );
      }
      this.#tables.set(b.idstr, {
        ramBlock: b.idstr,
        devicePath: d.path || b.idstr.slice(0, Math.max(0, b.idstr.lastIndexOf("/"))),
        gpa: d.gpa,
        regionSize: d.regionSize,
        blockSize: d.blockSize,
        plugged: flagsFromLsbBitmap(d.bitmap, blocksCount),
        source: "plugmap",
      });
    }
    for (const d of map.devices) {
      if (!used.has(d)) {
        throw new FormatError(
          `Cannot apply the plug map: device ${
            JSON.stringify(d.path || d.ramBlock || hex(d.gpa))
          } matches no RAMBlock of the stream`,
          { format: this.#format, code: "unknown-block", offset: streamOffset },
        );
      }
    }
  }

  /**
   * Build the table an in-band record describes (without installing it).
   * @throws {FormatError} when the device matches no RAMBlock or its geometry is impossible.
   */
  tableFromRecord(r: VirtioMemEarlyRecord | VirtioMemDeviceRecord): BlockPlugTable | undefined {
    const geometry = virtioMemGeometry(r);
    if (geometry === undefined) return undefined;
    const { gpa, regionSize, blockSize, wire } = geometry;
    const blocks = regionSize / blockSize;
    if (Number.isInteger(blocks) && blocks > MAX_BLOCKS) {
      throw new FormatError(
        `Cannot use the virtio-mem state of ${r.devicePath}: ${blocks} device blocks are too many`,
        { format: this.#format, code: "too-large", offset: r.streamOffset },
      );
    }
    if (
      !(blockSize >= 1 << 20) || !Number.isInteger(blocks) || blocks < 1 ||
      wire.byteLength < 8 * Math.ceil(blocks / 64)
    ) {
      throw new FormatError(
        `Cannot use the virtio-mem state of ${r.devicePath}: region ${
          hex(regionSize)
        } and block size ${hex(blockSize)} do not fit its bitmap`,
        { format: this.#format, code: "bad-virtio-mem", offset: r.streamOffset },
      );
    }
    const block = findVirtioMemRamBlock(r.devicePath, regionSize, this.#blocks);
    if (block === undefined) {
      throw new FormatError(
        `Cannot use the virtio-mem state of ${r.devicePath}: no RAMBlock ${
          JSON.stringify(`${r.devicePath}/…`)
        } of ${hex(regionSize)} bytes in the block list`,
        { format: this.#format, code: "unknown-block", offset: r.streamOffset },
      );
    }
    // The invariants every plug map satisfies (size = plugged blocks × block size, node, …):
    // the state must be one plugmap and scan accept too.
    try {
      validateVmemDevice({
        path: r.devicePath,
        ramBlock: block.idstr,
        gpa,
        regionSize,
        blockSize,
        node: geometry.node,
        size: geometry.size,
        usableRegionSize: r.kind === "virtio-mem-device" ? r.state.usableRegionSize : undefined,
        requestedSize: r.kind === "virtio-mem-device" ? r.state.requestedSize : undefined,
        bitmap: bitmapFromWireWords(wire, blocks),
      }, `device ${r.devicePath}`);
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      throw new FormatError(
        `Cannot use the virtio-mem state of ${r.devicePath}: ${formatErrorSentence(e)}`,
        { format: this.#format, code: "bad-virtio-mem", offset: r.streamOffset },
        { cause: e },
      );
    }
    return {
      ramBlock: block.idstr,
      devicePath: r.devicePath,
      gpa,
      regionSize,
      blockSize,
      plugged: flagsFromWireBitmap(wire, blocks),
      source: r.kind === "virtio-mem-early" ? "early" : "device",
    };
  }

  /** Install (or replace) a table. */
  set(table: BlockPlugTable): void {
    this.#tables.set(table.ramBlock, table);
  }
}

/** Most entries of a kept-pages map (4 MiB of memory; a RAMBlock up to 4 TiB gets 1 MiB granules). */
const MAX_KEPT_ENTRIES = 1 << 22;

/**
 * Where pages of a RAMBlock were passed: one byte per `granule` bytes, 1
 * where a passed page lies. The granule is 1 MiB, the smallest virtio-mem
 * block, so the map is exact whatever block sizes the tables compared
 * later have; for a RAMBlock over 4 TiB it doubles until the map has at
 * most 4 Mi entries (a passed page then counts for its whole granule).
 */
export interface KeptMap {
  /** Bytes of the RAMBlock one entry stands for. */
  granule: number;
  /** One entry per granule: 1 where a page was passed. */
  bytes: Uint8Array;
}

/**
 * An empty kept-pages map for `table`'s RAMBlock.
 *
 * @param table The table in use.
 * @returns The map (mark a passed page at `Math.floor(ramOffset / granule)`).
 */
export function keptMap(table: BlockPlugTable): KeptMap {
  const byteLength = table.plugged.length * table.blockSize;
  let granule = 1 << 20;
  while (byteLength / granule > MAX_KEPT_ENTRIES) granule *= 2;
  return { granule, bytes: new Uint8Array(Math.ceil(byteLength / granule)) };
}

/** Whether `t` marks the RAMBlock offset `ramOffset` plugged. */
function pluggedAt(t: BlockPlugTable, ramOffset: number): boolean {
  return t.plugged[Math.floor(ramOffset / t.blockSize)] === 1;
}

/** The RAMBlock bytes two tables both describe, in steps of the finer block size. */
function commonSteps(a: BlockPlugTable, b: BlockPlugTable): { step: number; end: number } {
  return {
    step: Math.min(a.blockSize, b.blockSize),
    end: Math.min(a.plugged.length * a.blockSize, b.plugged.length * b.blockSize),
  };
}

/**
 * First block index of `a` that marks memory unplugged which `b` marks
 * plugged, or -1. Compared by RAMBlock offset: the two may have different
 * block sizes (a range list's map has the largest that fits its ranges).
 */
export function firstDroppedButPlugged(a: BlockPlugTable, b: BlockPlugTable): number {
  const { step, end } = commonSteps(a, b);
  for (let off = 0; off < end; off += step) {
    if (!pluggedAt(a, off) && pluggedAt(b, off)) return Math.floor(off / a.blockSize);
  }
  return -1;
}

/**
 * The stricter of a plug map's table and the stream's own state of the same
 * RAMBlock: memory either marks unplugged is unplugged (the destination
 * takes the stream's state). Compared by RAMBlock offset; the result has
 * the finer block size of the two, and is `map` itself when the stream
 * unplugs nothing the map marks plugged.
 *
 * @param map The table in use (from a plug map).
 * @param stream The table of the stream's own statement.
 * @param kept Where pages were already passed (see {@linkcode keptMap}).
 * @returns The table, and the first RAMBlock offset the map marks plugged,
 * the stream unplugged, and a passed page may lie at (-1: none).
 */
export function narrowToStream(
  map: BlockPlugTable,
  stream: BlockPlugTable,
  kept: KeptMap | undefined,
): { table: BlockPlugTable; keptAt: number } {
  const { step, end } = commonSteps(map, stream);
  let plugged: Uint8Array | undefined;
  let keptAt = -1;
  for (let off = 0; off < end; off += step) {
    if (!pluggedAt(map, off) || pluggedAt(stream, off)) continue;
    if (keptAt < 0 && kept !== undefined) {
      // A granule coarser than the step counts whole: a page anywhere in it may be in this step.
      for (let at = off; at < off + step; at += kept.granule) {
        if (kept.bytes[Math.floor(at / kept.granule)] === 1) {
          keptAt = Math.max(off, Math.floor(at / kept.granule) * kept.granule);
          break;
        }
      }
    }
    if (plugged === undefined) {
      plugged = new Uint8Array((map.plugged.length * map.blockSize) / step);
      for (let i = 0; i < plugged.length; i++) plugged[i] = pluggedAt(map, i * step) ? 1 : 0;
    }
    plugged[off / step] = 0;
  }
  if (plugged === undefined) return { table: map, keptAt };
  return { table: { ...map, blockSize: step, plugged }, keptAt };
}
