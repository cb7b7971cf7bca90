/**
 * ELF dump → kdump-compressed file: every page of guest memory the ELF
 * describes goes into the 1st bitmap (minus excluded ranges, which are left
 * out of both bitmaps), non-zero pages are compressed in parallel and
 * written. All-zero pages share one stored zero page, as makedumpfile
 * `-d 1` writes them (readers see zeros); with `excludeZeroPages` they are
 * cleared from the 2nd bitmap instead, which saves their descriptors but
 * makes crash report them as excluded unless it runs with `--zero_excluded`.
 * Notes and VMCOREINFO are carried over (the caller adds provenance).
 *
 * @module
 */

import { FormatError, UnsupportedFeatureError } from "../errors.ts";
import type { AtomicOutputOptions } from "../io/file.ts";
import { parseNotes, parseVmcoreinfo } from "../elf/note.ts";
import { phdrLayout } from "../elf/phdr.ts";
import { concatNoteSegments, type ElfCore, planGpaRange } from "../elf/reader.ts";
import { KDUMP_MAX_BLOCK_SIZE, KDUMP_MIN_BLOCK_SIZE } from "../kdump/header.ts";
import {
  KDUMP_LEVELS,
  kdumpCodecFlag,
  type KdumpWriteCodec,
  PageCompressorPool,
} from "../kdump/compress.ts";
import { KdumpWriter, type KdumpWriteResult } from "../kdump/writer.ts";
import { type GpaRange, mergeGpaRanges, subtractGpaRanges } from "../vmem/ranges.ts";
import { loadNativeZeroCompare } from "../io/zero.ts";
import { type KdumpTarget, openKdumpOutput } from "./kdump_output.ts";
import { type KernelUtsname, kernelUtsname } from "./kernel_utsname.ts";

/** Options for {@linkcode elfToKdump}. */
export interface ElfToKdumpOptions {
  /** Page codec. @default {"zlib"} */
  codec?: KdumpWriteCodec;
  /** Codec level. @default {the codec's default in KDUMP_LEVELS: zlib 1, zstd 2} */
  level?: number;
  /** Clear all-zero pages from the 2nd bitmap instead of sharing one stored zero page. @default {false} */
  excludeZeroPages?: boolean;
  /** Guest-physical ranges to leave out of both bitmaps (unplugged blocks). @default {[]} */
  exclude?: readonly GpaRange[];
  /** Notes area to write instead of the input's PT_NOTE bytes (to add provenance). */
  notes?: Uint8Array;
  /** Write the flattened container. @default {false} */
  flattened?: boolean;
  /** Compression workers (0: the calling thread compresses). @default {0} */
  workers?: number;
  /** Pages per compression batch (one read of the input each). @default {1024} */
  batchPages?: number;
  /** Called with guest bytes processed so far. */
  onProgress?: (byteLength: number) => void;
  /** Awaited after the last page, before headers and notes are written (notes may change in place). */
  beforeFinish?: () => Promise<void>;
  /** With a path as output: the output policy (inputs, `force`); the ELF's own file is always protected. @default {{}} */
  outputPolicy?: AtomicOutputOptions;
}

/** What {@linkcode elfToKdump} wrote. */
export interface ElfToKdumpReport extends KdumpWriteResult {
  /** Page size used. */
  blockSize: number;
  /** Pfns covered. */
  maxMapnr: number;
  /** Pages in the 1st bitmap. */
  presentPages: number;
  /** All-zero pages (left out with `excludeZeroPages`, else sharing one stored page). */
  zeroPages: number;
  /** Pages stored as is because compression did not make them smaller. */
  uncompressedPages: number;
  /** Memory left out of both bitmaps (excluded ranges that the ELF described). */
  removed: GpaRange[];
  /** Codec and level. */
  codec: KdumpWriteCodec;
  /** Level used. */
  level: number;
  /** Whether the flattened container was written. */
  flattened: boolean;
  /**
   * Where the header's utsname came from: the kernel's `init_uts_ns`
   * (`kernel`), or VMCOREINFO and the ELF header with version "unknown"
   * (`derived`).
   */
  utsnameSource: KernelUtsname["source"];
}

/**
 * Most guest memory a converted dump describes beyond the file bytes of its
 * PT_LOADs (`p_memsz` past `p_filesz`, which reads as zeros): 16 GiB. The
 * kdump needs a 24-byte page descriptor for each such page, so without a
 * cap one untrusted `p_memsz` of a few bytes' input could make the output
 * (and the time to write it) grow to any size; 16 GiB is 96 MiB of
 * descriptors.
 */
const MAX_ZERO_FILL_BYTES = 16 * 2 ** 30;

/**
 * Highest guest-physical address (exclusive) a converted dump may describe: 2 TiB. kdump's two
 * bitmaps hold a bit for every pfn from 0 up to the highest, and the writer keeps them in memory,
 * so one untrusted `p_paddr` would otherwise size allocations (and the output's bitmaps) at will;
 * 2 TiB is a 64 MiB bitmap. QEMU's default x86 physical address width (40 bits) is 1 TiB.
 */
const MAX_GPA_END = 2 ** 41;

/** Refuse an ELF whose PT_LOADs describe memory at or beyond {@linkcode MAX_GPA_END}. */
function checkAddressSpan(core: ElfCore): void {
  for (const s of core.loads) {
    if (s.gpa === undefined || s.byteLength === 0 || s.gpa + s.byteLength <= MAX_GPA_END) continue;
    const paddr = phdrLayout(core.ehdr.elfClass).fields.paddr.offset;
    throw new FormatError(
      `Cannot convert to kdump: program header ${s.index} describes memory up to gpa 0x${
        (s.gpa + s.byteLength).toString(16)
      }, beyond the ${MAX_GPA_END / 2 ** 40} TiB a converted dump may span (kdump's bitmaps ` +
        `cover every page frame from 0)`,
      {
        format: "elf",
        code: "too-large",
        offset: core.ehdr.phdrFileOffset + s.index * core.ehdr.phdrEntrySize + paddr,
      },
    );
  }
}

/** Refuse an ELF whose PT_LOADs describe more zero-fill memory than {@linkcode MAX_ZERO_FILL_BYTES}. */
function checkZeroFill(core: ElfCore): void {
  let total = 0;
  for (const s of core.loads) {
    if (s.gpa === undefined) continue;
    total += Math.max(0, s.byteLength - s.fileByteLength);
    if (total > MAX_ZERO_FILL_BYTES) {
      const memsz = phdrLayout(core.ehdr.elfClass).fields.memByteLength.offset;
      throw new FormatError(
        `Cannot convert to kdump: the PT_LOADs describe more than ${
          MAX_ZERO_FILL_BYTES / 2 ** 30
        } GiB of memory beyond their file data (program header ${s.index}: p_memsz ` +
          `0x${s.byteLength.toString(16)}, p_filesz 0x${
            s.fileByteLength.toString(16)
          }); each such ` +
          `page would need a page descriptor`,
        {
          format: "elf",
          code: "too-large",
          offset: core.ehdr.phdrFileOffset + s.index * core.ehdr.phdrEntrySize + memsz,
        },
      );
    }
  }
}

/**
 * Convert an ELF core to a kdump-compressed file.
 *
 * @param core The parsed input (left open).
 * @param target Output path (atomic) or sink.
 * @param options Codec, exclusions, container.
 * @returns What was written.
 * @throws {UnsupportedFeatureError} when the dump describes no physical memory or its page size is unusable.
 *
 * @example
 * ```ts ignore
 * import { readElfCore } from "@vmem-dump/vmem-dump/elf";
 * import { elfToKdump } from "@vmem-dump/vmem-dump/dumps";
 * using core = await readElfCore("guest.elf");
 * const r = await elfToKdump(core, "guest.kdump", { codec: "zstd", excludeZeroPages: true });
 * console.log(r.pageCount, r.byteLength);
 * ```
 */
export async function elfToKdump(
  core: ElfCore,
  target: KdumpTarget,
  options: ElfToKdumpOptions = {},
): Promise<ElfToKdumpReport> {
  const codec = options.codec ?? "zlib";
  const level = options.level ?? KDUMP_LEVELS[codec][2];
  const vmcoreinfoNote = core.notes.find((n) => n.kind === "vmcoreinfo");
  const info = vmcoreinfoNote ? parseVmcoreinfo(vmcoreinfoNote.desc) : new Map<string, string>();
  const B = Number(info.get("PAGESIZE") ?? 4096);
  if (
    !Number.isSafeInteger(B) || B < KDUMP_MIN_BLOCK_SIZE || B > KDUMP_MAX_BLOCK_SIZE ||
    (B & (B - 1)) !== 0
  ) {
    throw new UnsupportedFeatureError(
      `Cannot write a kdump file: VMCOREINFO gives a page size of ${info.get("PAGESIZE")}`,
      "elf",
      vmcoreinfoNote?.fileOffset ?? 0,
    );
  }
  // Physical memory the ELF describes, minus the excluded ranges.
  const described = mergeGpaRanges(
    core.loads.filter((s) => s.gpa !== undefined && s.byteLength > 0)
      .map((s) => ({ gpa: s.gpa!, byteLength: s.byteLength })),
  );
  if (described.length === 0) {
    throw new UnsupportedFeatureError(
      "Cannot write a kdump file: the ELF dump describes no guest-physical memory",
      "elf",
      0,
    );
  }
  checkZeroFill(core);
  checkAddressSpan(core);
  const exclude = mergeGpaRanges(options.exclude ?? []);
  const kept = subtractGpaRanges(described, exclude);
  const removed = subtractGpaRanges(described, kept);
  const last = described.at(-1)!;
  const maxMapnr = Math.ceil((last.gpa + last.byteLength) / B);
  const present = new Uint8Array(Math.ceil(maxMapnr / 8));
  let presentPages = 0;
  const pfnRuns: Array<[number, number]> = []; // [first, end) of present pfns
  for (const r of kept) {
    const first = Math.floor(r.gpa / B);
    const end = Math.ceil((r.gpa + r.byteLength) / B);
    const prev = pfnRuns.at(-1);
    if (prev !== undefined && first < prev[1]) {
      prev[1] = Math.max(prev[1], end);
    } else pfnRuns.push([first, end]);
  }
  for (const [first, end] of pfnRuns) {
    for (let p = first; p < end; p++) present[p >>> 3]! |= 1 << (p & 7);
    presentPages += end - first;
  }

  const baseNotes = options.notes ?? concatNoteSegments(core);
  const uts = await kernelUtsname(core, info);
  const physBaseText = info.get("NUMBER(phys_base)");
  const cpus = core.notes.filter((n) => n.kind === "prstatus").length;
  const flattened = options.flattened ?? false;
  const policy = options.outputPolicy ?? {};
  const out = await openKdumpOutput(target, flattened, {
    ...policy,
    inputs: [
      ...(policy.inputs ?? []),
      ...(core.reader.identity === undefined ? [] : [core.reader.identity]),
    ],
  });
  // Zero pages (two thirds of a typical dump) are found by a native compare of 64 KiB windows
  // (profile of the 344 MB s1 dump: 62 ms of word-wise checks became 34 + 15 ms).
  await loadNativeZeroCompare();
  const pool = new PageCompressorPool({
    codec,
    level,
    blockSize: B,
    ...(options.workers === undefined ? {} : { workers: options.workers }),
  });
  try {
    const writer = new KdumpWriter(out.sink, {
      wordSize: core.ehdr.elfClass === 64 ? 8 : 4,
      littleEndian: core.ehdr.littleEndian,
      blockSize: B,
      maxMapnr,
      present,
      maxPageCount: presentPages,
      utsname: uts.utsname,
      status: kdumpCodecFlag(codec),
      nrCpus: Math.max(1, cpus),
      // VMCOREINFO prints phys_base as a signed decimal (%ld).
      physBase: physBaseText !== undefined && /^-?[0-9]{1,20}$/.test(physBaseText)
        ? BigInt.asUintN(64, BigInt(physBaseText))
        : 0n,
      // Dump level 1 ("zero pages excluded") only when they really are missing.
      dumpLevel: options.excludeZeroPages ? 1 : 0,
      notes: baseNotes,
      ...(vmcoreinfoNote ? { vmcoreinfo: vmcoreinfoNote.desc } : {}),
      ...vmcoreinfoPlace(baseNotes, core.ehdr.littleEndian),
    });
    // 1024 pages (4 MiB of 4 KiB pages) per batch: each batch is one read of the input, and
    // 4 MiB reads cost less CPU than 1 MiB ones (344 MB: 0.09 vs 0.13 s; in the profile of a
    // conversion the reads' own time went from 123 to 24 ms).
    const batchPages = options.batchPages ?? 1024;
    const inFlight: Array<
      { pfns: Float64Array; count: number; done: ReturnType<typeof pool.compress> }
    > = [];
    const maxInFlight = 2 * Math.max(1, pool.workerCount) + 1;
    let zeroPages = 0;
    let uncompressedPages = 0;
    let processed = 0;
    const flag = kdumpCodecFlag(codec);
    const settle = async () => {
      const job = inFlight.shift()!;
      const b = await job.done;
      let at = 0;
      for (let i = 0; i < job.count; i++) {
        const pfn = job.pfns[i]!;
        const size = b.sizes[i]!;
        if (size === 0) {
          zeroPages++;
          if (!options.excludeZeroPages) writer.addZeroPage(pfn);
          continue;
        }
        if (b.flags[i] !== flag) uncompressedPages++;
        writer.addPage(pfn, b.data.subarray(at, at + size), b.flags[i]!);
        at += size;
        if (writer.needsDrain) await writer.drain();
      }
      await writer.drain();
      pool.release(b);
      processed += job.count * B;
      options.onProgress?.(processed);
    };

    let buf = pool.takePages(batchPages);
    let pfns = new Float64Array(batchPages);
    let count = 0;
    let slotPfn = -1; // pfn of the last slot in the batch
    const submit = async () => {
      if (count === 0) return;
      inFlight.push({ pfns, count, done: pool.compress(buf, count) });
      buf = pool.takePages(batchPages);
      pfns = new Float64Array(batchPages);
      count = 0;
      slotPfn = -1;
      if (inFlight.length >= maxInFlight) await settle();
    };
    /** Slot index for pfn (allocating it), or -1 when the batch is full. */
    const slotFor = (pfn: number): number => {
      if (pfn === slotPfn) return count - 1;
      if (count === batchPages) return -1;
      pfns[count] = pfn;
      slotPfn = pfn;
      return count++;
    };

    for (const r of kept) {
      for (const piece of planGpaRange(core, r)) {
        let gpa = piece.gpa;
        const end = piece.gpa + piece.byteLength;
        while (gpa < end) {
          const pfn = Math.floor(gpa / B);
          let slot = slotFor(pfn);
          if (slot < 0) {
            await submit();
            slot = slotFor(pfn);
          }
          // Bytes from gpa to the end of the piece or of the batch's room.
          const roomPages = batchPages - slot;
          const n = Math.min(end - gpa, roomPages * B - (gpa - pfn * B));
          const lastPfn = Math.floor((gpa + n - 1) / B);
          for (let p = pfn + 1; p <= lastPfn; p++) slotFor(p);
          if (piece.kind === "data") {
            const into = buf.subarray(slot * B + (gpa - pfn * B), slot * B + (gpa - pfn * B) + n);
            const fileOffset = piece.fileOffset + (gpa - piece.gpa);
            const got = await core.reader.readInto(fileOffset, into);
            if (got < n) {
              throw new UnsupportedFeatureError(
                `Cannot read segment bytes at 0x${fileOffset.toString(16)}: the file shrank`,
                "elf",
                fileOffset + got,
              );
            }
          }
          // "zero" pieces stay zero; "absent" pieces inside a kept range do not occur.
          gpa += n;
        }
      }
    }
    await submit();
    while (inFlight.length > 0) await settle();
    await options.beforeFinish?.();
    const result = await writer.finish();
    await out.commit();
    return {
      ...result,
      blockSize: B,
      maxMapnr,
      presentPages,
      zeroPages,
      uncompressedPages,
      removed,
      codec,
      level,
      flattened,
      utsnameSource: uts.source,
    };
  } catch (e) {
    await out.abort();
    throw e;
  } finally {
    pool.close();
  }
}

/** Where the VMCOREINFO text sits inside a notes area, for `vmcoreinfoInNotes`. */
function vmcoreinfoPlace(notes: Uint8Array, le: boolean): { vmcoreinfoInNotes?: number } {
  const n = parseNotes(notes, 0, le).find((x) => x.kind === "vmcoreinfo");
  return n === undefined ? {} : { vmcoreinfoInNotes: n.desc.byteOffset - notes.byteOffset };
}
