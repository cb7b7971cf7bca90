/**
 * Reads ELF core dumps (QEMU `dump-guest-memory`, /proc/vmcore copies,
 * makedumpfile `-E` output, our own rewrites): headers, notes and a checked
 * view of every PT_LOAD, then streams segment bytes on demand.
 *
 * Handles ELF32 and ELF64 in both byte orders, QEMU's layouts before 7.2
 * (program headers right after the ELF header) and from 7.2 (section headers
 * first, `e_ehsize` = 8), and extended numbering (`e_phnum` = PN_XNUM with the
 * real count in section header 0). Every size and offset is checked against
 * the file before anything is allocated from it.
 *
 * @module
 */

import { FormatError, UnsupportedFeatureError } from "../errors.ts";
import { viewOf } from "../io/endian.ts";
import { openPositional, type PositionalReader, readAt } from "../io/positional.ts";
import { ET_CORE, EV_CURRENT, PN_XNUM, PT_LOAD, PT_NOTE, PT_NULL } from "./constants.ts";
import { ehdrLayout, ehdrSize, type ElfHeader, readEhdr } from "./ehdr.ts";
import { type ElfNote, parseNotes } from "./note.ts";
import { type ElfPhdr, phdrLayout, phdrSize, readPhdr } from "./phdr.ts";
import { type ElfShdr, readShdr, shdrLayout, shdrSize } from "./shdr.ts";

/** A PT_LOAD with its fields checked and converted to numbers. */
export interface LoadSegment {
  /** Index of the program header (0-based, in file order). */
  index: number;
  /** The program header as stored. */
  phdr: ElfPhdr;
  /**
   * Guest-physical address (`p_paddr`), or `undefined` when it cannot be a
   * physical address (all-ones sentinel, or the range would pass 2^53).
   */
  gpa: number | undefined;
  /** `p_memsz`: bytes of guest memory the segment describes. */
  byteLength: number;
  /** `p_offset` when the segment has file bytes, else `undefined` (QEMU paging-mode `-1`). */
  fileOffset: number | undefined;
  /** `p_filesz`: bytes present in the file (the rest of `byteLength` reads as zeros). */
  fileByteLength: number;
}

/** A PT_NOTE segment and its raw bytes. */
export interface NoteSegment {
  /** Index of the program header. */
  index: number;
  /** `p_offset`. */
  fileOffset: number;
  /** The segment bytes, exactly as in the file. */
  bytes: Uint8Array<ArrayBuffer>;
}

/** How the file is laid out: what tells producers apart. */
export interface ElfCoreLayout {
  /** Section headers come before the program headers (QEMU >= 7.2). */
  sectionHeadersFirst: boolean;
  /** `e_ehsize` is not the size of the header (QEMU >= 7.2 writes 8). */
  ehdrByteLengthQuirk: boolean;
  /** `e_phnum` is PN_XNUM and the real count came from section header 0. */
  extendedNumbering: boolean;
  /** End of the ELF header, program headers and section headers that precede the data. */
  headersEnd: number;
}

/** A parsed ELF core file. */
export interface ElfCore {
  /** The input. */
  reader: PositionalReader;
  /** File size. */
  byteLength: number;
  /** The ELF header as stored. */
  ehdr: ElfHeader;
  /** The real number of program headers (resolved through PN_XNUM). */
  phdrCount: number;
  /** All program headers in file order. */
  phdrs: ElfPhdr[];
  /** All section headers (empty when there are none). */
  shdrs: ElfShdr[];
  /** Every PT_NOTE segment with its bytes. */
  noteSegments: NoteSegment[];
  /** Notes of all PT_NOTE segments, in file order. */
  notes: ElfNote[];
  /** Checked PT_LOAD segments, in program header order. */
  loads: LoadSegment[];
  /** Layout facts. */
  layout: ElfCoreLayout;
  /** Close the input if {@linkcode readElfCore} opened it (a path was given). Safe to call twice. */
  close(): void;
  /** Same as `close()`. */
  [Symbol.dispose](): void;
}

/** Options for {@linkcode readElfCore}. */
export interface ReadElfCoreOptions {
  /** Largest PT_NOTE segment accepted. @default {67108864} */
  maxNoteByteLength?: number;
  /** Largest program header count accepted. @default {16777216} */
  maxPhdrCount?: number;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function elfError(message: string, code: FormatError["code"], offset: number): FormatError {
  return new FormatError(message, { format: "elf", code, offset });
}

/**
 * Read the headers and notes of an ELF core dump and check its segments.
 * No segment data is read: use {@linkcode iterateLoadData} or
 * {@linkcode iterateGpaRange} for that.
 *
 * Checks (each failure is a {@linkcode FormatError} with the offset of the
 * offending field): magic, class, byte order, versions, `e_type` = ET_CORE,
 * program header entry size, the program header table (and section header 0
 * for PN_XNUM) inside the file, every PT_LOAD's `p_filesz <= p_memsz` and file
 * range inside the file, no PT_LOAD bytes on top of the headers or notes, no
 * two PT_LOADs that give the same file bytes different addresses or the same
 * identity-mapped memory different bytes, notes that fit their segment.
 * `e_ehsize` is ignored (QEMU >= 7.2 writes 8).
 *
 * @param source A file path, or an open {@linkcode PositionalReader} (which
 *   stays open after `close()`).
 * @param options Size limits.
 * @returns The parsed core; call `close()` when done.
 * @throws {FormatError} for an invalid file.
 * @throws {UnexpectedEofError} when the headers are truncated.
 * @throws {UnsupportedFeatureError} for sizes past the limits.
 *
 * @example List the memory of a dump
 * ```ts ignore
 * import { readElfCore } from "@vmem-dump/vmem-dump/elf";
 * using core = await readElfCore("s2-holes-100M.elf");
 * for (const s of core.loads) console.log(s.gpa?.toString(16), s.byteLength);
 * console.log(core.notes.map((n) => n.name)); // ["CORE", "QEMU", "VMCOREINFO"]
 * ```
 */
export async function readElfCore(
  source: string | PositionalReader,
  options: ReadElfCoreOptions = {},
): Promise<ElfCore> {
  const owned = typeof source === "string";
  const reader = owned ? await openPositional(source) : source;
  try {
    return await parseCore(reader, owned, options);
  } catch (e) {
    if (owned) reader.close();
    throw e;
  }
}

async function parseCore(
  reader: PositionalReader,
  owned: boolean,
  options: ReadElfCoreOptions,
): Promise<ElfCore> {
  const byteLength = reader.byteLength;
  const maxNote = options.maxNoteByteLength ?? 64 << 20;
  const maxPhdrs = options.maxPhdrCount ?? 1 << 24;

  const head = new Uint8Array(64);
  const got = await reader.readInto(0, head);
  const ehdr = readEhdr(head.subarray(0, got));
  const { elfClass, littleEndian: le } = ehdr;
  const ehSize = ehdrSize(elfClass);
  // Error offsets come from the header's field table.
  const ef = ehdrLayout(elfClass).fields;

  if (ehdr.type !== ET_CORE) {
    throw elfError(
      `Cannot read ELF core: e_type is ${ehdr.type}, not ET_CORE (4)`,
      "bad-header",
      ef.type.offset,
    );
  }
  if (ehdr.version !== EV_CURRENT) {
    throw elfError(
      `Cannot read ELF core: e_version is ${ehdr.version}`,
      "bad-version",
      ef.version.offset,
    );
  }
  const phEntSize = phdrSize(elfClass);
  const at = {
    phoff: ef.phdrFileOffset.offset,
    shoff: ef.shdrFileOffset.offset,
    phentsize: ef.phdrEntrySize.offset,
    phnum: ef.phdrCount.offset,
    shentsize: ef.shdrEntrySize.offset,
  };

  // Section headers: needed for PN_XNUM; read when present so the layout is known.
  const shEntSize = shdrSize(elfClass);
  let shdrs: ElfShdr[] = [];
  let shdrTableEnd = 0;
  const wantShdrs = ehdr.shdrFileOffset !== 0 && (ehdr.shdrCount > 0 || ehdr.phdrCount === PN_XNUM);
  if (wantShdrs) {
    if (ehdr.shdrEntrySize !== shEntSize) {
      throw elfError(
        `Cannot read ELF core: e_shentsize is ${ehdr.shdrEntrySize}, expected ${shEntSize}`,
        "bad-header",
        at.shentsize,
      );
    }
    if (ehdr.shdrFileOffset < ehSize || ehdr.shdrFileOffset + shEntSize > byteLength) {
      throw elfError(
        `Cannot read ELF core: section header table at 0x${ehdr.shdrFileOffset.toString(16)} ` +
          `is outside the file of ${byteLength} bytes`,
        "out-of-range",
        at.shoff,
      );
    }
    const first = readShdr(
      viewOf(await readAt(reader, { fileOffset: ehdr.shdrFileOffset, byteLength: shEntSize })),
      0,
      elfClass,
      le,
    );
    let count = ehdr.shdrCount;
    if (count === 0) {
      // e_shnum escape: the real count is in sh_size of section 0 (or there is only section 0).
      count = first.byteLength > 0n && first.byteLength <= MAX_SAFE ? Number(first.byteLength) : 1;
    }
    if (count > 0x10000 || ehdr.shdrFileOffset + count * shEntSize > byteLength) {
      throw elfError(
        `Cannot read ELF core: ${count} section headers at 0x${ehdr.shdrFileOffset.toString(16)} ` +
          `run past the end of the file (${byteLength} bytes)`,
        "out-of-range",
        at.shoff,
      );
    }
    const table = viewOf(
      await readAt(reader, { fileOffset: ehdr.shdrFileOffset, byteLength: count * shEntSize }),
    );
    shdrs = Array.from({ length: count }, (_, i) => readShdr(table, i * shEntSize, elfClass, le));
    shdrTableEnd = ehdr.shdrFileOffset + count * shEntSize;
  }

  let phdrCount = ehdr.phdrCount;
  const extendedNumbering = ehdr.phdrCount === PN_XNUM;
  let countFieldOffset = at.phnum;
  if (extendedNumbering) {
    const zero = shdrs[0];
    if (zero === undefined) {
      throw elfError(
        "Cannot read ELF core: e_phnum is PN_XNUM but there is no section header 0 with the real count",
        "bad-header",
        at.phnum,
      );
    }
    phdrCount = zero.info;
    countFieldOffset = ehdr.shdrFileOffset + shdrLayout(elfClass).fields.info.offset;
  }
  if (phdrCount > 0 && ehdr.phdrEntrySize !== phEntSize) {
    throw elfError(
      `Cannot read ELF core: e_phentsize is ${ehdr.phdrEntrySize}, expected ${phEntSize}`,
      "bad-header",
      at.phentsize,
    );
  }
  if (phdrCount > maxPhdrs) {
    throw new UnsupportedFeatureError(
      `Cannot read ELF core: ${phdrCount} program headers, more than the limit of ${maxPhdrs}`,
      "elf",
      countFieldOffset,
    );
  }
  const phoff = ehdr.phdrFileOffset;
  const phTableBytes = phdrCount * phEntSize;
  if (
    phdrCount > 0 && (phoff < ehSize || phoff > byteLength || phTableBytes > byteLength - phoff)
  ) {
    throw elfError(
      `Cannot read ELF core: ${phdrCount} program headers at 0x${phoff.toString(16)} ` +
        `do not fit in the file of ${byteLength} bytes`,
      "out-of-range",
      phoff < ehSize || phoff > byteLength ? at.phoff : countFieldOffset,
    );
  }
  // No program headers: e_phoff means nothing then (it may point anywhere), so nothing is read there.
  const phTable = phdrCount === 0
    ? new DataView(new ArrayBuffer(0))
    : viewOf(await readAt(reader, { fileOffset: phoff, byteLength: phTableBytes }));
  const phdrs: ElfPhdr[] = [];
  for (let i = 0; i < phdrCount; i++) phdrs.push(readPhdr(phTable, i * phEntSize, elfClass, le));

  // Regions that segment data must not overlap.
  const headerRegions: Array<[number, number, string]> = [[0, ehSize, "the ELF header"]];
  if (phdrCount > 0) headerRegions.push([phoff, phoff + phTableBytes, "the program headers"]);
  if (shdrTableEnd > 0) {
    headerRegions.push([ehdr.shdrFileOffset, shdrTableEnd, "the section headers"]);
  }

  const pf = phdrLayout(elfClass).fields;
  const fields = {
    fileOffset: pf.fileOffset.offset,
    paddr: pf.paddr.offset,
    fileByteLength: pf.fileByteLength.offset,
    memByteLength: pf.memByteLength.offset,
  };
  const loads: LoadSegment[] = [];
  const noteSegments: NoteSegment[] = [];
  const notes: ElfNote[] = [];
  let noteTotal = 0;
  for (let i = 0; i < phdrs.length; i++) {
    const p = phdrs[i]!;
    const base = phoff + i * phEntSize;
    if (p.type === PT_NULL) continue;
    if (p.type === PT_NOTE) {
      if (p.fileByteLength === 0n) continue;
      const size = checkedNumber(p.fileByteLength, "p_filesz", base + fields.fileByteLength);
      if (size > maxNote || noteTotal + size > maxNote) {
        throw new UnsupportedFeatureError(
          `Cannot read ELF notes: PT_NOTE of ${size} bytes is larger than the limit of ${maxNote}`,
          "elf",
          base + fields.fileByteLength,
        );
      }
      const fileOffset = checkedNumber(p.fileOffset, "p_offset", base + fields.fileOffset);
      if (fileOffset > byteLength || size > byteLength - fileOffset) {
        throw elfError(
          `Cannot read ELF notes: PT_NOTE 0x${fileOffset.toString(16)}+0x${size.toString(16)} ` +
            `runs past the end of the file (${byteLength} bytes)`,
          "out-of-range",
          base + fields.fileOffset,
        );
      }
      checkNotOnHeaders(headerRegions, fileOffset, size, `PT_NOTE ${i}`, base + fields.fileOffset);
      const bytes = await readAt(reader, { fileOffset, byteLength: size });
      noteTotal += size;
      noteSegments.push({ index: i, fileOffset, bytes });
      notes.push(...parseNotes(bytes, fileOffset, le));
      continue;
    }
    if (p.type !== PT_LOAD) continue;
    const byteLen = checkedNumber(p.memByteLength, "p_memsz", base + fields.memByteLength);
    const fileLen = checkedNumber(p.fileByteLength, "p_filesz", base + fields.fileByteLength);
    if (fileLen > byteLen) {
      throw elfError(
        `Cannot read PT_LOAD ${i}: p_filesz 0x${fileLen.toString(16)} exceeds p_memsz 0x${
          byteLen.toString(16)
        }`,
        "bad-segment",
        base + fields.fileByteLength,
      );
    }
    let fileOffset: number | undefined;
    if (fileLen > 0) {
      fileOffset = checkedNumber(p.fileOffset, "p_offset", base + fields.fileOffset);
      if (fileOffset > byteLength || fileLen > byteLength - fileOffset) {
        throw elfError(
          `Cannot read PT_LOAD ${i}: file bytes 0x${fileOffset.toString(16)}+0x${
            fileLen.toString(16)
          } ` +
            `run past the end of the file (${byteLength} bytes)`,
          "out-of-range",
          base + fields.fileOffset,
        );
      }
      checkNotOnHeaders(
        headerRegions,
        fileOffset,
        fileLen,
        `PT_LOAD ${i}`,
        base + fields.fileOffset,
      );
    }
    const gpa = p.paddr + BigInt(byteLen) <= MAX_SAFE ? Number(p.paddr) : undefined;
    loads.push({
      index: i,
      phdr: p,
      gpa,
      byteLength: byteLen,
      fileOffset,
      fileByteLength: fileLen,
    });
  }
  // Notes and segment data must not share bytes.
  for (const n of noteSegments) {
    for (const s of loads) {
      if (s.fileOffset === undefined) continue;
      if (
        s.fileOffset < n.fileOffset + n.bytes.byteLength &&
        n.fileOffset < s.fileOffset + s.fileByteLength
      ) {
        throw elfError(
          `Cannot read PT_LOAD ${s.index}: its file bytes overlap the notes of PT_NOTE ${n.index}`,
          "bad-segment",
          phoff + s.index * phEntSize + fields.fileOffset,
        );
      }
    }
  }
  checkLoadOverlaps(
    loads,
    (s) => phoff + s.index * phEntSize + fields.fileOffset,
    (s) => phoff + s.index * phEntSize + fields.paddr,
  );

  const headersEnd = Math.max(...headerRegions.map(([, end]) => end));
  let closed = !owned;
  const close = () => {
    if (closed) return;
    closed = true;
    reader.close();
  };
  return {
    reader,
    byteLength,
    ehdr,
    phdrCount,
    phdrs,
    shdrs,
    noteSegments,
    notes,
    loads,
    layout: {
      sectionHeadersFirst: shdrTableEnd > 0 && ehdr.shdrFileOffset < phoff,
      ehdrByteLengthQuirk: ehdr.ehdrByteLength !== ehSize,
      extendedNumbering,
      headersEnd,
    },
    close,
    [Symbol.dispose]: close,
  };
}

function checkedNumber(value: bigint, field: string, offset: number): number {
  if (value > MAX_SAFE) {
    throw elfError(
      `Cannot use ${field} 0x${value.toString(16)}: it exceeds 2^53`,
      "too-large",
      offset,
    );
  }
  return Number(value);
}

function checkNotOnHeaders(
  regions: Array<[number, number, string]>,
  fileOffset: number,
  byteLength: number,
  what: string,
  errorOffset: number,
): void {
  for (const [start, end, name] of regions) {
    if (fileOffset < end && start < fileOffset + byteLength) {
      throw elfError(
        `Cannot read ${what}: its file bytes 0x${fileOffset.toString(16)}+0x${
          byteLength.toString(16)
        } overlap ${name}`,
        "bad-segment",
        errorOffset,
      );
    }
  }
}

/**
 * Reject PT_LOADs that contradict each other:
 * - file overlap: the same file bytes must stand for the same physical
 *   addresses (paging-mode dumps map one physical page several times, with
 *   the same `p_offset - p_paddr`);
 * - physical overlap of two segments with the same virtual-physical delta
 *   (identity-mapped memory described twice) must point at the same file bytes.
 * Segments with different virtual deltas may share physical memory (the
 * kernel-text segment of /proc/vmcore, paging-mode aliases).
 */
function checkLoadOverlaps(
  loads: LoadSegment[],
  fileFieldAt: (s: LoadSegment) => number,
  paddrFieldAt: (s: LoadSegment) => number,
): void {
  const delta = (s: LoadSegment) => BigInt(s.fileOffset ?? 0) - s.phdr.paddr;
  const vdelta = (s: LoadSegment) => s.phdr.vaddr - s.phdr.paddr;

  const byFile = loads.filter((s) => s.fileOffset !== undefined)
    .sort((a, b) => a.fileOffset! - b.fileOffset! || a.index - b.index);
  let reach: LoadSegment | undefined;
  for (const s of byFile) {
    if (reach !== undefined && s.fileOffset! < reach.fileOffset! + reach.fileByteLength) {
      if (delta(s) !== delta(reach)) {
        throw elfError(
          `Cannot read PT_LOAD ${s.index}: its file bytes overlap those of PT_LOAD ${reach.index} ` +
            `for a different physical address`,
          "bad-segment",
          fileFieldAt(s),
        );
      }
    }
    if (
      reach === undefined ||
      s.fileOffset! + s.fileByteLength > reach.fileOffset! + reach.fileByteLength
    ) {
      reach = s;
    }
  }

  const byGpa = loads.filter((s) => s.gpa !== undefined && s.byteLength > 0)
    .sort((a, b) => a.gpa! - b.gpa! || a.index - b.index);
  let top: LoadSegment | undefined;
  for (const s of byGpa) {
    if (top !== undefined && s.gpa! < top.gpa! + top.byteLength && vdelta(s) === vdelta(top)) {
      // Same identity: the overlapping bytes must be the same file bytes (or both absent).
      const lo = s.gpa!;
      const hi = Math.min(s.gpa! + s.byteLength, top.gpa! + top.byteLength);
      const sFile = Math.min(hi, s.gpa! + s.fileByteLength) - lo;
      const tFile = Math.min(hi, top.gpa! + top.fileByteLength) - lo;
      const consistent = (sFile <= 0 && tFile <= 0) ||
        (sFile === tFile && delta(s) === delta(top));
      if (!consistent) {
        throw elfError(
          `Cannot read PT_LOAD ${s.index}: it describes memory at gpa 0x${lo.toString(16)} ` +
            `that PT_LOAD ${top.index} also describes, with other bytes`,
          "bad-segment",
          paddrFieldAt(s),
        );
      }
    }
    if (top === undefined || s.gpa! + s.byteLength > top.gpa! + top.byteLength) top = s;
  }
}

/** Options for {@linkcode iterateLoadData} and {@linkcode iterateGpaRange}. */
export interface IterateOptions {
  /** Largest chunk handed out. @default {4194304} */
  chunkSize?: number;
}

/** A run of PT_LOAD file bytes. */
export interface SegmentDataChunk {
  /** Record kind. */
  kind: "segment-data";
  /** Program header index of the segment. */
  segmentIndex: number;
  /** Guest-physical address of `data[0]`, or `undefined` for a non-physical segment. */
  gpa: number | undefined;
  /** File offset of `data[0]`. */
  fileOffset: number;
  /** The bytes: a view into a buffer that is reused for the next chunk. Copy to keep. */
  data: Uint8Array;
}

/**
 * Stream the file bytes of every PT_LOAD, segment after segment in ascending
 * file offset, in chunks of at most `chunkSize` bytes. Zero-fill tails
 * (`p_memsz > p_filesz`) are not included.
 *
 * @param core A parsed core.
 * @param options Chunk size.
 * @returns Chunks in file order.
 * @throws {UnexpectedEofError} when the file shrank since it was parsed.
 *
 * @example Count the bytes of every segment
 * ```ts ignore
 * import { iterateLoadData, readElfCore } from "@vmem-dump/vmem-dump/elf";
 * using core = await readElfCore("dump.elf");
 * let n = 0;
 * for await (const chunk of iterateLoadData(core)) n += chunk.data.byteLength;
 * ```
 */
export async function* iterateLoadData(
  core: ElfCore,
  options: IterateOptions = {},
): AsyncGenerator<SegmentDataChunk> {
  const chunkSize = options.chunkSize ?? 4 << 20;
  const ordered = core.loads.filter((s) => s.fileOffset !== undefined && s.fileByteLength > 0)
    .sort((a, b) => a.fileOffset! - b.fileOffset! || a.index - b.index);
  const buf = new Uint8Array(Math.min(chunkSize, maxFileByteLength(ordered)));
  for (const s of ordered) {
    for (let done = 0; done < s.fileByteLength;) {
      const n = Math.min(buf.byteLength, s.fileByteLength - done);
      const fileOffset = s.fileOffset! + done;
      await fill(core, fileOffset, buf.subarray(0, n));
      yield {
        kind: "segment-data",
        segmentIndex: s.index,
        gpa: s.gpa === undefined ? undefined : s.gpa + done,
        fileOffset,
        data: buf.subarray(0, n),
      };
      done += n;
    }
  }
}

function maxFileByteLength(segments: LoadSegment[]): number {
  let m = 0;
  for (const s of segments) m = Math.max(m, s.fileByteLength);
  return m;
}

async function fill(core: ElfCore, fileOffset: number, into: Uint8Array): Promise<void> {
  const n = await core.reader.readInto(fileOffset, into);
  if (n < into.byteLength) {
    throw new FormatError(
      `Cannot read segment bytes at 0x${
        fileOffset.toString(16)
      }: the file ended after ${n} of ${into.byteLength} bytes`,
      { format: "elf", code: "unexpected-eof", offset: fileOffset + n },
    );
  }
}

/** Where a piece of a guest-physical range is in a dump, without its bytes. */
export type GpaPiece =
  /** File bytes of a PT_LOAD: `byteLength` bytes at `fileOffset`. */
  | { kind: "data"; gpa: number; byteLength: number; segmentIndex: number; fileOffset: number }
  /** Inside a PT_LOAD but past its file bytes: reads as zeros. */
  | { kind: "zero"; gpa: number; byteLength: number; segmentIndex: number }
  /** No PT_LOAD describes this memory. */
  | { kind: "absent"; gpa: number; byteLength: number };

/** What a guest-physical range looks like in a dump, piece by piece. */
export type GpaChunk =
  /** File bytes of a PT_LOAD. `data` is reused for the next chunk: copy to keep. */
  | {
    kind: "data";
    gpa: number;
    byteLength: number;
    segmentIndex: number;
    fileOffset: number;
    data: Uint8Array;
  }
  /** Inside a PT_LOAD but past its file bytes: reads as zeros. */
  | { kind: "zero"; gpa: number; byteLength: number; segmentIndex: number }
  /** No PT_LOAD describes this memory. */
  | { kind: "absent"; gpa: number; byteLength: number };

/** Disjoint physical pieces of a core, sorted by gpa (lower-starting segment wins overlaps). */
interface PhysPiece {
  gpa: number;
  end: number;
  segment: LoadSegment;
}

const physMaps = new WeakMap<ElfCore, PhysPiece[]>();

function physMap(core: ElfCore): PhysPiece[] {
  let map = physMaps.get(core);
  if (map) return map;
  map = [];
  const sorted = core.loads.filter((s) => s.gpa !== undefined && s.byteLength > 0)
    .sort((a, b) => a.gpa! - b.gpa! || a.index - b.index);
  let covered = -1;
  for (const s of sorted) {
    const end = s.gpa! + s.byteLength;
    const start = Math.max(s.gpa!, covered);
    if (start < end) map.push({ gpa: start, end, segment: s });
    covered = Math.max(covered, end);
  }
  physMaps.set(core, map);
  return map;
}

/**
 * Plan a guest-physical range of a dump without reading it: `data` pieces
 * (where a PT_LOAD has file bytes, whole, not split into chunks), `zero`
 * where a PT_LOAD's zero-fill tail covers it, `absent` where no PT_LOAD does.
 * Where PT_LOADs overlap, the one that starts lower wins. This is the plan
 * {@linkcode iterateGpaRange} reads; use it to read with your own buffers.
 *
 * @param core A parsed core.
 * @param range Guest-physical start and byte length.
 * @returns The pieces of the range, in ascending gpa, covering it exactly.
 * @throws {RangeError} when the range is not made of safe non-negative integers.
 *
 * @example Count the zero-fill bytes of a range
 * ```ts ignore
 * import { planGpaRange, readElfCore } from "@vmem-dump/vmem-dump/elf";
 * using core = await readElfCore("old-qemu.elf");
 * let zero = 0;
 * for (const p of planGpaRange(core, { gpa: 0x100000000, byteLength: 0x10000000 })) {
 *   if (p.kind === "zero") zero += p.byteLength;
 * }
 * ```
 */
export function* planGpaRange(
  core: ElfCore,
  range: { gpa: number; byteLength: number },
): Generator<GpaPiece> {
  const { gpa, byteLength } = range;
  if (
    !Number.isSafeInteger(gpa) || !Number.isSafeInteger(byteLength) || gpa < 0 || byteLength < 0
  ) {
    throw new RangeError(
      `Cannot walk gpa range ${gpa}+${byteLength}: not safe non-negative integers`,
    );
  }
  const map = physMap(core);
  const end = gpa + byteLength;
  // First piece whose end is past gpa.
  let lo = 0;
  let hi = map.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (map[mid]!.end <= gpa) lo = mid + 1;
    else hi = mid;
  }
  let at = gpa;
  for (let i = lo; i < map.length && at < end; i++) {
    const piece = map[i]!;
    if (piece.gpa >= end) break;
    if (piece.gpa > at) {
      yield { kind: "absent", gpa: at, byteLength: piece.gpa - at };
      at = piece.gpa;
    }
    const s = piece.segment;
    const stop = Math.min(end, piece.end);
    const fileEnd = s.fileOffset === undefined ? s.gpa! : s.gpa! + s.fileByteLength;
    if (at < Math.min(stop, fileEnd)) {
      const n = Math.min(stop, fileEnd) - at;
      const fileOffset = s.fileOffset! + (at - s.gpa!);
      yield { kind: "data", gpa: at, byteLength: n, segmentIndex: s.index, fileOffset };
      at += n;
    }
    if (at < stop) {
      yield { kind: "zero", gpa: at, byteLength: stop - at, segmentIndex: s.index };
      at = stop;
    }
  }
  if (at < end) yield { kind: "absent", gpa: at, byteLength: end - at };
}

/**
 * Walk a guest-physical range of a dump: file bytes where a PT_LOAD has them,
 * `zero` where a PT_LOAD's zero-fill tail covers it, `absent` where no PT_LOAD
 * does. Where PT_LOADs overlap, the one that starts lower wins. Data chunks
 * are at most `chunkSize` bytes; ranges are reported in ascending gpa. The
 * pieces are those of {@linkcode planGpaRange}, with data split into chunks.
 *
 * @param core A parsed core.
 * @param range Guest-physical start and byte length.
 * @param options Chunk size.
 * @returns The pieces of the range, in order, covering it exactly.
 * @throws {UnexpectedEofError} when the file shrank since it was parsed.
 *
 * @example Look for non-zero bytes in an unplugged block
 * ```ts ignore
 * import { iterateGpaRange, readElfCore } from "@vmem-dump/vmem-dump/elf";
 * using core = await readElfCore("old-qemu.elf");
 * for await (const c of iterateGpaRange(core, { gpa: 0x101c00000, byteLength: 0x200000 })) {
 *   if (c.kind === "data" && c.data.some((b) => b !== 0)) console.log("data at", c.gpa.toString(16));
 * }
 * ```
 */
export async function* iterateGpaRange(
  core: ElfCore,
  range: { gpa: number; byteLength: number },
  options: IterateOptions = {},
): AsyncGenerator<GpaChunk> {
  const chunkSize = options.chunkSize ?? 4 << 20;
  let buf: Uint8Array | undefined;
  for (const p of planGpaRange(core, range)) {
    if (p.kind !== "data") {
      yield p;
      continue;
    }
    for (let done = 0; done < p.byteLength;) {
      const n = Math.min(chunkSize, p.byteLength - done);
      buf ??= new Uint8Array(Math.min(chunkSize, range.byteLength));
      const fileOffset = p.fileOffset + done;
      const data = buf.subarray(0, n);
      await fill(core, fileOffset, data);
      yield {
        kind: "data",
        gpa: p.gpa + done,
        byteLength: n,
        segmentIndex: p.segmentIndex,
        fileOffset,
        data,
      };
      done += n;
    }
  }
}

/**
 * The bytes of every PT_NOTE segment of a core, back to back in file order
 * (what a rewrite puts into its single PT_NOTE).
 *
 * @param core A parsed core.
 * @returns The notes area.
 *
 * @example
 * ```ts ignore
 * import { concatNoteSegments, readElfCore } from "@vmem-dump/vmem-dump/elf";
 * using core = await readElfCore("dump.elf");
 * console.log(concatNoteSegments(core).byteLength);
 * ```
 */
export function concatNoteSegments(core: ElfCore): Uint8Array {
  if (core.noteSegments.length === 1) return core.noteSegments[0]!.bytes;
  const total = core.noteSegments.reduce((n, s) => n + s.bytes.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const s of core.noteSegments) {
    out.set(s.bytes, at);
    at += s.bytes.byteLength;
  }
  return out;
}
