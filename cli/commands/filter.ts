/**
 * `vmem-dump filter IN OUT`: drop the RAM records of unplugged virtio-mem
 * blocks from a migration stream (the record pipeline with the dropper as
 * its stage).
 *
 * @module
 */

import { createAtomicOutput } from "../../src/io/file.ts";
import { type DropStats, UnpluggedPageDropper } from "../../src/migration/filter.ts";
import { type PipelineProgress, runMigrationPipeline } from "../../src/migration/pipeline.ts";
import { openMappedRam, openStreamInput, type StreamInput } from "../_stream_input.ts";
import { byteCount, count, formatByteCount, grouped, hex } from "../_format.ts";
import { type PlugStateSourceName, printReport, reportJson } from "../_report.ts";
import { dropStatsJson } from "../_stream_reports.ts";
import type { CliIo } from "../io.ts";
import {
  checkStdinOnce,
  FORCE_HELP,
  FORCE_OPTION,
  JSON_OPTION,
  outputPolicy,
  parseCommandArgs,
  PLUGMAP_OPTIONS,
  plugMapFiles,
} from "../_args.ts";
import {
  choosePlugState,
  type PlugStateChoice,
  requirePlugState,
  sourceName,
} from "../_plug_state.ts";
import { inputProgress, summaryLine } from "../_progress.ts";
import { pinInputs } from "../_input_pin.ts";

const HELP =
  `usage: vmem-dump filter IN OUT [--plugmap FILE | --plugmap-from STREAM] [--json] [--force]

Copy the migration stream IN to OUT without the RAM records (PAGE, ZERO,
XBZRLE, COMPRESS_PAGE) that fall in unplugged virtio-mem blocks. Every other
record stays byte-identical; a kept record gets its RAMBlock name back when
the dropped one carried it. IN and OUT may be '-'. OUT appears only when the
whole stream was filtered.

Plug state: the stream's early virtio-mem section (QEMU >= 8.0 machine
types); for a late-layout file IN (QEMU 7.2), a first pass reads the device
section at its end; or out of band:
  --plugmap FILE         JSON plug map, QMP reply + runs, or plugged range list
  --plugmap-from STREAM  a migration stream of the same paused VM
  --json                 print the drop report as JSON (to stdout, or to
                         stderr when OUT is '-')
${FORCE_HELP}
OUT is never one of the inputs (same file, however named) and an existing
OUT is replaced only with --force; OUT gets IN's permissions at most
(docs/evidence.md).

A mapped-ram file IN (QEMU file: migration with mapped-ram, libvirt "sparse"
image) becomes a sparse OUT with the same layout: the bits of unplugged pages
cleared, their data left out as holes (docs/mapped-ram.md).
`;

/** Run `filter`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: { ...PLUGMAP_OPTIONS, ...JSON_OPTION, ...FORCE_OPTION },
    help: HELP,
    positionals: 2,
    usage: "filter takes an input and an output (files or -)",
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const [inPath, outPath] = positionals as [string, string];
  checkStdinOnce(inPath, values);
  // Pinned before the first open: the first pass and the full pass open IN apart, and the
  // output appears only if IN stayed the same file, unchanged (checked at the commit).
  using pin = await pinInputs([inPath, ...plugMapFiles(values)]);
  // Refuse a bad output before any work: it must not be IN or an existing file.
  const output = await createAtomicOutput(outPath, {
    ...outputPolicy(values, [inPath], plugMapFiles(values)),
    beforeCommit: pin.check,
  });
  const progress = inputProgress(io, "filter");
  let choice: PlugStateChoice;
  let input: StreamInput;
  try {
    const opened = await openStreamInput(inPath, {
      recycle: true,
      command: "filter",
      onChunk: progress.onChunk,
    });
    if (opened.kind === "mapped-ram") {
      await progress.end(); // its own summary follows; the detection read drew the line
      using mapped = await openMappedRam(opened);
      return await mapped.branch.filterMappedRamCommand(mapped, output, values, io);
    }
    input = opened;
    try {
      choice = await choosePlugState(values, inPath, { twoPass: true, unprovenIsFinal: true });
    } catch (e) {
      input.close();
      throw e;
    }
  } catch (e) {
    await output.abort();
    throw e;
  }
  const dropper = new UnpluggedPageDropper(choice.plugMap ? { plugMap: choice.plugMap } : {});
  progress.setTotal(input.byteLength);
  let counts: PipelineProgress;
  try {
    counts = await runMigrationPipeline(input.reader, {
      stages: [dropper],
      output: (c) => output.write(c),
      // QEMU_VM_EOF goes out only if IN did not change and there was a plug state to drop
      // by: a pipe or FIFO cannot take it back.
      beforeEof: async () => {
        await pin.check();
        requirePlugState(dropper.stats.devices.length, "stream");
      },
    });
    requirePlugState(dropper.stats.devices.length, "stream");
    await output.commit();
  } catch (e) {
    await output.abort();
    throw e;
  } finally {
    input.close();
    await progress.end();
  }
  const { bytesIn, bytesOut } = counts;
  const stats = dropper.stats;
  if (values.json) {
    const report = reportJson("filter", {
      input: {
        path: inPath,
        format: "migration",
        container: input.container,
        byteLength: input.byteLength ?? null,
      },
      verdict: "done",
      output: { path: outPath, format: "migration", container: "raw", byteLength: bytesOut },
    }, {
      streamByteLength: bytesIn,
      ...dropStatsJson(values, stats, choice.source, choice.layout),
    });
    await printReport(io, report, outPath === "-");
  } else {
    await io.err(renderDropReport(inPath, outPath, bytesIn, bytesOut, choice, stats));
    await summaryLine(
      io,
      `filter: ${inPath} -> ${outPath}`,
      progress.bytes,
      progress.seconds,
      `dropped ${count(stats.droppedRecords, "record")}`,
    );
  }
  return 0;
}

/** How the text report names a plug-state source. */
const SOURCE_TEXT: Record<PlugStateSourceName, string> = {
  plugmap: "the plug map (--plugmap)",
  "plugmap-from": "the plug map (--plugmap-from)",
  early: "the early virtio-mem section",
  device: "the device section",
  "first-pass": "the device section (first pass)",
  structure: "the stream's structure",
};

/** The text drop report. */
function renderDropReport(
  inPath: string,
  outPath: string,
  bytesIn: number,
  bytesOut: number,
  choice: PlugStateChoice,
  s: DropStats,
): string {
  let t = `filter: ${inPath} -> ${outPath}: ${grouped(bytesIn)} -> ${byteCount(bytesOut)}; ` +
    `dropped ${grouped(s.droppedRecords)} of ${count(s.pageRecords, "page record")} (${
      byteCount(s.droppedBytes)
    })\n`;
  if (choice.source === "two-pass") {
    t += `  plug state read from the end of ${inPath} first (${choice.layout} layout)\n`;
  }
  if (s.devices.length === 0) t += "  no virtio-mem device: nothing to drop\n";
  for (const d of s.devices) {
    t += `  ${d.ramBlock} (gpa ${hex(d.gpa)}, ${d.pluggedBlocks}/${count(d.blocks, "block")} of ${
      formatByteCount(d.blockSize)
    } plugged, plug state from ${SOURCE_TEXT[sourceName(d.source, choice.source)]}): kept ${
      grouped(d.keptRecords)
    }, dropped ${count(d.droppedRecords, "record")}\n`;
    const shown = d.droppedBlocks.slice(0, 64);
    for (const b of shown) {
      t += `    block ${b.blockIndex} (gpa ${hex(b.gpa)}): ${count(b.droppedRecords, "record")}, ${
        byteCount(b.droppedBytes)
      }\n`;
    }
    if (d.droppedBlocks.length > shown.length) {
      t += `    … ${count(d.droppedBlocks.length - shown.length, "more block")}\n`;
    }
  }
  for (const r of s.dropped.slice(0, 16)) {
    t += `  dropped ${r.recordKind} gpa ${hex(r.gpa)} (${r.ramBlock}+${
      hex(r.ramOffset)
    }) at stream offset ${hex(r.streamOffset)}\n`;
  }
  if (s.droppedRecords > 16) {
    t += `  … ${count(s.droppedRecords - 16, "more dropped record")}\n`;
  }
  if (s.renamedRecords > 0) {
    t += `  restored the RAMBlock name on ${count(s.renamedRecords, "record")} (+${
      byteCount(s.renamedBytes)
    })\n`;
  }
  return t;
}
