/**
 * `vmem-dump scan INPUT`: find data in unplugged virtio-mem memory of an
 * ELF dump, a raw memory image or a migration stream.
 *
 * @module
 */

import { openContainer } from "../../src/container/open.ts";
import { FormatError } from "../../src/errors.ts";
import { sniffContainer } from "../../src/container/detect.ts";
import { ELFMAG } from "../../src/elf/constants.ts";
import { readElfCore } from "../../src/elf/reader.ts";
import { isFlattenedKdump } from "../../src/kdump/flattened.ts";
import { KDUMP_SIGNATURE } from "../../src/kdump/header.ts";
import { readKdump } from "../../src/kdump/reader.ts";
import { openInput } from "../../src/io/file.ts";
import { openPositional } from "../../src/io/positional.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import {
  DEFAULT_MAX_FINDINGS,
  type PlugStateInfo,
  type ScanReport,
} from "../../src/scan/findings.ts";
import { formatScanReport } from "../../src/scan/format_report.ts";
import { scanElfCore } from "../../src/scan/scan_elf.ts";
import { scanKdump } from "../../src/scan/scan_kdump.ts";
import { scanRawImage } from "../../src/scan/scan_raw.ts";
import { scanMigration, type ScanMigrationResult } from "../../src/scan/scan_stream.ts";
import type { PlugMap } from "../../src/vmem/plug_map.ts";
import { json } from "../_format.ts";
import { type CliIo, UsageError } from "../io.ts";
import {
  checkPlugMapOptions,
  JSON_OPTION,
  loadPlugMapOption,
  parseCommandArgs,
  parseNumber,
  PLUGMAP_OPTIONS,
} from "../_args.ts";

const HELP = `usage: vmem-dump scan INPUT [--plugmap FILE | --plugmap-from STREAM] [options]

Look for data in unplugged virtio-mem memory and report every finding: the
device and block, gpa range and RAMBlock offset, how many pages and bytes are
non-zero and where the first non-zero byte is, and for each listed page its
SHA-256 and a short hexdump (streams: the stream offset of the record).

INPUT is one of:
  an ELF dump        dump-guest-memory, /proc/vmcore copy (needs a plug map)
  a kdump dump       makedumpfile -c, QEMU kdump-zlib, flattened or not (needs a plug map)
  a raw image        pmemsave of guest memory; give --base GPA (needs a plug map)
  a migration stream raw, gzip, zstd or a libvirt save image, or - for stdin;
                     the stream's own plug state is used when it has one

Findings: in dumps and raw images, every 4 KiB page of an unplugged block
that is not all zero (unplugged memory reads as zero); in streams, every page
record (PAGE, ZERO, COMPRESS, XBZRLE) of an unplugged block, zero or not.

  --plugmap FILE         plug map: JSON v1, QMP reply + runs, or a range list
  --plugmap-from STREAM  take the plug map from a migration stream of the VM
  --base GPA             INPUT is a raw image whose first byte is at GPA
  --format KIND          elf, raw or migration (default: from the first bytes)
  --max-findings N       list at most N pages (default ${DEFAULT_MAX_FINDINGS}); totals stay exact
  --json                 print the report as JSON (schema in docs/scan.md)

Exit status: 0 clean, 3 findings, 1 error, 2 usage error.
`;

/** Run `scan`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      ...PLUGMAP_OPTIONS,
      base: { type: "string" },
      format: { type: "string" },
      "max-findings": { type: "string" },
      ...JSON_OPTION,
    },
    help: HELP,
    positionals: 1,
    usage: "scan takes exactly one input (a file, or - for a stream on stdin)",
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const path = positionals[0]!;
  const plugMapCheck = {
    bothMessage: "give at most one of --plugmap FILE and --plugmap-from STREAM",
  };
  checkPlugMapOptions(values, plugMapCheck);
  const maxFindings = values["max-findings"] === undefined
    ? DEFAULT_MAX_FINDINGS
    : parseNumber(values["max-findings"], "--max-findings");
  const baseGpa = values.base === undefined ? undefined : parseNumber(values.base, "--base");
  if (baseGpa !== undefined && baseGpa % 4096 !== 0) {
    throw new UsageError("--base must be a multiple of 4096");
  }
  const kind = await inputKind(path, values.format, baseGpa);
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
  if (kind !== "migration" && path === "-") {
    throw new UsageError(
      "scanning a dump needs a file (it is read at random offsets), not standard input",
    );
  }

  const plugState: PlugStateInfo = values.plugmap !== undefined
    ? { source: "plugmap", detail: values.plugmap }
    : { source: "plugmap-from", detail: values["plugmap-from"] ?? null };
  const plugMap = await loadPlugMapOption(values, plugMapCheck);
  if (kind !== "migration" && plugMap === undefined) {
    throw new UsageError(
      `scanning ${
        kind === "elf" ? "an ELF dump" : kind === "kdump" ? "a kdump dump" : "a raw image"
      } needs --plugmap FILE or --plugmap-from STREAM`,
    );
  }
  const progress = io.stderrIsTerminal ? progressPrinter(io) : undefined;

  let report: ScanReport;
  const dumpOptions = {
    plugMap: plugMap!,
    maxFindings,
    plugState,
    path,
    ...(progress ? { onProgress: progress.update } : {}),
  };
  if (kind === "raw") {
    using image = await openPositional(path);
    report = await scanRawImage(image, { ...dumpOptions, baseGpa: baseGpa! });
  } else if (kind === "elf") {
    using core = await readElfCore(path);
    report = await scanElfCore(core, dumpOptions);
  } else if (kind === "kdump") {
    using dump = await readKdump(path);
    report = await scanKdump(dump, dumpOptions);
  } else {
    let result = await scanStream(path, plugMap, plugState, maxFindings);
    if (result.report.details === "blocks" && path !== "-" && result.plugMap !== undefined) {
      // The stream sent its plug state after its pages: read it again, now knowing the state.
      const again = await scanStream(path, result.plugMap, {
        source: result.report.plugState.source,
        detail: null,
      }, maxFindings);
      again.report.plugState = result.report.plugState;
      again.report.warnings = again.report.warnings.filter((w) =>
        !w.startsWith("The plug map given differs")
      );
      again.report.warnings.push(
        "The stream sent its plug state after its pages: it was read twice",
      );
      result = again;
    }
    if (result.plugMap === undefined) {
      await io.err(
        "error: the stream carries no virtio-mem plug state; give --plugmap FILE or --plugmap-from STREAM\n",
      );
      return 1;
    }
    report = result.report;
  }
  progress?.done();
  await io.out(values.json ? json(report) : formatScanReport(report));
  return report.summary.findings > 0 ? 3 : 0;
}

async function scanStream(
  path: string,
  plugMap: PlugMap | undefined,
  plugState: PlugStateInfo,
  maxFindings: number,
): Promise<ScanMigrationResult> {
  const input = await openInput(path);
  try {
    const container = await openContainer(input.reader);
    return await scanMigration(decodeMigrationBatches(container.reader), {
      ...(plugMap ? { plugMap, plugState } : {}),
      maxFindings,
      path,
      container: container.kind,
      byteLength: input.byteLength ?? null,
    });
  } finally {
    input.close();
  }
}

/** Decide what INPUT is: --format, else --base means raw, else its first bytes. */
async function inputKind(
  path: string,
  format: string | undefined,
  baseGpa: number | undefined,
): Promise<"elf" | "kdump" | "raw" | "migration"> {
  if (format !== undefined) {
    if (format !== "elf" && format !== "raw" && format !== "migration") {
      throw new UsageError(`--format must be elf, raw or migration, not ${format}`);
    }
    return format;
  }
  if (baseGpa !== undefined) return "raw";
  if (path === "-") return "migration";
  using input = await openPositional(path);
  const head = new Uint8Array(24);
  const n = await input.readInto(0, head);
  if (n >= 4 && ELFMAG.every((b, i) => head[i] === b)) return "elf";
  const signature = new TextDecoder("latin1").decode(head.subarray(0, Math.min(n, 8)));
  if (signature === KDUMP_SIGNATURE || isFlattenedKdump(head.subarray(0, n))) return "kdump";
  if (sniffContainer(head.subarray(0, n)) !== undefined) return "migration";
  return "raw";
}

/** Progress on a terminal: a percentage at most twice a second. */
function progressPrinter(
  io: CliIo,
): { update: (done: number, total: number) => void; done: () => void } {
  let last = 0;
  let shown = false;
  return {
    update(done, total) {
      const now = Date.now();
      if (now - last < 500 || total === 0) return;
      last = now;
      shown = true;
      void io.err(
        `\rscan: ${Math.floor((done / total) * 100)}% of ${
          (total / 2 ** 20).toFixed(0)
        } MiB unplugged memory`,
      );
    },
    done() {
      if (shown) void io.err("\r\x1b[K");
    },
  };
}
