/**
 * `vmem-dump plugmap FILE|-`: print the virtio-mem plug state of a
 * migration stream (or of a `--plugmap` input) as versioned JSON, as a
 * readable list of plugged and unplugged ranges, or as a range list.
 *
 * @module
 */

import { loadPlugState } from "../../src/input/load_plug_state.ts";
import { formatPlugMapJson } from "../../src/vmem/plug_map_json.ts";
import type { PlugMap } from "../../src/vmem/plug_map.ts";
import type { VmemDevice } from "../../src/vmem/vmem_device.ts";
import { formatRangeList } from "../../src/vmem/range_list.ts";
import { grouped, hex, table } from "../_format.ts";
import { type CliIo, UsageError } from "../io.ts";
import { JSON_OPTION, parseCommandArgs, PLUGMAP_OPTIONS } from "../_args.ts";

const HELP = `usage: vmem-dump plugmap [FILE|-] [options]

Print the virtio-mem plug state of a QEMU migration stream (raw, gzip, zstd
or a libvirt save image) as JSON (format in docs/plugmaps.md):

  {"version":1,"devices":[{"path":…,"ramblock":…,"memaddr":…,"region-size":…,
   "block-size":…,"node":…,"usable-region-size":…,"size":…,"requested-size":…,
   "plugged":[[firstBlock,blockCount],…]}]}

Early layout (QEMU >= 8.0 machine types): reading stops after the early
section, before any RAM page; usable and requested size are then null
unless --complete is given. Late layout (QEMU 7.2): the decoder jumps from
the early part to the device state, located through the vmdesc at the end
of a regular file, else the stream is read once. The device section is found
by its header and structure; a vmdesc that names it differently is reported
on stderr. Device state that cannot be accounted for and a plug state stated
twice are errors (exit 1). See docs/plugmaps.md and docs/security.md.

  --plugmap FILE       read a plug map instead (JSON v1, QMP reply + runs, or
                       a plugged range list) and print it in the chosen form
  --plugmap-from FILE  same as giving FILE as the argument
  --complete           early layout: read to the end for usable/requested size
  --ranges             print plugged and unplugged guest-physical ranges
  --range-list         print the plugged range-list form (device lines + ranges)
  --json               with --ranges: the ranges as JSON
  -v, --verbose        say on stderr how the state was found and what was read
`;

/** Run `plugmap`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      ...PLUGMAP_OPTIONS,
      complete: { type: "boolean" },
      ranges: { type: "boolean" },
      "range-list": { type: "boolean" },
      ...JSON_OPTION,
      verbose: { type: "boolean", short: "v" },
    },
    help: HELP,
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const sources = [
    ...positionals,
    ...(values["plugmap-from"] === undefined ? [] : [values["plugmap-from"]]),
  ];
  if (values.plugmap !== undefined && sources.length > 0) {
    throw new UsageError("plugmap takes either a stream or --plugmap FILE, not both");
  }
  if (values.plugmap === undefined && sources.length !== 1) {
    throw new UsageError("plugmap takes exactly one stream (a file or -), or --plugmap FILE");
  }
  if (values.ranges && values["range-list"]) {
    throw new UsageError("choose one of --ranges and --range-list");
  }
  if (values.json && !values.ranges) {
    throw new UsageError("--json goes with --ranges (the default output is JSON)");
  }

  let map: PlugMap;
  if (values.plugmap !== undefined) {
    map = (await loadPlugState({ plugMapFile: values.plugmap })).plugMap;
  } else {
    const r = await loadPlugState({ stream: sources[0]!, complete: values.complete ?? false });
    map = r.plugMap;
    for (const d of r.vmdescDisagreements) {
      // The sections were found by their headers; the vmdesc only names them differently.
      await io.err(
        `plugmap: warning: the vmdesc disagrees with the stream (the sections count; verify ` +
          `refuses such a stream): ${d.message} at ${hex(d.streamOffset)}\n`,
      );
    }
    if (values.verbose) {
      await io.err(
        `plugmap: layout ${r.layout}, found by ${r.method}; decoded ${
          grouped(r.streamBytes)
        } stream bytes` +
          `${r.extraBytes ? ` and read ${grouped(r.extraBytes)} more bytes at the end` : ""}\n`,
      );
    }
  }
  if (values.ranges) {
    await io.out(values.json ? rangesJson(map) : rangesText(map));
  } else if (values["range-list"]) {
    await io.out(formatRangeList(map));
  } else {
    await io.out(formatPlugMapJson(map));
  }
  return 0;
}

function mib(bytes: number): string {
  return bytes % (1 << 20) === 0 ? `${bytes / (1 << 20)} MiB` : `${grouped(bytes)} bytes`;
}

function rangesText(map: PlugMap): string {
  if (map.devices.length === 0) return "no virtio-mem devices\n";
  let out = "";
  for (const d of map.devices) {
    const blocks = d.regionSize / d.blockSize;
    out += `device ${d.path || "(path unknown)"}  ramblock ${
      d.ramBlock || "(unknown)"
    }  node ${d.node}\n`;
    out += `  region ${hex(d.gpa)}-${hex(d.gpa + d.regionSize)}: ${
      mib(d.regionSize)
    }, ${blocks} blocks of ${mib(d.blockSize)}\n`;
    out += `  plugged ${mib(d.size)} (${d.size / d.blockSize} blocks)` +
      `, requested ${d.requestedSize === undefined ? "unknown" : mib(d.requestedSize)}` +
      `, usable ${d.usableRegionSize === undefined ? "unknown" : mib(d.usableRegionSize)}\n`;
    out += indent(table(["state", "gpa range", "size", "blocks"], deviceRows(map, d)));
  }
  return out;
}

function deviceRows(map: PlugMap, d: VmemDevice): string[][] {
  const runs = [
    ...map.blockRuns(d, true).map((r) => ({ r, state: "plugged" })),
    ...map.blockRuns(d, false).map((r) => ({ r, state: "unplugged" })),
  ].sort((a, b) => a.r[0] - b.r[0]);
  return runs.map(({ r: [first, count], state }) => {
    const gpa = d.gpa + first * d.blockSize;
    return [
      state,
      `${hex(gpa)}-${hex(gpa + count * d.blockSize)}`,
      mib(count * d.blockSize),
      count === 1 ? `${first}` : `${first}-${first + count - 1}`,
    ];
  });
}

function indent(text: string): string {
  return text.split("\n").map((l) => (l === "" ? l : "  " + l)).join("\n");
}

function rangesJson(map: PlugMap): string {
  const pair = (r: { gpa: number; byteLength: number }) => [r.gpa, r.byteLength];
  return JSON.stringify({
    plugged: map.pluggedGpaRanges().map(pair),
    unplugged: map.unpluggedGpaRanges().map(pair),
  }) + "\n";
}
