/**
 * Send-side filter of one multifd channel: remove the pages of unplugged
 * virtio-mem blocks from RAM packets. A packet that loses pages is
 * rewritten: its offset table lists the kept pages (normal ones first, then
 * zero ones, unused slots zero as QEMU >= 9.0 sends them), `normal_pages`,
 * `zero_pages` and `next_packet_size` are recounted, and the dropped pages'
 * data leaves the payload. Every other packet passes unchanged.
 *
 * Compressed channels (zlib, zstd, …): QEMU compresses all packets of a
 * channel as one stream (one `z_stream` / `ZSTD_CStream` per channel,
 * flushed at the end of each packet), so removing a page's data from one
 * packet would change how every later packet of the channel decompresses.
 * The filter therefore refuses, with an `UnsupportedFeatureError`, to drop a
 * page with data from a compressed packet (verify mode works on compressed
 * channels). Zero pages are only listed in the header and are dropped from
 * compressed packets too.
 *
 * The plug state comes from the main channel (see
 * {@linkcode MultifdChannelFilter.control}); the stream's own state narrows
 * a plug map, as in `UnpluggedPageDropper`.
 *
 * @module
 */

import { FormatError, UnsupportedFeatureError } from "../../errors.ts";
import { hex } from "../../io/text.ts";
import type { PlugMap } from "../../vmem/plug_map.ts";
import {
  type BlockPlugTable,
  type KeptMap,
  keptMap,
  narrowToStream,
  PlugTables,
} from "../_filter_plug_state.ts";
import { DEFAULT_PAGE_SIZE } from "../constants.ts";
import type { DroppedRecord } from "../filter.ts";
import { PacketBounds } from "./_packet_bounds.ts";
import { MULTIFD_FLAG_COMPRESSION_MASK, MULTIFD_FLAG_NOCOMP } from "./constants.ts";
import {
  checkMultifdPageSize,
  multifdOffsetSlotStreamOffset,
  writeMultifdRamPacketHeader,
} from "./packet.ts";
import type { MultifdRamPacketRecord } from "./types.ts";
import type { MultifdControlRecord } from "./verify.ts";

/** Options for {@linkcode MultifdChannelFilter}. */
export interface MultifdFilterOptions {
  /** The channel's id (from its initial packet), for reports. */
  channel: number;
  /** Target page size. @default {4096} */
  pageSize?: number;
  /** Out-of-band plug state; the stream's own state narrows it when it comes. @default {undefined} */
  plugMap?: PlugMap;
  /** Dropped pages described one by one. @default {1000} */
  maxDropDetails?: number;
}

/**
 * One page removed from a multifd packet (`byteLength`: its data, the page
 * size for a page with data, 0 for a zero page).
 */
export interface MultifdDroppedPage extends DroppedRecord {
  /** Channel id. */
  channel: number;
}

/** What the filter of one channel did. */
export interface MultifdDropStats {
  /** Channel id. */
  channel: number;
  /** RAM packets seen. */
  packets: number;
  /** Packets rewritten because they lost pages. */
  rewrittenPackets: number;
  /** Pages seen (with data and zero). */
  pages: number;
  /** Pages removed. */
  droppedPages: number;
  /** Bytes removed from the channel: the data of removed pages (packet headers keep their size). */
  droppedBytes: number;
  /** The first `maxDropDetails` removed pages (`streamOffset`: the page's offset slot in the input channel). */
  dropped: MultifdDroppedPage[];
}

/**
 * Filters the packets of one multifd channel.
 *
 * @example
 * ```ts ignore
 * import { MultifdChannelFilter } from "@vmem-dump/vmem-dump/migration";
 * const f = new MultifdChannelFilter({ channel: 1 });
 * for (const r of mainControlRecords) f.control(r);
 * const out = f.filterPacket(packet); // the same record, or a rewritten one
 * ```
 */
export class MultifdChannelFilter {
  #tables: PlugTables;
  #map: PlugMap | undefined;
  #bounds: PacketBounds;
  #pageSize: number;
  #channel: number;
  #maxDetails: number;
  #packets = 0;
  #rewritten = 0;
  #pages = 0;
  #droppedPages = 0;
  #droppedBytes = 0;
  #details: MultifdDroppedPage[] = [];
  #lastName: string | undefined;
  #lastTable: BlockPlugTable | undefined;
  #lastKept: KeptMap | undefined;
  /** Per RAMBlock: where this channel forwarded pages. */
  #kept = new Map<string, KeptMap>();
  /** RAMBlocks this channel forwarded pages of while no plug state described them. */
  #untracked = new Set<string>();

  /**
   * Create the filter.
   *
   * @param options Channel, page size, plug map.
   */
  constructor(options: MultifdFilterOptions) {
    this.#pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    checkMultifdPageSize(this.#pageSize);
    this.#channel = options.channel;
    this.#map = options.plugMap;
    this.#tables = new PlugTables(options.plugMap);
    this.#bounds = new PacketBounds(this.#pageSize);
    this.#maxDetails = options.maxDropDetails ?? 1000;
  }

  /** Whether the block list and some plug state are known. */
  get ready(): boolean {
    return this.#bounds.known && this.#tables.known;
  }

  /** Pages removed so far (cheap, unlike {@linkcode stats}). */
  get droppedPages(): number {
    return this.#droppedPages;
  }

  /** What was removed so far. */
  get stats(): MultifdDropStats {
    return {
      channel: this.#channel,
      packets: this.#packets,
      rewrittenPackets: this.#rewritten,
      pages: this.#pages,
      droppedPages: this.#droppedPages,
      droppedBytes: this.#droppedBytes,
      dropped: this.#details.slice(),
    };
  }

  /**
   * Take a main-channel record: the block list or plug state. Without a plug
   * map the early section gives the state; the late device section comes
   * after every page (filter a late-layout migration with a plug map). With
   * a plug map, the stream's own state (early or late) narrows it: the
   * destination takes the stream's, so a block the map marks plugged and the
   * stream unplugged loses its pages from here on, and a page of it this
   * channel already forwarded is an error. The state of a device the plug
   * map does not describe decides from where it comes (early or late); when
   * this channel already forwarded pages of its RAMBlock and it marks any
   * block unplugged, that is an error (as `UnpluggedPageDropper` refuses a
   * late statement after pages it passed).
   *
   * @param r The record.
   * @throws {FormatError} when a plug map does not fit the stream, or a page
   * of a block the stream marks unplugged was forwarded under the map.
   * @throws {UnsupportedFeatureError} when the state of a device the plug map
   * does not describe marks blocks unplugged after this channel forwarded
   * pages of its RAMBlock.
   */
  control(r: MultifdControlRecord): void {
    this.#lastName = undefined;
    if (r.kind === "ram-mem-size") {
      this.#bounds.setRamBlocks(r.blocks);
      this.#tables.setRamBlocks(r.blocks, r.streamOffset);
      return;
    }
    const t = this.#tables.tableFromRecord(r);
    if (t === undefined) return;
    const current = this.#tables.get(t.ramBlock);
    if (current === undefined) {
      // A plug map that does not describe this device: its pages went on as they came.
      if (this.#untracked.has(t.ramBlock) && t.plugged.includes(0)) {
        throw new UnsupportedFeatureError(
          `Cannot filter multifd channel ${this.#channel}: the plug state of ${r.devicePath} ` +
            `arrives after this channel passed pages of ${JSON.stringify(t.ramBlock)}, which ` +
            "the plug map does not describe (late layout); give a plug map that describes it",
          "migration",
          r.streamOffset,
        );
      }
      // From here on the stream's state decides (a page after a late statement too).
      this.#tables.set(t);
      return;
    }
    const { table, keptAt } = narrowToStream(current, t, this.#kept.get(t.ramBlock));
    if (keptAt >= 0) {
      throw new FormatError(
        `Cannot filter multifd channel ${this.#channel}: the plug map marks gpa ${
          hex(current.gpa + keptAt)
        } of ${r.devicePath} plugged, but the stream marks it unplugged after this channel ` +
          "passed a page there; the destination would load it into an unplugged block",
        { format: "migration", code: "invariant", offset: r.streamOffset },
      );
    }
    if (table !== current) this.#tables.set(table);
  }

  /**
   * Filter one RAM packet.
   *
   * @param p The packet.
   * @returns `p` when it keeps all its pages, else a rewritten packet (new header and payload).
   * @throws {UnsupportedFeatureError} when no plug state is known, or a page with data must
   * leave a compressed packet.
   * @throws {FormatError} for a block not in the block list, an offset beyond the block or
   * not page aligned.
   */
  filterPacket(p: MultifdRamPacketRecord): MultifdRamPacketRecord {
    this.#packets++;
    const normal = p.normalRamOffsets;
    const zero = p.zeroRamOffsets;
    const n = normal.length + zero.length;
    if (n === 0) return p;
    this.#pages += n;
    if (!this.ready) {
      throw new UnsupportedFeatureError(
        `Cannot filter multifd channel ${this.#channel}: the virtio-mem plug state is not known at its first page ` +
          "(late layout, QEMU < 8.0 machine types); give a plug map",
        "migration",
        p.streamOffset,
      );
    }
    this.#bounds.check(p);
    let table: BlockPlugTable | undefined;
    let kept: KeptMap | undefined;
    if (p.ramBlock === this.#lastName) {
      table = this.#lastTable;
      kept = this.#lastKept;
    } else {
      table = this.#tables.get(p.ramBlock);
      if (table !== undefined) {
        kept = this.#kept.get(p.ramBlock);
        if (kept === undefined) {
          kept = keptMap(table);
          this.#kept.set(p.ramBlock, kept);
        }
      }
      this.#lastName = p.ramBlock;
      this.#lastTable = table;
      this.#lastKept = kept;
    }
    if (table === undefined) {
      this.#untracked.add(p.ramBlock);
      return p;
    }
    let drop: boolean[] | undefined;
    for (let i = 0; i < n; i++) {
      const ramOffset = i < normal.length ? normal[i]! : zero[i - normal.length]!;
      const blockIndex = Math.floor(ramOffset / table.blockSize);
      if (table.plugged[blockIndex] === 1) {
        kept!.bytes[Math.floor(ramOffset / kept!.granule)] = 1;
        continue;
      }
      drop ??= new Array<boolean>(n).fill(false);
      drop[i] = true;
    }
    if (drop === undefined) return p;
    return this.#rewrite(p, table, drop);
  }

  #rewrite(
    p: MultifdRamPacketRecord,
    table: BlockPlugTable,
    drop: boolean[],
  ): MultifdRamPacketRecord {
    const normal = p.normalRamOffsets;
    const zero = p.zeroRamOffsets;
    const pageSize = this.#pageSize;
    const compressed = (p.flags & MULTIFD_FLAG_COMPRESSION_MASK) !== MULTIFD_FLAG_NOCOMP;
    const keptNormal: number[] = [];
    const keptZero: number[] = [];
    const keptData: number[] = [];
    for (let i = 0; i < drop.length; i++) {
      const isNormal = i < normal.length;
      const ramOffset = isNormal ? normal[i]! : zero[i - normal.length]!;
      if (!drop[i]) {
        if (isNormal) {
          keptNormal.push(ramOffset);
          keptData.push(i);
        } else keptZero.push(ramOffset);
        continue;
      }
      if (isNormal && compressed) {
        throw new UnsupportedFeatureError(
          `Cannot filter multifd channel ${this.#channel}: page ${hex(ramOffset)} of ${
            JSON.stringify(p.ramBlock)
          } lies in an unplugged block but travels in a ${p.compression}-compressed packet; ` +
            "a channel's packets form one compressed stream, so it cannot be removed without " +
            "recompressing the rest of the channel (use --mode verify, or turn multifd compression off)",
          "migration",
          multifdOffsetSlotStreamOffset(p, i),
        );
      }
      const byteLength = isNormal ? pageSize : 0; // the header keeps its size
      this.#droppedPages++;
      this.#droppedBytes += byteLength;
      if (this.#details.length < this.#maxDetails) {
        const blockIndex = Math.floor(ramOffset / table.blockSize);
        this.#details.push({
          channel: this.#channel,
          recordKind: isNormal ? "ram-page" : "ram-zero-page",
          ramBlock: p.ramBlock,
          ramOffset,
          gpa: table.gpa + ramOffset,
          blockIndex,
          streamOffset: multifdOffsetSlotStreamOffset(p, i),
          byteLength,
        });
      }
    }
    this.#rewritten++;
    let data = p.data;
    if (!compressed && keptData.length < normal.length) {
      const out = new Uint8Array(keptData.length * pageSize);
      keptData.forEach((i, k) => {
        out.set(p.data.subarray(i * pageSize, (i + 1) * pageSize), k * pageSize);
      });
      data = out;
    }
    const header = writeMultifdRamPacketHeader(
      {
        flags: p.flags,
        pagesAlloc: p.pagesAlloc,
        normalRamOffsets: keptNormal,
        zeroRamOffsets: keptZero,
        nextPacketSize: compressed ? p.nextPacketSize : keptNormal.length * pageSize,
        packetNum: p.packetNum,
        ramBlock: p.ramBlock,
      },
      pageSize,
      p.header,
    );
    return {
      ...p,
      normalRamOffsets: keptNormal,
      zeroRamOffsets: keptZero,
      nextPacketSize: compressed ? p.nextPacketSize : keptNormal.length * pageSize,
      header,
      data,
    };
  }

  /** The plug map this filter was given, if any. */
  get plugMap(): PlugMap | undefined {
    return this.#map;
  }
}
