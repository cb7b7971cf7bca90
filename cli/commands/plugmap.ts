/**
 * `vmem-dump plugmap FILE|-`: print the virtio-mem plug state of a
 * migration stream (or of a `--plugmap` input) as versioned JSON, as a
 * readable list of plugged and unplugged ranges, or as a range list.
 *
 * @module
 */

import { loadPlugState, type PlugStateFromStream } from "../../src/input/load_plug_state.ts";
import { formatPlugMapJson } from "../../src/vmem/plug_map_json.ts";
import type { PlugMap } from "../../src/vmem/plug_map.ts";
import type { VmemDevice } from "../../src/vmem/vmem_device.ts";
import { formatRangeList } from "../../src/vmem/range_list.ts";
import { byteCount, count, exactSize, hex, table } from "../_format.ts";
import { fileByteLength } from "../_stream_input.ts";
import { summaryLine, terminalProgress } from "../_progress.ts";
import {
  gpaRangesJson,
  type PlugStateJson,
  type PlugStateSourceName,
  type ReportFile,
  reportJson,
} from "../_report.ts";
import { type CliIo, UsageError } from "../io.ts";
import { JSON_OPTION, parseCommandArgs, PLUGMAP_OPTIONS } from "../_args.ts";
import { pinInputs } from "../_input_pin.ts";

const HELP = `usage: vmem-dump plugmap [FILE|-] [options]

Print the virtio-mem plug state of a QEMU migration stream (raw, gzip, zstd,
a libvirt save image, or a mapped-ram file) in the plug-map JSON format
(docs/plugmaps.md), which --plugmap FILE reads back:

  {"version":1,"devices":[{"path":…,"ramblock":…,"memaddr":…,"region-size":…,
   "block-size":…,"node":…,"usable-region-size":…,"size":…,"requested-size":…,
   "plugged":[[firstBlock,blockCount],…]}]}

A regular file gives the complete state: for the early layout (QEMU >= 8.0
machine types) the early section and the device section at the end, found
through the vmdesc of an uncompressed file (a compressed file is read to
its end). A pipe is read only up to the early section: usable and requested
size are then null, and plugmap says so on stderr (--complete reads on).
The late layout (QEMU 7.2) has everything in the device section. The device
section is found by its header and structure; a vmdesc that names it
differently is reported. Device state that cannot be accounted for and a
plug state stated twice are errors (exit 1). See docs/plugmaps.md and
docs/security.md.

  --plugmap FILE       read a plug map instead (JSON v1, QMP reply + runs, or
                       a plugged range list) and print it in the chosen form
  --plugmap-from FILE  same as giving FILE as the argument
  --complete           a pipe: read to the end for usable and requested size
  --early              stop after the early section, also for a file (fast
                       on a big compressed file; usable/requested size null)
  --ranges             print plugged and unplugged guest-physical ranges
  --range-list         print the plugged range-list form (device lines + ranges)
  --json               the plugmap report: devices, ranges, where the state
                       came from (docs/plugmaps.md, docs/glossary.md)
  -v, --verbose        say on stderr how the state was found and what was read

Exit status: 0 done, 1 error (bad input), 2 usage error.
`;

/** Run `plugmap`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      ...PLUGMAP_OPTIONS,
      complete: { type: "boolean" },
      early: { type: "boolean" },
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
  if (values.json && values["range-list"]) {
    throw new UsageError("--json prints the report; --range-list prints a plug-map input format");
  }
  if (values.complete && values.early) throw new UsageError("choose one of --complete and --early");

  let map: PlugMap;
  let input: ReportFile;
  let plugState: PlugStateJson;
  let extraction: Record<string, unknown> = {};
  const warnings: string[] = [];
  const started = performance.now();
  /** The stream read (for the summary line): bytes decoded and read at the end, and how. */
  let read: { byteLength: number; detail: string } | undefined;
  if (values.plugmap !== undefined) {
    map = (await loadPlugState({ plugMapFile: values.plugmap })).plugMap;
    input = {
      path: values.plugmap,
      format: "plugmap",
      container: null,
      byteLength: await fileByteLength(values.plugmap),
    };
    plugState = { sources: ["plugmap"], layout: null, path: values.plugmap };
  } else {
    const path = sources[0]!;
    const byteLength = await fileByteLength(path);
    // A regular file gives the whole state; a pipe stops after the early section unless asked.
    const complete = values.early ? false : byteLength !== null || (values.complete ?? false);
    // On a terminal: how far into the file reading has got (a long read of a big compressed
    // stream or a pipe), with rate and time left against the file's size.
    const progress = terminalProgress(io, "plugmap", byteLength ?? undefined);
    // Pinned before the first open: a regular file is opened more than once (its kind, its
    // sections, the device state at its end), and the map must come from one file.
    using pin = await pinInputs([path]);
    let r: PlugStateFromStream;
    try {
      r = await loadPlugState({ stream: path, complete, onProgress: (n) => progress.update(n) });
    } finally {
      await progress.end();
    }
    await pin.check();
    input = {
      path,
      format: r.mappedRam ? "mapped-ram" : "migration",
      container: r.container,
      byteLength,
    };
    map = r.plugMap;
    for (const d of r.vmdescDisagreements) {
      // The sections were found by their headers; the vmdesc only names them differently.
      warnings.push(
        `the vmdesc disagrees with the stream (the sections count; verify refuses such a ` +
          `stream): ${d.message} at ${hex(d.streamOffset)}`,
      );
    }
    const stoppedEarly = r.layout === "early" && r.method === "early";
    if (stoppedEarly && !values.early) {
      warnings.push(
        `read up to the early section only (${
          path === "-" ? "standard input" : "a pipe"
        } cannot be read twice): usable and ` +
          "requested size are unknown (null); --complete reads to the end",
      );
    }
    plugState = { sources: sourcesOf(r.layout, map), layout: r.layout, path: null };
    read = {
      byteLength: r.streamBytes + r.extraBytes,
      detail: `${count(map.devices.length, "device")}, ${r.layout} layout, found by ${r.method}${
        byteLength === null ? "" : `; the input has ${byteCount(byteLength)}`
      }`,
    };
    extraction = {
      method: r.method,
      complete: !stoppedEarly,
      streamByteLength: r.streamBytes,
      extraByteLength: r.extraBytes,
    };
    if (values.verbose) {
      await io.err(
        `plugmap: layout ${r.layout}, found by ${r.method}; decoded ${byteCount(r.streamBytes)}` +
          ` of the stream${
            r.extraBytes ? ` and read ${byteCount(r.extraBytes)} more at the end` : ""
          }\n`,
      );
    }
  }
  if (!values.json) { for (const w of warnings) await io.err(`plugmap: warning: ${w}\n`); }
  if (values.json) {
    await io.out(reportJson("plugmap", { input, verdict: "done" }, {
      plugState,
      ...extraction,
      devices: devicesJson(map),
      ranges: {
        plugged: gpaRangesJson(map.pluggedGpaRanges()),
        unplugged: gpaRangesJson(map.unpluggedGpaRanges()),
      },
      warnings,
    }));
  } else if (values.ranges) {
    await io.out(rangesText(map));
  } else if (values["range-list"]) {
    await io.out(formatRangeList(map));
  } else {
    await io.out(formatPlugMapJson(map));
  }
  // A trace on stderr for scripts and logs, as every command leaves (not with --json).
  if (read !== undefined && !values.json) {
    const seconds = (performance.now() - started) / 1000;
    await summaryLine(io, `plugmap: ${sources[0]}`, read.byteLength, seconds, read.detail);
  }
  return 0;
}

/** Where each device's state came from, for the report. */
function sourcesOf(layout: "early" | "late" | "none", map: PlugMap): PlugStateSourceName[] {
  if (layout === "none") return [];
  if (layout === "late") return ["device"];
  // Early layout: the device section was read too when usable size is known.
  return map.devices.some((d) => d.usableRegionSize !== undefined)
    ? ["early", "device"]
    : ["early"];
}

/** The devices in the plug-map keys, plus their block counts. */
function devicesJson(map: PlugMap): Record<string, unknown>[] {
  const json = map.toJSON().devices;
  return map.devices.map((d, i) => ({
    ...json[i]!,
    blocks: d.regionSize / d.blockSize,
    pluggedBlocks: map.pluggedBlockCount(d),
  }));
}

function rangesText(map: PlugMap): string {
  if (map.devices.length === 0) return "no virtio-mem devices\n";
  let out = "";
  for (const d of map.devices) {
    const blocks = d.regionSize / d.blockSize;
    out += `device ${d.path || "(path unknown)"}  ramblock ${
      d.ramBlock || "(unknown)"
    }  node ${d.node}\n`;
    out += `  region ${hex(d.gpa)}-${hex(d.gpa + d.regionSize)}: ${exactSize(d.regionSize)}, ${
      count(blocks, "block")
    } of ${exactSize(d.blockSize)}\n`;
    out += `  plugged ${exactSize(d.size)} (${count(d.size / d.blockSize, "block")})` +
      `, requested ${d.requestedSize === undefined ? "unknown" : exactSize(d.requestedSize)}` +
      `, usable ${d.usableRegionSize === undefined ? "unknown" : exactSize(d.usableRegionSize)}\n`;
    out += indent(table(["state", "gpa range", "size", "blocks"], deviceRows(map, d)));
  }
  return out;
}

function deviceRows(map: PlugMap, d: VmemDevice): string[][] {
  const runs = [
    ...map.blockRuns(d, true).map((r) => ({ r, state: "plugged" })),
    ...map.blockRuns(d, false).map((r) => ({ r, state: "unplugged" })),
  ].sort((a, b) => a.r[0] - b.r[0]);
  return runs.map(({ r: [first, n], state }) => {
    const gpa = d.gpa + first * d.blockSize;
    return [
      state,
      `${hex(gpa)}-${hex(gpa + n * d.blockSize)}`,
      exactSize(n * d.blockSize),
      n === 1 ? `${first}` : `${first}-${first + n - 1}`,
    ];
  });
}

function indent(text: string): string {
  return text.split("\n").map((l) => (l === "" ? l : "  " + l)).join("\n");
}
