/**
 * Which memory of a dump is plugged: the guest-physical ranges a dump holds,
 * split by a plug map into plugged, unplugged and outside every virtio-mem
 * device, plus the plugged memory the dump does not hold. `inspect` shows it
 * for every dump format.
 *
 * @module
 */

import type { PlugMap } from "./plug_map.ts";
import { type GpaRange, intersectGpaRanges, mergeGpaRanges, subtractGpaRanges } from "./ranges.ts";

/** A dump's memory seen through a plug map. */
export interface PlugOverlay {
  /** Memory the dump holds inside plugged blocks. */
  plugged: GpaRange[];
  /** Bytes of `plugged`. */
  pluggedByteLength: number;
  /** Memory the dump holds inside unplugged blocks (a QEMU < 6.2 dump, or not stripped). */
  unplugged: GpaRange[];
  /** Bytes of `unplugged`. */
  unpluggedByteLength: number;
  /** Bytes the dump holds outside every virtio-mem device region (boot memory, DIMMs). */
  outsideByteLength: number;
  /** Plugged memory the dump does not hold (a filtered or incomplete dump). */
  pluggedAbsent: GpaRange[];
  /** Bytes of `pluggedAbsent`. */
  pluggedAbsentByteLength: number;
}

function total(ranges: readonly GpaRange[]): number {
  return ranges.reduce((n, r) => n + r.byteLength, 0);
}

/**
 * Split the memory a dump holds by plug state.
 *
 * @param map The plug map.
 * @param present The guest-physical ranges the dump holds (any order).
 * @returns The overlay.
 *
 * @example
 * ```ts
 * import { PlugMap, plugOverlay } from "@vmem-dump/vmem-dump/vmem";
 * const map = PlugMap.fromJSON({ version: 1, devices: [{ path: "d", ramblock: "d/mem",
 *   memaddr: 0x100000000, "region-size": 0x800000, "block-size": 0x200000, node: 0,
 *   size: 0x200000, plugged: [[0, 1]] }] });
 * // A dump of the first 1 MiB and the first two blocks of the device.
 * const o = plugOverlay(map, [{ gpa: 0, byteLength: 0x100000 }, { gpa: 0x100000000, byteLength: 0x400000 }]);
 * console.log(o.pluggedByteLength, o.unpluggedByteLength, o.outsideByteLength); // 2097152 2097152 1048576
 * ```
 */
export function plugOverlay(map: PlugMap, present: readonly GpaRange[]): PlugOverlay {
  const held = mergeGpaRanges(present);
  const pluggedAll = map.pluggedGpaRanges();
  const unpluggedAll = map.unpluggedGpaRanges();
  const plugged = intersectGpaRanges(held, pluggedAll);
  const unplugged = intersectGpaRanges(held, unpluggedAll);
  const pluggedAbsent = subtractGpaRanges(pluggedAll, held);
  return {
    plugged,
    pluggedByteLength: total(plugged),
    unplugged,
    unpluggedByteLength: total(unplugged),
    outsideByteLength: total(subtractGpaRanges(held, [...pluggedAll, ...unpluggedAll])),
    pluggedAbsent,
    pluggedAbsentByteLength: total(pluggedAbsent),
  };
}
