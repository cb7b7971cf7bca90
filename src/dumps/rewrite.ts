/**
 * Rewrites of dump files that record their provenance: `strip` (ELF or
 * kdump in, same format out, unplugged memory removed) and `convert`
 * (ELF → kdump, kdump or QEMU-layout ELF → classic ELF). Each output carries
 * the provenance note (see `provenance.ts`) with the input's name, size and
 * SHA-256, the plug map and the removed ranges.
 *
 * @module
 */

import { parseNotes } from "../elf/note.ts";
import { concatNoteSegments, readElfCore } from "../elf/reader.ts";
import { planStrip, stripElf, type StripReport } from "../elf/rewrite.ts";
import { type AtomicOutputOptions, writeAtomically } from "../io/file.ts";
import { elfFromRawImage, type RawToElfReport } from "../elf/from_raw.ts";
import { sha256File, sha256Positional } from "../io/hash.ts";
import { FormatError, formatErrorSentence, UnexpectedEofError } from "../errors.ts";
import { openPositional } from "../io/positional.ts";
import type { KdumpFile } from "../kdump/reader.ts";
import type { StripKdumpReport } from "../kdump/strip.ts";
import { kdumpSubHeaderLayout } from "../kdump/header.ts";
import type { KdumpWriteCodec } from "../kdump/compress.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import { type GpaRange, intersectGpaRanges, mergeGpaRanges } from "../vmem/ranges.ts";
import { type DumpKind, sniffDump } from "./detect.ts";
import { rawImageAsElf } from "./raw_as_elf.ts";
import { checkSplitSet } from "./split_set.ts";
import type { ElfToKdumpReport } from "./elf_to_kdump.ts";
import type { KdumpToElfReport } from "./kdump_to_elf.ts";
import {
  findProvenance,
  nextProvenance,
  type Provenance,
  provenanceStep,
  withProvenanceNote,
} from "./provenance.ts";

/**
 * The kdump side of the rewrites (its reader, writer and codecs), loaded
 * when a kdump is read or written: it evaluates node:zlib, and with it
 * Deno's Node compatibility layer (~25 ms of CPU at start), which stripping
 * an ELF dump or a raw image does not need.
 */
async function kdumpSide() {
  const [reader, strip, toKdump, toElf, output] = await Promise.all([
    import("../kdump/reader.ts"),
    import("../kdump/strip.ts"),
    import("./elf_to_kdump.ts"),
    import("./kdump_to_elf.ts"),
    import("./kdump_output.ts"),
  ]);
  return {
    readKdump: reader.readKdump,
    stripKdump: strip.stripKdump,
    elfToKdump: toKdump.elfToKdump,
    kdumpToElf: toElf.kdumpToElf,
    kdumpElfNotes: toElf.kdumpElfNotes,
    kdumpDumpedRanges: toElf.kdumpDumpedRanges,
    openKdumpOutput: output.openKdumpOutput,
  };
}

/** The input of a rewrite as the provenance note names it. */
interface InputFacts {
  name: string;
  byteLength: number;
  sha256: string;
}

/** `policy` with `input` among its inputs. */
function policyFor(input: string, policy: AtomicOutputOptions | undefined): AtomicOutputOptions {
  return { ...policy, inputs: [...(policy?.inputs ?? []), input] };
}

/**
 * Inputs up to this size are hashed on the calling thread: starting a worker
 * (and node:crypto in it) costs more than hashing them (0.2-1 s on a loaded
 * machine against ~0.1 s for 64 MiB).
 */
const HASH_IN_THREAD_MAX = 64 << 20;

/** Name, size and SHA-256 of the input; a large input is hashed on a worker, beside the rewrite. */
async function inputFacts(path: string): Promise<InputFacts> {
  const byteLength = await fileSize(path);
  let sha256: string;
  if (byteLength <= HASH_IN_THREAD_MAX) {
    using r = await openPositional(path);
    sha256 = await sha256Positional(r);
  } else sha256 = await sha256File(path);
  if (await fileSize(path) !== byteLength) {
    throw new UnexpectedEofError(
      `Cannot hash ${path}: it changed size while it was read`,
      "raw",
      0,
    );
  }
  return { name: path, byteLength, sha256 };
}

/** Options for {@linkcode stripDump}. */
export interface StripDumpOptions {
  /** The plug map whose unplugged blocks go. */
  plugMap: PlugMap;
  /** ELF only: page alignment of segment data. @default {4096} */
  pageAlign?: number;
  /** ELF only: count non-zero pages in the removed bytes. @default {false} */
  countNonZero?: boolean;
  /** kdump only: write the flattened container (default: plain, also for flattened input). */
  flattened?: boolean;
  /**
   * kdump only: the other files of the input's split set (makedumpfile
   * `--split`). Required when the input is a file of a split dump: the set
   * is checked ({@linkcode checkSplitSet}) before anything is written.
   * Refused for an input that is not split. @default {[]}
   */
  splitSet?: readonly string[];
  /**
   * The output policy (inputs never replaced, `force`, permissions); the
   * input path is always one of the inputs. @default {{}}
   */
  outputPolicy?: AtomicOutputOptions;
  /**
   * Called now and then with the bytes processed so far and the bytes to
   * process in all (the rewrite's own pass; the hash of the input runs beside
   * it), for a progress display. @default {undefined}
   */
  onProgress?: (done: number, total: number) => void;
}

/** What {@linkcode stripDump} did. */
export type StripDumpReport =
  & { provenance: Provenance; inputSha256: string; removedNothing: boolean }
  & ({ format: "elf"; elf: StripReport } | {
    format: "kdump";
    inputContainer: "raw" | "flattened";
    flattened: boolean;
    kdump: StripKdumpReport;
  });

/**
 * Strip the unplugged blocks of a plug map out of an ELF or kdump dump
 * (chosen by magic), with a provenance note in the output.
 *
 * @param input Input path.
 * @param output Output path (`-` for ELF or flattened kdump output).
 * @param options Plug map and format options.
 * @returns The report.
 * @throws {FormatError} (code `bad-magic`, offset 0) when the input is neither ELF nor kdump.
 *
 * @example
 * ```ts ignore
 * import { stripDump } from "@vmem-dump/vmem-dump/dumps";
 * const r = await stripDump("vmcore", "vmcore.stripped", { plugMap });
 * ```
 */
export async function stripDump(
  input: string,
  output: string,
  options: StripDumpOptions,
): Promise<StripDumpReport> {
  let kind;
  {
    using r = await openPositional(input);
    kind = await sniffDump(r);
  }
  const exclude = options.plugMap.unpluggedGpaRanges();
  const plugMap = options.plugMap.toJSON();
  if (kind === "elf") {
    const facts = await inputFacts(input);
    using core = await readElfCore(input);
    // Plan once without notes to learn what goes, then write with the note.
    const notes = concatNoteSegments(core);
    const le = core.ehdr.littleEndian;
    const existing = findProvenance(core.notes);
    // The removed ranges depend only on the headers: a dry plan gives them.
    const dry = planStrip(core, { exclude });
    const removed: GpaRange[] = dry.report.removed.map((r) => ({
      gpa: r.gpa,
      byteLength: r.byteLength,
    }));
    const provenance = nextProvenance(
      existing,
      provenanceStep({ command: "strip", input: facts, outputFormat: "elf", plugMap, removed }),
    );
    const elf = await stripElf(core, output, {
      outputPolicy: policyFor(input, options.outputPolicy),
      exclude,
      notes: withProvenanceNote(notes, le, provenance),
      ...progressOf(options.onProgress, elfCopyBytes(dry.report, options.countNonZero ?? false)),
      ...(options.pageAlign === undefined ? {} : { pageAlign: options.pageAlign }),
      ...(options.countNonZero ? { countNonZero: true } : {}),
    });
    return {
      format: "elf",
      elf,
      provenance,
      inputSha256: facts.sha256,
      removedNothing: elf.removedByteLength === 0,
    };
  }
  if (kind === "kdump" || kind === "kdump-flattened") {
    const { readKdump, stripKdump, openKdumpOutput } = await kdumpSide();
    using dump = await readKdump(input);
    await checkSplitMembers(input, dump, options.splitSet ?? []);
    const le = dump.header.littleEndian;
    const existing = findProvenance(parseNotes(dump.notes, dump.subHeader.offsetNote, le));
    const flattened = options.flattened ?? false;
    const removed = kdumpRemovedRanges(dump, exclude);
    const byteLength = dump.container === "raw" ? dump.byteLength : await fileSize(input);
    // The note's size does not depend on the hash (64 hex digits): lay it out
    // with a placeholder, hash the input while stripping, then fill it in
    // (the writer stores the notes last).
    const noteFor = (sha256: string) =>
      nextProvenance(
        existing,
        provenanceStep({
          command: "strip",
          input: { name: input, byteLength, sha256 },
          outputFormat: "kdump",
          plugMap,
          removed,
        }),
      );
    const placeholder = "0".repeat(64);
    const notes = withProvenanceNote(dump.notes, le, noteFor(placeholder));
    const out = await openKdumpOutput(output, flattened, policyFor(input, options.outputPolicy));
    try {
      const hashing = inputFacts(input);
      hashing.catch(() => {});
      const onProgress = options.onProgress;
      const kdumpPromise = stripKdump(dump, out.sink, {
        exclude,
        notes,
        ...(onProgress === undefined ? {} : {
          onProgress: (pfns: number) =>
            onProgress(pfns * dump.blockSize, dump.maxMapnr * dump.blockSize),
        }),
        beforeFinish: async () => {
          const facts = await hashing;
          const real = withProvenanceNote(dump.notes, le, noteFor(facts.sha256));
          if (real.byteLength !== notes.byteLength) {
            throw new Error("Internal error: the provenance note changed size");
          }
          notes.set(real);
        },
      });
      const kdump = await kdumpPromise;
      const facts = await hashing;
      await out.commit();
      return {
        format: "kdump",
        inputContainer: dump.container,
        flattened,
        kdump,
        provenance: noteFor(facts.sha256),
        inputSha256: facts.sha256,
        removedNothing: kdump.removedPresentPages === 0,
      };
    } catch (e) {
      await out.abort();
      throw e;
    }
  }
  throw notADump("strip", input);
}

/**
 * A file of a split dump is stripped only with the rest of its set named,
 * and the set must check out: a member cut from another dump, or stripped
 * with another plug map, would make the stripped set a mix of two dumps.
 */
async function checkSplitMembers(
  input: string,
  dump: KdumpFile,
  others: readonly string[],
): Promise<void> {
  const split = dump.subHeader.split !== 0;
  if (!split && others.length === 0) return;
  const splitField = dump.header.blockSize +
    kdumpSubHeaderLayout(dump.header.wordSize).fields.split.offset;
  if (!split) {
    throw new FormatError(
      `Cannot strip ${input} as a member of a split set: it is not a file of a split dump ` +
        `(split flag 0); give no other files`,
      { format: "kdump", code: "split-set", offset: splitField },
    );
  }
  if (others.length === 0) {
    const { startPfn, endPfn } = dump.subHeader;
    throw new FormatError(
      `Cannot strip ${input} alone: it is one file of a split dump (pfns 0x${
        startPfn.toString(16)
      }-0x${endPfn.toString(16)} of 0x${dump.maxMapnr.toString(16)}); name the other files ` +
        `of its set (--split-set FILE for each) so that they are checked to be one dump with ` +
        `one plug state`,
      { format: "kdump", code: "split-set", offset: splitField },
    );
  }
  const { readKdump } = await kdumpSide();
  const opened: KdumpFile[] = [];
  try {
    for (const path of others) opened.push(await readSplitMember(readKdump, path));
    checkSplitSet([
      { name: input, dump },
      ...opened.map((d, i) => ({ name: others[i]!, dump: d })),
    ]);
  } finally {
    for (const d of opened) d.close();
  }
}

/**
 * Open one other file of a split set; a malformed file is an error that
 * names it (the offset alone would not say which of the files it is in).
 */
async function readSplitMember(
  readKdump: (path: string) => Promise<KdumpFile>,
  path: string,
): Promise<KdumpFile> {
  try {
    return await readKdump(path);
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    throw new FormatError(
      `Cannot use ${path} as a member of the split set: ${formatErrorSentence(e)}`,
      { format: e.format, code: e.code, offset: e.offset },
      { cause: e },
    );
  }
}

/** Options for {@linkcode stripRawImage}. */
export interface StripRawImageOptions {
  /** The plug map whose unplugged blocks go. */
  plugMap: PlugMap;
  /** Guest-physical address of the image's first byte. */
  baseGpa: number;
  /** Page alignment of segment data. @default {4096} */
  pageAlign?: number;
  /** The output policy; the input path is always one of the inputs. @default {{}} */
  outputPolicy?: AtomicOutputOptions;
  /** Called with the image bytes copied so far (the excluded ranges are not read). @default {undefined} */
  onProgress?: (inputBytesRead: number) => void;
}

/** What {@linkcode stripRawImage} did. */
export interface StripRawImageReport {
  /** The ELF written. */
  elf: RawToElfReport;
  /** The provenance note in the output. */
  provenance: Provenance;
  /** SHA-256 of the image. */
  inputSha256: string;
}

/**
 * Write an ELF dump of the plugged parts of a raw memory image (QEMU
 * `pmemsave`), with a provenance note that records what was removed. The
 * image is hashed first (the note precedes the data), then copied.
 *
 * @param input Image path.
 * @param output Output path (`-` for standard output).
 * @param options Plug map, base address, alignment, output policy.
 * @returns The report.
 * @throws {RangeError} for a base address that does not fit.
 *
 * @example
 * ```ts ignore
 * import { stripRawImage } from "@vmem-dump/vmem-dump/dumps";
 * const r = await stripRawImage("vmem0.raw", "vmem0.elf", { plugMap, baseGpa: 0x100000000 });
 * ```
 */
export async function stripRawImage(
  input: string,
  output: string,
  options: StripRawImageOptions,
): Promise<StripRawImageReport> {
  const exclude = options.plugMap.unpluggedGpaRanges();
  const facts = await inputFacts(input);
  using image = await openPositional(input);
  if (image.byteLength !== facts.byteLength) {
    throw new UnexpectedEofError(
      `Cannot strip ${input}: it changed size while it was read`,
      "raw",
      0,
    );
  }
  // The ranges removed are the exclusions clipped to the image (what elfFromRawImage leaves out).
  const removed = intersectGpaRanges(
    image.byteLength === 0 ? [] : [{ gpa: options.baseGpa, byteLength: image.byteLength }],
    exclude,
  );
  const provenance = nextProvenance(
    undefined,
    provenanceStep({
      command: "strip",
      input: facts,
      outputFormat: "elf",
      plugMap: options.plugMap.toJSON(),
      removed,
    }),
  );
  const notes = withProvenanceNote(new Uint8Array(0), true, provenance);
  const elf = await writeAtomically(
    output,
    policyFor(input, options.outputPolicy),
    (write) =>
      elfFromRawImage(image, write, {
        baseGpa: options.baseGpa,
        exclude,
        notes,
        ...(options.pageAlign === undefined ? {} : { pageAlign: options.pageAlign }),
        ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
      }),
  );
  return { elf, provenance, inputSha256: facts.sha256 };
}

/** The input is neither an ELF nor a kdump dump: a bad input (exit 1, with the offset), not a bad call. */
function notADump(doing: string, input: string): FormatError {
  return new FormatError(
    `Cannot ${doing} ${input}: neither an ELF nor a kdump-compressed dump (a raw memory image ` +
      `needs --base GPA)`,
    { format: "elf", code: "bad-magic", offset: 0 },
  );
}

/** Excluded ranges clipped to the pages a kdump dump has in its 1st bitmap. */
function kdumpRemovedRanges(dump: KdumpFile, exclude: readonly GpaRange[]): GpaRange[] {
  const B = dump.blockSize;
  const out: GpaRange[] = [];
  for (const r of exclude) {
    const first = Math.ceil(r.gpa / B);
    const end = Math.floor((r.gpa + r.byteLength) / B);
    dump.present.forEachRun(first, end, (pfn, n) => {
      out.push({ gpa: pfn * B, byteLength: n * B });
    });
  }
  return mergeGpaRanges(out);
}

async function fileSize(path: string): Promise<number> {
  using r = await openPositional(path);
  return r.byteLength;
}

/** Options for {@linkcode convertDump}. */
export interface ConvertDumpOptions {
  /** Output format. */
  to: "kdump" | "elf";
  /** kdump: page codec. @default {"zlib"} */
  codec?: KdumpWriteCodec;
  /** kdump: codec level. @default {1} */
  level?: number;
  /** kdump: clear all-zero pages from the 2nd bitmap. @default {false} */
  excludeZeroPages?: boolean;
  /** kdump: write the flattened container. @default {false} */
  flattened?: boolean;
  /** kdump: compression workers (0: the calling thread compresses). @default {0} */
  workers?: number;
  /** Leave the unplugged blocks of this plug map out. */
  plugMap?: PlugMap;
  /** The input is a raw image of guest-physical memory starting at this gpa. */
  baseGpa?: number;
  /**
   * The output policy (inputs never replaced, `force`, permissions); the
   * input path is always one of the inputs. @default {{}}
   */
  outputPolicy?: AtomicOutputOptions;
  /**
   * Called now and then with the bytes processed so far and the bytes to
   * process in all (the rewrite's own pass; the hash of the input runs beside
   * it), for a progress display. @default {undefined}
   */
  onProgress?: (done: number, total: number) => void;
}

/** What {@linkcode convertDump} did. */
export interface ConvertDumpReport {
  /** Input format. */
  from: "elf" | "kdump" | "kdump-flattened" | "raw";
  /** Output format. */
  to: "kdump" | "elf";
  /** Input SHA-256. */
  inputSha256: string;
  /** The provenance written. */
  provenance: Provenance;
  /** Memory left out (plug map). */
  removed: GpaRange[];
  /** ELF → kdump details. */
  kdump?: ElfToKdumpReport;
  /** kdump → ELF details. */
  elf?: KdumpToElfReport;
  /** ELF → ELF details. */
  elfRewrite?: StripReport;
}

/**
 * Convert a dump: ELF (or raw image with `baseGpa`) → kdump, kdump → ELF,
 * QEMU-layout ELF → classic ELF, optionally leaving out unplugged memory.
 *
 * @param input Input path.
 * @param output Output path.
 * @param options Target and its options.
 * @returns The report.
 * @throws {FormatError} (code `bad-magic`, offset 0) for an input that is no dump.
 * @throws {TypeError} for a conversion that makes no sense.
 *
 * @example
 * ```ts ignore
 * import { convertDump } from "@vmem-dump/vmem-dump/dumps";
 * await convertDump("guest.elf", "guest.kdump", { to: "kdump", codec: "zstd" });
 * ```
 */
export async function convertDump(
  input: string,
  output: string,
  options: ConvertDumpOptions,
): Promise<ConvertDumpReport> {
  let kind: DumpKind | "raw" | undefined;
  {
    using r = await openPositional(input);
    kind = options.baseGpa !== undefined ? "raw" : await sniffDump(r);
  }
  if (kind === undefined) throw notADump("convert", input);
  const exclude = options.plugMap?.unpluggedGpaRanges() ?? [];
  const plugMap = options.plugMap?.toJSON();
  const step = (sha256: string, byteLength: number, removed: GpaRange[]) =>
    provenanceStep({
      command: "convert",
      input: { name: input, byteLength, sha256 },
      outputFormat: options.to,
      plugMap,
      removed,
      zeroPagesExcluded: options.excludeZeroPages ?? false,
    });
  if (options.to === "kdump") {
    if (kind === "kdump" || kind === "kdump-flattened") {
      throw new TypeError("the input is already a kdump dump: use strip to remove memory from it");
    }
    using core = kind === "raw"
      ? await readElfCore(await rawImageAsElf(input, options.baseGpa!))
      : await readElfCore(input);
    const le = core.ehdr.littleEndian;
    const existing = findProvenance(core.notes);
    const baseNotes = concatNoteSegments(core);
    const byteLength = await fileSize(input);
    const described = core.loads.filter((s) => s.gpa !== undefined)
      .map((s) => ({ gpa: s.gpa!, byteLength: s.byteLength }));
    const removed = intersectGpaRanges(described, exclude);
    const noteFor = (sha256: string) => nextProvenance(existing, step(sha256, byteLength, removed));
    const notes = withProvenanceNote(baseNotes, le, noteFor("0".repeat(64)));
    const hashing = inputFacts(input);
    hashing.catch(() => {});
    const { elfToKdump } = await kdumpSide();
    const kdump = await elfToKdump(core, output, {
      outputPolicy: policyFor(input, options.outputPolicy),
      exclude,
      notes,
      ...(options.codec ? { codec: options.codec } : {}),
      ...(options.level !== undefined ? { level: options.level } : {}),
      ...(options.excludeZeroPages ? { excludeZeroPages: true } : {}),
      ...(options.flattened ? { flattened: true } : {}),
      ...(options.workers !== undefined ? { workers: options.workers } : {}),
      ...progressOf(options.onProgress, described.reduce((n, r) => n + r.byteLength, 0)),
      beforeFinish: async () => {
        const real = withProvenanceNote(baseNotes, le, noteFor((await hashing).sha256));
        if (real.byteLength !== notes.byteLength) {
          throw new Error("Internal error: the provenance note changed size");
        }
        notes.set(real);
      },
    });
    const facts = await hashing;
    return {
      from: kind,
      to: "kdump",
      inputSha256: facts.sha256,
      provenance: noteFor(facts.sha256),
      removed,
      kdump,
    };
  }
  // to ELF
  const facts = await inputFacts(input);
  if (kind === "kdump" || kind === "kdump-flattened") {
    const { readKdump, kdumpElfNotes, kdumpToElf, kdumpDumpedRanges } = await kdumpSide();
    using dump = await readKdump(input);
    const le = dump.header.littleEndian;
    const notesIn = kdumpElfNotes(dump);
    const existing = findProvenance(parseNotes(notesIn, 0, le));
    if (exclude.length > 0) {
      throw new TypeError("convert --to elf of a kdump dump takes no plug map: strip it first");
    }
    const provenance = nextProvenance(existing, step(facts.sha256, facts.byteLength, []));
    const elf = await kdumpToElf(dump, output, {
      outputPolicy: policyFor(input, options.outputPolicy),
      notes: withProvenanceNote(notesIn, le, provenance),
      ...progressOf(
        options.onProgress,
        kdumpDumpedRanges(dump).reduce((n, r) => n + r.byteLength, 0),
      ),
    });
    return { from: kind, to: "elf", inputSha256: facts.sha256, provenance, removed: [], elf };
  }
  using core = kind === "raw"
    ? await readElfCore(await rawImageAsElf(input, options.baseGpa!))
    : await readElfCore(input);
  const le = core.ehdr.littleEndian;
  const dry = planStrip(core, { exclude });
  const removed = dry.report.removed.map((r) => ({ gpa: r.gpa, byteLength: r.byteLength }));
  const provenance = nextProvenance(
    findProvenance(core.notes),
    step(facts.sha256, facts.byteLength, removed),
  );
  const elfRewrite = await stripElf(core, output, {
    outputPolicy: policyFor(input, options.outputPolicy),
    exclude,
    notes: withProvenanceNote(concatNoteSegments(core), le, provenance),
    ...progressOf(options.onProgress, elfCopyBytes(dry.report, false)),
  });
  return { from: kind, to: "elf", inputSha256: facts.sha256, provenance, removed, elfRewrite };
}

/** The `onProgress` option of a lower layer, reporting against `total`, or nothing. */
function progressOf(
  onProgress: ((done: number, total: number) => void) | undefined,
  total: number,
): { onProgress?: (done: number) => void } {
  return onProgress === undefined ? {} : { onProgress: (done) => onProgress(done, total) };
}

/** The input bytes an ELF rewrite reads: the kept file data, and the removed with `countNonZero`. */
function elfCopyBytes(report: StripReport, countNonZero: boolean): number {
  return report.kept.reduce((n, k) => n + k.fileByteLength, 0) +
    (countNonZero ? report.removedFileByteLength : 0);
}
