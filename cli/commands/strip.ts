/**
 * `vmem-dump strip IN OUT --plugmap F | --plugmap-from STREAM`: rewrite an
 * ELF guest memory dump (or a raw `pmemsave` image) without the memory of
 * unplugged virtio-mem blocks.
 *
 * @module
 */

import { readElfCore } from "../../src/elf/reader.ts";
import type { KeptSegment, RemovedRange, StripReport } from "../../src/elf/rewrite.ts";
import { checkOutput, writeAtomically } from "../../src/io/file.ts";
import { zeroRawImage } from "../../src/raw/zero.ts";
import type { PlugMap } from "../../src/vmem/plug_map.ts";
import type { VmemDevice } from "../../src/vmem/vmem_device.ts";
import { formatGpaRange, type GpaRange } from "../../src/vmem/ranges.ts";
import { byteCount, count, grouped, hex, table } from "../_format.ts";
import { summaryLine, terminalProgress } from "../_progress.ts";
import { deviceJson, gpaRangesJson, type ReportFile, reportJson } from "../_report.ts";
import { plugStateJson } from "../_plug_state.ts";
import { fileByteLength } from "../_stream_input.ts";
import { dumpInputKind, requireRegularFile } from "../_dump_input.ts";
import { type CliIo, CommandError, UsageError } from "../io.ts";
import { lazyImport } from "../_lazy.ts";
import { pinInputs } from "../_input_pin.ts";
import {
  checkPlugMapOptions,
  FORCE_HELP,
  FORCE_OPTION,
  JSON_OPTION,
  loadPlugMapOption,
  outputPolicy,
  parseCommandArgs,
  parseSize,
  PLUGMAP_OPTIONS,
  plugMapFiles,
} from "../_args.ts";

const HELP = `usage: vmem-dump strip IN OUT (--plugmap FILE | --plugmap-from STREAM) [options]

Rewrite a guest memory dump (ELF or kdump-compressed) so it holds no memory
of unplugged virtio-mem blocks. Every PT_LOAD that overlaps unplugged blocks is split into its
plugged parts; the unplugged memory becomes a gap between segments (never a
zero-filled tail). Notes are copied byte for byte. The output uses the
classic ELF layout (program headers at offset 64) that crash, gdb and
makedumpfile accept. OUT appears only when complete; OUT may be - (stdout).

IN is an ELF core (QEMU dump-guest-memory, /proc/vmcore copy, ...), or with
--base a raw image of guest-physical memory (QEMU pmemsave).

  --plugmap FILE         plug map: JSON v1, QMP reply + runs, or a range list
  --plugmap-from STREAM  take the plug map from a migration stream of the VM
  --base GPA             IN is a raw image whose first byte is at GPA
  --format elf|raw       with --base: write an ELF with only the plugged parts
                         (default), or the image with unplugged blocks zeroed
  --count-nonzero        also read the removed bytes and count non-zero pages
  --page-align N         align segment data to N bytes (default 4096, 0 = packed)
  --flattened            kdump: write the flattened container (default: plain)
  --split-set FILE       kdump: another file of IN's split set (makedumpfile
                         --split); give each other file once. Required for a
                         file of a split dump: the set must be one dump, cut
                         in one run, with one plug state, or strip fails (exit 1)
  --json                 print the report as JSON
${FORCE_HELP}
IN may also be a kdump-compressed dump (makedumpfile, QEMU kdump-*, plain or
flattened): the pages of unplugged blocks leave both bitmaps, their
descriptors and data go, every other page is copied as stored (no
recompression). The output is plain unless --flattened is given.

Every ELF or kdump output carries a provenance note (ELF note "VMEMDUMP"):
the plug map, the removed ranges, the input's name, size and SHA-256, and the
tool version. A dump that holds no unplugged memory (QEMU >= 6.2 leaves it out
of its dumps) is still written, with the note recording the check; strip says
so. Stripping a stripped dump again keeps its note unchanged. See
docs/dumps.md.

OUT is never IN (same file, however named), an existing OUT is replaced only
with --force, and OUT gets IN's permissions at most (docs/evidence.md).

Exit status: 0 done, 1 error (bad input, output refused or not written), 2 usage error.
`;

/** Run `strip`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      ...PLUGMAP_OPTIONS,
      base: { type: "string" },
      format: { type: "string" },
      "count-nonzero": { type: "boolean" },
      "page-align": { type: "string" },
      flattened: { type: "boolean" },
      "split-set": { type: "string", multiple: true },
      ...JSON_OPTION,
      ...FORCE_OPTION,
    },
    help: HELP,
    positionals: 2,
    usage: "strip takes an input and an output: strip IN OUT",
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const [inPath, outPath] = positionals as [string, string];
  if (inPath === "-") throw new UsageError("strip needs a seekable input file, not standard input");
  await requireRegularFile(inPath, "strip");
  const splitSet = (values["split-set"] ?? []) as string[];
  // A member is read at random offsets too: a FIFO, socket or device is refused by its name.
  for (const member of splitSet) await requireRegularFile(member, "strip --split-set");
  // Pinned before the first open (the kind is told by one open, the dump read and hashed by
  // others): the output appears only if every input stayed the same file, unchanged.
  using pin = await pinInputs([inPath, ...splitSet, ...plugMapFiles(values)]);
  const policy = {
    ...outputPolicy(values, [inPath, ...splitSet], plugMapFiles(values)),
    beforeCommit: pin.check,
  };
  const plugMapCheck = { requiredBy: "strip" };
  checkPlugMapOptions(values, plugMapCheck);
  const format = values.format ?? "elf";
  if (format !== "elf" && format !== "raw") {
    throw new UsageError(`--format must be elf or raw, not ${format}`);
  }
  const baseGpa = values.base === undefined ? undefined : parseSize(values.base, "--base");
  if (baseGpa === undefined && values.format !== undefined) {
    throw new UsageError(
      "--format applies to raw images (with --base); an ELF input gives an ELF output",
    );
  }
  const pageAlign = values["page-align"] === undefined
    ? 4096
    : parseSize(values["page-align"], "--page-align");
  const countNonZero = values["count-nonzero"] ?? false;

  // Check the input kind before the (possibly slow) plug map extraction.
  const kind = baseGpa === undefined ? await dumpInputKind(inPath, "strip") : undefined;
  const flattened = values.flattened ?? false;
  if (flattened && kind !== "kdump" && kind !== "kdump-flattened") {
    throw new UsageError("--flattened applies to kdump-compressed dumps");
  }
  if (splitSet.length > 0 && kind !== "kdump" && kind !== "kdump-flattened") {
    throw new UsageError("--split-set applies to kdump-compressed dumps (files of a split dump)");
  }
  if (
    kind !== undefined && kind !== "elf" && (values["page-align"] !== undefined || countNonZero)
  ) {
    throw new UsageError("--page-align and --count-nonzero apply to ELF dumps");
  }
  // Refuse a bad output before the (possibly slow) plug map extraction.
  await checkOutput(outPath, policy);

  const map = await loadPlugMapOption(values, plugMapCheck);
  if (map === undefined || map.devices.length === 0) {
    throw new CommandError("no-devices", "the plug map has no virtio-mem device");
  }
  const given = values.plugmap !== undefined ? "plugmap" : "plugmap-from";
  const exclude = map.unpluggedGpaRanges();
  // With the data on stdout, the report goes to stderr.
  const say = outPath === "-" ? (t: string) => io.err(t) : (t: string) => io.out(t);
  /** The JSON report: the envelope, the plug state judged by, then what the input's kind adds. */
  const sayReport = (input: ReportFile, output: ReportFile, body: Record<string, unknown>) =>
    say(reportJson("strip", { input, verdict: "done", output }, {
      plugState: plugStateJson(values, null, [given]),
      ...body,
    }));
  // The rewriters report their progress (bytes processed of bytes to process: memory for a
  // kdump, the bytes copied for an ELF, the bytes read for a raw image).
  const progress = terminalProgress(io, "strip", undefined);
  const onProgress = (done: number, total: number) => progress.update(done, total);
  const inputFileByteLength = await fileByteLength(inPath);
  const inputByteLength = inputFileByteLength ?? 0;
  const onRawProgress = (done: number) => progress.update(done, inputByteLength);
  // The summary's measure is the input file, as every command's: what it read, at most once.
  const done = async (removedBytes: number) => {
    await progress.end();
    if (values.json) return;
    await summaryLine(
      io,
      `strip: ${inPath} -> ${outPath}`,
      inputByteLength,
      progress.seconds,
      `${byteCount(removedBytes)} of unplugged memory removed`,
    );
  };

  if (kind === "kdump" || kind === "kdump-flattened") {
    const { stripDump } = await loadRewrite();
    const r = await stripDump(inPath, outPath, {
      plugMap: map,
      flattened,
      splitSet,
      outputPolicy: policy,
      onProgress,
    }).finally(() => progress.end());
    if (r.format !== "kdump") throw new Error("Internal error: kdump strip gave another format");
    const k = r.kdump;
    const devices = perDevice(
      map,
      k.removed.map((x) => ({ ...x, fileByteLength: 0 })),
    );
    const nothing = r.removedNothing ? nothingRemoved(r.provenance.steps.length > 1) : undefined;
    if (values.json) {
      await sayReport(
        {
          path: inPath,
          format: "kdump",
          container: r.inputContainer,
          byteLength: inputFileByteLength,
          sha256: r.inputSha256,
        },
        {
          path: outPath,
          format: "kdump",
          container: r.flattened ? "flattened" : "raw",
          byteLength: k.byteLength,
        },
        {
          removedByteLength: k.removed.reduce((n, x) => n + x.byteLength, 0),
          removed: gpaRangesJson(k.removed),
          removedNothing: r.removedNothing,
          ...(nothing ? { reason: nothing } : {}),
          kdump: {
            inputPageCount: k.inputPageCount,
            outputPageCount: k.pageCount,
            removedPages: k.removedPages,
            removedPresentPages: k.removedPresentPages,
            removedDataByteLength: k.removedDataByteLength,
          },
          provenance: r.provenance,
          devices: devices.map(deviceRemovalJson),
        },
      );
    } else {
      let out = `strip: ${inPath} (kdump${r.inputContainer === "flattened" ? ", flattened" : ""}, ${
        count(k.inputPageCount, "page")
      }) -> ${outPath} (kdump${r.flattened ? ", flattened" : ""}, ${count(k.pageCount, "page")}, ${
        byteCount(k.byteLength)
      })\n`;
      out += `removed ${count(k.removedPresentPages, "page")} (${
        grouped(k.removedPages)
      } with data, ${byteCount(k.removedDataByteLength)} of stored data)\n`;
      out += renderDevices(devices, "removed");
      if (nothing) out += `${nothing}\n`;
      await say(out);
    }
    await done(k.removed.reduce((n, x) => n + x.byteLength, 0));
    return 0;
  }
  if (baseGpa === undefined) {
    const { stripDump } = await loadRewrite();
    const r = await stripDump(inPath, outPath, {
      plugMap: map,
      outputPolicy: policy,
      pageAlign,
      ...(countNonZero ? { countNonZero: true } : {}),
      onProgress,
    }).finally(() => progress.end());
    if (r.format !== "elf") throw new Error("Internal error: ELF strip gave another format");
    const report = r.elf;
    using core = await readElfCore(inPath);
    const devices = perDevice(map, report.removed);
    const nothing = r.removedNothing ? nothingRemoved(r.provenance.steps.length > 1) : undefined;
    if (values.json) {
      await sayReport(
        {
          path: inPath,
          format: "elf",
          container: "raw",
          byteLength: report.inputByteLength,
          sha256: r.inputSha256,
        },
        {
          path: outPath,
          format: "elf",
          container: "raw",
          byteLength: report.outputByteLength,
        },
        {
          removedByteLength: report.removedByteLength,
          removed: report.removed,
          removedNothing: r.removedNothing,
          ...(nothing ? { reason: nothing } : {}),
          elf: {
            elfClass: core.ehdr.elfClass,
            littleEndian: core.ehdr.littleEndian,
            machine: core.ehdr.machine,
            inputLoadCount: report.inputLoadCount,
            outputLoadCount: report.outputLoadCount,
            inputLayout: report.inputLayout,
            extendedNumbering: report.extendedNumbering,
            notes: report.notes,
            removedFileByteLength: report.removedFileByteLength,
            kept: report.kept.map(keptJson),
          },
          provenance: r.provenance,
          devices: devices.map(deviceRemovalJson),
        },
      );
    } else {
      let out = renderElf(
        inPath,
        outPath,
        core.ehdr.elfClass,
        core.ehdr.littleEndian,
        report,
        devices,
      );
      if (nothing) {
        const grew = report.outputByteLength - report.inputByteLength;
        out +=
          `${nothing}; the output differs from the input by its layout and the provenance note (${
            grew >= 0 ? "+" : ""
          }${byteCount(grew)})\n`;
      }
      await say(out);
    }
    await done(report.removedByteLength);
    return 0;
  }

  if (format === "raw") {
    const report = await writeAtomically(
      outPath,
      policy,
      (write) =>
        zeroRawImage(inPath, write, { baseGpa, exclude, countNonZero, onProgress: onRawProgress }),
    ).finally(() => progress.end());
    const devices = perDevice(
      map,
      report.zeroed.map((z) => ({ ...z, fileByteLength: z.byteLength })),
    );
    if (values.json) {
      await sayReport(
        {
          path: inPath,
          format: "raw",
          container: "raw",
          byteLength: report.byteLength,
          baseGpa,
        },
        { path: outPath, format: "raw", container: "raw", byteLength: report.byteLength },
        {
          removedByteLength: report.zeroedByteLength,
          removed: report.zeroed,
          devices: devices.map(deviceRemovalJson),
        },
      );
    } else {
      let out = `strip: ${inPath} (raw image at ${hex(baseGpa)}, ${
        byteCount(report.byteLength)
      }) -> ${outPath} (raw)\n`;
      out += `zeroed ${byteCount(report.zeroedByteLength)} in ${
        count(report.zeroed.length, "range")
      }\n`;
      out += renderDevices(devices, "zeroed");
      await say(out);
    }
    await done(report.zeroedByteLength);
    return 0;
  }

  const { stripRawImage } = await loadRewrite();
  const r = await stripRawImage(inPath, outPath, {
    plugMap: map,
    baseGpa,
    outputPolicy: policy,
    pageAlign,
    onProgress: onRawProgress,
  }).finally(() => progress.end());
  const report = r.elf;
  const devices = perDevice(
    map,
    report.removed.map((r) => ({ ...r, fileByteLength: r.byteLength })),
  );
  if (values.json) {
    await sayReport(
      {
        path: inPath,
        format: "raw",
        container: "raw",
        byteLength: report.inputByteLength,
        sha256: r.inputSha256,
        baseGpa,
      },
      {
        path: outPath,
        format: "elf",
        container: "raw",
        byteLength: report.outputByteLength,
      },
      {
        removedByteLength: report.removedByteLength,
        removed: gpaRangesJson(report.removed),
        elf: { kept: report.kept.map(keptJson) },
        provenance: r.provenance,
        devices: devices.map(deviceRemovalJson),
      },
    );
  } else {
    let out =
      `strip: ${inPath} (raw image at ${hex(baseGpa)}, ${byteCount(report.inputByteLength)}) -> ` +
      `${outPath} (ELF64, ${count(report.kept.length, "PT_LOAD")}, ${
        byteCount(report.outputByteLength)
      })\n`;
    out += renderKept(report.kept);
    out += renderDevices(devices, "removed");
    await say(out);
  }
  await done(report.removedByteLength);
  return 0;
}

/** The dump rewriters (and the hashing and codecs they need), loaded for dumps only. */
function loadRewrite() {
  return lazyImport<typeof import("../../src/dumps/rewrite.ts")>(
    "../../src/dumps/rewrite.ts",
    import.meta.url,
  );
}

/** Removed ranges grouped by the device that owns them. */
interface DeviceRemoval {
  path: string;
  ramBlock: string;
  gpa: number;
  regionSize: number;
  blockSize: number;
  ranges: Array<{
    gpa: number;
    byteLength: number;
    fileByteLength: number;
    firstBlock: number;
    lastBlock: number;
    nonZeroPages?: number;
  }>;
  byteLength: number;
  fileByteLength: number;
}

function perDevice(
  map: PlugMap,
  removed: ReadonlyArray<GpaRange & { fileByteLength: number; nonZeroPages?: number }>,
): DeviceRemoval[] {
  const out = new Map<VmemDevice, DeviceRemoval>();
  for (const d of map.devices) {
    out.set(d, {
      path: d.path,
      ramBlock: d.ramBlock,
      gpa: d.gpa,
      regionSize: d.regionSize,
      blockSize: d.blockSize,
      ranges: [],
      byteLength: 0,
      fileByteLength: 0,
    });
  }
  for (const r of removed) {
    const d = map.deviceForGpa(r.gpa);
    if (d === undefined) continue;
    const entry = out.get(d)!;
    const range = {
      gpa: r.gpa,
      byteLength: r.byteLength,
      fileByteLength: r.fileByteLength,
      firstBlock: Math.floor((r.gpa - d.gpa) / d.blockSize),
      lastBlock: Math.floor((r.gpa + r.byteLength - 1 - d.gpa) / d.blockSize),
      ...(r.nonZeroPages !== undefined ? { nonZeroPages: r.nonZeroPages } : {}),
    };
    // Ranges of adjacent input segments that touch are shown as one.
    const last = entry.ranges.at(-1);
    if (last !== undefined && last.gpa + last.byteLength === r.gpa) {
      last.byteLength += r.byteLength;
      last.fileByteLength += r.fileByteLength;
      last.lastBlock = range.lastBlock;
      if (range.nonZeroPages !== undefined) {
        last.nonZeroPages = (last.nonZeroPages ?? 0) + range.nonZeroPages;
      }
    } else entry.ranges.push(range);
    entry.byteLength += r.byteLength;
    entry.fileByteLength += r.fileByteLength;
  }
  return [...out.values()];
}

/** A device and what strip removed of it, in the glossary's keys. */
function deviceRemovalJson(d: DeviceRemoval): Record<string, unknown> {
  return {
    ...deviceJson({
      path: d.path,
      ramblock: d.ramBlock,
      memaddr: d.gpa,
      regionSize: d.regionSize,
      blockSize: d.blockSize,
    }),
    removedByteLength: d.byteLength,
    removedFileByteLength: d.fileByteLength,
    ranges: d.ranges.map((r) => ({
      gpa: r.gpa,
      byteLength: r.byteLength,
      fileByteLength: r.fileByteLength,
      firstBlockIndex: r.firstBlock,
      lastBlockIndex: r.lastBlock,
      ...(r.nonZeroPages !== undefined ? { nonZeroPages: r.nonZeroPages } : {}),
    })),
  };
}

function keptJson(k: KeptSegment) {
  // A segment without a physical address (all-ones p_paddr, or past 2^53) has gpa null, as the
  // schema says: JSON.stringify would drop an undefined member.
  return { ...k, gpa: k.gpa ?? null, vaddr: `0x${k.vaddr.toString(16)}` };
}

function renderKept(kept: KeptSegment[]): string {
  return table(
    ["gpa", "bytes", "file offset", "file bytes"],
    kept.map((k) => [
      k.gpa === undefined ? "-" : formatGpaRange({ gpa: k.gpa, byteLength: k.byteLength }),
      grouped(k.byteLength),
      hex(k.fileOffset),
      grouped(k.fileByteLength),
    ]),
  ).split("\n").map((line) => (line ? `  ${line}` : line)).join("\n");
}

function renderDevices(devices: DeviceRemoval[], verb: string): string {
  let out = "";
  for (const d of devices) {
    out +=
      `device ${d.path} (${d.ramBlock}, ${
        formatGpaRange({ gpa: d.gpa, byteLength: d.regionSize })
      }, ` +
      `block ${hex(d.blockSize)}): ${verb} ${byteCount(d.byteLength)}` +
      (verb === "removed" ? ` (${byteCount(d.fileByteLength)} of file data)` : "") +
      ` in ${count(d.ranges.length, "range")}\n`;
    for (const r of d.ranges) {
      out +=
        `  ${formatGpaRange(r)}  blocks ${r.firstBlock}-${r.lastBlock}  ${
          byteCount(r.byteLength)
        }` +
        (verb === "removed" && r.fileByteLength !== r.byteLength
          ? ` (file data ${grouped(r.fileByteLength)})`
          : "") +
        (r.nonZeroPages !== undefined ? `  ${count(r.nonZeroPages, "non-zero page")}` : "") + "\n";
    }
  }
  return out;
}

function renderElf(
  inPath: string,
  outPath: string,
  elfClass: 32 | 64,
  littleEndian: boolean,
  r: StripReport,
  devices: DeviceRemoval[],
): string {
  const layout = r.inputLayout.sectionHeadersFirst ? "QEMU >= 7.2 layout" : "classic layout";
  let out = `strip: ${inPath} (ELF${elfClass} ${littleEndian ? "LE" : "BE"}, ${layout}, ` +
    `${count(r.inputLoadCount, "PT_LOAD")}, ${byteCount(r.inputByteLength)}) -> ${outPath}\n`;
  out +=
    `output: ${count(r.outputLoadCount, "PT_LOAD")}, ${count(r.notes.count, "note")} (${
      byteCount(r.notes.byteLength)
    }), ` +
    `${byteCount(r.outputByteLength)}${
      r.extendedNumbering ? ", extended numbering (PN_XNUM)" : ""
    }\n`;
  out += renderKept(r.kept);
  out += `removed ${byteCount(r.removedByteLength)} of memory (${
    byteCount(r.removedFileByteLength)
  } of file data)\n`;
  out += renderDevices(devices, "removed");
  const outside = r.removed.filter((x: RemovedRange) =>
    !devices.some((d) => x.gpa >= d.gpa && x.gpa < d.gpa + d.regionSize)
  );
  if (outside.length > 0) out += `removed outside any device: ${count(outside.length, "range")}\n`;
  return out;
}

/** Why a strip removed nothing. */
function nothingRemoved(alreadyStripped: boolean): string {
  return alreadyStripped
    ? "removed nothing: the input was stripped before (its provenance note lists what went)"
    : "removed nothing: the dump holds no memory of unplugged blocks (QEMU >= 6.2 leaves it " +
      "out of its dumps), so the plug map had nothing to remove";
}
