/**
 * The mapped-ram branch of `inspect`, `verify`, `scan` and `filter`, loaded
 * only when `openStreamInput` finds a mapped-ram file (plain, or in a
 * libvirt "sparse" image), so that streams do not pay for it at start-up.
 * Arguments are parsed by the command; this module opens, runs the library
 * and prints (docs/mapped-ram.md).
 *
 * @module
 */

import { openPositional, type PositionalReader } from "../src/io/positional.ts";
import { type MappedRamFile, readMappedRamFile } from "../src/migration/mapped_ram/file.ts";
import { inspectMappedRam } from "../src/migration/mapped_ram/inspect.ts";
import { type MappedRamVerifyResult, verifyMappedRam } from "../src/migration/mapped_ram/verify.ts";
import { filterMappedRam, type MappedRamFilterResult } from "../src/migration/mapped_ram/filter.ts";
import type { InspectReport } from "../src/migration/inspect.ts";
import type { FindingPageSink, PlugStateInfo, ScanReport } from "../src/scan/findings.ts";
import type { PlugMap } from "../src/vmem/plug_map.ts";
import type { AtomicOutput } from "../src/io/file.ts";
import { byteCount, count, formatByteCount, grouped, hex, table } from "./_format.ts";
import { printReport, type ReportFile, reportJson } from "./_report.ts";
import type { InputPin } from "./_input_pin.ts";
import { tableDeviceJson } from "./_stream_reports.ts";
import { plugStateJson, requirePlugState, sourceName } from "./_plug_state.ts";
import { inspectMappedRamBody } from "./_inspect_report.ts";
import { loadPlugMapOption, type PlugMapValues } from "./_args.ts";
import { summaryLine, terminalProgress } from "./_progress.ts";
import type { MappedRamFileInput } from "./_stream_input.ts";
import { type CliIo, UsageError } from "./io.ts";

/** A mapped-ram file opened for a command. */
export interface MappedRamInput extends Disposable {
  /** The path given. */
  path: string;
  /** The file. */
  file: PositionalReader;
  /** `raw` or `libvirt-save` (a "sparse" image). */
  container: "raw" | "libvirt-save";
  /** Where `QEVM` starts. */
  payloadOffset: number;
}

/**
 * Open the mapped-ram file `openStreamInput` found.
 *
 * @param found What it found.
 * @returns The opened file (dispose it).
 */
export async function openMappedRamInput(found: MappedRamFileInput): Promise<MappedRamInput> {
  const file = await openPositional(found.path);
  return {
    path: found.path,
    file,
    container: found.container,
    payloadOffset: found.payloadOffset,
    [Symbol.dispose]: () => file.close(),
  };
}

/** The `input` object of a report on a mapped-ram file. */
function mappedRamInputJson(input: MappedRamInput): ReportFile {
  return {
    path: input.path,
    format: "mapped-ram",
    container: input.container,
    byteLength: input.file.byteLength,
  };
}

/** The summary line every command ends with (docs/cli.md), of the mapped-ram file's size. */
async function summary(
  io: CliIo,
  label: string,
  input: MappedRamInput,
  started: number,
  detail: string,
): Promise<void> {
  await summaryLine(
    io,
    label,
    input.file.byteLength,
    (performance.now() - started) / 1000,
    `mapped-ram file, ${detail}`,
  );
}

async function read(input: MappedRamInput): Promise<MappedRamFile> {
  return await readMappedRamFile(input.file, { payloadOffset: input.payloadOffset });
}

/**
 * `inspect` of a mapped-ram file.
 *
 * @param input The file.
 * @param values `--json`.
 * @param io Output.
 * @param renderStream The command's text rendering of the stream report.
 * @returns Exit code 0.
 */
export async function inspectMappedRamCommand(
  input: MappedRamInput,
  values: { json?: boolean | undefined },
  io: CliIo,
  renderStream: (path: string, container: unknown, r: InspectReport) => string,
): Promise<number> {
  const started = performance.now();
  const report = await inspectMappedRam(await read(input));
  if (values.json) {
    await io.out(
      reportJson(
        "inspect",
        { input: mappedRamInputJson(input), verdict: "done" },
        inspectMappedRamBody(report),
      ),
    );
    return 0;
  }
  const m = report.mappedRam;
  let out = renderStream(input.path, input.container, report);
  out += `\nmapped-ram: ${count(m.pagesPresent, "page")} of ${
    formatByteCount(m.pageSize)
  } present; file ${byteCount(m.fileByteLength)} (sparse)${
    m.payloadOffset ? `, stream at ${hex(m.payloadOffset)}` : ""
  }\n`;
  out += table(
    ["idstr", "used_length", "header", "bitmap", "pages at", "pages", "present"],
    m.blocks.map((b) => [
      b.idstr,
      hex(b.usedLength),
      hex(b.headerOffset),
      b.ignored ? "-" : `${hex(b.bitmapOffset)}+${hex(b.bitmapByteLength)}`,
      b.ignored ? "(x-ignore-shared)" : hex(b.pagesOffset),
      grouped(b.pageCount),
      grouped(b.pagesPresent),
    ]),
  );
  await io.out(out);
  await summary(
    io,
    `inspect: ${input.path}`,
    input,
    started,
    `${count(m.pagesPresent, "page")} present`,
  );
  return 0;
}

/**
 * `verify` of a mapped-ram file: exit 0 clean, 3 violations.
 *
 * @param input The file.
 * @param values Plug-map options, `--json`, `--max-violations`, `--forward`, and the input pin
 *   checked before the verdict.
 * @param io Output.
 * @returns The exit code.
 */
export async function verifyMappedRamCommand(
  input: MappedRamInput,
  values: PlugMapValues & {
    json?: boolean | undefined;
    forward?: string | undefined;
    maxViolations: number;
    pin?: InputPin;
  },
  io: CliIo,
): Promise<number> {
  if (values.forward !== undefined) {
    throw new UsageError(
      "--forward does not apply to a mapped-ram file (it is not a stream): use filter IN OUT",
    );
  }
  const started = performance.now();
  const plugMap = await loadPlugMapOption(values);
  const r = await verifyMappedRam(await read(input), {
    maxViolations: values.maxViolations,
    ...(plugMap ? { plugMap } : {}),
  });
  await values.pin?.check();
  requirePlugState(r.devices.length, "file");
  const given = values.plugmap !== undefined
    ? "plugmap"
    : values["plugmap-from"] !== undefined
    ? "plugmap-from"
    : undefined;
  const name = (s: string) => sourceName(s, given);
  await io.out(
    values.json
      ? reportJson("verify", {
        input: mappedRamInputJson(input),
        verdict: r.clean ? "clean" : "violations",
      }, {
        plugState: plugStateJson(values, r.layout, r.devices.flatMap((d) => d.sources.map(name))),
        pagesPresent: r.pagesPresent,
        violationCount: r.violationCount,
        violations: r.violations.map((v) => ({
          path: v.devicePath,
          ramblock: v.ramBlock,
          ramOffset: v.ramOffset,
          gpa: v.gpa,
          blockIndex: v.blockIndex,
          fileOffset: v.fileOffset,
          bitmapFileOffset: v.bitmapFileOffset,
          detectedBy: name(v.detectedBy),
        })),
        devices: r.devices.map((d) => tableDeviceJson(d, d.sources.map(name))),
      })
      : renderVerify(input.path, r),
  );
  if (!values.json) {
    await summary(
      io,
      `verify: ${input.path}`,
      input,
      started,
      r.clean ? "clean" : count(r.violationCount, "violation"),
    );
  }
  return r.clean ? 0 : 3;
}

function renderVerify(path: string, r: MappedRamVerifyResult): string {
  let t = r.clean
    ? `verify: ${path}: clean: ${
      count(r.pagesPresent, "page")
    } in the mapped-ram file, none in an unplugged block\n`
    : `verify: ${path}: ${
      count(r.violationCount, "page")
    } of unplugged blocks present (QEMU loads them) among ${grouped(r.pagesPresent)}\n`;
  t += `  mapped-ram file, ${
    r.layout === "none" ? "no virtio-mem state in the file" : `${r.layout} layout`
  }\n`;
  for (const d of r.devices) {
    t += `  ${d.ramBlock} (gpa ${hex(d.gpa)}, ${d.pluggedBlocks}/${count(d.blocks, "block")} of ${
      formatByteCount(d.blockSize)
    } plugged; from ${[...new Set(d.sources)].join(" and ")})\n`;
  }
  for (const v of r.violations) {
    t += `  page gpa ${hex(v.gpa)} (${v.ramBlock}+${hex(v.ramOffset)}, block ${v.blockIndex}): ` +
      `data at file offset ${hex(v.fileOffset)}, bit in byte ${
        hex(v.bitmapFileOffset)
      } [${v.detectedBy}]\n`;
  }
  if (r.violationCount > r.violations.length) {
    t += `  … ${grouped(r.violationCount - r.violations.length)} more\n`;
  }
  return t;
}

/**
 * `scan` of a mapped-ram file: the report (its verdict gives the exit code),
 * or `undefined` when neither the file nor the options give a plug state.
 *
 * @param input The file.
 * @param plugMap The `--plugmap`/`--plugmap-from` map, if any.
 * @param plugState How the report names that map.
 * @param settings Listing bound, hexdump length, and the `--extract` sink.
 * @returns The report, or `undefined`.
 */
export async function scanMappedRamInput(
  input: MappedRamInput,
  plugMap: PlugMap | undefined,
  plugState: PlugStateInfo,
  settings: { maxFindings: number; hexdumpBytes: number; pageSink: FindingPageSink | undefined },
): Promise<ScanReport | undefined> {
  // Loaded on use: the scanner pulls in node:zlib and node:crypto (~0.1 s each to load),
  // which inspect, verify and filter, which import this module too, should not pay.
  const { scanMappedRam } = await import("../src/scan/scan_mapped_ram.ts");
  const { report, plugMap: used } = await scanMappedRam(await read(input), {
    maxFindings: settings.maxFindings,
    hexdumpBytes: settings.hexdumpBytes,
    path: input.path,
    container: input.container,
    ...(settings.pageSink ? { pageSink: settings.pageSink } : {}),
    ...(plugMap ? { plugMap, plugState } : {}),
  });
  return used === undefined ? undefined : report;
}

/**
 * `filter` of a mapped-ram file into a sparse copy, committed to `output`
 * on success (the caller aborts it on failure).
 *
 * @param input The file.
 * @param output The command's output (standard output: holes become zeros).
 * @param values Plug-map options and `--json`.
 * @param io Output.
 * @returns Exit code 0.
 */
export async function filterMappedRamCommand(
  input: MappedRamInput,
  output: AtomicOutput,
  values: PlugMapValues & { json?: boolean | undefined },
  io: CliIo,
): Promise<number> {
  const started = performance.now();
  const plugMap = await loadPlugMapOption(values);
  const mr = await read(input);
  // On a terminal: how far into the file the copy has got (holes count: the layout is kept).
  const progress = terminalProgress(io, "filter", input.file.byteLength);
  let r: MappedRamFilterResult;
  try {
    r = await filterMappedRam(mr, output, {
      ...(plugMap ? { plugMap } : {}),
      onProgress: (n) => progress.update(n),
    });
  } finally {
    await progress.end();
  }
  requirePlugState(r.plugStateSources.length, "file");
  await output.commit();
  const outPath = output.path;
  if (!values.json) {
    await io.err(renderFilter(input.path, outPath, r));
    await summary(
      io,
      `filter: ${input.path} -> ${outPath}`,
      input,
      started,
      `dropped ${count(r.droppedPages, "page")}`,
    );
    return 0;
  }
  const given = values.plugmap !== undefined
    ? "plugmap"
    : values["plugmap-from"] !== undefined
    ? "plugmap-from"
    : undefined;
  const sources = r.plugStateSources.map((s) => sourceName(s, given));
  const pathOf = new Map(
    [...mr.plugMap.devices, ...(plugMap?.devices ?? [])].map((d) => [d.ramBlock, d.path]),
  );
  const report = reportJson("filter", {
    input: mappedRamInputJson(input),
    verdict: "done",
    output: {
      path: outPath,
      format: "mapped-ram",
      container: input.container,
      byteLength: r.byteLength,
    },
  }, {
    plugState: plugStateJson(values, mr.plugLayout, sources),
    droppedPages: r.droppedPages,
    keptPages: r.keptPages,
    dataByteLength: r.dataBytes,
    dropped: r.dropped.map((d) => ({
      path: pathOf.get(d.ramBlock) ?? "",
      ramblock: d.ramBlock,
      ramOffset: d.ramOffset,
      gpa: d.gpa,
      blockIndex: d.blockIndex,
      fileOffset: d.fileOffset,
    })),
  });
  await printReport(io, report, outPath === "-");
  return 0;
}

function renderFilter(inPath: string, outPath: string, r: MappedRamFilterResult): string {
  let t = `filter: ${inPath} -> ${outPath}: mapped-ram file, dropped ${
    grouped(r.droppedPages)
  } page${r.droppedPages === 1 ? "" : "s"} of unplugged blocks, kept ${
    grouped(r.keptPages)
  }; wrote ${byteCount(r.dataBytes)} of data in a sparse ${grouped(r.byteLength)}-byte file\n`;
  if (r.plugStateSources.length === 0) t += "  no virtio-mem device: nothing to drop\n";
  for (const d of r.dropped.slice(0, 16)) {
    t += `  dropped gpa ${hex(d.gpa)} (${d.ramBlock}+${hex(d.ramOffset)}, block ${d.blockIndex}) ` +
      `at file offset ${hex(d.fileOffset)}\n`;
  }
  if (r.droppedPages > 16) t += `  … ${r.droppedPages - 16} more\n`;
  return t;
}
