/**
 * The body of a `ram` section (START, PART or END) up to its EOS record:
 * page records (PAGE, ZERO, XBZRLE, COMPRESS_PAGE, each a be64
 * `ramOffset | flags` word, the RAMBlock idstr unless CONTINUE is set, and
 * a payload), the MEM_SIZE block list of the START section, MULTIFD_FLUSH
 * and EOS (migration/ram.c `ram_load_precopy`). Private to the decoder.
 *
 * In a mapped-ram file each block of the MEM_SIZE list carries a header
 * after its entry, and the stream goes on after the block's bitmap and
 * pages: the entry asks the decoder's loop to skip them (`ParseWindow.skip`).
 *
 * This is the hot path: one synchronous loop over the buffered bytes, no
 * await, no bigint, one object per record with a view of its payload.
 *
 * @module
 */

import { UnsupportedFeatureError } from "../errors.ts";
import { isPowerOfTwo } from "../io/bits.ts";
import { hex, latin1Decode } from "../io/text.ts";
import * as C from "./constants.ts";
import type { MigrationRecord, RamBlockInfo } from "./types.ts";
import { bad, MAX_BATCH, type ParseWindow } from "./_window.ts";
import { MAPPED_RAM_HEADER_SIZE, readMappedRamHeader } from "./mapped_ram/header.ts";
import { mappedRamBlockLayout } from "./mapped_ram/block_layout.ts";
import { nulMisreading } from "./_section_identity.ts";

/** Most RAMBlocks accepted in a MEM_SIZE list. */
const MAX_RAM_BLOCKS = 65536;

/** Bytes of a RAM record header: the be64 `ramOffset | flags` word. */
const RECORD_HEADER = 8;

/** Flags of a PAGE record of the last block named. */
const CONTINUED_PAGE = C.RAM_SAVE_FLAG_PAGE | C.RAM_SAVE_FLAG_CONTINUE;
/** Flags of a ZERO record of the last block named. */
const CONTINUED_ZERO = C.RAM_SAVE_FLAG_ZERO | C.RAM_SAVE_FLAG_CONTINUE;

/** A MEM_SIZE block list being read, entry by entry. */
interface MemSizeProgress {
  /** Stream offset of the MEM_SIZE record. */
  streamOffset: number;
  /** The total the record announced. */
  totalBytes: number;
  /** What the entries so far leave of it. */
  remaining: number;
  /** Entries so far. */
  blocks: RamBlockInfo[];
  /** Their idstrs. */
  names: Set<string>;
}

/** What the RAM records depend on, for the whole stream. */
export class RamState {
  /** Target page size: from the decoder options or `configuration/target-page-bits`. */
  pageSize: number;
  /** The MEM_SIZE list. */
  blocks: RamBlockInfo[] = [];
  /** The MEM_SIZE list by idstr. */
  byName = new Map<string, RamBlockInfo>();
  /** The block the last named record named (what CONTINUE refers to). */
  lastBlock: RamBlockInfo | undefined;
  /**
   * Capabilities from the configuration section (x-ignore-shared adds gpas to MEM_SIZE,
   * mapped-ram a header and a skipped area per block).
   */
  capabilities: string[] = [];
  /** Page size summary of POSTCOPY_ADVISE (hugepage blocks add their page size to MEM_SIZE). */
  postcopyPageSummary: number | undefined;
  /** A MEM_SIZE list not yet complete. */
  #memSize: MemSizeProgress | undefined;
  /** A MEM_SIZE list was read (a later one must repeat it). */
  #listed = false;

  /** @param pageSize The target page size. */
  constructor(pageSize: number) {
    this.pageSize = pageSize;
  }

  /**
   * A copy to parse ahead with (the device-state walk's trial run). Only
   * between records: a MEM_SIZE list in progress is not copied.
   */
  clone(): RamState {
    const c = new RamState(this.pageSize);
    // The block list and its map are replaced, never changed, by a new MEM_SIZE: share them.
    c.blocks = this.blocks;
    c.byName = this.byName;
    c.lastBlock = this.lastBlock;
    c.capabilities = this.capabilities;
    c.postcopyPageSummary = this.postcopyPageSummary;
    c.#listed = this.#listed;
    return c;
  }

  /**
   * Parse records of a `ram` section body from `w.pos` into `out`, up to and
   * including EOS (returns `true`), or until the window is used up, the
   * batch is full or a record other than a page was emitted (returns
   * `false`; `w.needed` says how many bytes a refill must provide, 0 when
   * it stopped for another reason).
   *
   * @throws {FormatError} for malformed records, with the offset of the bad field.
   * @throws {UnsupportedFeatureError} for RDMA hook records, and for the block list of a
   *   mapped-ram stream with x-ignore-shared (QEMU versions read it differently).
   */
  parseBody(w: ParseWindow, isStart: boolean, out: MigrationRecord[]): boolean {
    if (this.#memSize !== undefined) {
      this.#memSizeEntries(w, out);
      return false;
    }
    const b = w.bytes;
    const end = b.byteLength;
    const pageSize = this.pageSize;
    const mask = pageSize - 1;
    let p = w.pos;
    while (out.length < MAX_BATCH) {
      // Most records continue the last block: their runs go through a small loop of their own.
      p = this.#continuedPages(w, p, out);
      if (out.length >= MAX_BATCH) break;
      if (end - p < RECORD_HEADER) {
        w.pos = p;
        return w.need(RECORD_HEADER, "a RAM record header");
      }
      const hi = (b[p]! << 24 | b[p + 1]! << 16 | b[p + 2]! << 8 | b[p + 3]!) >>> 0;
      const lo = (b[p + 4]! << 24 | b[p + 5]! << 16 | b[p + 6]! << 8 | b[p + 7]!) >>> 0;
      const flags = lo & mask;
      // An offset of 2^53 or more is inexact here, but past the end of every block (checked below).
      const ramOffset = hi * 0x1_0000_0000 + (lo - flags);
      const kindFlags = flags & ~C.RAM_SAVE_FLAG_CONTINUE;
      if (
        kindFlags === C.RAM_SAVE_FLAG_PAGE || kindFlags === C.RAM_SAVE_FLAG_ZERO ||
        kindFlags === C.RAM_SAVE_FLAG_XBZRLE || kindFlags === C.RAM_SAVE_FLAG_COMPRESS_PAGE
      ) {
        const continued = (flags & C.RAM_SAVE_FLAG_CONTINUE) !== 0;
        let q = p + RECORD_HEADER;
        let block: RamBlockInfo | undefined;
        if (continued) {
          block = this.lastBlock;
          if (block === undefined) {
            throw bad(
              "RAM record has CONTINUE but no block was named before",
              "bad-record",
              w.offset(p),
            );
          }
        } else {
          if (end - q < 1) {
            w.pos = p;
            return w.need(RECORD_HEADER + 1, "a RAMBlock idstr");
          }
          const len = b[q]!;
          if (end - q - 1 < len) {
            w.pos = p;
            return w.need(RECORD_HEADER + 1 + len, "a RAMBlock idstr");
          }
          block = this.#lookupBlock(b, q + 1, len);
          if (block === undefined) {
            throw bad(
              `unknown RAMBlock ${JSON.stringify(latin1Decode(b.subarray(q + 1, q + 1 + len)))}`,
              "unknown-block",
              w.offset(q),
            );
          }
          this.lastBlock = block;
          q += 1 + len;
        }
        if (ramOffset >= block.usedLength) {
          throw bad(
            `RAM offset 0x${ramOffset.toString(16)} is past the end of ${
              JSON.stringify(block.idstr)
            } (0x${block.usedLength.toString(16)})`,
            "out-of-range",
            w.offset(p),
          );
        }
        if (kindFlags === C.RAM_SAVE_FLAG_PAGE) {
          if (end - q < pageSize) {
            w.pos = p;
            return w.need(q - p + pageSize, "a RAM page");
          }
          out.push({
            kind: "ram-page",
            streamOffset: w.base + p,
            ramBlock: block.idstr,
            ramOffset,
            continued,
            data: b.subarray(q, q + pageSize),
          });
          p = q + pageSize;
        } else if (kindFlags === C.RAM_SAVE_FLAG_ZERO) {
          if (end - q < 1) {
            w.pos = p;
            return w.need(q - p + 1, "a zero page fill byte");
          }
          out.push({
            kind: "ram-zero-page",
            streamOffset: w.base + p,
            ramBlock: block.idstr,
            ramOffset,
            continued,
            fill: b[q]!,
          });
          p = q + 1;
        } else {
          w.pos = p;
          const next = this.#rareRecord(w, p, q, kindFlags, block.idstr, ramOffset, continued, out);
          if (next < 0) return false;
          p = next;
        }
        continue;
      }
      if (flags === C.RAM_SAVE_FLAG_EOS && ramOffset === 0) {
        out.push({ kind: "ram-eos", streamOffset: w.base + p });
        w.pos = p + RECORD_HEADER;
        return true;
      }
      if (flags === C.RAM_SAVE_FLAG_MULTIFD_FLUSH && ramOffset === 0) {
        out.push({ kind: "ram-multifd-flush", streamOffset: w.base + p });
        w.pos = p + RECORD_HEADER;
        return false;
      }
      if (flags === C.RAM_SAVE_FLAG_MEM_SIZE && isStart) {
        const totalBytes = w.u64(p) - flags;
        this.#memSize = {
          streamOffset: w.base + p,
          totalBytes,
          remaining: totalBytes,
          blocks: [],
          names: new Set(),
        };
        w.pos = p + RECORD_HEADER;
        this.#memSizeEntries(w, out);
        return false;
      }
      if (flags === C.RAM_SAVE_FLAG_HOOK) {
        throw new UnsupportedFeatureError(
          "Cannot decode migration stream: RDMA hook records are not supported",
          "migration",
          w.offset(p),
        );
      }
      throw bad(`invalid RAM record flags 0x${flags.toString(16)}`, "bad-record", w.offset(p + 6));
    }
    w.pos = p;
    return false;
  }

  /**
   * The hot path: PAGE and ZERO records with CONTINUE from `p` on, for as
   * long as they come whole and in range. Returns the index of the first
   * record it leaves to `parseBody` (anything else, a cut record, an
   * offset past the block: parsed again there, which reports it).
   *
   * A loop of its own, small and with only these two records to see, so V8
   * optimises it early and for good (the rare records of `parseBody` would
   * otherwise cost it recompilations when they first turn up).
   */
  #continuedPages(w: ParseWindow, p: number, out: MigrationRecord[]): number {
    const block = this.lastBlock;
    if (block === undefined) return p;
    const b = w.bytes;
    const end = b.byteLength;
    const pageSize = this.pageSize;
    const mask = pageSize - 1;
    const usedLength = block.usedLength;
    const ramBlock = block.idstr;
    const base = w.base;
    while (out.length < MAX_BATCH && end - p >= RECORD_HEADER) {
      const hi = (b[p]! << 24 | b[p + 1]! << 16 | b[p + 2]! << 8 | b[p + 3]!) >>> 0;
      const lo = (b[p + 4]! << 24 | b[p + 5]! << 16 | b[p + 6]! << 8 | b[p + 7]!) >>> 0;
      const flags = lo & mask;
      const ramOffset = hi * 0x1_0000_0000 + (lo - flags);
      const isPage = flags === CONTINUED_PAGE;
      if ((!isPage && flags !== CONTINUED_ZERO) || ramOffset >= usedLength) return p;
      // One length check and one step for both kinds: their first records may come far apart.
      const q = p + RECORD_HEADER;
      const next = q + (isPage ? pageSize : 1);
      if (next > end) return p;
      const streamOffset = base + p;
      out.push(
        isPage
          ? {
            kind: "ram-page",
            streamOffset,
            ramBlock,
            ramOffset,
            continued: true,
            data: b.subarray(q, next),
          }
          : {
            kind: "ram-zero-page",
            streamOffset,
            ramBlock,
            ramOffset,
            continued: true,
            fill: b[q]!,
          },
      );
      p = next;
    }
    return p;
  }

  /** Find a block by its idstr bytes without building a string for the common case. */
  #lookupBlock(b: Uint8Array, at: number, len: number): RamBlockInfo | undefined {
    const last = this.lastBlock;
    if (last !== undefined && last.idstr.length === len) {
      let same = true;
      for (let i = 0; i < len; i++) {
        if (last.idstr.charCodeAt(i) !== b[at + i]) {
          same = false;
          break;
        }
      }
      if (same) return last;
    }
    return this.byName.get(latin1Decode(b.subarray(at, at + len)));
  }

  /**
   * XBZRLE and COMPRESS_PAGE records (rare): the record at `p` whose payload
   * starts at `q`. Returns the index after it, or -1 after asking for bytes.
   */
  #rareRecord(
    w: ParseWindow,
    p: number,
    q: number,
    kindFlags: number,
    ramBlock: string,
    ramOffset: number,
    continued: boolean,
    out: MigrationRecord[],
  ): number {
    const b = w.bytes;
    const end = b.byteLength;
    const streamOffset = w.base + p;
    if (kindFlags === C.RAM_SAVE_FLAG_XBZRLE) {
      if (end - q < 3) return (w.need(q - p + 3, "an XBZRLE header"), -1);
      const encoding = b[q]!;
      if (encoding !== C.ENCODING_FLAG_XBZRLE) {
        throw bad(
          `XBZRLE encoding 0x${encoding.toString(16)}, expected 0x01`,
          "bad-record",
          w.offset(q),
        );
      }
      const len = b[q + 1]! << 8 | b[q + 2]!;
      if (len > this.pageSize) {
        throw bad(`XBZRLE length ${len} exceeds the page size`, "bad-record", w.offset(q + 1));
      }
      if (end - q - 3 < len) return (w.need(q - p + 3 + len, "XBZRLE data"), -1);
      const data = b.subarray(q + 3, q + 3 + len);
      out.push({
        kind: "ram-xbzrle-page",
        streamOffset,
        ramBlock,
        ramOffset,
        continued,
        encoding,
        data,
      });
      return q + 3 + len;
    }
    if (end - q < 4) return (w.need(q - p + 4, "a compressed page length"), -1);
    const len = w.u32(q);
    if (len > this.pageSize * 2 + 64) {
      throw bad(`compressed page of ${len} bytes is too large`, "bad-record", w.offset(q));
    }
    if (end - q - 4 < len) return (w.need(q - p + 4 + len, "a compressed page"), -1);
    const data = b.subarray(q + 4, q + 4 + len);
    out.push({ kind: "ram-compressed-page", streamOffset, ramBlock, ramOffset, continued, data });
    return q + 4 + len;
  }

  /**
   * Entries of the MEM_SIZE list, each consumed as soon as it is whole; the
   * record goes to `out` with the last one (in a mapped-ram file, after the
   * last block's area was skipped). Returns `false` after asking for bytes
   * or for a skip.
   */
  #memSizeEntries(w: ParseWindow, out: MigrationRecord[]): boolean {
    const m = this.#memSize!;
    const b = w.bytes;
    const hasPageSizes = this.postcopyPageSummary !== undefined &&
      this.postcopyPageSummary !== this.pageSize;
    const hasGpa = this.capabilities.includes("x-ignore-shared");
    // The configuration refused the capability unless the decoder's `mappedRam` option is on.
    const mappedRam = this.capabilities.includes("mapped-ram");
    while (m.remaining > 0) {
      if (m.blocks.length >= MAX_RAM_BLOCKS) {
        throw bad("too many RAMBlocks in the block list", "too-large", w.offset());
      }
      const at = w.pos;
      if (w.left < 1) return w.need(1, "a RAMBlock idstr");
      const len = b[at]!;
      let n = 1 + len + 8;
      if (w.left < n) return w.need(n, "a RAMBlock entry");
      const idstr = latin1Decode(b.subarray(at + 1, at + 1 + len));
      const usedLength = w.u64(at + 1 + len);
      if (usedLength === 0 || usedLength > m.remaining) {
        throw bad(
          `RAMBlock ${JSON.stringify(idstr)} length 0x${
            usedLength.toString(16)
          } does not fit the total`,
          "bad-record",
          w.offset(at + 1 + len),
        );
      }
      const misread = nulMisreading(idstr);
      if (misread !== undefined) {
        throw bad(`RAMBlock idstr ${JSON.stringify(idstr)} ${misread}`, "bad-record", w.offset(at));
      }
      if (m.names.has(idstr)) {
        throw bad(`RAMBlock ${JSON.stringify(idstr)} listed twice`, "bad-record", w.offset(at));
      }
      const block: RamBlockInfo = { idstr, usedLength };
      if (hasPageSizes) {
        // QEMU sends a block's page size when it is not the host's (huge pages): always a power
        // of two above the target page size. What follows an entry without one is the next
        // entry (its idstr length, never 0) or, after the last, a RAM record header (flags in
        // its low bits: never such a power of two), so the value says which it is.
        if (w.left < n + 8 && !w.atEnd) return w.need(n + 8, "a RAMBlock entry");
        if (w.left >= n + 8 && b[at + n] === 0) {
          const pageSize = w.u64(at + n);
          if (pageSize > this.pageSize && isPowerOfTwo(pageSize)) {
            block.pageSize = pageSize;
            n += 8;
          }
        }
      }
      if (hasGpa && mappedRam) {
        // QEMU up to 10.1 reads the mapped-ram header right after used_length, where the writer
        // puts the GPA (ram.c parse_ramblock: the mapped-ram branch returns before the GPA is
        // read); QEMU >= 10.2 reads the GPA first (upstream 0b510b51b6). The same bytes are then
        // two block lists, with bitmaps, pages and the rest of the stream at other offsets, and
        // the file does not say which QEMU restores it: no verdict can be given.
        throw new UnsupportedFeatureError(
          `Cannot decode migration stream: RAMBlock ${JSON.stringify(idstr)} of a mapped-ram ` +
            "file with x-ignore-shared: QEMU <= 10.1 reads its mapped-ram header here, where " +
            "QEMU >= 10.2 reads its GPA, so which pages a restore loads cannot be told",
          "migration",
          w.offset(at + n),
        );
      }
      if (hasGpa) {
        if (w.left < n + 8) return w.need(n + 8, "a RAMBlock address");
        block.gpa = w.u64(at + n);
        n += 8;
      }
      if (mappedRam) {
        const h = n + MAPPED_RAM_HEADER_SIZE;
        if (w.left < h) return w.need(h, "a mapped-ram header");
        const headerOffset = w.offset(at + n);
        block.mappedRam = mappedRamBlockLayout({
          idstr,
          usedLength,
          header: readMappedRamHeader(b.subarray(at + n, at + h), headerOffset),
          headerOffset,
          pageSize: this.pageSize,
          ignoreShared: hasGpa,
        });
        n = h;
      }
      m.blocks.push(block);
      m.names.add(idstr);
      m.remaining -= usedLength;
      w.pos = at + n;
      if (block.mappedRam !== undefined) {
        // The block's bitmap and pages are not stream bytes: jump to where the stream goes on.
        const area = block.mappedRam.areaEnd - w.offset();
        if (area > 0) return w.skip(area, `the mapped-ram area of ${idstr}`);
      }
    }
    this.#memSize = undefined;
    if (this.#listed) {
      // QEMU accepts another list in a later START section and re-checks (or resizes) the
      // blocks it names; the plug state and what every consumer learnt stay. A repeat that
      // changes nothing is harmless; anything else is refused (QEMU never sends one).
      const changed = firstListDifference(this.blocks, m.blocks);
      if (changed !== undefined) {
        throw bad(
          `a second RAMBlock list differs from the first (${changed}): QEMU would re-check or ` +
            "resize its blocks mid-stream, and the pages and plug state already read are about " +
            "the first",
          "bad-record",
          m.streamOffset,
        );
      }
    }
    this.#listed = true;
    this.blocks = m.blocks;
    this.byName = new Map(m.blocks.map((x) => [x.idstr, x]));
    this.lastBlock = undefined;
    out.push({
      kind: "ram-mem-size",
      streamOffset: m.streamOffset,
      totalBytes: m.totalBytes,
      blocks: m.blocks,
    });
    return true;
  }
}

/** How a repeated RAMBlock list differs from the first (`undefined`: it repeats it). */
function firstListDifference(
  first: readonly RamBlockInfo[],
  again: readonly RamBlockInfo[],
): string | undefined {
  if (first.length !== again.length) return `${again.length} blocks instead of ${first.length}`;
  for (let i = 0; i < first.length; i++) {
    const a = first[i]!;
    const b = again[i]!;
    if (
      a.idstr !== b.idstr || a.usedLength !== b.usedLength || a.gpa !== b.gpa ||
      a.pageSize !== b.pageSize
    ) {
      return `entry ${i}: ${JSON.stringify(b.idstr)} of ${hex(b.usedLength)} bytes instead of ` +
        `${JSON.stringify(a.idstr)} of ${hex(a.usedLength)} bytes`;
    }
  }
  return undefined;
}
