/**
 * The virtio-mem plug state of a VM and its queries: which device holds a
 * guest-physical address or RAMBlock offset, whether its block is plugged,
 * what a range holds, and the plugged or unplugged ranges. The device model
 * is in `vmem_device.ts`, the JSON exchange format in `plug_map_json.ts`.
 *
 * @module
 */

import { popcount, testBit } from "../io/bits.ts";
import { hex } from "../io/text.ts";
import { invariantError as invariant } from "./_checks.ts";
import { classifyBits, runsOf } from "./_bitmap.ts";
import {
  devicesFromPlugMapJson,
  type PlugMapJson,
  plugMapJsonFromDevices,
} from "./plug_map_json.ts";
import type { BlockRun, GpaRange, RamRange } from "./ranges.ts";
import { mergeGpaRanges } from "./ranges.ts";
import { validateVmemDevice, type VmemDevice } from "./vmem_device.ts";

/** What a guest-physical range holds, see {@linkcode PlugMap.classifyGpaRange}. */
export type RangeClass = "plugged" | "unplugged" | "mixed" | "none";

/** Number of device blocks. */
function blockCount(device: VmemDevice): number {
  return device.regionSize / device.blockSize;
}

/**
 * The virtio-mem plug state of a VM: devices with their plug bitmaps, and
 * queries by guest-physical address, RAMBlock offset and block index.
 *
 * The constructor validates every device ({@linkcode validateVmemDevice}) and
 * that device regions do not overlap and RAMBlock names are unique. Devices
 * are copied and frozen, so a map never changes after construction.
 *
 * @example Build a map and query it
 * ```ts
 * import { PlugMap } from "@vmem-dump/vmem-dump";
 * const bitmap = new Uint8Array(16);
 * bitmap[0] = 0x0f; // blocks 0-3 plugged
 * const map = new PlugMap([{
 *   path: "0000:00:01.0", ramBlock: "0000:00:01.0/vmem0mem",
 *   gpa: 0x1_0000_0000, regionSize: 0x1000_0000, blockSize: 0x20_0000, node: 0,
 *   usableRegionSize: undefined, size: 4 * 0x20_0000, requestedSize: undefined, bitmap,
 * }]);
 * console.log(map.isGpaPlugged(0x1_0000_0000)); // true
 * console.log(map.isGpaPlugged(0x1_0080_0000)); // false
 * console.log(map.isGpaPlugged(0x1000)); // undefined: not virtio-mem memory
 * console.log(map.classifyGpaRange(0x1_0000_0000, 0x100_0000)); // "mixed"
 * ```
 */
export class PlugMap {
  /** Devices in the order given (stream order for extracted maps). */
  readonly devices: readonly VmemDevice[];
  #byGpa: VmemDevice[];
  #byRamBlock = new Map<string, VmemDevice>();
  #byBackend = new Map<string, VmemDevice>();

  /**
   * Validate and copy the devices.
   *
   * @param devices The devices; copied and validated.
   * @throws {FormatError} (format `plugmap`, code `invariant`) when a device breaks an invariant,
   * two regions overlap or two devices name the same RAMBlock.
   */
  constructor(devices: readonly VmemDevice[]) {
    const copies = devices.map((d, i) => {
      const label = `device ${i}${d.path ? ` (${d.path})` : ""}`;
      validateVmemDevice(d, label);
      const copy: VmemDevice = {
        path: d.path,
        ramBlock: d.ramBlock,
        gpa: d.gpa,
        regionSize: d.regionSize,
        blockSize: d.blockSize,
        node: d.node,
        usableRegionSize: d.usableRegionSize,
        size: d.size,
        requestedSize: d.requestedSize,
        bitmap: d.bitmap.slice(),
      };
      return Object.freeze(copy);
    });
    this.#byGpa = [...copies].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < this.#byGpa.length; i++) {
      const prev = this.#byGpa[i - 1]!;
      const cur = this.#byGpa[i]!;
      if (cur.gpa < prev.gpa + prev.regionSize) {
        throw invariant(
          `regions ${hex(prev.gpa)}+${hex(prev.regionSize)} and ${hex(cur.gpa)}+${
            hex(cur.regionSize)
          } overlap`,
        );
      }
    }
    for (const d of copies) {
      if (d.ramBlock === "") continue;
      const table = d.path === "" && !d.ramBlock.includes("/") ? this.#byBackend : this.#byRamBlock;
      if (table.has(d.ramBlock)) {
        throw invariant(`two devices use RAMBlock ${JSON.stringify(d.ramBlock)}`);
      }
      table.set(d.ramBlock, d);
    }
    this.devices = Object.freeze(copies);
  }

  /**
   * The device whose region holds `gpa`.
   *
   * @param gpa Guest-physical address.
   * @returns The device, or `undefined` when `gpa` is not virtio-mem memory.
   */
  deviceForGpa(gpa: number): VmemDevice | undefined {
    let lo = 0;
    let hi = this.#byGpa.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const d = this.#byGpa[mid]!;
      if (gpa < d.gpa) hi = mid - 1;
      else if (gpa >= d.gpa + d.regionSize) lo = mid + 1;
      else return d;
    }
    return undefined;
  }

  /**
   * The device whose memory backend is the RAMBlock `idstr`. Exact match
   * first; a device whose path is unknown (`""`, e.g. from a QMP reply) and
   * whose `ramBlock` is a bare backend id (`vmem0mem`) matches any idstr
   * whose last `/` component is that id.
   *
   * @param idstr RAMBlock idstr from a migration stream.
   * @returns The device, or `undefined`.
   */
  deviceForRamBlock(idstr: string): VmemDevice | undefined {
    const exact = this.#byRamBlock.get(idstr);
    if (exact !== undefined || this.#byBackend.size === 0) return exact;
    const cut = idstr.lastIndexOf("/");
    return cut < 0 ? undefined : this.#byBackend.get(idstr.slice(cut + 1));
  }

  /**
   * Whether block `blockIndex` of `device` is plugged.
   *
   * @param device A device of this map.
   * @param blockIndex Block index, `0 <= blockIndex < regionSize / blockSize`.
   * @returns `true` when plugged.
   * @throws {RangeError} when the index is outside the device.
   */
  isBlockPlugged(device: VmemDevice, blockIndex: number): boolean {
    if (!Number.isInteger(blockIndex) || blockIndex < 0 || blockIndex >= blockCount(device)) {
      throw new RangeError(
        `Block index ${blockIndex} is outside device ${device.path || device.ramBlock}`,
      );
    }
    return testBit(device.bitmap, blockIndex);
  }

  /**
   * Block index of a guest-physical address inside `device`.
   *
   * @returns The index, or `undefined` when `gpa` is outside the region.
   */
  blockIndexForGpa(device: VmemDevice, gpa: number): number | undefined {
    const rel = gpa - device.gpa;
    if (!(rel >= 0 && rel < device.regionSize)) return undefined;
    return Math.floor(rel / device.blockSize);
  }

  /**
   * Block index of an offset inside the device's RAMBlock.
   *
   * @returns The index, or `undefined` when `ramOffset` is outside the region.
   */
  blockIndexForRamOffset(device: VmemDevice, ramOffset: number): number | undefined {
    if (!(ramOffset >= 0 && ramOffset < device.regionSize)) return undefined;
    return Math.floor(ramOffset / device.blockSize);
  }

  /**
   * Whether the block holding `gpa` is plugged.
   *
   * @returns `true`/`false`, or `undefined` when `gpa` is not virtio-mem memory.
   */
  isGpaPlugged(gpa: number): boolean | undefined {
    const d = this.deviceForGpa(gpa);
    if (d === undefined) return undefined;
    return testBit(d.bitmap, Math.floor((gpa - d.gpa) / d.blockSize));
  }

  /**
   * Whether the block holding `ramOffset` of RAMBlock `idstr` is plugged.
   *
   * @returns `true`/`false`, or `undefined` when the RAMBlock is no virtio-mem
   * backend of this map or the offset lies beyond its region.
   */
  isRamOffsetPlugged(idstr: string, ramOffset: number): boolean | undefined {
    const d = this.deviceForRamBlock(idstr);
    if (d === undefined) return undefined;
    const i = this.blockIndexForRamOffset(d, ramOffset);
    return i === undefined ? undefined : testBit(d.bitmap, i);
  }

  /**
   * What the guest-physical range `[gpa, gpa + byteLength)` holds: `"none"`
   * when no byte is virtio-mem memory, `"plugged"`/`"unplugged"` when every
   * byte is in plugged/unplugged blocks, and `"mixed"` when the range holds
   * more than one of plugged, unplugged and non-virtio-mem bytes.
   *
   * @param gpa First address.
   * @param byteLength Length in bytes (0 gives `"none"`).
   * @returns The class of the range.
   */
  classifyGpaRange(gpa: number, byteLength: number): RangeClass {
    if (!(byteLength > 0)) return "none";
    const end = gpa + byteLength;
    let result: RangeClass | undefined;
    const add = (c: RangeClass): boolean => {
      if (result === undefined) result = c;
      else if (result !== c) result = "mixed";
      return result === "mixed";
    };
    let cursor = gpa;
    for (const d of this.#byGpa) {
      const dEnd = d.gpa + d.regionSize;
      if (dEnd <= cursor) continue;
      if (d.gpa >= end) break;
      if (d.gpa > cursor && add("none")) return "mixed";
      const from = Math.max(cursor, d.gpa);
      const to = Math.min(end, dEnd);
      const first = Math.floor((from - d.gpa) / d.blockSize);
      const last = Math.ceil((to - d.gpa) / d.blockSize);
      if (add(classifyBits(d.bitmap, first, last))) return "mixed";
      cursor = to;
      if (cursor >= end) break;
    }
    if (cursor < end) add("none");
    return result ?? "none";
  }

  /**
   * Like {@linkcode classifyGpaRange} for `[ramOffset, ramOffset + byteLength)`
   * inside one device's RAMBlock; bytes beyond the region count as `"none"`.
   */
  classifyRamRange(device: VmemDevice, ramOffset: number, byteLength: number): RangeClass {
    if (!(byteLength > 0) || ramOffset >= device.regionSize) return "none";
    const to = Math.min(ramOffset + byteLength, device.regionSize);
    const c = classifyBits(
      device.bitmap,
      Math.floor(Math.max(0, ramOffset) / device.blockSize),
      Math.ceil(to / device.blockSize),
    );
    return ramOffset + byteLength > device.regionSize || ramOffset < 0 ? "mixed" : c;
  }

  /**
   * Number of plugged blocks of a device (popcount of its bitmap).
   *
   * @param device A device of this map.
   * @returns `size / blockSize`.
   */
  pluggedBlockCount(device: VmemDevice): number {
    return popcount(device.bitmap);
  }

  /**
   * Runs of plugged (or unplugged) blocks of a device, as `[firstBlock, blockCount]`.
   *
   * @param device A device of this map.
   * @param plugged Which runs. @default {true}
   * @returns Sorted, maximal runs.
   */
  blockRuns(device: VmemDevice, plugged = true): BlockRun[] {
    return runsOf(device.bitmap, blockCount(device), plugged);
  }

  /** Plugged guest-physical ranges of all devices: sorted and merged. */
  pluggedGpaRanges(): GpaRange[] {
    return this.#gpaRanges(true);
  }

  /** Unplugged guest-physical ranges of all devices: sorted and merged. */
  unpluggedGpaRanges(): GpaRange[] {
    return this.#gpaRanges(false);
  }

  /**
   * Plugged ranges inside the RAMBlocks of all devices (or of one device).
   *
   * @param device Only this device. @default {undefined}
   */
  pluggedRamRanges(device?: VmemDevice): RamRange[] {
    return this.#ramRanges(true, device);
  }

  /**
   * Unplugged ranges inside the RAMBlocks of all devices (or of one device).
   *
   * @param device Only this device. @default {undefined}
   */
  unpluggedRamRanges(device?: VmemDevice): RamRange[] {
    return this.#ramRanges(false, device);
  }

  #gpaRanges(plugged: boolean): GpaRange[] {
    const out: GpaRange[] = [];
    for (const d of this.#byGpa) {
      for (const [first, count] of this.blockRuns(d, plugged)) {
        out.push({ gpa: d.gpa + first * d.blockSize, byteLength: count * d.blockSize });
      }
    }
    return mergeGpaRanges(out);
  }

  #ramRanges(plugged: boolean, only: VmemDevice | undefined): RamRange[] {
    const out: RamRange[] = [];
    for (const d of only ? [only] : this.devices) {
      for (const [first, count] of this.blockRuns(d, plugged)) {
        out.push({
          ramBlock: d.ramBlock,
          ramOffset: first * d.blockSize,
          byteLength: count * d.blockSize,
        });
      }
    }
    return out;
  }

  /**
   * The JSON exchange format, version 1 (documented in docs/plugmaps.md).
   * `JSON.stringify(map)` uses it.
   *
   * @returns A plain object; unknown sizes are `null`.
   */
  toJSON(): PlugMapJson {
    return plugMapJsonFromDevices(this.devices);
  }

  /**
   * Read the JSON exchange format, version 1. Runs must be sorted, in range
   * and must not overlap (touching runs are merged); `usable-region-size`
   * and `requested-size` may be `null` or absent.
   *
   * @param json Parsed JSON.
   * @returns The validated map.
   * @throws {FormatError} (format `plugmap`, code `bad-json`) for a wrong shape,
   * code `invariant` when the described state is impossible.
   *
   * @example Round trip
   * ```ts
   * import { PlugMap } from "@vmem-dump/vmem-dump";
   * const map = PlugMap.fromJSON({
   *   version: 1,
   *   devices: [{
   *     path: "0000:00:01.0", ramblock: "0000:00:01.0/vmem0mem", memaddr: 4294967296,
   *     "region-size": 268435456, "block-size": 2097152, node: 0,
   *     "usable-region-size": 268435456, size: 104857600, "requested-size": 104857600,
   *     plugged: [[0, 14], [64, 36]],
   *   }],
   * });
   * console.log(JSON.stringify(map.toJSON().devices[0]!.plugged)); // [[0,14],[64,36]]
   * ```
   */
  static fromJSON(json: unknown): PlugMap {
    return new PlugMap(devicesFromPlugMapJson(json));
  }
}
