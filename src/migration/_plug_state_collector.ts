/**
 * Collects, record by record, what a decoded migration stream says about
 * virtio-mem (the MEM_SIZE list, early sections, device sections, the
 * vmdesc) and turns it into validated {@linkcode VmemDevice}s. Shared by the
 * plug-state extraction (`plug_state.ts`, strict) and the stream scanner
 * (`scan/stream_plug_state.ts`, lenient about sections that are missing or
 * contradict each other).
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import {
  bitmapFromWireWords,
  PlugMap,
  validateVmemDevice,
  type VmemDevice,
} from "../vmem/plug_map.ts";
import {
  isPageRecord,
  type MigrationRecord,
  type RamBlockInfo,
  type VirtioMemDeviceRecord,
  type VirtioMemDeviceState,
  type VirtioMemEarlyRecord,
  type VmdescRecord,
} from "./types.ts";
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
  /** Early sections by device path (bitmaps copied). */
  early = new Map<string, VirtioMemEarlyRecord>();
  /** Device sections by device path (bitmaps copied). */
  late = new Map<string, LateSection>();
  /** Device sections named by the vmdesc (`P/virtio-mem` idstrs) and where the vmdesc was. */
  vmdescDevices: string[] | undefined;
  /** Where the vmdesc was. */
  vmdescOffset = 0;
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
      case "virtio-mem-early":
        this.early.set(r.devicePath, { ...r, bitmap: r.bitmap.slice() });
        break;
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
      case "virtio-mem-device":
        this.#pendingDevice = undefined;
        this.late.set(r.devicePath, {
          state: { ...r.state, ...(r.state.bitmap ? { bitmap: r.state.bitmap.slice() } : {}) },
          streamOffset: r.streamOffset,
        });
        break;
      case "opaque":
      case "eof":
        this.sawRam = true;
        this.sawEnd = true;
        break;
      case "vmdesc":
        this.sawEnd = true;
        this.#noteVmdesc(r);
        break;
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

  #noteVmdesc(r: VmdescRecord): void {
    this.vmdescOffset = r.streamOffset;
    const parsed = r.parsed as { devices?: unknown } | undefined;
    if (parsed === undefined || !Array.isArray(parsed?.devices)) return;
    this.vmdescDevices = parsed.devices
      .map((
        d: unknown,
      ) => (typeof d === "object" && d !== null ? (d as { name?: unknown }).name : undefined))
      .filter((n): n is string => typeof n === "string" && n.endsWith(VIRTIO_MEM_DEVICE_SUFFIX));
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
    if (toEnd && this.vmdescDevices !== undefined) {
      for (const idstr of this.vmdescDevices) {
        const path = idstr.slice(0, -VIRTIO_MEM_DEVICE_SUFFIX.length);
        if (!this.late.has(path)) {
          throw this.bad(
            `the vmdesc lists device section ${
              JSON.stringify(idstr)
            }, but it was not found or did not parse as a virtio-mem device`,
            this.vmdescOffset,
          );
        }
      }
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
      if (e instanceof FormatError) throw this.bad(e.message, offset, e);
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
        throw this.bad(e.message, streamOffset, e);
      }
      throw e;
    }
  }
}
