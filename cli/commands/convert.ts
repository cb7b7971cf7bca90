/**
 * `vmem-dump convert IN OUT`: re-pack a migration stream between containers
 * (raw, gzip, zstd, libvirt save image). The migration stream itself is
 * copied byte for byte; only the container changes.
 *
 * @module
 */

import type { ContainerKind, InnerCompression } from "../../src/container/open.ts";
import { createContainerWriter } from "../../src/container/write.ts";
import {
  buildLibvirtSaveHeader,
  LIBVIRT_SAVE_HEADER_SIZE,
  libvirtCompressionName,
  type LibvirtSaveHeader,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_ZSTD,
  QEMU_SAVE_VERSION,
  readLibvirtSaveHeader,
} from "../../src/container/libvirt_save.ts";
import { DEFAULT_ZSTD_WINDOW_LOG_MAX } from "../../src/container/zstd_frames.ts";
import {
  type AtomicOutputOptions,
  checkOutput,
  createAtomicOutput,
  openFileReader,
} from "../../src/io/file.ts";
import { byteCount, count, grouped } from "../_format.ts";
import { inputProgress, summaryLine, terminalProgress } from "../_progress.ts";
import { gpaRangesJson, printReport, reportJson } from "../_report.ts";
import { plugStateJson } from "../_plug_state.ts";
import { fileByteLength } from "../_stream_input.ts";
import { type DumpInputKind, dumpInputKind, requireRegularFile } from "../_dump_input.ts";
import { type CliIo, UsageError } from "../io.ts";
import { pinInputs } from "../_input_pin.ts";
import {
  checkPlugMapOptions,
  FORCE_OPTION,
  JSON_OPTION,
  loadPlugMapOption,
  outputPolicy,
  parseCommandArgs,
  parseSize,
  PLUGMAP_OPTIONS,
  plugMapFiles,
} from "../_args.ts";
import { FormatError, UnsupportedFeatureError } from "../../src/errors.ts";
import { openInput } from "../../src/input/open_input.ts";
import type { KdumpWriteCodec } from "../../src/kdump/compress.ts";
import { lazyImport } from "../_lazy.ts";

const HELP = `usage: vmem-dump convert IN OUT [--to raw|gzip|zstd|libvirt] [options]
       vmem-dump convert DUMP OUT --to kdump|elf [dump options]

Re-pack the migration stream in IN into another container. IN may be a raw
stream, a .gz or .zst file, or a libvirt save image ('virsh save'); the
container is recognised from its first bytes. The migration stream is copied
unchanged. IN and OUT may be '-'; OUT appears only when the copy succeeded.

  --to KIND            raw, gzip, zstd or libvirt (default: from OUT's name:
                       .gz gzip, .zst zstd, .save libvirt, anything else raw)
  --compression C      payload compression inside a libvirt image: raw, gzip
                       or zstd (default: what the libvirt header says)
  --level N            gzip level 1-9 (default 6) or zstd level 1-19
                       (default 3)
  --long N             zstd: long-distance matching with a 2^N byte window
                       (like zstd --long=N; readers need a window that large)
  --header-from IMAGE  libvirt: take the header (XML, cookie, flags) from this
                       save image instead of IN's own header
  --xml FILE           libvirt: build a new header around this domain XML
  --cookie FILE        libvirt: with --xml, also store this cookie XML
  --zstd-window-log-max N
                       largest zstd window accepted when reading, as a power
                       of two (default ${DEFAULT_ZSTD_WINDOW_LOG_MAX}: 1 GiB, enough for --long=30)
  --json               print a JSON report (stdout; stderr when OUT is '-')
  -f, --force          replace an existing OUT (never IN)

OUT is never IN (same file, however named), an existing OUT is replaced only
with --force, and OUT gets IN's permissions at most (docs/evidence.md).

Dumps (--to kdump or --to elf; IN must be a file):
  --to kdump           an ELF dump (or a raw image with --base) becomes a
                       kdump-compressed file, plain unless --flattened
  --to elf             a kdump dump or a QEMU-layout ELF becomes an ELF in
                       the classic layout (program headers after the header)
  --codec C            kdump page codec: zlib (default: crash, makedumpfile
                       1.7.2 and drgn all read it), zstd (crash and drgn;
                       not makedumpfile 1.7.2) or none
  --level N            zlib 1-9 (default 1), zstd 1-19 (default 2)
  --exclude-zero       leave all-zero pages out of the 2nd bitmap (smaller;
                       crash then needs --zero_excluded to read them); by
                       default they share one stored zero page
  --plugmap FILE, --plugmap-from STREAM
                       leave the unplugged blocks of this plug map out
  --base GPA           IN is a raw image of guest memory starting at GPA
  --flattened          write the flattened kdump container (OUT may be -)
  --workers N          compression workers (default 0: this thread compresses,
                       which measured fastest on a shared 2-core machine)
  Every dump output carries the provenance note (docs/dumps.md).

A libvirt image converted to raw and back with --header-from the original
is identical byte for byte when its payload is raw. gzip and zstd payloads
decompress to the identical stream (the compressed bytes may differ).
`;

const KINDS: Record<string, ContainerKind> = {
  raw: "raw",
  gzip: "gzip",
  zstd: "zstd",
  libvirt: "libvirt-save",
  "libvirt-save": "libvirt-save",
};

const COMPRESSIONS: Record<string, InnerCompression> = { raw: "raw", gzip: "gzip", zstd: "zstd" };

const LIBVIRT_CODES: Record<InnerCompression, number> = {
  raw: QEMU_SAVE_FORMAT_RAW,
  gzip: QEMU_SAVE_FORMAT_GZIP,
  zstd: QEMU_SAVE_FORMAT_ZSTD,
};

/** The container an output name suggests. */
function kindFromName(path: string): ContainerKind {
  if (/\.gz$/i.test(path)) return "gzip";
  if (/\.zstd?$/i.test(path)) return "zstd";
  if (/\.save$/i.test(path)) return "libvirt-save";
  return "raw";
}

function intOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) throw new UsageError(`--${name} takes an integer, not '${value}'`);
  return Number(value);
}

/** Read only the libvirt header of an image file. */
async function headerOf(path: string): Promise<LibvirtSaveHeader> {
  const input = await openFileReader(path, { format: "container" });
  try {
    return await readLibvirtSaveHeader(input.reader);
  } finally {
    input.close();
  }
}

/** The libvirt header an output should carry, or a usage error. */
async function chooseLibvirtHeader(
  values: {
    "header-from"?: string | undefined;
    xml?: string | undefined;
    cookie?: string | undefined;
  },
  inputHeader: LibvirtSaveHeader | undefined,
  compression: InnerCompression | undefined,
): Promise<LibvirtSaveHeader> {
  const given = [values["header-from"], values.xml].filter((v) => v !== undefined).length;
  if (given > 1) throw new UsageError("give either --header-from or --xml, not both");
  if (values.cookie !== undefined && values.xml === undefined) {
    throw new UsageError("--cookie needs --xml");
  }
  if (values["header-from"] !== undefined) return await headerOf(values["header-from"]);
  if (values.xml !== undefined) {
    const xml = await Deno.readTextFile(values.xml);
    const cookie = values.cookie === undefined ? undefined : await Deno.readTextFile(values.cookie);
    return buildLibvirtSaveHeader({
      xml,
      ...(cookie === undefined ? {} : { cookie }),
      compression: LIBVIRT_CODES[compression ?? "raw"],
    });
  }
  if (inputHeader !== undefined) return inputHeader;
  throw new UsageError(
    "a libvirt save image needs a header: IN is not one, so give --header-from IMAGE or --xml FILE",
  );
}

/** Run `convert`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      to: { type: "string" },
      compression: { type: "string" },
      level: { type: "string" },
      long: { type: "string" },
      "header-from": { type: "string" },
      xml: { type: "string" },
      cookie: { type: "string" },
      "zstd-window-log-max": { type: "string" },
      codec: { type: "string" },
      "exclude-zero": { type: "boolean" },
      ...PLUGMAP_OPTIONS,
      base: { type: "string" },
      flattened: { type: "boolean" },
      workers: { type: "string" },
      ...JSON_OPTION,
      ...FORCE_OPTION,
    },
    help: HELP,
    positionals: 2,
    usage: "convert takes an input and an output (files or -)",
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  const [inPath, outPath] = positionals as [string, string];
  if (values.to === "kdump" || values.to === "elf") {
    // Pinned before the first open (the kind is told by one open, the dump read and hashed by
    // others): the output appears only if IN stayed the same file, unchanged.
    using pin = await pinInputs([inPath, ...plugMapFiles(values)]);
    const policy = {
      ...outputPolicy(values, [inPath], plugMapFiles(values)),
      beforeCommit: pin.check,
    };
    return await convertDumpCommand(inPath, outPath, values.to, values, policy, io);
  }
  const dumpOnly = [
    "codec",
    "exclude-zero",
    "plugmap",
    "plugmap-from",
    "base",
    "flattened",
    "workers",
  ]
    .filter((k) => values[k as keyof typeof values] !== undefined);
  if (dumpOnly.length > 0) {
    throw new UsageError(`--${dumpOnly[0]} applies to --to kdump or --to elf`);
  }
  const policy = outputPolicy(values, [inPath], [
    values["header-from"],
    values.xml,
    values.cookie,
  ]);
  const toKind = values.to === undefined ? kindFromName(outPath) : KINDS[values.to];
  if (toKind === undefined) {
    throw new UsageError(`--to must be raw, gzip, zstd or libvirt, not '${values.to}'`);
  }
  const compression = values.compression === undefined
    ? undefined
    : COMPRESSIONS[values.compression];
  if (values.compression !== undefined && compression === undefined) {
    throw new UsageError(`--compression must be raw, gzip or zstd, not '${values.compression}'`);
  }
  if (compression !== undefined && toKind !== "libvirt-save") {
    throw new UsageError("--compression applies to libvirt output only; use --to for the others");
  }
  if (
    toKind !== "libvirt-save" &&
    (values["header-from"] ?? values.xml ?? values.cookie) !== undefined
  ) {
    throw new UsageError("--header-from, --xml and --cookie apply to libvirt output only");
  }
  const level = intOption(values.level, "level");
  const long = intOption(values.long, "long");
  if (long !== undefined && (long < 10 || long > 31)) {
    throw new UsageError("--long must be 10 to 31");
  }
  const windowLogMax = intOption(values["zstd-window-log-max"], "zstd-window-log-max");
  if (windowLogMax !== undefined && (windowLogMax < 10 || windowLogMax > 31)) {
    throw new UsageError("--zstd-window-log-max must be 10 to 31");
  }

  await checkOutput(outPath, policy);
  const progress = inputProgress(io, "convert");
  const input = await openInput(inPath, {
    ...(windowLogMax === undefined ? {} : { zstdWindowLogMax: windowLogMax }),
    onChunk: progress.onChunk,
  });
  progress.setTotal(input.byteLength);
  try {
    if (input.kind === "mapped-ram") {
      throw new UnsupportedFeatureError(
        "Cannot convert a mapped-ram file: its pages sit at absolute file offsets, which a " +
          "re-packed copy would not keep (docs/mapped-ram.md)",
        "container",
        input.payloadOffset,
      );
    }
    if (input.kind !== "migration") {
      throw new FormatError(
        `Cannot re-pack ${inPath}: it is a ${input.kind} dump, not a migration stream ` +
          "(convert --to kdump or --to elf converts dumps)",
        { format: "container", code: "bad-magic", offset: input.payloadOffset },
      );
    }
    const libvirt = toKind === "libvirt-save"
      ? await chooseLibvirtHeader(values, input.libvirt, compression)
      : undefined;
    const inner: InnerCompression = toKind === "libvirt-save"
      ? compression ?? innerOf(libvirt!)
      : toKind as InnerCompression;
    if (level !== undefined) {
      if (inner === "raw") throw new UsageError("--level applies to gzip and zstd output only");
      const [lo, hi] = inner === "gzip" ? [1, 9] : [1, 19];
      if (level < lo || level > hi) {
        throw new UsageError(`--level for ${inner} must be ${lo} to ${hi}`);
      }
    }
    if (long !== undefined && inner !== "zstd") {
      throw new UsageError("--long applies to zstd output only");
    }

    const output = await createAtomicOutput(outPath, policy);
    let streamBytes = 0;
    let containerBytes = 0;
    try {
      const writer = createContainerWriter(async (chunk) => {
        containerBytes += chunk.byteLength;
        await output.write(chunk);
      }, {
        kind: toKind,
        ...(toKind === "libvirt-save" ? { compression: inner, libvirt: libvirt! } : {}),
        ...(level === undefined ? {} : { level }),
        ...(long === undefined ? {} : { zstdWindowLog: long }),
      });
      const reader = input.reader;
      for (let chunk; (chunk = await reader.readChunk(1 << 20)) !== undefined;) {
        streamBytes += chunk.byteLength;
        await writer.write(chunk);
      }
      await writer.close();
      await output.commit();
    } catch (e) {
      await output.abort();
      throw e;
    }

    if (values.json) {
      const text = reportJson("convert", {
        input: {
          path: inPath,
          format: "migration",
          container: input.container,
          byteLength: input.byteLength ?? null,
          compression: input.innerCompression,
          ...(input.libvirt ? { libvirt: libvirtSummary(input.libvirt) } : {}),
        },
        verdict: "done",
        output: {
          path: outPath,
          format: "migration",
          container: toKind,
          byteLength: containerBytes,
          compression: inner,
          ...(libvirt ? { libvirt: libvirtSummary(libvirt, LIBVIRT_CODES[inner]) } : {}),
        },
      }, { streamByteLength: streamBytes });
      await printReport(io, text, outPath === "-");
    } else {
      await progress.end();
      await summaryLine(
        io,
        `convert: ${inPath} (${describe(input.container, input.innerCompression)}) -> ${outPath} (${
          describe(toKind, inner)
        })`,
        progress.bytes,
        progress.seconds,
        `${byteCount(streamBytes)} of stream, ${byteCount(containerBytes)} written`,
      );
    }
    return 0;
  } finally {
    input.close();
    await progress.end();
  }
}

function innerOf(header: LibvirtSaveHeader): InnerCompression {
  if (header.version < QEMU_SAVE_VERSION) return "raw";
  if (header.compression === QEMU_SAVE_FORMAT_GZIP) return "gzip";
  if (header.compression === QEMU_SAVE_FORMAT_ZSTD) return "zstd";
  if (header.compression === QEMU_SAVE_FORMAT_RAW) return "raw";
  throw new UsageError(
    `the libvirt header asks for ${libvirtCompressionName(header.compression)} compression, ` +
      "which convert cannot write: give --compression raw, gzip or zstd",
  );
}

function describe(kind: ContainerKind, inner: InnerCompression): string {
  return kind === "libvirt-save" ? `libvirt save image (${inner})` : kind;
}

function libvirtSummary(header: LibvirtSaveHeader, compression = header.compression) {
  return {
    version: header.version,
    compression: libvirtCompressionName(compression),
    wasRunning: header.wasRunning,
    littleEndian: header.littleEndian,
    dataLength: header.dataLength,
    headerByteLength: LIBVIRT_SAVE_HEADER_SIZE + header.dataLength,
    xmlLength: header.xml.length,
    hasCookie: header.cookie !== undefined,
  };
}

/**
 * Refuse, as the usage errors they are and before any work, the conversions of a kdump input that
 * make no sense: to kdump (strip removes memory from a kdump dump), and to ELF with a plug map
 * (strip it first). The library's `convertDump` throws a `TypeError` for both (a caller's mistake).
 */
function refuseKdumpMisuse(
  kind: DumpInputKind,
  inPath: string,
  to: "kdump" | "elf",
  values: { plugmap?: string | undefined; "plugmap-from"?: string | undefined },
): void {
  if (kind !== "kdump" && kind !== "kdump-flattened") return;
  if (to === "kdump") {
    throw new UsageError(
      `${inPath} is a kdump dump already: convert --to kdump does not apply (strip removes memory from it)`,
    );
  }
  if (values.plugmap !== undefined || values["plugmap-from"] !== undefined) {
    throw new UsageError(
      "convert --to elf of a kdump dump takes no plug map (strip it first, then convert)",
    );
  }
}
/** `convert --to kdump|elf`: dump conversion. */
async function convertDumpCommand(
  inPath: string,
  outPath: string,
  to: "kdump" | "elf",
  values: {
    codec?: string | undefined;
    level?: string | undefined;
    "exclude-zero"?: boolean | undefined;
    plugmap?: string | undefined;
    "plugmap-from"?: string | undefined;
    base?: string | undefined;
    flattened?: boolean | undefined;
    workers?: string | undefined;
    json?: boolean | undefined;
    compression?: string | undefined;
    long?: string | undefined;
  },
  policy: AtomicOutputOptions,
  io: CliIo,
): Promise<number> {
  if (inPath === "-") throw new UsageError("convert --to kdump|elf needs a file as input, not -");
  await requireRegularFile(inPath, `convert --to ${to}`);
  if (values.compression !== undefined || values.long !== undefined) {
    throw new UsageError("--compression and --long apply to stream containers, not dumps");
  }
  const kdumpOnly = ["codec", "level", "exclude-zero", "flattened", "workers"]
    .filter((k) => values[k as keyof typeof values] !== undefined);
  if (to === "elf" && kdumpOnly.length > 0) {
    throw new UsageError(`--${kdumpOnly[0]} applies to --to kdump`);
  }
  // The dump writers (and node:zlib, node:crypto) load only for dump conversions.
  const { KDUMP_LEVELS } = await lazyImport<typeof import("../../src/kdump/compress.ts")>(
    "../../src/kdump/compress.ts",
    import.meta.url,
  );
  const { convertDump } = await lazyImport<typeof import("../../src/dumps/rewrite.ts")>(
    "../../src/dumps/rewrite.ts",
    import.meta.url,
  );
  const codec = (values.codec ?? "zlib") as KdumpWriteCodec;
  if (!(codec in KDUMP_LEVELS)) {
    throw new UsageError(`--codec must be zlib, zstd or none, not '${values.codec}'`);
  }
  const level = intOption(values.level, "level");
  if (level !== undefined) {
    const [lo, hi] = KDUMP_LEVELS[codec];
    if (codec === "none") throw new UsageError("--level needs --codec zlib or zstd");
    if (level < lo || level > hi) {
      throw new UsageError(`--level for ${codec} must be ${lo} to ${hi}`);
    }
  }
  const workers = intOption(values.workers, "workers");
  if (workers !== undefined && (workers < 0 || workers > 64)) {
    throw new UsageError("--workers must be 0 to 64");
  }
  if (outPath === "-" && !(to === "kdump" && values.flattened) && to !== "elf") {
    throw new UsageError("a plain kdump file needs random access: give a file, or --flattened");
  }
  const baseGpa = values.base === undefined ? undefined : parseSize(values.base, "--base");
  checkPlugMapOptions(values);
  // Refuse a bad input and a bad output before the (possibly slow) plug map extraction.
  if (baseGpa === undefined) {
    refuseKdumpMisuse(await dumpInputKind(inPath, "convert"), inPath, to, values);
  }
  await checkOutput(outPath, policy);
  const plugMap = await loadPlugMapOption(values, {});
  const progress = terminalProgress(io, "convert", undefined);
  const r = await convertDump(inPath, outPath, {
    to,
    codec,
    ...(level !== undefined ? { level } : {}),
    ...(values["exclude-zero"] ? { excludeZeroPages: true } : {}),
    ...(values.flattened ? { flattened: true } : {}),
    ...(workers !== undefined ? { workers } : {}),
    ...(plugMap !== undefined ? { plugMap } : {}),
    ...(baseGpa !== undefined ? { baseGpa } : {}),
    outputPolicy: policy,
    onProgress: (done, total) => progress.update(done, total),
  }).finally(() => progress.end());
  const removedByteLength = r.removed.reduce((n, x) => n + x.byteLength, 0);
  const say = outPath === "-" ? (t: string) => io.err(t) : (t: string) => io.out(t);
  if (values.json) {
    const fromKdump = r.from === "kdump" || r.from === "kdump-flattened";
    await say(reportJson("convert", {
      input: {
        path: inPath,
        format: fromKdump ? "kdump" : r.from as "elf" | "raw",
        container: r.from === "kdump-flattened" ? "flattened" : "raw",
        byteLength: await fileByteLength(inPath),
        sha256: r.inputSha256,
        ...(baseGpa !== undefined ? { baseGpa } : {}),
      },
      verdict: "done",
      output: {
        path: outPath,
        format: r.to,
        container: r.kdump?.flattened ? "flattened" : "raw",
        byteLength: r.kdump?.byteLength ?? r.elf?.byteLength ?? r.elfRewrite?.outputByteLength ??
          null,
      },
    }, {
      ...(plugMap !== undefined
        ? {
          plugState: plugStateJson(values, null, [
            values.plugmap !== undefined ? "plugmap" : "plugmap-from",
          ]),
        }
        : {}),
      removedByteLength,
      removed: gpaRangesJson(r.removed),
      ...(r.kdump
        ? {
          kdump: {
            codec: r.kdump.codec,
            level: r.kdump.level,
            pageSize: r.kdump.blockSize,
            maxMapnr: r.kdump.maxMapnr,
            presentPages: r.kdump.presentPages,
            zeroPages: r.kdump.zeroPages,
            uncompressedPages: r.kdump.uncompressedPages,
            pageCount: r.kdump.pageCount,
            dataByteLength: r.kdump.dataByteLength,
            descTableFileOffset: r.kdump.descTableOffset,
            dataFileOffset: r.kdump.dataOffset,
            gapByteLength: r.kdump.gapByteLength,
            utsnameSource: r.kdump.utsnameSource,
          },
        }
        : {}),
      ...(r.elf
        ? {
          elf: {
            loadCount: r.elf.loadCount,
            memoryByteLength: r.elf.memoryByteLength,
            notesByteLength: r.elf.notesByteLength,
          },
        }
        : {}),
      ...(r.elfRewrite
        ? {
          elf: {
            loadCount: r.elfRewrite.outputLoadCount,
            notesByteLength: r.elfRewrite.notes.byteLength,
          },
        }
        : {}),
      provenance: r.provenance,
    }));
    return 0;
  }
  let text = `convert: ${inPath} (${r.from}) -> ${outPath} (${r.to})\n`;
  if (r.kdump) {
    const k = r.kdump;
    text += `kdump: ${k.codec} level ${k.level}${k.flattened ? ", flattened" : ""}, ` +
      `${count(k.pageCount, "page")} of ${grouped(k.presentPages)} present ` +
      `(${grouped(k.zeroPages)} all-zero${
        values["exclude-zero"] ? ", excluded" : ", sharing one stored page"
      }), ${byteCount(k.byteLength)}\n`;
  }
  if (r.elf) {
    text +=
      `elf: ${count(r.elf.loadCount, "PT_LOAD")}, ${
        byteCount(r.elf.memoryByteLength)
      } of memory, ` +
      `${byteCount(r.elf.byteLength)}\n`;
  }
  if (r.elfRewrite) {
    text += `elf: ${count(r.elfRewrite.outputLoadCount, "PT_LOAD")}, classic layout, ` +
      `${byteCount(r.elfRewrite.outputByteLength)}\n`;
  }
  text += `removed ${byteCount(removedByteLength)} of unplugged memory in ${
    count(r.removed.length, "range")
  }\n`;
  await say(text);
  await summaryLine(
    io,
    `convert: ${inPath} -> ${outPath}`,
    // The input file, as every command's summary (the progress counts memory for a kdump).
    (await fileByteLength(inPath)) ?? 0,
    progress.seconds,
    `${r.from} to ${r.to}, ${byteCount(removedByteLength)} of unplugged memory removed`,
  );
  return 0;
}
