/**
 * `vmem-dump verify IN [--forward OUT]`: check that no RAM record of a
 * migration stream touches an unplugged virtio-mem block. Exit 0 when clean,
 * 3 when violations were found, 1 on errors.
 *
 * @module
 */

import { type AtomicOutput, createAtomicOutput } from "../../src/io/file.ts";
import { type PipelineProgress, runMigrationPipeline } from "../../src/migration/pipeline.ts";
import {
  describeViolation,
  PlugStateVerifier,
  type VerifyResult,
} from "../../src/migration/verify.ts";
import { openMappedRam, openStreamInput } from "../_stream_input.ts";
import { byteCount, count, formatByteCount, hex } from "../_format.ts";
import { type PlugStateSourceName, reportJson } from "../_report.ts";
import { verifyResultJson } from "../_stream_reports.ts";
import { type CliIo, UsageError } from "../io.ts";
import {
  checkStdinOnce,
  FORCE_HELP,
  FORCE_OPTION,
  JSON_OPTION,
  outputPolicy,
  parseCommandArgs,
  parseNumber,
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

const HELP = `usage: vmem-dump verify IN [--forward OUT] [--plugmap FILE | --plugmap-from STREAM]
                        [--json] [--max-violations N] [--single-pass] [--force]

Check that no RAM record of the migration stream IN (a file or '-') lies in
an unplugged virtio-mem block, and list every offending record with its
guest-physical address, RAMBlock offset, stream offset and kind.

Plug state: the stream's early section (QEMU >= 8.0 machine types) or its
device section after the RAM (QEMU 7.2). For a late-layout file the device
section is read first, so every offending record is reported exactly; with
--single-pass (and for pipes) records are collected per MiB until the device
section arrives.

Every byte must be accounted for: the device state after the RAM is walked
section by section with the vmdesc's sizes (exit 1 when it cannot be: no
vmdesc, sizes that do not add up, a vmdesc that disagrees, an ambiguous
body). RAM loaded after device state began and a plug state stated twice are
violations. See docs/security.md.

  --forward OUT          copy the stream to OUT ('-' for stdout), only if it is clean
  --plugmap FILE         out-of-band plug map (checked in addition to the stream's)
  --plugmap-from STREAM  plug map from another stream of the same paused VM
  --json                 JSON report (to stdout, or stderr with --forward -)
  --max-violations N     list at most N violations (default 10000; all are counted)
  --single-pass          do not read a late-layout file twice
${FORCE_HELP}
OUT is never IN (same file, however named), an existing OUT is replaced only
with --force, and OUT gets IN's permissions at most (docs/evidence.md). A
file OUT appears only if the stream is clean; '-', a FIFO or a device gets the
stream as it is checked, so after a violation it has had the bytes before the
first violating record, never QEMU_VM_EOF (the report says how many).

A mapped-ram file (QEMU file: migration with mapped-ram, libvirt "sparse"
image): a bitmap bit set for a page of an unplugged block is a violation
(docs/mapped-ram.md); --forward and --single-pass do not apply.

Exit status: 0 clean, 3 violations found, 1 error, 2 usage error.
`;

/** Run `verify`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      forward: { type: "string" },
      ...PLUGMAP_OPTIONS,
      ...JSON_OPTION,
      "max-violations": { type: "string" },
      "single-pass": { type: "boolean" },
      ...FORCE_OPTION,
    },
    help: HELP,
    positionals: 1,
    usage: "verify takes exactly one input (a file or -)",
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const inPath = positionals[0]!;
  checkStdinOnce(inPath, values);
  const maxViolations = values["max-violations"] === undefined
    ? 10_000
    : parseNumber(values["max-violations"], "--max-violations");
  const forwardPath = values.forward;
  if (values.force && forwardPath === undefined) {
    throw new UsageError("--force applies to --forward OUT only");
  }
  // Pinned before the first open: the first pass and the full pass open IN apart.
  using pin = await pinInputs([inPath, ...plugMapFiles(values)]);
  const progress = inputProgress(io, "verify");
  const opened = await openStreamInput(inPath, {
    recycle: true,
    command: "verify",
    onChunk: progress.onChunk,
  });
  if (opened.kind === "mapped-ram") {
    await progress.end(); // its own summary follows; the detection read drew the line
    using mapped = await openMappedRam(opened);
    return await mapped.branch.verifyMappedRamCommand(
      mapped,
      { ...values, maxViolations, pin },
      io,
    );
  }
  const input = opened;
  let output: AtomicOutput | undefined;
  let choice: PlugStateChoice;
  try {
    // Refuse a bad output before any work: it must not be IN or an existing file.
    output = forwardPath === undefined ? undefined : await createAtomicOutput(forwardPath, {
      ...outputPolicy(values, [inPath], plugMapFiles(values)),
      beforeCommit: pin.check,
    });
    choice = await choosePlugState(values, inPath, { twoPass: !values["single-pass"] });
  } catch (e) {
    input.close();
    await output?.abort();
    throw e;
  }
  const verifier = new PlugStateVerifier({
    mode: "report",
    maxViolations,
    ...(choice.plugMap ? { plugMap: choice.plugMap } : {}),
  });
  progress.setTotal(input.byteLength);
  let counts: PipelineProgress;
  // Bytes that reached a standard output, FIFO or device before a violation stopped the copy:
  // they cannot be taken back (a file is removed instead), so the report must say so.
  let streamedPrefix: number | undefined;
  try {
    const out = output;
    counts = await runMigrationPipeline(input.reader, {
      stages: [verifier],
      // QEMU_VM_EOF goes out only if IN did not change and there was a plug state to check
      // against: a pipe or FIFO cannot take it back.
      ...(out === undefined ? {} : {
        output: (c) => out.write(c),
        beforeEof: async () => {
          await pin.check();
          requirePlugState(verifier.result.devices.length, "stream");
        },
      }),
    });
    requirePlugState(verifier.result.devices.length, "stream");
    if (out !== undefined) {
      if (verifier.failed) {
        if (out.positional === undefined) streamedPrefix = out.offset;
        await out.abort();
      } else await out.commit();
    }
  } catch (e) {
    await output?.abort();
    throw e;
  } finally {
    input.close();
    await progress.end();
  }
  await pin.check();
  const streamByteLength = counts.bytesIn;
  const result = verifier.result;
  const text = values.json
    ? reportJson("verify", {
      input: {
        path: inPath,
        format: "migration",
        container: input.container,
        byteLength: input.byteLength ?? null,
      },
      verdict: result.clean ? "clean" : "violations",
      output: forwardPath === undefined ? undefined : {
        path: forwardPath,
        format: "migration",
        container: "raw",
        byteLength: result.clean ? counts.bytesOut : streamedPrefix ?? null,
        written: result.clean,
      },
    }, { streamByteLength, ...verifyResultJson(values, result, choice.source) })
    : renderVerifyReport(inPath, streamByteLength, choice, result, forwardPath, streamedPrefix);
  if (forwardPath === "-") await io.err(text);
  else await io.out(text);
  if (!values.json) {
    await summaryLine(
      io,
      `verify: ${inPath}`,
      progress.bytes,
      progress.seconds,
      result.clean ? "clean" : count(result.violationCount, "violation"),
    );
  }
  return result.clean ? 0 : 3;
}

/** How the text report names a plug-state source. */
const SOURCE_TEXT: Record<PlugStateSourceName, string> = {
  plugmap: "plug map (--plugmap)",
  "plugmap-from": "plug map (--plugmap-from)",
  early: "early section",
  device: "device section",
  "first-pass": "device section, read first",
  structure: "structure",
};

/** The text verification report. */
function renderVerifyReport(
  inPath: string,
  streamByteLength: number,
  choice: PlugStateChoice,
  r: VerifyResult,
  forwardPath: string | undefined,
  streamedPrefix: number | undefined,
): string {
  const name = (s: string) => SOURCE_TEXT[sourceName(s, choice.source)];
  let t = r.clean
    ? `verify: ${inPath}: clean: ${count(r.pageRecords, "page record")} in ${
      byteCount(streamByteLength)
    }, none in an unplugged block\n`
    : `verify: ${inPath}: ${count(r.violatingRecords, "record")} ${
      r.violations.every((v) => v.reason === "unplugged-block")
        ? "in unplugged blocks"
        : "in violation (see below)"
    } (${count(r.violationCount, "violation")}) among ${count(r.pageRecords, "page record")}\n`;
  const layout = r.layout === "none" ? "no virtio-mem state in the stream" : `${r.layout} layout`;
  t +=
    `  ${layout}${choice.source === "two-pass" ? ", device section read first (two passes)" : ""}` +
    `${
      choice.source === "plugmap" || choice.source === "plugmap-from"
        ? `, plug map from --${choice.source}`
        : ""
    }\n`;
  for (const d of r.devices) {
    t += `  ${d.ramBlock} (gpa ${hex(d.gpa)}, ${d.pluggedBlocks}/${count(d.blocks, "block")} of ${
      formatByteCount(d.blockSize)
    } plugged; from ${[...new Set(d.sources.map(name))].join(" and ")})\n`;
  }
  for (const v of r.violations) {
    t += `  ${
      v.reason === "unplugged-block"
        ? `${v.recordKind} gpa ${hex(v.gpa ?? 0)} (${v.ramBlock}+${
          hex(v.ramOffset)
        }, block ${v.blockIndex}) `
        : `${describeViolation(v)} `
    }` +
      `at stream offset ${hex(v.streamOffset)}${
        v.records > 1 ? ` and ${count(v.records - 1, "more record")} in this MiB` : ""
      }` +
      ` [${name(v.detectedBy)}]\n`;
  }
  if (r.violationCount > r.violations.length) {
    t += `  … ${count(r.violationCount - r.violations.length, "more violation")}\n`;
  }
  if (forwardPath !== undefined) {
    t += r.clean
      ? `  forwarded to ${forwardPath}\n`
      : streamedPrefix === undefined
      ? `  not forwarded: ${forwardPath} was not written\n`
      : `  not forwarded in full: ${forwardPath} got the first ${
        byteCount(streamedPrefix)
      }, up to the first violation, without QEMU_VM_EOF\n`;
  }
  return t;
}
