/**
 * Collects, record by record, what a decoded migration stream says about
 * virtio-mem (the MEM_SIZE list, early sections, device sections, the
 * vmdesc) and turns it into validated {@linkcode VmemDevice}s. Shared by the
 * plug-state extraction (`plug_state.ts`, strict) and the stream scanner
 * (`stream_plug_state.ts`, lenient about sections that are missing or
 * contradict each other).
 *
 * @module
 */

import { FormatError, formatErrorSentence } from "../errors.ts";
import { bitmapFromWireWords } from "./wire_bitmap.ts";
import { PlugMap } from "../vmem/plug_map.ts";
import { validateVmemDevice, type VmemDevice } from "../vmem/vmem_device.ts";
import {
  isPageRecord,
  type MigrationRecord,
  type RamBlockInfo,
  type TailProblemRecord,
  type VirtioMemDeviceRecord,
  type VirtioMemDeviceState,
  type VirtioMemEarlyRecord,
} from "./types.ts";
import { popcount } from "../io/bits.ts";
import { VIRTIO_MEM_DEVICE_SUFFIX } from "./constants.ts";
import { findVirtioMemRamBlock } from "./virtio_mem_device.ts";

/** Geometry, plugged size and wire bitmap of a virtio-mem device. */
export interface VirtioMemGeometry {
  gpa: number;
  regionSize: number;
  blockSize: number;
  node: number;
  size: number;
  /** As on the wire: be64 words, bit i in word `i >> 6`. */
  wire: Uint8Array;
}

/**
 * The geometry an early section gives, or a late-layout device section;
 * `undefined` for an early-layout device section (sizes only).
 */
export function virtioMemGeometry(
  r: VirtioMemEarlyRecord | VirtioMemDeviceRecord,
): VirtioMemGeometry | undefined {
  if (r.kind === "virtio-mem-early") {
    const { gpa, regionSize, blockSize, node, size, bitmap } = r;
    return { gpa, regionSize, blockSize, node, size, wire: bitmap };
  }
  return lateGeometry(r.state);
}

/** The geometry of a late-layout device state, `undefined` for the early layout. */
export function lateGeometry(s: VirtioMemDeviceState): VirtioMemGeometry | undefined {
  if (
    s.layout !== "late" || s.gpa === undefined || s.regionSize === undefined ||
    s.blockSize === undefined || s.node === undefined || s.size === undefined ||
    s.bitmap === undefined
  ) {
    return undefined;
  }
  return {
    gpa: s.gpa,
    regionSize: s.regionSize,
    blockSize: s.blockSize,
    node: s.node,
    size: s.size,
    wire: s.bitmap,
  };
}

/** A device section found in the stream (or through the vmdesc). */
export interface LateSection {
  state: VirtioMemDeviceState;
  streamOffset: number;
}

/** Options for {@linkcode PlugStateCollector}. */
export interface PlugStateCollectorOptions {
  /**
   * What errors say was being done: `Cannot <doing>: <detail>`.
   * @default {"extract virtio-mem plug state"}
   */
  doing?: string;
}

/** How {@linkcode PlugStateCollector.devices} treats sections that do not fit together. */
export interface CollectDevicesOptions {
  /**
   * Throw for an early device whose device section uses the late layout and
   * for an early-layout device section without an early section; otherwise
   * the early section wins and incomplete sections are skipped.
   */
  strict: boolean;
  /** With `strict`: the whole stream was seen, so every early section needs its device section. */
  toEnd?: boolean;
}

/** Collects what the records say about virtio-mem, then assembles and validates devices. */
export class PlugStateCollector {
  /** The MEM_SIZE list, once seen. */
  ramBlocks: RamBlockInfo[] | undefined;
  /** Where the MEM_SIZE list was. */
  ramBlocksOffset = 0;
  /**
   * Early sections by device path (bitmaps copied). When a device has several,
   * the bitmap is what all of them mark plugged (a block unplugged in any of
   * them is unplugged here) and `size` follows it.
   */
  early = new Map<string, VirtioMemEarlyRecord>();
  /** Device sections by device path (bitmaps copied; merged like {@linkcode early}). */
  late = new Map<string, LateSection>();
  /**
   * Plug-state sections that restated a device's plug state (a second early
   * section, a second device section with a bitmap): QEMU ends with the last
   * one, but pages were loaded under the others. Never a silent choice:
   * {@linkcode finish} refuses them, lenient users merge (see above).
   */
  replaced: { devicePath: string; streamOffset: number; first: number }[] = [];
  /** Early sections seen (each one, also a second for the same device). */
  earlySectionCount = 0;
  /** Where the vmdesc disagrees with the sections it describes (the sections are what counts). */
  vmdescDisagreements: TailProblemRecord[] = [];
  /** A RAM page, PART or END section was seen: the early sections are behind us. */
  sawRam = false;
  /** The device-state tail or EOF was reached. */
  sawEnd = false;
  #pendingDevice: { idstr: string; streamOffset: number } | undefined;
  #doing: string;

  /** @param options How errors are worded. */
  constructor(options: PlugStateCollectorOptions = {}) {
    this.#doing = options.doing ?? "extract virtio-mem plug state";
  }

  /** A `bad-virtio-mem` error at `offset`. */
  bad(message: string, offset: number, cause?: unknown): FormatError {
    return new FormatError(
      `Cannot ${this.#doing}: ${message}`,
      { format: "migration", code: "bad-virtio-mem", offset },
      cause === undefined ? undefined : { cause },
    );
  }

  /**
   * Take in the next record of the stream.
   * @throws {FormatError} when a `P/virtio-mem` section is not followed by its parsed state.
   */
  add(r: MigrationRecord): void {
    if (this.#pendingDevice !== undefined && r.kind !== "virtio-mem-device") {
      this.#throwPending();
    }
    switch (r.kind) {
      case "ram-mem-size":
        this.ramBlocks = r.blocks.map((b) => ({ ...b }));
        this.ramBlocksOffset = r.streamOffset;
        break;
      case "virtio-mem-early": {
        this.earlySectionCount++;
        const before = this.early.get(r.devicePath);
        const copy = { ...r, bitmap: r.bitmap.slice() };
        if (before !== undefined) {
          this.replaced.push({
            devicePath: r.devicePath,
            streamOffset: r.streamOffset,
            first: before.streamOffset,
          });
          if (sameGeometry(before, copy)) {
            copy.bitmap = andBitmaps(before.bitmap, copy.bitmap);
            copy.size = popcount(copy.bitmap) * copy.blockSize;
            copy.streamOffset = before.streamOffset;
          }
        }
        this.early.set(r.devicePath, copy);
        break;
      }
      case "section-part":
      case "section-end":
        this.sawRam = true;
        break;
      case "section-full":
        if (r.idstr.endsWith(VIRTIO_MEM_DEVICE_SUFFIX)) {
          this.#pendingDevice = { idstr: r.idstr, streamOffset: r.streamOffset };
        }
        if (!r.idstr.endsWith("-early")) this.sawRam = true;
        break;
      case "virtio-mem-device": {
        this.#pendingDevice = undefined;
        const state = { ...r.state, ...(r.state.bitmap ? { bitmap: r.state.bitmap.slice() } : {}) };
        const before = this.late.get(r.devicePath);
        let streamOffset = r.streamOffset;
        if (before !== undefined && lateGeometry(before.state) !== undefined) {
          this.replaced.push({
            devicePath: r.devicePath,
            streamOffset,
            first: before.streamOffset,
          });
          if (
            state.bitmap !== undefined && before.state.bitmap !== undefined &&
            state.blockSize === before.state.blockSize &&
            state.regionSize === before.state.regionSize
          ) {
            state.bitmap = andBitmaps(before.state.bitmap, state.bitmap);
            state.size = popcount(state.bitmap) * state.blockSize!;
            streamOffset = before.streamOffset;
          }
        }
        this.late.set(r.devicePath, { state, streamOffset });
        break;
      }
      case "opaque":
      case "eof":
        this.sawRam = true;
        this.sawEnd = true;
        break;
      case "vmdesc":
        this.sawEnd = true;
        break;
      case "tail-problem":
        // The sections were found by their headers and structure: a vmdesc that names them
        // differently changes nothing QEMU loads. Anything else leaves the tail unproven.
        if (r.code === "vmdesc-mismatch") {
          this.vmdescDisagreements.push(r);
          break;
        }
        throw new FormatError(
          `Cannot ${this.#doing}: the device state after the RAM cannot be proven: ${r.message}`,
          { format: "migration", code: "unproven", offset: r.streamOffset },
        );
      default:
        if (isPageRecord(r)) this.sawRam = true;
    }
  }

  #throwPending(): never {
    const p = this.#pendingDevice!;
    throw this.bad(
      `section ${JSON.stringify(p.idstr)} is not followed by its parsed device state`,
      p.streamOffset,
    );
  }

  /** Stop point of the early layout: early sections seen and RAM has begun. */
  get earlyDone(): boolean {
    return this.sawRam && this.early.size > 0;
  }

  /** Whether a device section with the late layout (sizes and bitmap) was seen. */
  get sawLateLayout(): boolean {
    for (const l of this.late.values()) if (lateGeometry(l.state) !== undefined) return true;
    return false;
  }

  /**
   * The devices of the early sections seen so far, without usable and
   * requested size (only the device sections carry them).
   * @throws {FormatError} (code `bad-virtio-mem`) when a device is impossible.
   */
  earlyDevices(): VmemDevice[] {
    return [...this.early].map(([path, e]) => this.#earlyDevice(path, e, undefined));
  }

  /**
   * The devices the records describe: one per early section (completed with
   * usable and requested size from its device section), then one per
   * late-layout device section of a device without an early section.
   * @throws {FormatError} (code `bad-virtio-mem`) when a device is impossible, or
   * (with `strict`) when sections contradict each other or are missing.
   */
  devices(options: CollectDevicesOptions): VmemDevice[] {
    const devices: VmemDevice[] = [];
    for (const [path, e] of this.early) {
      const late = this.late.get(path);
      if (options.strict && late !== undefined && late.state.layout !== "early") {
        throw this.bad(
          `device ${path} has an early section but its device section uses the late layout`,
          late.streamOffset,
        );
      }
      if (options.strict && options.toEnd && late === undefined) {
        throw this.bad(
          `no device section ${
            JSON.stringify(path + VIRTIO_MEM_DEVICE_SUFFIX)
          } for the early section of ${path}`,
          e.streamOffset,
        );
      }
      devices.push(this.#earlyDevice(path, e, late));
    }
    for (const [path, l] of this.late) {
      if (this.early.has(path)) continue;
      const g = lateGeometry(l.state);
      if (g === undefined) {
        if (!options.strict) continue;
        throw this.bad(
          `device section of ${path} uses the early layout but the stream has no early section for it`,
          l.streamOffset,
        );
      }
      devices.push(this.#device(path, g, l.state, l.streamOffset));
    }
    return devices;
  }

  /**
   * Assemble and validate the map (strict).
   * @param toEnd Whether the whole stream (or its vmdesc-located device sections) was seen.
   * @throws {FormatError} (code `bad-virtio-mem`) when the state is missing, impossible or contradictory.
   */
  finish(toEnd: boolean): { plugMap: PlugMap; layout: "early" | "late" | "none" } {
    if (this.#pendingDevice !== undefined) this.#throwPending();
    const replaced = this.replaced[0];
    if (replaced !== undefined) {
      throw this.bad(
        `the stream states the plug state of ${replaced.devicePath} twice (sections at 0x${
          replaced.first.toString(16)
        } and 0x${
          replaced.streamOffset.toString(16)
        }): the destination ends with the last, but pages were loaded under the first`,
        replaced.streamOffset,
      );
    }
    const devices = this.devices({ strict: true, toEnd });
    const plugMap = this.buildMap(devices, this.ramBlocksOffset);
    const layout = this.early.size > 0 ? "early" : devices.length > 0 ? "late" : "none";
    return { plugMap, layout };
  }

  /**
   * A map of `devices`, its invariant errors as `bad-virtio-mem` at `offset`.
   * @throws {FormatError} (code `bad-virtio-mem`) when the devices contradict each other.
   */
  buildMap(devices: VmemDevice[], offset: number): PlugMap {
    try {
      return new PlugMap(devices);
    } catch (e) {
      if (e instanceof FormatError) throw this.bad(formatErrorSentence(e), offset, e);
      throw e;
    }
  }

  #earlyDevice(
    path: string,
    e: VirtioMemEarlyRecord,
    late: LateSection | undefined,
  ): VmemDevice {
    return this.#device(path, virtioMemGeometry(e)!, {
      usableRegionSize: late?.state.usableRegionSize,
      requestedSize: late?.state.requestedSize,
    }, e.streamOffset);
  }

  #device(
    path: string,
    g: VirtioMemGeometry,
    sizes: { usableRegionSize: number | undefined; requestedSize: number | undefined },
    streamOffset: number,
  ): VmemDevice {
    if (this.ramBlocks === undefined) {
      throw this.bad(
        `device ${path} appears before any RAMBlock list (no ram START section)`,
        streamOffset,
      );
    }
    const block = findVirtioMemRamBlock(path, g.regionSize, this.ramBlocks);
    if (block === undefined) {
      throw this.bad(
        `no RAMBlock ${JSON.stringify(path + "/…")} of region size 0x${
          g.regionSize.toString(16)
        } in the RAMBlock list`,
        streamOffset,
      );
    }
    try {
      if (g.blockSize <= 0 || g.regionSize % g.blockSize !== 0) {
        throw new FormatError(
          `block size 0x${g.blockSize.toString(16)} does not divide region size 0x${
            g.regionSize.toString(16)
          }`,
          { format: "plugmap", code: "invariant", offset: 0 },
        );
      }
      const device: VmemDevice = {
        path,
        ramBlock: block.idstr,
        gpa: g.gpa,
        regionSize: g.regionSize,
        blockSize: g.blockSize,
        node: g.node,
        usableRegionSize: sizes.usableRegionSize,
        size: g.size,
        requestedSize: sizes.requestedSize,
        bitmap: bitmapFromWireWords(g.wire, g.regionSize / g.blockSize),
      };
      validateVmemDevice(device, `device ${path}`);
      return device;
    } catch (e) {
      if (e instanceof FormatError || e instanceof RangeError) {
        throw this.bad(
          e instanceof FormatError ? formatErrorSentence(e) : e.message,
          streamOffset,
          e,
        );
      }
      throw e;
    }
  }
}

/** Whether two early sections describe the same region with the same blocks. */
function sameGeometry(a: VirtioMemEarlyRecord, b: VirtioMemEarlyRecord): boolean {
  return a.gpa === b.gpa && a.regionSize === b.regionSize && a.blockSize === b.blockSize &&
    a.bitmap.byteLength === b.bitmap.byteLength;
}

/** Blocks plugged in both (wire bitmaps of the same length; byte order does not matter). */
function andBitmaps(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Math.min(a.byteLength, b.byteLength));
  for (let i = 0; i < out.byteLength; i++) out[i] = a[i]! & b[i]!;
  return out;
}
