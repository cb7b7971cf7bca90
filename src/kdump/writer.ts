/**
 * Writes kdump-compressed files (makedumpfile's format, header version 6)
 * from pages handed in ascending pfn order, plain or in the flattened
 * container.
 *
 * The plain format puts both bitmaps and every page descriptor before the
 * page data, and a descriptor holds the compressed size of its page, so a
 * plain file cannot be written front to back. The writer reserves room for
 * an upper bound of descriptors, writes descriptors and data into their
 * regions as pages arrive, and writes the headers and bitmaps last. When
 * fewer pages were kept than reserved (zero pages left out), the data is
 * moved down over the unused reserve at the end, so the file has no gap.
 * Memory: the two bitmaps (one bit per pfn) and fixed-size buffers.
 *
 * @module
 */

import { clearBitRange } from "../io/bits.ts";
import { viewOf } from "../io/endian.ts";
import { getWireUint, setWireUint } from "../io/wire.ts";
import {
  type DiskDumpHeader,
  KDUMP_SIGNATURE,
  type KdumpSubHeader,
  kdumpSubHeaderSize,
  type KdumpUtsname,
  writeDiskDumpHeader,
  writeKdumpSubHeader,
} from "./header.ts";
import { MAKEDUMPFILE_DATA_HEADER, MAKEDUMPFILE_HEADER, MAX_SIZE_MDF_HEADER } from "./flattened.ts";
import { PAGE_DESC, PAGE_DESC_SIZE } from "./page_desc.ts";

/** Where a kdump writer puts bytes: anywhere, in any order. */
export interface KdumpSink {
  /** Write all of `bytes` at `fileOffset`. */
  writeAt(fileOffset: number, bytes: Uint8Array): Promise<void>;
  /** Read back (for the final compaction); absent: the unused reserve stays as a gap. */
  readAt?(fileOffset: number, into: Uint8Array): Promise<number>;
  /** Cut the file (after compaction). */
  truncate?(byteLength: number): Promise<void>;
  /** Called once after the last write. */
  close?(): Promise<void>;
}

/** What {@linkcode KdumpWriter} writes into the headers. */
export interface KdumpWriterOptions {
  /** Word size of the dumped machine. @default {8} */
  wordSize?: 8 | 4;
  /** Byte order of the dumped machine. @default {true} */
  littleEndian?: boolean;
  /** Page size. */
  blockSize: number;
  /** Pfns covered by the bitmaps. */
  maxMapnr: number;
  /** 1st bitmap: pages that exist (`ceil(maxMapnr / 8)` bytes, LSB first). Kept, not copied. */
  present: Uint8Array;
  /** Upper bound of pages that {@linkcode KdumpWriter.addPage} will be given. */
  maxPageCount: number;
  /** `utsname` of the dumped kernel. */
  utsname: KdumpUtsname;
  /** `status` compression bit (`DUMP_DH_COMPRESSED_*`) naming the codec of the pages. */
  status: number;
  /** `nr_cpus`. @default {1} */
  nrCpus?: number;
  /** `current_cpu`. @default {0} */
  currentCpu?: number;
  /** `timestamp.tv_sec`. @default {0} */
  timestampSeconds?: number;
  /** `timestamp.tv_usec` (with `tv_sec`, what tells the files of one split run from another's). @default {0} */
  timestampMicroseconds?: number;
  /** `phys_base`. @default {0n} */
  physBase?: bigint;
  /** `dump_level` (makedumpfile `-d`). @default {0} */
  dumpLevel?: number;
  /** ELF notes (the notes area), copied as they are. @default {empty} */
  notes?: Uint8Array;
  /** VMCOREINFO text, stored after the notes unless `vmcoreinfoInNotes` says where it is. @default {none} */
  vmcoreinfo?: Uint8Array;
  /**
   * Offset of the VMCOREINFO text inside `notes` (the descriptor of its
   * VMCOREINFO note): `offset_vmcoreinfo` then points there, as in
   * makedumpfile's and QEMU's files (makedumpfile expects it when it
   * re-filters a dump). @default {undefined}
   */
  vmcoreinfoInNotes?: number;
  /** makedumpfile erase information, stored after VMCOREINFO. @default {none} */
  eraseinfo?: Uint8Array;
  /**
   * For one file of a split dump (makedumpfile `--split`): its pfn range,
   * and the 2nd bitmap of the whole set (`ceil(maxMapnr / 8)` bytes). Every
   * file of a set carries the set's 2nd bitmap; readers (crash, makedumpfile
   * `--reassemble`) take the pages of other files from it. Pages given to
   * {@linkcode KdumpWriter.addPage} must lie in the range; the bits outside
   * it are written from `dumpable` (which must be a subset of `present`
   * there). Without `dumpable` only this file's pages are marked.
   * @default {undefined}
   */
  split?: { startPfn: number; endPfn: number; dumpable?: Uint8Array };
  /** How many bytes of page data to gather per write. @default {4194304} */
  bufferByteLength?: number;
}

/** What a finished {@linkcode KdumpWriter} wrote. */
export interface KdumpWriteResult {
  /** Size of the file. */
  byteLength: number;
  /** Pages written (descriptors). */
  pageCount: number;
  /** Bytes of page data. */
  dataByteLength: number;
  /** File offset of the descriptor table. */
  descTableOffset: number;
  /** File offset of the page data. */
  dataOffset: number;
  /** Bytes of unused descriptor reserve left as a gap (only when the sink cannot read back). */
  gapByteLength: number;
}

/**
 * A kdump-compressed file being written. Give pages with
 * {@linkcode addPage} in ascending pfn order (each already compressed, with
 * its `DUMP_DH_COMPRESSED_*` flag, or 0 for a page stored as is), call
 * {@linkcode drain} now and then, then {@linkcode finish}.
 *
 * @example Two pages, one stored as is and one sharing the zero page
 * ```ts
 * import { KdumpWriter, readKdump } from "@vmem-dump/vmem-dump/kdump";
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * const file = new Uint8Array(1 << 16);
 * let size = 0;
 * const sink = {
 *   writeAt(at: number, b: Uint8Array) { file.set(b, at); size = Math.max(size, at + b.length); return Promise.resolve(); },
 * };
 * const present = new Uint8Array(1).fill(0b11);
 * const w = new KdumpWriter(sink, {
 *   blockSize: 4096, maxMapnr: 8, present, maxPageCount: 2, status: 0,
 *   utsname: { sysname: "Linux", nodename: "", release: "", version: "", machine: "x86_64", domainname: "" },
 * });
 * w.addPage(0, new Uint8Array(4096).fill(1), 0);
 * w.addZeroPage(1);
 * await w.finish();
 * using dump = await readKdump(bytesPositional(file.subarray(0, size)));
 * console.log((await dump.readPage(0))![0], (await dump.readPage(1))![0]); // 1 0
 * ```
 */
export class KdumpWriter {
  readonly #sink: KdumpSink;
  readonly #o: KdumpWriterOptions;
  readonly #B: number;
  readonly #le: boolean;
  readonly #wordSize: 8 | 4;
  readonly #dumpable: Uint8Array;
  readonly #mapBlocks: number;
  readonly #subHdrSize: number;
  readonly #descTableOffset: number;
  readonly #dataStart: number;
  readonly #bufferSize: number;
  #descs: Uint8Array;
  #descView: DataView;
  #descCount = 0; // in #descs
  #pageCount = 0; // total
  #data: Uint8Array;
  #dataFill = 0;
  #dataEnd: number; // file offset after the last byte of data handed in
  #lastPfn = -1;
  #zeroOffset = -1;
  #finished = false;
  // Shared page data by caller key: the first keys for good, the latest ones in a small window.
  #sharedFirst = new Map<number, [number, number, number]>();
  #sharedRecent = new Map<number, [number, number, number]>();

  /**
   * Start a file: computes the layout, writes nothing yet.
   *
   * @param sink Where bytes go.
   * @param options Header contents, bitmap, and the page count bound.
   * @throws {RangeError} for inconsistent sizes.
   */
  constructor(sink: KdumpSink, options: KdumpWriterOptions) {
    this.#sink = sink;
    this.#o = options;
    const B = options.blockSize;
    this.#B = B;
    this.#le = options.littleEndian ?? true;
    this.#wordSize = options.wordSize ?? 8;
    const mapBytes = Math.ceil(options.maxMapnr / 8);
    if (options.present.byteLength < mapBytes) {
      throw new RangeError(`A bitmap of ${options.present.byteLength} bytes is too small`);
    }
    this.#mapBlocks = Math.max(1, Math.ceil(mapBytes / B));
    if (options.split?.dumpable !== undefined) checkSplitDumpable(options, mapBytes);
    this.#dumpable = new Uint8Array(this.#mapBlocks * B);
    const separateInfo = options.vmcoreinfoInNotes === undefined
      ? (options.vmcoreinfo?.byteLength ?? 0)
      : 0;
    const areaBytes = kdumpSubHeaderSize(this.#wordSize) + (options.notes?.byteLength ?? 0) +
      separateInfo + (options.eraseinfo?.byteLength ?? 0);
    this.#subHdrSize = Math.max(1, Math.ceil(areaBytes / B));
    this.#descTableOffset = (1 + this.#subHdrSize + 2 * this.#mapBlocks) * B;
    this.#dataStart = this.#descTableOffset + options.maxPageCount * PAGE_DESC_SIZE;
    this.#dataEnd = this.#dataStart;
    this.#bufferSize = Math.max(2 * B, options.bufferByteLength ?? 4 << 20);
    this.#data = new Uint8Array(this.#bufferSize + 2 * B);
    this.#descs = new Uint8Array(Math.ceil(this.#bufferSize / 64) * PAGE_DESC_SIZE);
    this.#descView = viewOf(this.#descs);
  }

  /** Pages added so far. */
  get pageCount(): number {
    return this.#pageCount;
  }

  /** Whether the buffers are full enough that {@linkcode drain} should be awaited. */
  get needsDrain(): boolean {
    return this.#dataFill >= this.#bufferSize ||
      this.#descCount * PAGE_DESC_SIZE >= this.#descs.byteLength;
  }

  /**
   * Add one page (`stored` is copied). Synchronous: call {@linkcode drain}
   * when {@linkcode needsDrain} says so (or after each batch).
   *
   * @param pfn Page frame number, above the previous one, set in the 1st bitmap.
   * @param stored The page data as it goes into the file.
   * @param flags `DUMP_DH_COMPRESSED_*` of `stored`, 0 when stored as is.
   * @throws {RangeError} for a pfn out of order or not present, or oversize data.
   */
  addPage(pfn: number, stored: Uint8Array, flags: number): void {
    this.#checkPfn(pfn);
    if (stored.byteLength === 0 || stored.byteLength > 2 * this.#B) {
      throw new RangeError(`Cannot store ${stored.byteLength} bytes for one page`);
    }
    if (this.#dataFill + stored.byteLength > this.#data.byteLength) {
      throw new RangeError("KdumpWriter: drain() was not awaited when needsDrain was set");
    }
    this.#data.set(stored, this.#dataFill);
    this.#dataFill += stored.byteLength;
    this.#pushDesc(pfn, this.#dataEnd, stored.byteLength, flags);
    this.#dataEnd += stored.byteLength;
  }

  /**
   * Add a page whose stored bytes other pages may share (one stored zero
   * page referenced by many descriptors, as in makedumpfile and QEMU
   * output): a `key` seen before reuses that data instead of storing it
   * again. The first 64 keys and the latest 4096 are remembered; a repeat
   * beyond that is stored again (correct, only larger).
   *
   * @param pfn Page frame number, as for {@linkcode addPage}.
   * @param stored The page data as it goes into the file.
   * @param flags `DUMP_DH_COMPRESSED_*` of `stored`, 0 when stored as is.
   * @param key Identity of the stored data (e.g. its offset in an input file).
   */
  addSharedPage(pfn: number, stored: Uint8Array, flags: number, key: number): void {
    const known = this.#sharedFirst.get(key) ?? this.#sharedRecent.get(key);
    if (known !== undefined && known[1] === stored.byteLength && known[2] === flags) {
      this.#checkPfn(pfn);
      this.#pushDesc(pfn, known[0], known[1], known[2]);
      return;
    }
    const entry: [number, number, number] = [this.#dataEnd, stored.byteLength, flags];
    this.addPage(pfn, stored, flags);
    if (this.#sharedFirst.size < 64) this.#sharedFirst.set(key, entry);
    else {
      this.#sharedRecent.set(key, entry);
      if (this.#sharedRecent.size > 4096) {
        this.#sharedRecent.delete(this.#sharedRecent.keys().next().value!);
      }
    }
  }

  /**
   * Add an all-zero page: its descriptor points at one shared zero page
   * (stored as is the first time), as makedumpfile and QEMU do.
   *
   * @param pfn Page frame number, as for {@linkcode addPage}.
   */
  addZeroPage(pfn: number): void {
    if (this.#zeroOffset < 0) {
      this.#checkPfn(pfn);
      this.#zeroOffset = this.#dataEnd;
      this.addPage(pfn, new Uint8Array(this.#B), 0);
      return;
    }
    this.#checkPfn(pfn);
    this.#pushDesc(pfn, this.#zeroOffset, this.#B, 0);
  }

  #checkPfn(pfn: number): void {
    if (this.#finished) throw new RangeError("KdumpWriter: already finished");
    if (!(pfn > this.#lastPfn && pfn < this.#o.maxMapnr)) {
      throw new RangeError(`KdumpWriter: pfn 0x${pfn.toString(16)} is out of order or range`);
    }
    const split = this.#o.split;
    if (split !== undefined && !(pfn >= split.startPfn && pfn < split.endPfn)) {
      throw new RangeError(
        `KdumpWriter: pfn 0x${pfn.toString(16)} is outside this split file's range`,
      );
    }
    if ((this.#o.present[pfn >>> 3]! >> (pfn & 7) & 1) === 0) {
      throw new RangeError(`KdumpWriter: pfn 0x${pfn.toString(16)} is not in the 1st bitmap`);
    }
    if (this.#pageCount >= this.#o.maxPageCount) {
      throw new RangeError(`KdumpWriter: more than the ${this.#o.maxPageCount} pages reserved`);
    }
  }

  #pushDesc(pfn: number, fileOffset: number, byteLength: number, flags: number): void {
    this.#lastPfn = pfn;
    if ((this.#descCount + 1) * PAGE_DESC_SIZE > this.#descs.byteLength) {
      const bigger = new Uint8Array(this.#descs.byteLength * 2);
      bigger.set(this.#descs);
      this.#descs = bigger;
      this.#descView = viewOf(bigger);
    }
    // The fields one by one: no object and no bigint per page.
    const v = this.#descView;
    const at = this.#descCount * PAGE_DESC_SIZE;
    const f = PAGE_DESC.fields;
    setWireUint(v, at, f.fileOffset, fileOffset, this.#le);
    setWireUint(v, at, f.byteLength, byteLength, this.#le);
    setWireUint(v, at, f.flags, flags, this.#le);
    setWireUint(v, at, f.pageFlags, 0, this.#le);
    this.#descCount++;
    this.#pageCount++;
    this.#dumpable[pfn >>> 3]! |= 1 << (pfn & 7);
  }

  /** The 2nd bitmap to write: this file's pages, and for a split file the set's bits outside its range. */
  #setDumpable(): Uint8Array {
    const split = this.#o.split;
    if (split?.dumpable === undefined) return this.#dumpable;
    const out = new Uint8Array(this.#dumpable.byteLength);
    out.set(split.dumpable.subarray(0, Math.ceil(this.#o.maxMapnr / 8)));
    clearSplitInside(out, split, this.#o.maxMapnr);
    for (let i = 0; i < out.byteLength; i++) out[i]! |= this.#dumpable[i]!;
    return out;
  }

  /** Write out buffered descriptors and data. */
  async drain(): Promise<void> {
    const descBytes = this.#descCount * PAGE_DESC_SIZE;
    if (descBytes > 0) {
      const at = this.#descTableOffset + (this.#pageCount - this.#descCount) * PAGE_DESC_SIZE;
      await this.#sink.writeAt(at, this.#descs.subarray(0, descBytes));
      this.#descCount = 0;
    }
    if (this.#dataFill > 0) {
      await this.#sink.writeAt(
        this.#dataEnd - this.#dataFill,
        this.#data.subarray(0, this.#dataFill),
      );
      this.#dataFill = 0;
    }
  }

  /**
   * Write what is buffered, close the unused descriptor reserve (when the
   * sink can read back), then the headers, notes and bitmaps.
   *
   * @returns What was written.
   */
  async finish(): Promise<KdumpWriteResult> {
    await this.drain();
    this.#finished = true;
    const B = this.#B;
    const o = this.#o;
    let gap = (o.maxPageCount - this.#pageCount) * PAGE_DESC_SIZE;
    let dataOffset = this.#dataStart;
    let end = this.#dataEnd;
    if (gap > 0 && this.#sink.readAt !== undefined && this.#sink.truncate !== undefined) {
      await this.#compact(gap);
      dataOffset -= gap;
      end -= gap;
      await this.#sink.truncate(end);
      gap = 0;
    }
    // Sub header, notes, VMCOREINFO, erase info.
    const area = new Uint8Array(this.#subHdrSize * B);
    let at = kdumpSubHeaderSize(this.#wordSize);
    const place = (bytes: Uint8Array | undefined) => {
      if (bytes === undefined || bytes.byteLength === 0) return [0, 0] as const;
      area.set(bytes, at);
      const r = [B + at, bytes.byteLength] as const;
      at += bytes.byteLength;
      return r;
    };
    const [offsetNote, sizeNote] = place(o.notes);
    const [offsetVmcoreinfo, sizeVmcoreinfo] = o.vmcoreinfoInNotes !== undefined && offsetNote > 0
      ? [offsetNote + o.vmcoreinfoInNotes, o.vmcoreinfo?.byteLength ?? 0] as const
      : place(o.vmcoreinfo);
    const [offsetEraseinfo, sizeEraseinfo] = place(o.eraseinfo);
    const sub: KdumpSubHeader = {
      physBase: o.physBase ?? 0n,
      dumpLevel: o.dumpLevel ?? 0,
      split: o.split ? 1 : 0,
      startPfn: o.split?.startPfn ?? 0,
      endPfn: o.split?.endPfn ?? 0,
      offsetVmcoreinfo,
      sizeVmcoreinfo,
      offsetNote,
      sizeNote,
      offsetEraseinfo,
      sizeEraseinfo,
      maxMapnr: o.maxMapnr,
    };
    const header: DiskDumpHeader = {
      signature: KDUMP_SIGNATURE,
      headerVersion: 6,
      utsname: o.utsname,
      timestampSeconds: o.timestampSeconds ?? 0,
      timestampMicroseconds: o.timestampMicroseconds ?? 0,
      status: o.status,
      blockSize: B,
      subHdrSize: this.#subHdrSize,
      bitmapBlocks: 2 * this.#mapBlocks,
      maxMapnr32: Math.min(o.maxMapnr, 0xffff_ffff),
      totalRamBlocks: 0,
      deviceBlocks: 0,
      writtenBlocks: 0,
      currentCpu: o.currentCpu ?? 0,
      nrCpus: o.nrCpus ?? 1,
      littleEndian: this.#le,
      wordSize: this.#wordSize,
    };
    writeKdumpSubHeader(area, sub, header);
    const block0 = new Uint8Array(B);
    writeDiskDumpHeader(block0, header);
    await this.#sink.writeAt(0, block0);
    await this.#sink.writeAt(B, area);
    const mapAt = (1 + this.#subHdrSize) * B;
    const present = new Uint8Array(this.#mapBlocks * B);
    present.set(o.present.subarray(0, Math.ceil(o.maxMapnr / 8)));
    await this.#sink.writeAt(mapAt, present);
    await this.#sink.writeAt(mapAt + this.#mapBlocks * B, this.#setDumpable());
    await this.#sink.close?.();
    return {
      byteLength: end,
      pageCount: this.#pageCount,
      dataByteLength: this.#dataEnd - this.#dataStart,
      descTableOffset: this.#descTableOffset,
      dataOffset,
      gapByteLength: gap,
    };
  }

  /** Move the data down by `gap` bytes and fix every descriptor's offset. */
  async #compact(gap: number): Promise<void> {
    const sink = this.#sink;
    const chunk = new Uint8Array(this.#bufferSize);
    // Data: moving to lower offsets, front to back, never overwrites unread bytes.
    for (let from = this.#dataStart; from < this.#dataEnd; from += chunk.byteLength) {
      const n = Math.min(chunk.byteLength, this.#dataEnd - from);
      const got = await sink.readAt!(from, chunk.subarray(0, n));
      if (got !== n) throw new Error("Internal error: the kdump output shrank while written");
      await sink.writeAt(from - gap, chunk.subarray(0, n));
    }
    // Descriptors: every data offset moves by the same amount.
    const per = Math.floor(chunk.byteLength / PAGE_DESC_SIZE);
    for (let i = 0; i < this.#pageCount; i += per) {
      const n = Math.min(per, this.#pageCount - i) * PAGE_DESC_SIZE;
      const at = this.#descTableOffset + i * PAGE_DESC_SIZE;
      const part = chunk.subarray(0, n);
      if (await sink.readAt!(at, part) !== n) {
        throw new Error("Internal error: the kdump output shrank while written");
      }
      const v = viewOf(part);
      const field = PAGE_DESC.fields.fileOffset;
      for (let k = 0; k < n; k += PAGE_DESC_SIZE) {
        setWireUint(v, k, field, getWireUint(v, k, field, this.#le) - gap, this.#le);
      }
      await sink.writeAt(at, part);
    }
  }
}

/** A sequential byte sink (a file written front to back, a pipe). */
export type SequentialSink = (chunk: Uint8Array) => Promise<void>;

/**
 * A {@linkcode KdumpSink} that writes the flattened container (makedumpfile
 * `-F`) to a sequential sink: its 4096-byte header, one record per
 * `writeAt`, and the end marker on `close()`. `makedumpfile -R` turns it
 * back into a plain file; crash, libkdumpfile and vmem-dump read it as it is.
 *
 * @param out The sequential sink.
 * @returns The kdump sink.
 *
 * @example
 * ```ts
 * import { flattenedSink, openFlattened } from "@vmem-dump/vmem-dump/kdump";
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * const parts: Uint8Array[] = [];
 * const sink = flattenedSink((c) => { parts.push(c.slice()); return Promise.resolve(); });
 * await sink.writeAt(8, new Uint8Array([1, 2]));
 * await sink.close!();
 * const flat = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
 * let at = 0;
 * for (const p of parts) { flat.set(p, at); at += p.length; }
 * using real = await openFlattened(bytesPositional(flat));
 * console.log(real.byteLength); // 10
 * ```
 */
export function flattenedSink(out: SequentialSink): KdumpSink {
  let started = false;
  const header = () => {
    const h = new Uint8Array(MAX_SIZE_MDF_HEADER);
    const v = viewOf(h);
    const f = MAKEDUMPFILE_HEADER.fields;
    for (let i = 0; i < "makedumpfile".length; i++) h[i] = "makedumpfile".charCodeAt(i);
    v.setBigUint64(f.type.offset, 1n, false); // TYPE_FLAT_HEADER
    v.setBigUint64(f.version.offset, 1n, false); // VERSION_FLAT_HEADER
    return h;
  };
  const record = (offset: bigint, size: bigint) => {
    const r = new Uint8Array(RECORD.byteLength);
    const v = viewOf(r);
    v.setBigInt64(RECORD.fields.offset.offset, offset, false);
    v.setBigInt64(RECORD.fields.bufSize.offset, size, false);
    return r;
  };
  return {
    async writeAt(fileOffset, bytes) {
      if (!started) {
        started = true;
        await out(header());
      }
      await out(record(BigInt(fileOffset), BigInt(bytes.byteLength)));
      await out(bytes);
    },
    async close() {
      if (!started) {
        started = true;
        await out(header());
      }
      await out(record(-1n, -1n));
    },
  };
}

const RECORD = MAKEDUMPFILE_DATA_HEADER;

/** Clear the bits of a split file's own range, and those beyond `maxMapnr`. */
function clearSplitInside(
  bits: Uint8Array,
  split: { startPfn: number; endPfn: number },
  maxMapnr: number,
): void {
  clearBitRange(bits, Math.min(split.startPfn, maxMapnr), Math.min(split.endPfn, maxMapnr));
  clearBitRange(bits, maxMapnr, bits.byteLength * 8);
}

/** A split set's 2nd bitmap must cover the pfns and, outside the file's range, be a subset of the 1st. */
function checkSplitDumpable(options: KdumpWriterOptions, mapBytes: number): void {
  const split = options.split!;
  if (split.dumpable!.byteLength < mapBytes) {
    throw new RangeError(`A split 2nd bitmap of ${split.dumpable!.byteLength} bytes is too small`);
  }
  const outside = split.dumpable!.slice(0, mapBytes);
  clearSplitInside(outside, split, options.maxMapnr);
  for (let i = 0; i < mapBytes; i++) {
    if ((outside[i]! & ~options.present[i]!) !== 0) {
      throw new RangeError(
        `KdumpWriter: the split 2nd bitmap marks pfns near 0x${
          (i * 8).toString(16)
        } that the 1st bitmap lacks`,
      );
    }
  }
}
