/**
 * The plug-map JSON exchange format, version 1 (docs/plugmaps.md): devices
 * with QMP's field names and plugged block runs `[firstBlock, blockCount]`.
 * `PlugMap.toJSON` and `PlugMap.fromJSON` use this codec; it works on
 * devices, so it does not depend on the map's queries.
 *
 * @module
 */

import type { PlugMap } from "./plug_map.ts";
import {
  badJsonError as badJson,
  invariantError as invariant,
  isObject,
  isU64,
} from "./_checks.ts";
import { bitmapFromRuns, runsOf } from "./_bitmap.ts";
import { hex } from "../io/text.ts";
import type { BlockRun } from "./ranges.ts";
import {
  VIRTIO_MEM_MAX_BLOCKS,
  VIRTIO_MEM_MIN_BLOCK_SIZE,
  type VmemDevice,
} from "./vmem_device.ts";

/** Version of the JSON exchange format written by {@linkcode PlugMap.toJSON}. */
export const PLUGMAP_JSON_VERSION = 1;

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

/**
 * The JSON exchange format of some devices (what `PlugMap.toJSON` returns).
 *
 * @param devices Validated devices.
 * @returns A plain object; unknown sizes are `null`.
 *
 * @example
 * ```ts
 * import { plugMapJsonFromDevices } from "./plug_map_json.ts";
 * const json = plugMapJsonFromDevices([{
 *   path: "", ramBlock: "vmem0mem", gpa: 0x1_0000_0000, regionSize: 1 << 22, blockSize: 1 << 21,
 *   node: 0, usableRegionSize: undefined, size: 1 << 21, requestedSize: undefined,
 *   bitmap: new Uint8Array([0b10]),
 * }]);
 * console.log(JSON.stringify(json.devices[0]!.plugged)); // [[1,1]]
 * ```
 */
export function plugMapJsonFromDevices(devices: readonly VmemDevice[]): PlugMapJson {
  return {
    version: PLUGMAP_JSON_VERSION,
    devices: devices.map((d) => ({
      path: d.path,
      ramblock: d.ramBlock,
      memaddr: d.gpa,
      "region-size": d.regionSize,
      "block-size": d.blockSize,
      node: d.node,
      "usable-region-size": d.usableRegionSize ?? null,
      size: d.size,
      "requested-size": d.requestedSize ?? null,
      plugged: runsOf(d.bitmap, d.regionSize / d.blockSize, true),
    })),
  };
}

/**
 * The devices of the JSON exchange format, version 1, with their shape
 * checked (what `PlugMap.fromJSON` builds its map from; the map checks the
 * invariants). Runs must be sorted, in range and must not overlap (touching
 * runs are merged); `usable-region-size` and `requested-size` may be `null`
 * or absent.
 *
 * @param json Parsed JSON.
 * @returns The devices.
 * @throws {FormatError} (format `plugmap`, code `bad-json`) for a wrong shape,
 * code `invariant` for a geometry no device can have.
 *
 * @example
 * ```ts
 * import { devicesFromPlugMapJson } from "./plug_map_json.ts";
 * const [device] = devicesFromPlugMapJson({
 *   version: 1,
 *   devices: [{
 *     path: "", ramblock: "vmem0mem", memaddr: 4294967296, "region-size": 4194304,
 *     "block-size": 2097152, node: 0, size: 2097152, plugged: [[1, 1]],
 *   }],
 * });
 * console.log(device!.bitmap[0]); // 2
 * ```
 */
export function devicesFromPlugMapJson(json: unknown): VmemDevice[] {
  if (!isObject(json)) throw badJson("expected an object with version and devices");
  if (json.version !== PLUGMAP_JSON_VERSION) {
    throw badJson(`unsupported version ${JSON.stringify(json.version)}, expected 1`);
  }
  if (!Array.isArray(json.devices)) throw badJson("devices must be an array");
  return json.devices.map((d, i) => deviceFromJson(d, `devices[${i}]`));
}

/**
 * Serialise a plug map in the exchange format, version 1: one line per
 * device inside a small pretty-printed frame, so diffs stay readable.
 *
 * @param map The map.
 * @returns JSON text ending with a newline.
 *
 * @example
 * ```ts
 * import { formatPlugMapJson, parsePlugMapSource } from "@vmem-dump/vmem-dump";
 * const { map } = parsePlugMapSource("0x100000000-0x100400000\n");
 * const text = formatPlugMapJson(map);
 * console.log(parsePlugMapSource(text).format); // "json-v1"
 * ```
 */
export function formatPlugMapJson(map: PlugMap): string {
  const json = map.toJSON();
  if (json.devices.length === 0) return `{"version":${json.version},"devices":[]}\n`;
  const devices = json.devices.map((d) => "  " + JSON.stringify(d)).join(",\n");
  return `{"version":${json.version},"devices":[\n${devices}\n]}\n`;
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
 * import { checkBlockRuns } from "./plug_map_json.ts";
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
