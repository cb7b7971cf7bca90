/**
 * The virtio-mem plug state: which device blocks are plugged, queried by
 * guest-physical address or RAMBlock offset, exchanged as versioned JSON
 * (docs/plugmaps.md), and read from QMP replies or plugged range lists.
 *
 * @example Load a plug map and list its unplugged memory
 * ```ts
 * import { formatGpaRange, parsePlugMapSource } from "@vmem-dump/vmem-dump";
 * const { map } = parsePlugMapSource(JSON.stringify({
 *   version: 1,
 *   devices: [{
 *     path: "0000:00:01.0", ramblock: "0000:00:01.0/vmem0mem", memaddr: 4294967296,
 *     "region-size": 268435456, "block-size": 2097152, node: 0,
 *     "usable-region-size": null, size: 104857600, "requested-size": null,
 *     plugged: [[0, 14], [64, 36]],
 *   }],
 * }));
 * for (const r of map.unpluggedGpaRanges()) console.log(formatGpaRange(r));
 * // 0x101c00000-0x108000000
 * // 0x10c800000-0x110000000
 * ```
 *
 * Not exported: the codec helpers behind `PlugMap.toJSON`/`fromJSON`
 * (`plugMapJsonFromDevices`, `devicesFromPlugMapJson`, `checkBlockRuns`)
 * and the QMP shape test `parsePlugMapSource` uses.
 *
 * @module
 */

export {
  type BlockRun,
  formatGpaRange,
  type GpaRange,
  intersectGpaRanges,
  mergeGpaRanges,
  type RamRange,
  subtractGpaRanges,
} from "./ranges.ts";
export {
  QEMU_MAX_NODES,
  validateVmemDevice,
  VIRTIO_MEM_MAX_BLOCKS,
  VIRTIO_MEM_MIN_BLOCK_SIZE,
  type VmemDevice,
} from "./vmem_device.ts";
export { PlugMap, type RangeClass } from "./plug_map.ts";
export {
  formatPlugMapJson,
  PLUGMAP_JSON_VERSION,
  type PlugMapDeviceJson,
  type PlugMapJson,
} from "./plug_map_json.ts";
export { parsePlugMapSource, type PlugMapSourceFormat } from "./plug_map_source.ts";
export { plugMapFromQmp } from "./qmp.ts";
export { formatRangeList, plugMapFromRangeList } from "./range_list.ts";
export { type PlugOverlay, plugOverlay } from "./plug_overlay.ts";
