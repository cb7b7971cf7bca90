/**
 * How much unplugged memory a dump scan could see: per device, the bytes
 * examined and the bytes absent from the input, with the reason they are
 * absent. A scan that saw everything and found nothing is clean; one that
 * found nothing but could not see everything is inconclusive.
 *
 * @module
 */

import type { PlugMap } from "../vmem/plug_map.ts";
import type { VmemDevice } from "../vmem/vmem_device.ts";
import type { GpaRange } from "../vmem/ranges.ts";

/**
 * Why unplugged memory is absent from an input. An open set of kebab-case
 * codes (docs/scan.md lists them); readers of new dump kinds add their own.
 *
 * - `not-in-dump`: the dump has no bytes for it (no PT_LOAD covers it, or a
 *   kdump bitmap leaves the page out). QEMU >= 6.2 leaves unplugged
 *   virtio-mem memory out of its dumps.
 * - `zero-fill`: inside a PT_LOAD's zero-fill tail (`p_memsz > p_filesz`):
 *   the dump claims zeros without holding the bytes.
 * - `outside-image`: outside the guest-physical range a raw image covers
 *   (a wrong `--base` moves all of it there).
 * - `removed-unplugged`: the dump's provenance note says vmem-dump removed
 *   it as unplugged memory (`strip`, `convert --plugmap`; `removed.ts`).
 */
export type AbsentReason = string;

/** The {@linkcode AbsentReason} codes the scanners of this package use. */
export const ABSENT_REASONS = [
  "not-in-dump",
  "zero-fill",
  "outside-image",
  "removed-unplugged",
] as const;

/** Unplugged memory absent from the input for one reason. */
export interface AbsentMemory {
  /** Why it is absent (see {@linkcode AbsentReason}). */
  reason: AbsentReason;
  /** Bytes absent for this reason. */
  byteLength: number;
  /** The reason in words, for people. */
  detail: string;
}

/** What a scan could see of the unplugged memory (of one device, or of all). */
export interface Coverage {
  /** Unplugged bytes according to the plug map. */
  unpluggedBytes: number;
  /** Unplugged bytes read from the input and checked. */
  examinedBytes: number;
  /** Unplugged bytes absent from the input (the sum of `absent`). */
  absentBytes: number;
  /** Absent bytes by reason, largest first. */
  absent: AbsentMemory[];
}

/**
 * The unplugged ranges of each device, never merged across devices (unlike
 * `PlugMap.unpluggedGpaRanges`), ascending gpa: every range lies inside
 * exactly one device, so coverage can be kept per device.
 *
 * @param plugMap The plug state.
 * @returns Ranges, ascending gpa.
 *
 * @example
 * ```ts ignore
 * for (const r of unpluggedRangesPerDevice(map)) console.log(r.gpa.toString(16), r.byteLength);
 * ```
 */
export function unpluggedRangesPerDevice(plugMap: PlugMap): GpaRange[] {
  const out: GpaRange[] = [];
  const devices = [...plugMap.devices].sort((a, b) => a.gpa - b.gpa);
  for (const d of devices) {
    for (const [first, count] of plugMap.blockRuns(d, false)) {
      out.push({ gpa: d.gpa + first * d.blockSize, byteLength: count * d.blockSize });
    }
  }
  return out;
}

interface DeviceCounts {
  examined: number;
  absent: Map<string, AbsentMemory>;
}

/**
 * Counts examined and absent unplugged bytes per device while a dump scanner
 * runs. Ranges must lie inside one device (see
 * {@linkcode unpluggedRangesPerDevice}).
 *
 * @example
 * ```ts ignore
 * const coverage = new CoverageCounter(map);
 * coverage.examined({ gpa: 0x1_0000_0000, byteLength: 0x20_0000 });
 * coverage.absent({ gpa: 0x1_0020_0000, byteLength: 0x20_0000 }, "not-in-dump", "no PT_LOAD covers it");
 * console.log(coverage.total().absentBytes); // 2097152
 * ```
 */
export class CoverageCounter {
  #plugMap: PlugMap;
  #devices = new Map<VmemDevice, DeviceCounts>();

  /**
   * Construct it.
   *
   * @param plugMap The plug state the scan judges by.
   */
  constructor(plugMap: PlugMap) {
    this.#plugMap = plugMap;
  }

  #counts(range: GpaRange): DeviceCounts {
    const device = this.#plugMap.deviceForGpa(range.gpa);
    if (device === undefined || range.gpa + range.byteLength > device.gpa + device.regionSize) {
      throw new RangeError(
        `Range 0x${range.gpa.toString(16)} + 0x${
          range.byteLength.toString(16)
        } is not inside one device`,
      );
    }
    let c = this.#devices.get(device);
    if (c === undefined) {
      c = { examined: 0, absent: new Map() };
      this.#devices.set(device, c);
    }
    return c;
  }

  /**
   * Count unplugged memory that was read and checked.
   *
   * @param range Inside one device.
   */
  examined(range: GpaRange): void {
    if (range.byteLength > 0) this.#counts(range).examined += range.byteLength;
  }

  /**
   * Count unplugged memory the input does not hold.
   *
   * @param range Inside one device.
   * @param reason Why it is absent.
   * @param detail The reason in words (the first one given per reason is kept).
   */
  absent(range: GpaRange, reason: AbsentReason, detail: string): void {
    if (range.byteLength === 0) return;
    const c = this.#counts(range);
    const a = c.absent.get(reason);
    if (a === undefined) c.absent.set(reason, { reason, byteLength: range.byteLength, detail });
    else a.byteLength += range.byteLength;
  }

  /**
   * The coverage of one device.
   *
   * @param device A device of the plug map.
   * @returns Its coverage.
   */
  device(device: VmemDevice): Coverage {
    const blocks = device.regionSize / device.blockSize;
    const unplugged = (blocks - this.#plugMap.pluggedBlockCount(device)) * device.blockSize;
    const c = this.#devices.get(device);
    return coverageOf(unplugged, c?.examined ?? 0, [...(c?.absent.values() ?? [])]);
  }

  /** The coverage of all devices together. */
  total(): Coverage {
    let unplugged = 0;
    let examined = 0;
    const absent = new Map<string, AbsentMemory>();
    for (const d of this.#plugMap.devices) {
      const c = this.device(d);
      unplugged += c.unpluggedBytes;
      examined += c.examinedBytes;
      for (const a of c.absent) {
        const sum = absent.get(a.reason);
        if (sum === undefined) absent.set(a.reason, { ...a });
        else sum.byteLength += a.byteLength;
      }
    }
    return coverageOf(unplugged, examined, [...absent.values()]);
  }
}

function coverageOf(unplugged: number, examined: number, absent: AbsentMemory[]): Coverage {
  const sorted = absent.map((a) => ({ ...a })).sort((a, b) => b.byteLength - a.byteLength);
  return {
    unpluggedBytes: unplugged,
    examinedBytes: examined,
    absentBytes: sorted.reduce((n, a) => n + a.byteLength, 0),
    absent: sorted,
  };
}
