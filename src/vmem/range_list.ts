/**
 * Plug maps from a plain list of PLUGGED guest-physical ranges: text lines
 * `0x100000000-0x101c00000` (or `/proc/iomem` style `100000000-101bfffff`),
 * optionally preceded by `device` lines with the geometry, or a JSON array
 * `[[gpa, byteLength], ...]`. See docs/plugmaps.md.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { bitmapByteLength } from "../io/bits.ts";
import { PlugMap } from "./plug_map.ts";
import {
  VIRTIO_MEM_MAX_BLOCKS,
  VIRTIO_MEM_MIN_BLOCK_SIZE,
  type VmemDevice,
} from "./vmem_device.ts";
import { type GpaRange, mergeGpaRanges } from "./ranges.ts";

const MIB = 1 << 20;
/** Largest block size inferred for a list without `device` lines (1 TiB). */
const MAX_INFERRED_BLOCK = 2 ** 40;

function bad(message: string, line?: number): FormatError {
  return new FormatError(
    `Cannot read plugged range list${line === undefined ? "" : ` line ${line}`}: ${message}`,
    {
      format: "plugmap",
      code: "bad-json",
      offset: 0,
    },
  );
}

/** A geometry line: `device memaddr=… region-size=… block-size=… [node=…] [path=…] [ramblock=…] …`. */
interface DeviceLine {
  line: number;
  device: VmemDevice;
}

function parseNumber(text: string, hexDefault: boolean, line: number): number {
  const t = text.trim().toLowerCase();
  let v: number;
  if (t.startsWith("0x")) v = /^0x[0-9a-f]+$/.test(t) ? Number.parseInt(t.slice(2), 16) : NaN;
  else if (hexDefault) v = /^[0-9a-f]+$/.test(t) ? Number.parseInt(t, 16) : NaN;
  else v = /^[0-9]+$/.test(t) ? Number.parseInt(t, 10) : NaN;
  if (!Number.isSafeInteger(v)) {
    throw bad(
      `${JSON.stringify(text)} is not a ${
        hexDefault ? "hex" : "decimal or 0x hex"
      } number below 2^53`,
      line,
    );
  }
  return v;
}

function parseDeviceLine(rest: string, line: number): VmemDevice {
  const kv = new Map<string, string>();
  for (const part of rest.trim().split(/\s+/)) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    if (eq <= 0) throw bad(`expected key=value, got ${JSON.stringify(part)}`, line);
    kv.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const known = [
    "memaddr",
    "region-size",
    "block-size",
    "node",
    "path",
    "ramblock",
    "usable-region-size",
    "requested-size",
  ];
  for (const k of kv.keys()) {
    if (!known.includes(k)) throw bad(`unknown device key ${JSON.stringify(k)}`, line);
  }
  const num = (k: string): number => {
    const v = kv.get(k);
    if (v === undefined) throw bad(`device line needs ${k}=`, line);
    return parseNumber(v, false, line);
  };
  const opt = (k: string): number | undefined => (kv.has(k) ? num(k) : undefined);
  const regionSize = num("region-size");
  const blockSize = num("block-size");
  if (blockSize < VIRTIO_MEM_MIN_BLOCK_SIZE || regionSize === 0 || regionSize % blockSize !== 0) {
    throw bad(
      `region-size ${regionSize} is not a non-zero multiple of block-size ${blockSize} (at least 1 MiB)`,
      line,
    );
  }
  if (regionSize / blockSize > VIRTIO_MEM_MAX_BLOCKS) {
    throw bad(`${regionSize / blockSize} blocks are too many`, line);
  }
  return {
    path: kv.get("path") ?? "",
    ramBlock: kv.get("ramblock") ?? "",
    gpa: num("memaddr"),
    regionSize,
    blockSize,
    node: opt("node") ?? 0,
    usableRegionSize: opt("usable-region-size"),
    size: 0,
    requestedSize: opt("requested-size"),
    bitmap: new Uint8Array(bitmapByteLength(regionSize / blockSize)),
  };
}

/**
 * Parse `START-END` where both are hex (`0x` optional). END is exclusive
 * when it is 1 MiB aligned and inclusive (as in `/proc/iomem`) when END + 1
 * is; anything else is an error. Text after the range (` : System RAM`) is
 * ignored.
 */
function parseRangeLine(text: string, line: number): GpaRange {
  const m = /^([0-9a-fA-Fx]+)\s*-\s*([0-9a-fA-Fx]+)(?:\s.*)?$/.exec(text);
  if (m === null) throw bad(`expected START-END, got ${JSON.stringify(text)}`, line);
  const start = parseNumber(m[1]!, true, line);
  const last = parseNumber(m[2]!, true, line);
  let end: number;
  if (last % MIB === 0) end = last;
  else if ((last + 1) % MIB === 0) end = last + 1;
  else {throw bad(
      `end ${m[2]} is neither 1 MiB aligned (exclusive) nor 1 MiB aligned minus one (inclusive)`,
      line,
    );}
  if (end <= start) throw bad(`range ${text} is empty or reversed`, line);
  return { gpa: start, byteLength: end - start };
}

/** Largest power of two (≤ 1 TiB) dividing every value. */
function commonAlignment(values: readonly number[]): number {
  let align = MAX_INFERRED_BLOCK;
  for (const v of values) while (align > 1 && v % align !== 0) align /= 2;
  return align;
}

/** A single device spanning exactly the plugged ranges (no geometry was given). */
function inferDevice(ranges: readonly GpaRange[]): VmemDevice {
  const first = ranges[0]!;
  const last = ranges[ranges.length - 1]!;
  const base = first.gpa;
  const regionSize = last.gpa + last.byteLength - base;
  const blockSize = commonAlignment([
    base,
    ...ranges.flatMap((r) => [r.gpa - base, r.byteLength]),
    regionSize,
  ]);
  if (blockSize < VIRTIO_MEM_MIN_BLOCK_SIZE) {
    throw bad(
      `the ranges are not aligned to 1 MiB blocks (largest common alignment 0x${
        blockSize.toString(16)
      })`,
    );
  }
  if (regionSize / blockSize > VIRTIO_MEM_MAX_BLOCKS) {
    throw bad(`${regionSize / blockSize} blocks are too many`);
  }
  return {
    path: "",
    ramBlock: "",
    gpa: base,
    regionSize,
    blockSize,
    node: 0,
    usableRegionSize: undefined,
    size: 0,
    requestedSize: undefined,
    bitmap: new Uint8Array(bitmapByteLength(regionSize / blockSize)),
  };
}

/** Set the bits of `ranges` in the devices; every range must lie inside one device, block aligned. */
function plug(devices: VmemDevice[], ranges: readonly GpaRange[]): void {
  for (const r of ranges) {
    const d = devices.find((x) => r.gpa >= x.gpa && r.gpa < x.gpa + x.regionSize);
    const hexRange = `0x${r.gpa.toString(16)}-0x${(r.gpa + r.byteLength).toString(16)}`;
    if (d === undefined) throw bad(`range ${hexRange} lies outside every device`);
    if (r.gpa + r.byteLength > d.gpa + d.regionSize) {
      throw bad(`range ${hexRange} runs past the end of its device`);
    }
    if ((r.gpa - d.gpa) % d.blockSize !== 0 || r.byteLength % d.blockSize !== 0) {
      throw bad(`range ${hexRange} is not aligned to block size 0x${d.blockSize.toString(16)}`);
    }
    const first = (r.gpa - d.gpa) / d.blockSize;
    const end = first + r.byteLength / d.blockSize;
    for (let i = first; i < end; i++) d.bitmap[i >>> 3] = d.bitmap[i >>> 3]! | (1 << (i & 7));
    d.size += r.byteLength;
  }
}

function build(devices: VmemDevice[], ranges: GpaRange[]): PlugMap {
  const merged = mergeGpaRanges(ranges);
  if (devices.length === 0 && merged.length > 0) devices.push(inferDevice(merged));
  plug(devices, merged);
  return new PlugMap(devices);
}

/**
 * Build a plug map from a list of PLUGGED guest-physical ranges.
 *
 * Text form, one item per line (`#` starts a comment):
 *
 * - `device memaddr=0x100000000 region-size=0x10000000 block-size=0x200000
 *   [node=0] [path=0000:00:01.0] [ramblock=0000:00:01.0/vmem0mem]
 *   [requested-size=…] [usable-region-size=…]` declares a device (values
 *   decimal or `0x` hex). Every range must then lie in a declared device,
 *   aligned to its block size; everything else of the device is unplugged.
 * - `START-END`: a plugged range, both hex with optional `0x`; END is
 *   exclusive when 1 MiB aligned, inclusive when END + 1 is (so
 *   `/proc/iomem` lines like `100000000-101bfffff : System RAM (virtio_mem)`
 *   work). Overlapping and touching ranges are merged.
 *
 * JSON form: `[[gpa, byteLength], ...]` (integers).
 *
 * Without `device` lines the list describes one device spanning from the
 * first plugged byte to the last, with the largest block size (≥ 1 MiB)
 * that all boundaries are aligned to: the gaps are its unplugged blocks and
 * memory outside the span counts as no virtio-mem memory. Its path and
 * RAMBlock are unknown, so it serves guest-physical queries (dumps) but does
 * not match RAMBlocks of a migration stream.
 *
 * @param input The text, or parsed JSON (an array of pairs).
 * @returns The validated map (no devices for an empty list).
 * @throws {FormatError} (format `plugmap`) on a malformed or impossible list.
 *
 * @example
 * ```ts
 * import { plugMapFromRangeList } from "@vmem-dump/vmem-dump";
 * const map = plugMapFromRangeList(
 *   "device memaddr=0x100000000 region-size=0x10000000 block-size=0x200000 ramblock=0000:00:01.0/vmem0mem\n" +
 *     "0x100000000-0x101c00000\n0x108000000-0x10c800000\n",
 * );
 * console.log(map.devices[0]!.size); // 104857600
 * console.log(map.unpluggedGpaRanges().length); // 2
 * ```
 */
export function plugMapFromRangeList(input: string | unknown): PlugMap {
  if (typeof input !== "string") {
    if (!Array.isArray(input)) throw bad("expected a JSON array of [gpa, byteLength] pairs");
    const ranges = input.map((r: unknown, i): GpaRange => {
      if (
        !Array.isArray(r) || r.length !== 2 || !r.every((x) =>
          typeof x === "number" && Number.isSafeInteger(x) && x >= 0
        ) ||
        r[1] === 0
      ) {
        throw bad(`item ${i} must be [gpa, byteLength] with byteLength > 0`);
      }
      return { gpa: r[0] as number, byteLength: r[1] as number };
    });
    return build([], ranges);
  }
  const devices: DeviceLine[] = [];
  const ranges: GpaRange[] = [];
  const lines = input.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!.replace(/#.*$/, "").trim();
    if (text === "") continue;
    if (/^device(\s|$)/.test(text)) {
      devices.push({ line: i + 1, device: parseDeviceLine(text.slice(6), i + 1) });
    } else ranges.push(parseRangeLine(text, i + 1));
  }
  return build(devices.map((d) => d.device), ranges);
}

/**
 * Write a plug map as the text range list {@linkcode plugMapFromRangeList}
 * reads: one `device` line per device, then its plugged ranges (a map
 * without devices is a comment line, which reads back as such).
 *
 * @param map The map.
 * @returns The text, ending with a newline.
 *
 * @example
 * ```ts
 * import { formatRangeList, plugMapFromRangeList } from "@vmem-dump/vmem-dump";
 * const text = formatRangeList(plugMapFromRangeList("0x100000000-0x100400000\n"));
 * console.log(plugMapFromRangeList(text).devices[0]!.size); // 4194304
 * ```
 */
export function formatRangeList(map: PlugMap): string {
  // An empty file is a missing plug map (an error); a comment alone reads back as no devices.
  if (map.devices.length === 0) return "# no virtio-mem devices\n";
  let out = "";
  for (const d of map.devices) {
    const keys = [
      `memaddr=0x${d.gpa.toString(16)}`,
      `region-size=0x${d.regionSize.toString(16)}`,
      `block-size=0x${d.blockSize.toString(16)}`,
      `node=${d.node}`,
    ];
    if (d.path !== "") keys.push(`path=${d.path}`);
    if (d.ramBlock !== "") keys.push(`ramblock=${d.ramBlock}`);
    if (d.usableRegionSize !== undefined) {
      keys.push(`usable-region-size=0x${d.usableRegionSize.toString(16)}`);
    }
    if (d.requestedSize !== undefined) {
      keys.push(`requested-size=0x${d.requestedSize.toString(16)}`);
    }
    out += `device ${keys.join(" ")}\n`;
    for (const [first, count] of map.blockRuns(d, true)) {
      const start = d.gpa + first * d.blockSize;
      out += `0x${start.toString(16)}-0x${(start + count * d.blockSize).toString(16)}\n`;
    }
  }
  return out;
}
