/**
 * `vmem-dump scan INPUT`: find data in unplugged virtio-mem memory of an
 * ELF dump, a raw memory image or a migration stream.
 *
 * @module
 */

import { FormatError } from "../../src/errors.ts";
import {
  type AtomicDirectory,
  checkOutputDirectory,
  createAtomicDirectory,
} from "../../src/io/file.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { INPUT_KIND_NAMES, openInput } from "../../src/input/open_input.ts";
import { isRegularFile, refuseWrappedDump, requireRegularFile } from "../_dump_input.ts";
import {
  asStreamInput,
  fileByteLength,
  type MappedRamFileInput,
  openStreamInput,
  type StreamInput,
  type StreamInputOptions,
  streamOpenOptions,
} from "../_stream_input.ts";
import type { Coverage } from "../../src/scan/coverage.ts";
import {
  DEFAULT_MAX_FINDINGS,
  type PlugStateInfo,
  type ScanReport,
} from "../../src/scan/findings.ts";
import { formatScanReport } from "../../src/scan/format_report.ts";
import type { ExtractionSink } from "../../src/scan/extract.ts";
import { HEXDUMP_WINDOW } from "../../src/scan/hexdump.ts";
import { conflictReason, VERDICT_EXIT_CODES } from "../../src/scan/verdict.ts";
import { scanMigration, type ScanMigrationResult } from "../../src/scan/scan_stream.ts";
import type { PlugMap } from "../../src/vmem/plug_map.ts";
import { count } from "../_format.ts";
import { inputProgress, summaryLine } from "../_progress.ts";
import { pinInputs } from "../_input_pin.ts";
import {
  deviceJson,
  type PlugStateJson,
  type PlugStateSourceName,
  type ReportHead,
  reportJson,
} from "../_report.ts";
import { plugStateJson } from "../_plug_state.ts";
import { type CliIo, CommandError, UsageError } from "../io.ts";
import {
  checkPlugMapOptions,
  checkStdinOnce,
  FORCE_OPTION,
  JSON_OPTION,
  loadPlugMapOption,
  outputPolicy,
  parseCommandArgs,
  parseNumber,
  parseSize,
  PLUGMAP_OPTIONS,
  plugMapFiles,
  type PlugMapValues,
} from "../_args.ts";
import { lazyImport } from "../_lazy.ts";

const HELP = `usage: vmem-dump scan INPUT [--plugmap FILE | --plugmap-from STREAM] [options]

Look for data in unplugged virtio-mem memory and report every finding: the
device and block, gpa range and RAMBlock offset, how many pages and bytes are
non-zero and where the first non-zero byte is, and for each listed page its
SHA-256 and a short hexdump (streams: the stream offset of the record). For
dumps, say per device how much unplugged memory was examined and how much
was absent from the input, and why.

INPUT is one of:
  an ELF dump        dump-guest-memory, /proc/vmcore copy (needs a plug map)
  a kdump dump       makedumpfile -c, QEMU kdump-zlib, flattened or not (needs a plug map)
  a raw image        pmemsave of guest memory; give --base GPA (needs a plug map)
  a migration stream raw, gzip, zstd or a libvirt save image, or - for stdin;
                     the stream's own plug state is used when it has one
  a mapped-ram file  QEMU file: migration with mapped-ram, or a libvirt sparse
                     image: pages of unplugged blocks whose bit is set, with
                     the file offsets of their data (docs/mapped-ram.md)

Findings: in dumps and raw images, every 4 KiB page of an unplugged block
that is not all zero (unplugged memory reads as zero); in streams, every page
record (PAGE, ZERO, COMPRESS, XBZRLE) of an unplugged block, zero or not.

  --plugmap FILE         plug map: JSON v1, QMP reply + runs, or a range list
                         (an empty file is an error, not "no devices")
  --plugmap-from STREAM  take the plug map from a migration stream of the VM
  --base GPA             INPUT is a raw image whose first byte is at GPA
  --format KIND          elf, raw or migration (default: from the first bytes)
  --max-findings N       list at most N pages (default ${DEFAULT_MAX_FINDINGS}); totals stay exact
  --hexdump-bytes N      bytes shown of each listed page (default ${HEXDUMP_WINDOW}, at most 4096)
  --extract DIR          write every finding's page to DIR, one file per page named
                         by gpa, with DIR/manifest.json (gpa, ramOffset, file or
                         stream offset, section, SHA-256, the input's SHA-256,
                         verdict, tool version)
  -f, --force            replace an existing DIR (only an earlier extraction)
  --json                 print the report as JSON (schema in docs/scan.md)

Verdict and exit status:
  3  findings      a page of an unplugged block holds data (dumps) or is carried
                   by a record (streams)
  0  clean         no findings, and every unplugged byte of every device was
                   examined (streams: no record for an unplugged block)
  4  inconclusive  no findings, but some unplugged memory was not in the input
                   (QEMU >= 6.2 leaves it out of its dumps; a raw image may not
                   cover it: check --base), or the plug map given disagrees with
                   the input's own plug state, or no virtio-mem devices: nothing
                   to check. The report says how much and why.
  1  error         unreadable or malformed input, bad plug map, a stream without
                   plug state, an output refused or not written
  2  usage error
`;

/** What the options of one scan ask for, shared by every kind of input. */
interface ScanSettings {
  maxFindings: number;
  hexdumpBytes: number;
}

/** Run `scan`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      ...PLUGMAP_OPTIONS,
      base: { type: "string" },
      format: { type: "string" },
      "max-findings": { type: "string" },
      "hexdump-bytes": { type: "string" },
      extract: { type: "string" },
      ...FORCE_OPTION,
      ...JSON_OPTION,
    },
    help: HELP,
    positionals: 1,
    usage: "scan takes exactly one input (a file, or - for a stream on stdin)",
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const path = positionals[0]!;
  checkStdinOnce(path, values);
  const plugMapCheck = {
    bothMessage: "give at most one of --plugmap FILE and --plugmap-from STREAM",
  };
  checkPlugMapOptions(values, plugMapCheck);
  const settings: ScanSettings = {
    maxFindings: values["max-findings"] === undefined
      ? DEFAULT_MAX_FINDINGS
      : parseNumber(values["max-findings"], "--max-findings"),
    hexdumpBytes: values["hexdump-bytes"] === undefined
      ? HEXDUMP_WINDOW
      : parseSize(values["hexdump-bytes"], "--hexdump-bytes"),
  };
  if (settings.hexdumpBytes > 4096) throw new UsageError("--hexdump-bytes takes 0 to 4096");
  if (values.force && values.extract === undefined) {
    throw new UsageError("--force applies to --extract DIR only");
  }
  const baseGpa = values.base === undefined ? undefined : parseSize(values.base, "--base");
  if (baseGpa !== undefined && baseGpa % 4096 !== 0) {
    throw new UsageError("--base must be a multiple of 4096");
  }
  // Progress: a stream's file bytes read; a dump's unplugged memory examined. The summary's
  // measure is the input file's size, as every command's (a stream's bytes read, for a pipe).
  // A stream file is opened once, here, with the scan's fast reads: the detection read counts.
  const progress = inputProgress(io, "scan");
  // Pinned before the first open: the kind is told by one open and a dump read by another, a
  // stream file may be read in a first pass, and --extract hashes a file after the scan.
  using pin = await pinInputs([path, ...plugMapFiles(values)]);
  // A pipe or FIFO is read once: only a stream can be scanned from it, and what --extract
  // records of it is hashed as it is read (opening a FIFO again would wait for a gone writer).
  const regularFile = path !== "-" && await isRegularFile(path);
  const dumpByOption = values.format === "elf" || values.format === "raw" ||
    (values.format === undefined && baseGpa !== undefined);
  if (dumpByOption && path !== "-") await requireRegularFile(path, "scanning a dump");
  const inputHash = !regularFile && values.extract !== undefined
    ? (await import("node:crypto")).createHash("sha256")
    : undefined;
  const onChunk = inputHash === undefined ? progress.onChunk : (c: Uint8Array) => {
    inputHash.update(c);
    progress.onChunk(c);
  };
  const { kind, mappedRam, opened } = await inputKind(path, values.format, baseGpa, {
    recycle: true,
    onChunk,
  });
  // Closed however the command ends (the scan closes it too when it read it: closing is idempotent).
  using _opened = { [Symbol.dispose]: () => opened?.close() };
  if (kind === "raw" && baseGpa === undefined) {
    // A bad input, not a bad command line: exit 1, with the offset.
    throw new FormatError(
      `Cannot scan ${path}: not an ELF dump, a kdump dump or a migration stream ` +
        `(no known magic); a raw memory image needs --base GPA`,
      { format: "raw", code: "bad-magic", offset: 0 },
    );
  }
  if (kind !== "raw" && baseGpa !== undefined) {
    throw new UsageError("--base applies to raw images only");
  }
  const mr = mappedRam === undefined
    ? undefined
    : await lazyImport<typeof import("../_mapped_ram.ts")>("../_mapped_ram.ts", import.meta.url);
  using mapped = mappedRam === undefined ? undefined : await mr!.openMappedRamInput(mappedRam);
  if (kind !== "migration" && path === "-") {
    throw new UsageError(
      "scanning a dump needs a file (it is read at random offsets), not standard input",
    );
  }
  if (kind !== "migration") await requireRegularFile(path, "scanning a dump");

  const plugState: PlugStateInfo = values.plugmap !== undefined
    ? { source: "plugmap", detail: values.plugmap }
    : { source: "plugmap-from", detail: values["plugmap-from"] ?? null };
  // Refuse a bad --extract DIR before any work.
  // The extraction code (and node:crypto for the input's hash) loads only with --extract.
  const extract = values.extract === undefined
    ? undefined
    : await lazyImport<typeof import("../../src/scan/extract.ts")>(
      "../../src/scan/extract.ts",
      import.meta.url,
    );
  const extraction = values.extract === undefined ? undefined : {
    path: values.extract,
    policy: {
      ...outputPolicy(values, [path], plugMapFiles(values)),
      replaceableIfContains: extract!.EXTRACT_MANIFEST,
    },
  };
  if (extraction !== undefined) await checkOutputDirectory(extraction.path, extraction.policy);
  const plugMap = await loadPlugMapOption(values, plugMapCheck);
  if (kind !== "migration" && plugMap === undefined) {
    throw new UsageError(
      `scanning ${
        kind === "elf" ? "an ELF dump" : kind === "kdump" ? "a kdump dump" : "a raw image"
      } needs --plugmap FILE or --plugmap-from STREAM`,
    );
  }
  let measured = 0;

  // The extraction directory and its sink (a stream read twice starts it again).
  let out: { dir: AtomicDirectory; sink: ExtractionSink } | undefined;
  const startExtraction = async () => {
    if (extraction === undefined) return undefined;
    if (out !== undefined) await abortExtraction(out);
    const dir = await createAtomicDirectory(extraction.path, extraction.policy);
    try {
      out = { dir, sink: await extract!.ExtractionSink.create(dir) };
    } catch (e) {
      await dir.abort();
      throw e;
    }
    return out.sink;
  };

  try {
    let report: ScanReport;
    let firstPass = false;
    if (mapped !== undefined) {
      const scanned = await mr!.scanMappedRamInput(mapped, plugMap, plugState, {
        ...settings,
        pageSink: await startExtraction(),
      });
      if (scanned === undefined) {
        throw new CommandError(
          "no-plug-state",
          "the file carries no virtio-mem plug state; give --plugmap FILE or --plugmap-from STREAM",
        );
      }
      report = scanned;
    } else if (kind === "migration") {
      progress.setTotal(await fileByteLength(path) ?? undefined);
      const scanned = await scanStreamInput(path, plugMap, plugState, settings, {
        opened,
        rereadable: regularFile,
        startExtraction,
        onChunk,
      });
      measured = progress.bytes;
      if (scanned === undefined) {
        throw new CommandError(
          "no-plug-state",
          "the stream carries no virtio-mem plug state; give --plugmap FILE or --plugmap-from STREAM",
        );
      }
      report = scanned.report;
      firstPass = scanned.firstPass;
      if (out !== undefined && scanned.extractionInvalid !== undefined) {
        // Print what was found, then fail: the evidence asked for cannot be written.
        await progress.end();
        await io.out(
          values.json
            ? reportJson("scan", ...scanReportParts(report, values, false))
            : formatScanReport(report),
        );
        throw new CommandError(
          "extraction-incomplete",
          `Cannot extract the findings to ${
            extraction!.path
          }: ${scanned.extractionInvalid}; nothing was written`,
        );
      }
    } else {
      const sink = await startExtraction();
      const dumpOptions = {
        plugMap: plugMap!,
        maxFindings: settings.maxFindings,
        hexdumpBytes: settings.hexdumpBytes,
        plugState,
        path,
        ...(sink ? { pageSink: sink } : {}),
        onProgress: (done: number, total: number) => progress.update(done, total),
      };
      const { scanDumpFile } = await lazyImport<typeof import("./_scan_dump.ts")>(
        "./_scan_dump.ts",
        import.meta.url,
      );
      report = await scanDumpFile(kind, path, { ...dumpOptions, baseGpa });
    }
    await progress.end();
    if (kind !== "migration" || mapped !== undefined) measured = await fileByteLength(path) ?? 0;
    const [head, body] = scanReportParts(report, values, firstPass);
    if (out !== undefined) {
      const sha256 = inputHash?.digest("hex") ?? await extract!.sha256OfFile(path);
      await out.sink.finish({
        input: { ...head.input, sha256 },
        plugState: body.plugState,
        report,
      });
      await pin.check();
      await out.dir.commit();
      await io.err(
        `scan: extracted ${count(out.sink.pages, "finding")} to ${extraction!.path} (manifest ${
          extraction!.path
        }/${extract!.EXTRACT_MANIFEST})\n`,
      );
      out = undefined;
    }
    await pin.check();
    await io.out(values.json ? reportJson("scan", head, body) : formatScanReport(report));
    if (!values.json) {
      await summaryLine(
        io,
        `scan: ${path}`,
        measured,
        progress.seconds,
        `${report.verdict}: ${report.verdictReason}`,
      );
    }
    return VERDICT_EXIT_CODES[report.verdict];
  } finally {
    if (out !== undefined) await abortExtraction(out);
  }
}

/** The library's plug-state source names, in the glossary's (docs/glossary.md). */
const SCAN_SOURCES: Record<string, PlugStateSourceName[]> = {
  plugmap: ["plugmap"],
  "plugmap-from": ["plugmap-from"],
  "stream-early": ["early"],
  "stream-late": ["device"],
  "stream-early+late": ["early", "device"],
  none: [],
};

/**
 * The envelope and body of `scan --json` (schemas/scan-report.schema.json):
 * the library's report in the glossary's names.
 *
 * @param r The library's report.
 * @param values The plug-map options.
 * @param firstPass Whether the stream's own (late) plug state was read in a first pass.
 * @returns Head and body for `reportJson`.
 */
function scanReportParts(
  r: ScanReport,
  values: PlugMapValues,
  firstPass: boolean,
): [ReportHead, Record<string, unknown> & { plugState: PlugStateJson }] {
  const stream = r.input.kind === "migration" || r.input.kind === "mapped-ram";
  let sources = SCAN_SOURCES[r.plugState.source] ?? [];
  if (firstPass) sources = sources.map((s) => (s === "device" ? "first-pass" : s));
  const layout = !stream
    ? null
    : sources.includes("early")
    ? "early"
    : sources.includes("device") || sources.includes("first-pass")
    ? "late"
    : values.plugmap === undefined && values["plugmap-from"] === undefined
    ? "none"
    : null;
  const head: ReportHead = {
    input: {
      path: r.input.path ?? "-",
      format: r.input.kind,
      container: r.input.container === "kdump-flattened" ? "flattened" : r.input.container ?? "raw",
      byteLength: r.input.byteLength,
      baseGpa: r.input.baseGpa,
    },
    verdict: r.verdict,
  };
  return [head, {
    verdictReason: r.verdictReason,
    plugState: plugStateJson(values, layout, sources),
    pageSize: r.pageSize,
    maxFindings: r.maxFindings,
    hexdumpBytes: r.hexdumpBytes,
    details: r.details,
    coverage: r.coverage === null ? null : coverageJson(r.coverage),
    summary: {
      findings: r.summary.findings,
      nonZeroPages: r.summary.nonZeroPages,
      nonZeroBytes: r.summary.nonZeroBytes,
      unknownContent: r.summary.unknownContent,
      blocksWithFindings: r.summary.blocksWithFindings,
      devicesWithFindings: r.summary.devicesWithFindings,
      listedPages: r.summary.listedPages,
      truncated: r.summary.truncated,
      unpluggedByteLength: r.summary.unpluggedBytes,
      pageRecords: r.summary.pageRecords,
    },
    devices: r.devices.map((d) => ({
      ...deviceJson({
        path: d.path,
        ramblock: d.ramBlock,
        memaddr: d.gpa,
        regionSize: d.regionSize,
        blockSize: d.blockSize,
      }),
      pluggedBlocks: d.pluggedBlocks,
      unpluggedBlocks: d.unpluggedBlocks,
      findings: d.findings,
      nonZeroPages: d.nonZeroPages,
      nonZeroBytes: d.nonZeroBytes,
      coverage: d.coverage === null ? null : coverageJson(d.coverage),
      blocks: d.blocks,
    })),
    warnings: r.warnings,
  }];
}

/** Coverage with byte lengths named as the glossary names them. */
function coverageJson(c: Coverage): Record<string, unknown> {
  return {
    unpluggedByteLength: c.unpluggedBytes,
    examinedByteLength: c.examinedBytes,
    absentByteLength: c.absentBytes,
    absent: c.absent,
  };
}

async function abortExtraction(out: { dir: AtomicDirectory; sink: ExtractionSink }) {
  await out.sink.close();
  await out.dir.abort();
}

/** What {@linkcode scanStreamInput} returns. */
interface StreamScan {
  report: ScanReport;
  /** Whether the stream's own (late) plug state was read in a first pass and used. */
  firstPass: boolean;
  /** Why the findings handed to the extraction do not match the report, or `undefined`. */
  extractionInvalid: string | undefined;
}

/**
 * Scan a stream in one pass. For a file without a plug map given, the
 * stream's own plug state is read first when it comes after the pages (late
 * layout: the device section, found as `verify` and `filter` find it), so
 * that every record is judged as it comes. If the stream's state then
 * differs (or a pipe's pages could only be counted per block), a file is
 * read again with the now-known state. Returns `undefined` when the stream
 * carries no plug state and none was given.
 */
async function scanStreamInput(
  path: string,
  plugMap: PlugMap | undefined,
  plugState: PlugStateInfo,
  settings: ScanSettings,
  hooks: {
    /** The stream, opened already (a file: read by the first scan; a pipe is opened there). */
    opened: StreamInput | undefined;
    /** Whether the input is a regular file (it can be read again). */
    rereadable: boolean;
    startExtraction: () => Promise<ExtractionSink | undefined>;
    onChunk?: (chunk: Uint8Array) => void;
  },
): Promise<StreamScan | undefined> {
  const rereadable = hooks.rereadable;
  let given = plugMap;
  if (rereadable && given === undefined) {
    try {
      const { loadPlugState } = await lazyImport<
        typeof import("../../src/input/load_plug_state.ts")
      >("../../src/input/load_plug_state.ts", import.meta.url);
      const first = await loadPlugState({ stream: path });
      if (first.layout === "late" && first.plugMap.devices.length > 0) given = first.plugMap;
    } catch (e) {
      // The first pass is a helper: when it cannot give one plug state (stated twice, device
      // state it cannot prove), the full pass judges the stream, as verify's does.
      if (!(e instanceof FormatError)) throw e;
    }
  }
  let result = await scanStream(path, given, plugState, settings, {
    ...(hooks.onChunk ? { onChunk: hooks.onChunk } : {}),
    ...(hooks.opened ? { input: hooks.opened } : {}),
    rereadable,
    sink: await hooks.startExtraction(),
  });
  const redo = result.rescan || result.report.details === "blocks" ||
    result.provisionalDiscarded;
  if (redo && rereadable && result.plugMap !== undefined) {
    // The stream's own final plug state came after its pages (a late layout, or an early
    // section restated) and was not the one used: read it again, judging by that state.
    const again = await scanStream(
      path,
      result.plugMap,
      {
        source: result.report.plugState.source,
        detail: null,
      },
      settings,
      { rereadable, final: true, sink: await hooks.startExtraction() },
    );
    again.report.plugState = result.report.plugState;
    again.report.warnings = again.report.warnings.filter((w) =>
      !w.startsWith("The plug map given differs")
    );
    again.report.warnings.push(
      ...result.report.warnings.filter((w) => w.startsWith("The plug map given differs")),
      "The stream's own plug state came after its pages and differs from the one first used: " +
        "it was read twice",
    );
    // The second pass judged by the stream's state alone: the disagreement still stands.
    const reason = conflictReason(result.plugStateConflicts, "stream");
    if (reason !== undefined && again.report.verdict === "clean") {
      again.report.verdict = "inconclusive";
      again.report.verdictReason = reason;
    }
    result = { ...again, plugStateConflicts: result.plugStateConflicts };
  }
  if (result.plugMap === undefined) return undefined;
  return {
    report: result.report,
    firstPass: plugMap === undefined && given !== undefined,
    extractionInvalid: result.report.details === "blocks"
      ? "the stream sent its plug state after its pages, and standard input cannot be read again " +
        "(give --plugmap-from a file of the stream, or scan the file)"
      : result.provisionalDiscarded
      ? "the stream's own plug state differs from the plug map given, and standard input cannot " +
        "be read again"
      : undefined,
  };
}

async function scanStream(
  path: string,
  plugMap: PlugMap | undefined,
  plugState: PlugStateInfo,
  settings: ScanSettings,
  hooks: {
    sink: ExtractionSink | undefined;
    rereadable: boolean;
    /** `plugMap` is the stream's own final plug state: judge every record by it. */
    final?: boolean;
    onChunk?: (chunk: Uint8Array) => void;
    /** The stream opened already (with the options below), else it is opened here. */
    input?: StreamInput;
  },
): Promise<ScanMigrationResult> {
  // The fast path (blocking reads into a ring of reused buffers): the scanner handles each batch
  // before it pulls the next and copies what it keeps (listed pages, extracted pages).
  const input = hooks.input ?? await openStreamInput(path, {
    recycle: true,
    ...(hooks.onChunk ? { onChunk: hooks.onChunk } : {}),
    command: "scan",
  });
  if (input.kind !== "migration") {
    throw new TypeError(`Internal error: ${path} became a mapped-ram file between two reads`);
  }
  try {
    return await scanMigration(decodeMigrationBatches(input.reader), {
      ...(plugMap ? { plugMap, plugState } : {}),
      rereadable: hooks.rereadable,
      ...(hooks.final ? { plugMapIsFinal: true } : {}),
      maxFindings: settings.maxFindings,
      hexdumpBytes: settings.hexdumpBytes,
      ...(hooks.sink ? { pageSink: hooks.sink } : {}),
      path,
      container: input.container,
      byteLength: input.byteLength ?? null,
    });
  } finally {
    input.close();
  }
}

/** What INPUT is, and the mapped-ram file or the opened stream file when it is one. */
interface InputKind {
  kind: "elf" | "kdump" | "raw" | "migration";
  mappedRam?: MappedRamFileInput;
  /** A stream file, opened with the scan's options (the caller closes it). */
  opened?: StreamInput;
}

/**
 * Decide what INPUT is: --format, else what the library's opener sees (its
 * container and first bytes; a stream in a regular file may be a mapped-ram
 * file). No known magic means a raw image; --base must name one (a stream,
 * a dump or a compressed file is refused: --format raw forces it).
 */
async function inputKind(
  path: string,
  format: string | undefined,
  baseGpa: number | undefined,
  streamOptions: StreamInputOptions,
): Promise<InputKind> {
  if (format !== undefined) {
    if (format !== "elf" && format !== "raw" && format !== "migration") {
      throw new UsageError(`--format must be elf, raw or migration, not ${format}`);
    }
    if (format !== "migration" || path === "-") return { kind: format };
  } else if (path === "-") return { kind: "migration" };
  const input = await openInput(path, { allowUnknown: true, ...streamOpenOptions(streamOptions) });
  if (input.kind === "migration" && (format !== undefined || baseGpa === undefined)) {
    // A stream: asStreamInput gives it back as one (only other kinds are closed or refused).
    return { kind: "migration", opened: asStreamInput(input, { command: "scan" }) as StreamInput };
  }
  using _input = input;
  if (format === undefined && baseGpa !== undefined) {
    // A raw image is read at offsets: a stream, a dump or a compressed file is not one.
    if (input.kind !== "unknown" || input.container !== "raw") {
      throw new UsageError(
        `--base is for raw memory images; ${path} is ${INPUT_KIND_NAMES[input.kind]}${
          input.container === "raw" ? "" : ` in a ${input.container} container`
        } (--format raw reads it as a raw image all the same)`,
      );
    }
    return { kind: "raw" };
  }
  if (input.kind === "mapped-ram") {
    return {
      kind: "migration",
      mappedRam: {
        kind: "mapped-ram",
        path,
        container: input.container === "libvirt-save" ? "libvirt-save" : "raw",
        payloadOffset: input.payloadOffset,
      },
    };
  }
  if (format === "migration" || input.kind === "migration") return { kind: "migration" };
  if (input.kind !== "unknown") refuseWrappedDump(input, "scan");
  if (input.kind === "elf") return { kind: "elf" };
  if (input.kind === "kdump" || input.kind === "kdump-flattened") return { kind: "kdump" };
  return { kind: "raw" };
}
