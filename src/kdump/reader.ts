/**
 * Read a kdump-compressed dump (makedumpfile `-c/-l/-p/-z`, QEMU
 * `dump-guest-memory` `kdump-*`), plain or in the flattened container:
 * headers, VMCOREINFO, notes, bitmaps, page descriptors and pages.
 *
 * @module
 */

import { FormatError, UnsupportedFeatureError } from "../errors.ts";
import { viewOf } from "../io/endian.ts";
import { latin1Decode } from "../io/text.ts";
import { openPositional, type PositionalReader, readAt } from "../io/positional.ts";
import { KdumpBitmap } from "./bitmap.ts";
import { decompressKdumpPage } from "./codecs.ts";
import { isFlattenedKdump, openFlattened } from "./flattened.ts";
import {
  DISK_DUMP_HEADER_SIZE,
  type DiskDumpHeader,
  diskDumpHeaderLayout,
  DUMP_DH_COMPRESSED_INCOMPLETE,
  type KdumpSubHeader,
  kdumpSubHeaderLayout,
  kdumpSubHeaderSize,
  readDiskDumpHeader,
  readKdumpSubHeader,
} from "./header.ts";
import { checkPageDesc, PAGE_DESC_SIZE, type PageDesc, readPageDesc } from "./page_desc.ts";

/** What makes two descriptors the same stored page: data offset, size and flags. */
function storedPageKey(desc: PageDesc): string {
  return `${desc.fileOffset}/${desc.byteLength}/${desc.flags}`;
}

/** Descriptors read at a time by {@linkcode KdumpFile.iteratePages}. */
const DESC_BATCH = 4096;

/** Default size of page-data reads: 4 MiB. */
export const KDUMP_READ_CHUNK_SIZE = 4 << 20;

/** One page from {@linkcode KdumpFile.iteratePages}. */
export interface KdumpPage {
  /** Page frame number (gpa = pfn × block size). */
  pfn: number;
  /** The decompressed page: a view valid until the next batch; copy it to keep it. */
  data: Uint8Array;
  /** Its descriptor. */
  desc: PageDesc;
}

/** Options for {@linkcode KdumpFile.iteratePages}. */
export interface IterateKdumpPagesOptions {
  /** Upper bound of one read of page data. @default {4194304} */
  chunkSize?: number;
  /** Hand out the page data as stored (compressed), not decoded. @default {false} */
  raw?: boolean;
}

/** An opened kdump-compressed dump. */
export interface KdumpFile extends Disposable {
  /** The kdump file (for a flattened input: the file it stands for). */
  readonly reader: PositionalReader;
  /** `raw` (a plain kdump file) or `flattened` (makedumpfile -F / QEMU output). */
  readonly container: "raw" | "flattened";
  /** Size of the kdump file (flattened: of the file it stands for, as its records claim). */
  readonly byteLength: number;
  /** Size of the input as stored (flattened: of the flattened file itself; plain: `byteLength`). */
  readonly storedByteLength: number;
  /** `disk_dump_header`. */
  readonly header: DiskDumpHeader;
  /** `kdump_sub_header`. */
  readonly subHeader: KdumpSubHeader;
  /** Page size (`block_size`). */
  readonly blockSize: number;
  /** Pfns covered by the bitmaps (`max_mapnr_64`, or `max_mapnr` before version 6). */
  readonly maxMapnr: number;
  /** VMCOREINFO text, or `undefined` when the dump has none. */
  readonly vmcoreinfo: string | undefined;
  /** The ELF notes (NT_PRSTATUS …) as stored; empty when none. */
  readonly notes: Uint8Array<ArrayBuffer>;
  /** 1st bitmap: pages that exist. */
  readonly present: KdumpBitmap;
  /** 2nd bitmap: pages in the dump. */
  readonly dumpable: KdumpBitmap;
  /** Page descriptors in this file. */
  readonly pageCount: number;
  /** File offset of the page descriptor table. */
  readonly descTableOffset: number;
  /** File offset of the first byte after the descriptor table. */
  readonly dataOffset: number;
  /** Whether a page exists (1st bitmap). */
  isPresent(pfn: number): boolean;
  /** Whether a page is in the dump (2nd bitmap, and in this file's range for split dumps). */
  isDumpable(pfn: number): boolean;
  /**
   * The descriptor of a page, or `undefined` when the page is not in the dump.
   *
   * @throws {FormatError} when the descriptor points outside the file.
   */
  pageDesc(pfn: number): Promise<PageDesc | undefined>;
  /**
   * The decompressed page (`blockSize` bytes, a fresh buffer), or
   * `undefined` when the page is not in the dump.
   *
   * @throws {FormatError} for a bad descriptor or corrupt data.
   * @throws {UnsupportedFeatureError} for Snappy pages.
   */
  readPage(pfn: number): Promise<Uint8Array<ArrayBuffer> | undefined>;
  /**
   * The pages of `[firstPfn, endPfn)` that are in the dump, ascending, in
   * batches: descriptors are read 4096 at a time and adjacent page data in
   * reads of up to `chunkSize` bytes. A page shared by many descriptors
   * (the zero page) is decoded once per batch.
   */
  iteratePages(
    firstPfn: number,
    endPfn: number,
    options?: IterateKdumpPagesOptions,
  ): AsyncGenerator<KdumpPage[]>;
  /** Close the input. */
  close(): void;
}

function bad(
  message: string,
  offset: number,
  code: "out-of-range" | "bad-header" | "invariant" = "bad-header",
) {
  return new FormatError(`Cannot read kdump dump: ${message}`, {
    format: "kdump",
    code,
    offset,
  });
}

/**
 * Open a kdump-compressed dump and read its headers, notes and both
 * bitmaps; pages are read on demand. Every size in the headers is checked
 * against the file before anything is allocated by it. Flattened files are
 * indexed (not copied) and read through the index.
 *
 * @param input A path, or a reader (closed by `close()` of the result).
 * @returns The dump.
 * @throws {FormatError} (`format` "kdump") with the offset of the offending field.
 * @throws {UnsupportedFeatureError} for legacy `DISKDUMP` files.
 *
 * @example
 * ```ts ignore
 * import { readKdump } from "@vmem-dump/vmem-dump/kdump";
 * using dump = await readKdump("vmcore.kdump");
 * console.log(dump.header.utsname.machine, dump.maxMapnr);
 * const page = await dump.readPage(0x100000);
 * ```
 */
export async function readKdump(input: string | PositionalReader): Promise<KdumpFile> {
  const source = typeof input === "string" ? await openPositional(input) : input;
  try {
    const head = new Uint8Array(24);
    const n = await source.readInto(0, head);
    const flattened = isFlattenedKdump(head.subarray(0, n));
    const reader = flattened ? await openFlattened(source) : source;
    return await openKdump(reader, flattened ? "flattened" : "raw", source.byteLength);
  } catch (e) {
    source.close();
    throw e;
  }
}

async function openKdump(
  reader: PositionalReader,
  container: "raw" | "flattened",
  storedByteLength: number,
): Promise<KdumpFile> {
  const fileByteLength = reader.byteLength;
  const at = (fileOffset: number, byteLength: number, what: string) =>
    readAt(reader, { fileOffset, byteLength }, { format: "kdump", what });
  const head = await at(0, Math.min(DISK_DUMP_HEADER_SIZE, fileByteLength), "disk_dump_header");
  if (latin1Decode(head.subarray(0, 8)) === "DISKDUMP") {
    throw new UnsupportedFeatureError(
      "Cannot read kdump dump: legacy DISKDUMP files are not supported",
      "kdump",
      0,
    );
  }
  if (container === "flattened" && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c) {
    throw new UnsupportedFeatureError(
      "Cannot read flattened dump: it holds an ELF dump (makedumpfile -E -F); " +
        "reassemble it with makedumpfile -R first",
      "kdump",
      0,
    );
  }
  const header = readDiskDumpHeader(head);
  const B = header.blockSize;
  const hf = diskDumpHeaderLayout(header.wordSize).fields;
  if (header.subHdrSize < 1) throw bad(`sub_hdr_size ${header.subHdrSize}`, hf.subHdrSize.offset);
  const bitmapStart = (1 + header.subHdrSize) * B;
  const descTableOffset = bitmapStart + header.bitmapBlocks * B;
  if (descTableOffset > fileByteLength) {
    throw bad(
      `sub_hdr_size ${header.subHdrSize} and bitmap_blocks ${header.bitmapBlocks} ` +
        `(block size 0x${B.toString(16)}) put the page descriptors at 0x${
          descTableOffset.toString(16)
        }, beyond the end of the file (0x${fileByteLength.toString(16)})`,
      hf.bitmapBlocks.offset,
      "out-of-range",
    );
  }
  const subBytes = await at(B, kdumpSubHeaderSize(header.wordSize), "kdump_sub_header");
  const subHeader = readKdumpSubHeader(subBytes, header, fileByteLength);
  const maxMapnr = subHeader.maxMapnr;
  const mapBytes = Math.ceil(maxMapnr / 8);
  const mapBlocks = Math.ceil(mapBytes / B);
  const twoBitmaps = header.bitmapBlocks >= 2 * mapBlocks;
  if (!twoBitmaps && header.bitmapBlocks < mapBlocks) {
    throw bad(
      `bitmap_blocks ${header.bitmapBlocks} cannot hold ${maxMapnr} pfns`,
      hf.bitmapBlocks.offset,
    );
  }
  // Where the 2nd bitmap is, as crash and libkdumpfile (drgn) find it. crash reads two
  // bitmaps when bitmap_blocks holds two whole-block bitmaps and takes the 2nd from the
  // middle byte of the area (bitmap_len / 2, diskdump.c); libkdumpfile when max_mapnr fits
  // in half the area's bits, from its middle block (bitmap_blocks / 2, rounded down). Both
  // agree with this reader only when bitmap_blocks is even and both tests give the same
  // answer (every makedumpfile and QEMU file); otherwise they rank pages into the
  // descriptor table with another bitmap than ours, and show other pages for a pfn.
  const halfBitsCover = maxMapnr <= header.bitmapBlocks * B * 4;
  if (twoBitmaps !== halfBitsCover || (twoBitmaps && header.bitmapBlocks % 2 !== 0)) {
    throw bad(
      `bitmap_blocks ${header.bitmapBlocks} (block size 0x${B.toString(16)}) for ${maxMapnr} ` +
        `pfns: crash and libkdumpfile would take the 2nd bitmap from different places ` +
        `(an even count of two whole-block bitmaps is needed)`,
      hf.bitmapBlocks.offset,
      "invariant",
    );
  }
  // Notes and VMCOREINFO live in the sub-header blocks.
  for (
    const [name, offset, size] of [
      ["notes", subHeader.offsetNote, subHeader.sizeNote],
      ["vmcoreinfo", subHeader.offsetVmcoreinfo, subHeader.sizeVmcoreinfo],
    ] as const
  ) {
    if (size !== 0 && (offset < B || offset + size > bitmapStart)) {
      throw bad(
        `${name} at 0x${offset.toString(16)} + 0x${size.toString(16)} lie outside the ` +
          `sub-header blocks 0x${B.toString(16)}-0x${bitmapStart.toString(16)}`,
        B,
        "out-of-range",
      );
    }
  }
  const notes = subHeader.sizeNote === 0
    ? new Uint8Array(0)
    : await at(subHeader.offsetNote, subHeader.sizeNote, "kdump notes");
  const vmcoreinfo = subHeader.sizeVmcoreinfo === 0 ? undefined : new TextDecoder().decode(
    await at(subHeader.offsetVmcoreinfo, subHeader.sizeVmcoreinfo, "VMCOREINFO"),
  );
  const presentBytes = await at(bitmapStart, mapBytes, "1st bitmap");
  const present = new KdumpBitmap(presentBytes, maxMapnr);
  let dumpable = present;
  if (twoBitmaps) {
    const secondAt = bitmapStart + Math.floor(header.bitmapBlocks / 2) * B;
    const dumpableBytes = await at(secondAt, mapBytes, "2nd bitmap");
    // Every dumped page is a page that exists (makedumpfile and QEMU write the 2nd bitmap as
    // a subset of the 1st): a dump that says otherwise cannot be copied or trusted.
    for (let i = 0; i < mapBytes; i++) {
      const stray = dumpableBytes[i]! & ~presentBytes[i]!;
      if (stray !== 0) {
        const pfn = i * 8 + 31 - Math.clz32(stray & -stray);
        if (pfn >= maxMapnr) break;
        throw bad(
          `pfn 0x${pfn.toString(16)} is in the 2nd bitmap (dumped) but not in the 1st (pages ` +
            `that exist)`,
          secondAt + i,
          "invariant",
        );
      }
    }
    dumpable = new KdumpBitmap(dumpableBytes, maxMapnr);
  }
  const split = subHeader.split !== 0;
  const startPfn = split ? subHeader.startPfn : 0;
  const endPfn = split ? Math.min(subHeader.endPfn, maxMapnr) : maxMapnr;
  if (split && startPfn > endPfn) {
    throw bad(
      `split range ${startPfn}-${endPfn} is empty`,
      B + kdumpSubHeaderLayout(header.wordSize).fields.startPfn64.offset,
      "out-of-range",
    );
  }
  const rankBase = dumpable.rank(startPfn);
  const pageCount = dumpable.rank(endPfn) - rankBase;
  const dataOffset = descTableOffset + pageCount * PAGE_DESC_SIZE;
  if (dataOffset > fileByteLength) {
    throw bad(
      `${pageCount} page descriptors at 0x${descTableOffset.toString(16)} run past the end ` +
        `of the file (0x${fileByteLength.toString(16)})`,
      descTableOffset,
      "out-of-range",
    );
  }
  const limits = { blockSize: B, dataStart: dataOffset, fileByteLength };
  const le = header.littleEndian;
  const incomplete = (header.status & DUMP_DH_COMPRESSED_INCOMPLETE) !== 0;

  const isDumpable = (pfn: number) => pfn >= startPfn && pfn < endPfn && dumpable.has(pfn);
  const descOffset = (pfn: number) =>
    descTableOffset + (dumpable.rank(pfn) - rankBase) * PAGE_DESC_SIZE;
  const checked = (desc: PageDesc, descAt: number, pfn: number) => {
    if (desc.fileOffset === 0 && incomplete) {
      throw new FormatError(
        `Cannot read kdump page: pfn 0x${pfn.toString(16)} was lost (the dump is incomplete)`,
        { format: "kdump", code: "unexpected-eof", offset: descAt },
      );
    }
    checkPageDesc(desc, limits, descAt);
    return desc;
  };

  async function pageDesc(pfn: number): Promise<PageDesc | undefined> {
    if (!isDumpable(pfn)) return undefined;
    const descAt = descOffset(pfn);
    const b = await at(descAt, PAGE_DESC_SIZE, "page_desc");
    return readPageDesc(viewOf(b), 0, le, descAt);
  }

  async function readPage(pfn: number): Promise<Uint8Array<ArrayBuffer> | undefined> {
    const desc = await pageDesc(pfn);
    if (desc === undefined) return undefined;
    checked(desc, descOffset(pfn), pfn);
    const data = await at(desc.fileOffset, desc.byteLength, "page data");
    const page = decompressKdumpPage(data, desc.flags, B, desc.fileOffset);
    return page === data ? data : page.slice();
  }

  async function* iteratePages(
    firstPfn: number,
    endPfnArg: number,
    options: IterateKdumpPagesOptions = {},
  ): AsyncGenerator<KdumpPage[]> {
    const chunkSize = options.chunkSize ?? KDUMP_READ_CHUNK_SIZE;
    if (!(chunkSize >= 2 * B)) {
      throw new RangeError(`Cannot read kdump pages in chunks of ${chunkSize} bytes`);
    }
    const stop = Math.min(endPfnArg, endPfn);
    let pfn = dumpable.nextSet(Math.max(firstPfn, startPfn), stop);
    while (pfn >= 0) {
      // The next DESC_BATCH dumpable pfns: their descriptors are adjacent.
      const pfns: number[] = [];
      for (let p = pfn; p >= 0 && pfns.length < DESC_BATCH; p = dumpable.nextSet(p + 1, stop)) {
        pfns.push(p);
      }
      const descAt = descOffset(pfns[0]!);
      const descBytes = await at(descAt, pfns.length * PAGE_DESC_SIZE, "page descriptors");
      const view = viewOf(descBytes);
      const descs = pfns.map((p, i) =>
        checked(
          readPageDesc(view, i * PAGE_DESC_SIZE, le, descAt + i * PAGE_DESC_SIZE),
          descAt + i * PAGE_DESC_SIZE,
          p,
        )
      );
      const batch: KdumpPage[] = [];
      // Descriptors that repeat one stored page (the shared zero page) decode it once. A
      // repeat is the same data offset, size and flags: two descriptors that share an offset
      // but read other bytes from it (a size or codec of their own) are two pages, as every
      // reader decodes each descriptor by its own fields.
      const keys = descs.map(storedPageKey);
      const shared = new Map<string, Uint8Array>(); // storedPageKey → decoded page
      const seen = new Set<string>();
      for (const key of keys) {
        if (seen.has(key)) shared.set(key, new Uint8Array(0));
        seen.add(key);
      }
      let i = 0;
      while (i < descs.length) {
        const first = descs[i]!;
        const repeated = shared.get(keys[i]!);
        if (repeated?.byteLength) {
          batch.push({ pfn: pfns[i]!, data: repeated, desc: first });
          i++;
          continue;
        }
        // A run of descriptors whose data follow each other.
        let j = i + 1;
        let end = first.fileOffset + first.byteLength;
        while (
          j < descs.length && descs[j]!.fileOffset === end &&
          end + descs[j]!.byteLength - first.fileOffset <= chunkSize &&
          !shared.has(keys[j]!)
        ) {
          end += descs[j]!.byteLength;
          j++;
        }
        const data = await at(first.fileOffset, end - first.fileOffset, "page data");
        for (let k = i; k < j; k++) {
          const d = descs[k]!;
          const raw = data.subarray(
            d.fileOffset - first.fileOffset,
            d.fileOffset - first.fileOffset + d.byteLength,
          );
          const page = options.raw ? raw : decompressKdumpPage(raw, d.flags, B, d.fileOffset);
          if (shared.has(keys[k]!)) shared.set(keys[k]!, page);
          batch.push({ pfn: pfns[k]!, data: page, desc: d });
        }
        i = j;
      }
      yield batch;
      pfn = dumpable.nextSet(pfns[pfns.length - 1]! + 1, stop);
    }
  }

  return {
    reader,
    container,
    byteLength: fileByteLength,
    storedByteLength,
    header,
    subHeader,
    blockSize: B,
    maxMapnr,
    vmcoreinfo,
    notes,
    present,
    dumpable,
    pageCount,
    descTableOffset,
    dataOffset,
    isPresent: (pfn) => present.has(pfn),
    isDumpable,
    pageDesc,
    readPage,
    iteratePages,
    close: () => reader.close(),
    [Symbol.dispose]: () => reader.close(),
  };
}
