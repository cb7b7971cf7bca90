/**
 * The virtio-mem plug state of a VM: per device its geometry and one bit
 * per device block (set = plugged). Every map is validated against the
 * invariants QEMU maintains, however it was obtained (migration stream,
 * JSON, QMP reply, range list).
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import {
  bitmapByteLength,
  bitmapFromRuns,
  bitmapFromWire,
  bitmapToWire,
  classifyBits,
  firstBitBeyond,
  runsOf,
  testBit,
  trimBitmap,
} from "./_bitmap.ts";
import { isPowerOfTwo, popcount } from "../io/bits.ts";
import { hex } from "../io/text.ts";
import type { BlockRun, GpaRange, RamRange } from "./ranges.ts";
import { mergeGpaRanges } from "./ranges.ts";

/** Smallest virtio-mem block size QEMU accepts (1 MiB). */
export const VIRTIO_MEM_MIN_BLOCK_SIZE = 1 << 20;

/** NUMA nodes QEMU supports (MAX_NODES in include/sysemu/numa.h): a node id is below this. */
export const QEMU_MAX_NODES = 128;

/**
 * Most device blocks (bitmap bits) accepted for one virtio-mem device, from
 * any source: 2^27 blocks are 128 TiB at the smallest block size, and the
 * bitmap is 16 MiB. A cap so that no bitmap is sized by an unchecked field.
 */
export const VIRTIO_MEM_MAX_BLOCKS = 1 << 27;

/** Version of the JSON exchange format written by {@linkcode PlugMap.toJSON}. */
export const PLUGMAP_JSON_VERSION = 1;

/**
 * One virtio-mem device: geometry, sizes and the plug bitmap.
 *
 * @example
 * ```ts
 * import type { VmemDevice } from "@vmem-dump/vmem-dump";
 * const device: VmemDevice = {
 *   path: "0000:00:01.0", ramBlock: "0000:00:01.0/vmem0mem",
 *   gpa: 0x1_0000_0000, regionSize: 0x1000_0000, blockSize: 0x20_0000, node: 0,
 *   usableRegionSize: undefined, size: 0x20_0000, requestedSize: undefined,
 *   bitmap: new Uint8Array([0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
 * };
 * console.log(device.regionSize / device.blockSize); // 128 blocks
 * ```
 */
export interface VmemDevice {
  /** PCI path (the device path P of its sections), e.g. `0000:00:01.0`; `""` when unknown. */
  path: string;
  /**
   * RAMBlock idstr, e.g. `0000:00:01.0/vmem0mem`. When `path` is `""` this may
   * be the memory backend id alone (`vmem0mem`), matched as the last
   * component of an idstr; `""` when unknown.
   */
  ramBlock: string;
  /** Guest-physical base of the region (`memaddr`). */
  gpa: number;
  /** Region size in bytes (the memory backend size). */
  regionSize: number;
  /** Device block size in bytes (power of two, at least 1 MiB). */
  blockSize: number;
  /** NUMA node. */
  node: number;
  /** Usable region size in bytes, when known. */
  usableRegionSize: number | undefined;
  /** Plugged bytes (`size` in QEMU). */
  size: number;
  /** Requested size in bytes, when known. */
  requestedSize: number | undefined;
  /** One bit per block, LSB-first bytes: bit i is byte `i >> 3`, bit `i & 7`; set = plugged. */
  bitmap: Uint8Array;
}

/**
 * One device in the JSON exchange format (`version: 1`). Sizes and
 * addresses are integers in bytes; `plugged` lists sorted runs
 * `[firstBlock, blockCount]`.
 */
export interface PlugMapDeviceJson {
  /** PCI path; `""` when unknown. */
  path: string;
  /** RAMBlock idstr; `""` when unknown. */
  ramblock: string;
  /** Guest-physical base. */
  memaddr: number;
  /** Region size. */
  "region-size": number;
  /** Block size. */
  "block-size": number;
  /** NUMA node. */
  node: number;
  /** Usable region size, `null` when unknown. */
  "usable-region-size": number | null;
  /** Plugged bytes. */
  size: number;
  /** Requested size, `null` when unknown. */
  "requested-size": number | null;
  /** Plugged block runs `[firstBlock, blockCount]`, sorted, disjoint. */
  plugged: BlockRun[];
}

/** The JSON exchange format, version 1 (see docs/plugmaps.md). */
export interface PlugMapJson {
  /** Format version: 1. */
  version: 1;
  /** Devices in stream order. */
  devices: PlugMapDeviceJson[];
}

/** What a guest-physical range holds, see {@linkcode PlugMap.classifyGpaRange}. */
export type RangeClass = "plugged" | "unplugged" | "mixed" | "none";

function invariant(message: string): FormatError {
  return new FormatError(`Invalid virtio-mem plug map: ${message}`, {
    format: "plugmap",
    code: "invariant",
    offset: 0,
  });
}

function isU64(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

/**
 * Check every invariant of one device and throw a `FormatError` (format
 * `plugmap`, code `invariant`) naming the first that fails:
 *
 * - block size is a power of two of at least 1 MiB; node is below 128 (QEMU's MAX_NODES);
 * - region size is a non-zero multiple of the block size, memaddr is aligned to it;
 * - the bitmap has exactly `ceil(blocks / 8)` bytes and no bit past the last block;
 * - `size == popcount × block size`;
 * - when known: `size <= usable <= region size`, usable aligned to the block
 *   size, no plugged block at or beyond usable; `requested <= region size`,
 *   requested aligned, `requested <= usable`.
 *
 * @param device The device.
 * @param label How to name the device in messages.
 * @throws {FormatError} when an invariant does not hold.
 *
 * @example
 * ```ts
 * import { validateVmemDevice } from "@vmem-dump/vmem-dump";
 * try {
 *   validateVmemDevice({
 *     path: "", ramBlock: "", gpa: 0, regionSize: 1 << 21, blockSize: 1 << 20, node: 0,
 *     usableRegionSize: undefined, size: 0, requestedSize: undefined, bitmap: new Uint8Array([1]),
 *   });
 * } catch (e) {
 *   console.log((e as Error).message); // size 0x0 is not 1 plugged blocks × ...
 * }
 * ```
 */
export function validateVmemDevice(device: VmemDevice, label = "device"): void {
  const d = device;
  if (typeof d.path !== "string" || typeof d.ramBlock !== "string") {
    throw invariant(`${label}: path and ramBlock must be strings`);
  }
  for (
    const [name, v] of [["memaddr", d.gpa], ["region size", d.regionSize], [
      "block size",
      d.blockSize,
    ], [
      "size",
      d.size,
    ]] as const
  ) {
    if (!isU64(v)) throw invariant(`${label}: ${name} ${v} is not a non-negative safe integer`);
  }
  if (!Number.isInteger(d.node) || d.node < 0 || d.node >= QEMU_MAX_NODES) {
    throw invariant(`${label}: node ${d.node} is not a NUMA node below ${QEMU_MAX_NODES}`);
  }
  if (d.blockSize < VIRTIO_MEM_MIN_BLOCK_SIZE || !isPowerOfTwo(d.blockSize)) {
    throw invariant(
      `${label}: block size ${hex(d.blockSize)} is not a power of two of at least 1 MiB`,
    );
  }
  if (d.regionSize === 0 || d.regionSize % d.blockSize !== 0) {
    throw invariant(
      `${label}: region size ${hex(d.regionSize)} is not a non-zero multiple of block size ${
        hex(d.blockSize)
      }`,
    );
  }
  if (d.gpa % d.blockSize !== 0) {
    throw invariant(
      `${label}: memaddr ${hex(d.gpa)} is not aligned to block size ${hex(d.blockSize)}`,
    );
  }
  if (!Number.isSafeInteger(d.gpa + d.regionSize)) {
    throw invariant(`${label}: region ${hex(d.gpa)}+${hex(d.regionSize)} exceeds 2^53`);
  }
  const blocks = d.regionSize / d.blockSize;
  if (blocks > VIRTIO_MEM_MAX_BLOCKS) {
    throw invariant(`${label}: ${blocks} blocks are too many (at most ${VIRTIO_MEM_MAX_BLOCKS})`);
  }
  if (!(d.bitmap instanceof Uint8Array) || d.bitmap.byteLength !== bitmapByteLength(blocks)) {
    throw invariant(
      `${label}: bitmap must have ${bitmapByteLength(blocks)} bytes for ${blocks} blocks`,
    );
  }
  const stray = firstBitBeyond(d.bitmap, blocks);
  if (stray >= 0) {
    throw invariant(`${label}: bitmap sets bit ${stray} beyond the last block ${blocks - 1}`);
  }
  const plugged = popcount(d.bitmap);
  if (d.size !== plugged * d.blockSize) {
    throw invariant(
      `${label}: size ${hex(d.size)} is not ${plugged} plugged blocks × block size ${
        hex(d.blockSize)
      }`,
    );
  }
  if (d.usableRegionSize !== undefined) {
    const u = d.usableRegionSize;
    if (!isU64(u)) {
      throw invariant(`${label}: usable region size ${u} is not a non-negative safe integer`);
    }
    if (u > d.regionSize || u < d.size) {
      throw invariant(
        `${label}: usable region size ${hex(u)} is not between size ${
          hex(d.size)
        } and region size ${hex(d.regionSize)}`,
      );
    }
    if (u % d.blockSize !== 0) {
      throw invariant(
        `${label}: usable region size ${hex(u)} is not aligned to block size ${hex(d.blockSize)}`,
      );
    }
    const beyond = firstBitBeyond(d.bitmap, u / d.blockSize);
    if (beyond >= 0) {
      throw invariant(`${label}: block ${beyond} is plugged beyond usable region size ${hex(u)}`);
    }
  }
  if (d.requestedSize !== undefined) {
    const r = d.requestedSize;
    if (!isU64(r)) {
      throw invariant(`${label}: requested size ${r} is not a non-negative safe integer`);
    }
    if (r > d.regionSize || r % d.blockSize !== 0) {
      throw invariant(
        `${label}: requested size ${hex(r)} is not a block-aligned size within region size ${
          hex(d.regionSize)
        }`,
      );
    }
    if (d.usableRegionSize !== undefined && r > d.usableRegionSize) {
      throw invariant(
        `${label}: requested size ${hex(r)} exceeds usable region size ${hex(d.usableRegionSize)}`,
      );
    }
  }
}

/**
 * Convert a plug bitmap from QEMU's wire form (big-endian u64 words, bit i
 * in word `i >> 6` at bit `i & 63`, as in migration streams) to the
 * LSB-first bytes of {@linkcode VmemDevice.bitmap}.
 *
 * @param wire At least `8 * ceil(blockCount / 64)` bytes.
 * @param blockCount Blocks of the device.
 * @returns `ceil(blockCount / 8)` bytes (a new buffer).
 * @throws {FormatError} (format `plugmap`, code `invariant`) when a bit at or beyond `blockCount` is set.
 * @throws {RangeError} when `wire` is too short.
 *
 * @example Blocks 0 and 64 plugged
 * ```ts
 * import { bitmapFromWireWords } from "@vmem-dump/vmem-dump";
 * const wire = new Uint8Array(16);
 * wire[7] = 0x01; // word 0, bit 0
 * wire[15] = 0x01; // word 1, bit 0 = block 64
 * const bitmap = bitmapFromWireWords(wire, 128);
 * console.log(bitmap[0], bitmap[8]); // 1 1
 * ```
 */
export function bitmapFromWireWords(wire: Uint8Array, blockCount: number): Uint8Array<ArrayBuffer> {
  const full = bitmapFromWire(wire, blockCount);
  const stray = firstBitBeyond(full, blockCount);
  if (stray >= 0) {
    throw invariant(`bitmap sets bit ${stray} beyond the last block ${blockCount - 1}`);
  }
  return trimBitmap(full, blockCount);
}

/**
 * Convert an LSB-first plug bitmap back to QEMU's wire form (big-endian u64 words).
 *
 * @param bitmap LSB-first bytes.
 * @param blockCount Blocks of the device.
 * @returns `8 * ceil(blockCount / 64)` bytes.
 *
 * @example
 * ```ts
 * import { bitmapToWireWords } from "@vmem-dump/vmem-dump";
 * console.log(bitmapToWireWords(new Uint8Array([1]), 8)[7]); // 1
 * ```
 */
export function bitmapToWireWords(bitmap: Uint8Array, blockCount: number): Uint8Array<ArrayBuffer> {
  return bitmapToWire(bitmap, blockCount);
}

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
    return {
      version: PLUGMAP_JSON_VERSION,
      devices: this.devices.map((d) => ({
        path: d.path,
        ramblock: d.ramBlock,
        memaddr: d.gpa,
        "region-size": d.regionSize,
        "block-size": d.blockSize,
        node: d.node,
        "usable-region-size": d.usableRegionSize ?? null,
        size: d.size,
        "requested-size": d.requestedSize ?? null,
        plugged: this.blockRuns(d, true),
      })),
    };
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
    if (!isObject(json)) throw badJson("expected an object with version and devices");
    if (json.version !== PLUGMAP_JSON_VERSION) {
      throw badJson(`unsupported version ${JSON.stringify(json.version)}, expected 1`);
    }
    if (!Array.isArray(json.devices)) throw badJson("devices must be an array");
    return new PlugMap(json.devices.map((d, i) => deviceFromJson(d, `devices[${i}]`)));
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function badJson(message: string): FormatError {
  return new FormatError(`Cannot read plug map JSON: ${message}`, {
    format: "plugmap",
    code: "bad-json",
    offset: 0,
  });
}

function jsonInt(o: Record<string, unknown>, key: string, where: string): number {
  const v = o[key];
  if (!isU64(v)) {
    throw badJson(`${where}.${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function jsonOptionalInt(
  o: Record<string, unknown>,
  key: string,
  where: string,
): number | undefined {
  return o[key] === undefined || o[key] === null ? undefined : jsonInt(o, key, where);
}

function jsonString(o: Record<string, unknown>, key: string, where: string): string {
  const v = o[key] ?? "";
  if (typeof v !== "string") throw badJson(`${where}.${key} must be a string`);
  return v;
}

/**
 * Check block runs against a device of `blocks` blocks: integers, count > 0,
 * sorted, disjoint, in range. Touching runs are merged.
 *
 * @param runs Parsed JSON value.
 * @param blocks Blocks of the device.
 * @param where Name for messages.
 * @returns The runs, merged.
 * @throws {FormatError} (format `plugmap`, code `bad-json`) on the first bad run.
 *
 * @example
 * ```ts
 * import { checkBlockRuns } from "@vmem-dump/vmem-dump";
 * console.log(checkBlockRuns([[0, 2], [2, 3]], 128, "plugged")); // [[0, 5]]
 * ```
 */
export function checkBlockRuns(runs: unknown, blocks: number, where: string): BlockRun[] {
  if (!Array.isArray(runs)) throw badJson(`${where} must be an array of [firstBlock, blockCount]`);
  const out: BlockRun[] = [];
  let next = 0;
  for (let i = 0; i < runs.length; i++) {
    const r: unknown = runs[i];
    if (!Array.isArray(r) || r.length !== 2 || !isU64(r[0]) || !isU64(r[1]) || r[1] === 0) {
      throw badJson(`${where}[${i}] must be [firstBlock, blockCount] with blockCount > 0`);
    }
    const [first, count] = r as [number, number];
    if (first < next) throw badJson(`${where}[${i}] is not sorted or overlaps the run before`);
    if (first + count > blocks) {
      throw badJson(`${where}[${i}] ends beyond the last block ${blocks - 1}`);
    }
    const last = out[out.length - 1];
    if (last !== undefined && last[0] + last[1] === first) last[1] += count;
    else out.push([first, count]);
    next = first + count;
  }
  return out;
}

function deviceFromJson(d: unknown, where: string): VmemDevice {
  if (!isObject(d)) throw badJson(`${where} must be an object`);
  const regionSize = jsonInt(d, "region-size", where);
  const blockSize = jsonInt(d, "block-size", where);
  if (blockSize < VIRTIO_MEM_MIN_BLOCK_SIZE || regionSize % blockSize !== 0 || regionSize === 0) {
    throw invariant(
      `${where}: region size ${hex(regionSize)} is not a non-zero multiple of block size ${
        hex(blockSize)
      } (at least 1 MiB)`,
    );
  }
  const blocks = regionSize / blockSize;
  if (blocks > VIRTIO_MEM_MAX_BLOCKS) throw invariant(`${where}: ${blocks} blocks are too many`);
  const runs = checkBlockRuns(d.plugged, blocks, `${where}.plugged`);
  return {
    path: jsonString(d, "path", where),
    ramBlock: jsonString(d, "ramblock", where),
    gpa: jsonInt(d, "memaddr", where),
    regionSize,
    blockSize,
    node: jsonInt(d, "node", where),
    usableRegionSize: jsonOptionalInt(d, "usable-region-size", where),
    size: jsonInt(d, "size", where),
    requestedSize: jsonOptionalInt(d, "requested-size", where),
    bitmap: bitmapFromRuns(runs, blocks),
  };
}
