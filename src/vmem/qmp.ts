/**
 * Plug maps from a QMP `query-memory-devices` reply combined with plugged
 * block runs. QMP gives each virtio-mem device's geometry and sizes but not
 * its bitmap, so the runs come from the user (see docs/plugmaps.md).
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { bitmapFromRuns } from "./_bitmap.ts";
import { isObject } from "./_checks.ts";
import { PlugMap } from "./plug_map.ts";
import { checkBlockRuns } from "./plug_map_json.ts";
import {
  VIRTIO_MEM_MAX_BLOCKS,
  VIRTIO_MEM_MIN_BLOCK_SIZE,
  type VmemDevice,
} from "./vmem_device.ts";
import type { BlockRun } from "./ranges.ts";

function badQmp(message: string): FormatError {
  return new FormatError(`Cannot read QMP plug map: ${message}`, {
    format: "plugmap",
    code: "bad-json",
    offset: 0,
  });
}

/**
 * The list of `query-memory-devices` entries inside `value`: the bare
 * array, a raw QMP response `{"return": [...]}`, or a record that holds it
 * under `query-memory-devices` (as the `*.qmp.json` files of the real
 * fixtures do).
 */
function replyEntries(value: unknown): unknown[] | undefined {
  if (Array.isArray(value)) return value;
  if (!isObject(value)) return undefined;
  if (Array.isArray(value.return)) return value.return;
  if (Array.isArray(value["query-memory-devices"])) return value["query-memory-devices"];
  return undefined;
}

/**
 * Whether a parsed JSON value looks like a QMP `query-memory-devices` input
 * that {@linkcode plugMapFromQmp} accepts.
 *
 * @param json Parsed JSON.
 * @returns `true` for the shapes listed in {@linkcode plugMapFromQmp}.
 *
 * @example
 * ```ts
 * import { isQmpPlugMapInput } from "./qmp.ts";
 * console.log(isQmpPlugMapInput({ return: [] })); // true
 * console.log(isQmpPlugMapInput({ version: 1, devices: [] })); // false
 * ```
 */
export function isQmpPlugMapInput(json: unknown): boolean {
  if (isObject(json) && "qmp" in json) return true;
  if (Array.isArray(json)) return json.length > 0 && json.every((e) => isObject(e) && "type" in e);
  return isObject(json) && replyEntries(json) !== undefined;
}

/**
 * Build a plug map from a QMP `query-memory-devices` reply plus plugged
 * block runs. Accepted shapes:
 *
 * 1. `{"qmp": REPLY, "plugged": RUNS}`: RUNS is a run list
 *    `[[firstBlock, blockCount], ...]` when the reply has one virtio-mem
 *    device, or an object keyed by device `id` (`{"vmem0": [[0, 14]]}`).
 *    Optional `"path"` / `"ramblock"` strings name the PCI path and RAMBlock
 *    of a single device (or objects keyed by `id`).
 * 2. REPLY alone, with `"plugged"` (and optionally `"path"`, `"ramblock"`)
 *    added to each virtio-mem entry's `data` object.
 *
 * REPLY is the `return` array, the raw response `{"return": [...]}`, or a
 * record holding the array under `"query-memory-devices"`. Entries of other
 * types (`dimm`, `nvdimm`, `virtio-pmem` …) are ignored. A device whose
 * `size` is 0 (or equals `max-size`) needs no runs.
 *
 * Without a path, the device's `ramBlock` is the backend id from `memdev`
 * (`/objects/vmem0mem` → `vmem0mem`), which `PlugMap.deviceForRamBlock`
 * matches as the last component of a RAMBlock idstr. Usable region size is
 * unknown (QMP does not report it). `size` must equal popcount × block size.
 *
 * @param json Parsed JSON.
 * @returns The validated map (one device per virtio-mem entry, reply order).
 * @throws {FormatError} (format `plugmap`) for a wrong shape (`bad-json`) or an
 * impossible state (`invariant`).
 *
 * @example One device, runs beside the reply
 * ```ts
 * import { plugMapFromQmp } from "@vmem-dump/vmem-dump";
 * const map = plugMapFromQmp({
 *   qmp: { return: [{ type: "virtio-mem", data: {
 *     id: "vmem0", memaddr: 4294967296, "max-size": 268435456, "block-size": 2097152,
 *     node: 0, size: 104857600, "requested-size": 104857600, memdev: "/objects/vmem0mem",
 *   } }] },
 *   plugged: [[0, 14], [64, 36]],
 * });
 * console.log(map.deviceForRamBlock("0000:00:01.0/vmem0mem")?.size); // 104857600
 * ```
 */
export function plugMapFromQmp(json: unknown): PlugMap {
  let reply: unknown = json;
  let outer: Record<string, unknown> = {};
  if (isObject(json) && "qmp" in json) {
    reply = json.qmp;
    outer = json;
  }
  const entries = replyEntries(reply);
  if (entries === undefined) {
    throw badQmp(
      'expected a query-memory-devices reply: an array, {"return": [...]} or {"qmp": ...}',
    );
  }
  const vmem = entries.filter((e) => isObject(e) && e.type === "virtio-mem") as Record<
    string,
    unknown
  >[];
  const devices: VmemDevice[] = vmem.map((entry, i) => {
    const data = entry.data;
    const where = `virtio-mem device ${i}`;
    if (!isObject(data)) throw badQmp(`${where} has no data object`);
    const id = typeof data.id === "string" ? data.id : undefined;
    const name = id === undefined ? where : `virtio-mem device ${JSON.stringify(id)}`;
    const int = (key: string): number => {
      const v = data[key];
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
        throw badQmp(`${name}: ${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
      }
      return v;
    };
    const pick = (key: string): unknown => {
      if (data[key] !== undefined) return data[key];
      const o = outer[key];
      if (o === undefined) return undefined;
      if (isObject(o) && !Array.isArray(o)) {
        if (id === undefined) throw badQmp(`${name} has no id to look up ${key}`);
        return o[id];
      }
      if (vmem.length !== 1) {
        throw badQmp(
          `"${key}" must be an object keyed by device id: the reply has ${vmem.length} virtio-mem devices`,
        );
      }
      return o;
    };
    const regionSize = int("max-size");
    const blockSize = int("block-size");
    const size = int("size");
    if (blockSize < VIRTIO_MEM_MIN_BLOCK_SIZE || regionSize === 0 || regionSize % blockSize !== 0) {
      throw new FormatError(
        `Invalid virtio-mem plug map: ${name}: max-size ${regionSize} is not a non-zero multiple of block-size ${blockSize} (at least 1 MiB)`,
        { format: "plugmap", code: "invariant", offset: 0 },
      );
    }
    const blocks = regionSize / blockSize;
    if (blocks > VIRTIO_MEM_MAX_BLOCKS) throw badQmp(`${name}: ${blocks} blocks are too many`);
    const rawRuns = pick("plugged");
    let runs: BlockRun[];
    if (rawRuns !== undefined) runs = checkBlockRuns(rawRuns, blocks, `${name}: plugged`);
    else if (size === 0) runs = [];
    else if (size === regionSize) runs = [[0, blocks]];
    else {
      throw badQmp(
        `${name}: no "plugged" block runs; QMP does not report which blocks are plugged, only that ${size} bytes are`,
      );
    }
    const path = pick("path") ?? "";
    if (typeof path !== "string") throw badQmp(`${name}: path must be a string`);
    const memdev = typeof data.memdev === "string" ? data.memdev : "";
    const backend = memdev.slice(memdev.lastIndexOf("/") + 1);
    const ramBlock = pick("ramblock") ??
      (path !== "" && backend !== "" ? `${path}/${backend}` : backend);
    if (typeof ramBlock !== "string") throw badQmp(`${name}: ramblock must be a string`);
    return {
      path,
      ramBlock,
      gpa: int("memaddr"),
      regionSize,
      blockSize,
      node: int("node"),
      usableRegionSize: undefined,
      size,
      requestedSize: int("requested-size"),
      bitmap: bitmapFromRuns(runs, blocks),
    };
  });
  return new PlugMap(devices);
}
