/**
 * Send-side filter: drop the RAM records of unplugged virtio-mem blocks from
 * a migration stream, keeping the result loadable by QEMU.
 *
 * A record is dropped whole (header, idstr, payload) when its RAMBlock is a
 * virtio-mem memory backend and its device block is unplugged. When a
 * dropped record was the one that named the RAMBlock (CONTINUE clear), the
 * next kept record of that block gets the name back (CONTINUE cleared), as
 * QEMU's loader resolves CONTINUE against the last named block
 * (spec migration-stream.md §6.3). Every other record passes unchanged, so
 * re-encoding gives the input bytes minus the dropped records.
 *
 * @module
 */

import { hex } from "../io/text.ts";
import { FormatError, UnsupportedFeatureError } from "../errors.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import {
  type BlockPlugTable,
  firstDroppedButPlugged,
  type KeptMap,
  keptMap,
  narrowToStream,
  type PlugStateSource,
  PlugTables,
} from "./_filter_plug_state.ts";
import { stageTransformer } from "./_batch_transformer.ts";
import type { RecordOrBatch, RecordStage } from "./stage.ts";
import { pageRecordByteLength } from "./encoder.ts";
import { isPageRecord, type MigrationRecord, type RamPageLikeRecord } from "./types.ts";

export type { PlugStateSource } from "./_filter_plug_state.ts";

/** Options for {@linkcode UnpluggedPageDropper} and {@linkcode DropUnpluggedPagesStream}. */
export interface DropUnpluggedPagesOptions {
  /**
   * Out-of-band plug state (e.g. from `loadPlugState`). Pages of the blocks it
   * marks unplugged are dropped; so are those of blocks the stream's own state
   * marks unplugged once it is known (the destination takes the stream's
   * state), and a page already passed in such a block (late layout) is an
   * error, unless `allowPlugStateMismatch`.
   * @default {undefined} (use the stream's `virtio-mem-device-early` sections)
   */
  plugMap?: PlugMap;
  /**
   * Fail at the first page record when no plug state is known yet (a late
   * layout stream without `plugMap`). When `false`, such records pass.
   * @default {true}
   */
  requirePlugState?: boolean;
  /**
   * Let `plugMap` alone decide: accept one that marks a block unplugged which
   * the stream's own state marks plugged (the destination would then miss
   * plugged memory), and keep the pages of blocks it marks plugged which the
   * stream marks unplugged (the output then does not verify clean).
   * @default {false}
   */
  allowPlugStateMismatch?: boolean;
  /** How many dropped records to describe one by one in {@linkcode DropStats.dropped}. @default {1000} */
  maxDropDetails?: number;
}

/** One dropped record. */
export interface DroppedRecord {
  /** Kind of the dropped record. */
  recordKind: RamPageLikeRecord["kind"];
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Offset inside the RAMBlock. */
  ramOffset: number;
  /** Guest-physical address of the page. */
  gpa: number;
  /** Device block index. */
  blockIndex: number;
  /** Stream offset of the record in the input. */
  streamOffset: number;
  /** Encoded size of the record in the input. */
  byteLength: number;
}

/** Drop counts of one device block. */
export interface DropBlockStats {
  /** Device block index. */
  blockIndex: number;
  /** Guest-physical address of the block. */
  gpa: number;
  /** Records dropped. */
  droppedRecords: number;
  /** Input bytes dropped. */
  droppedBytes: number;
}

/** Drop counts of one virtio-mem device. */
export interface DropDeviceStats {
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Device path P. */
  devicePath: string;
  /** Guest-physical base of the region. */
  gpa: number;
  /** Device block size. */
  blockSize: number;
  /** Where the plug state used for this device came from. */
  source: PlugStateSource;
  /** Plugged device blocks. */
  pluggedBlocks: number;
  /** Device blocks in the region. */
  blocks: number;
  /** Page records kept. */
  keptRecords: number;
  /** Records dropped. */
  droppedRecords: number;
  /** Input bytes dropped. */
  droppedBytes: number;
  /** Blocks with dropped records, by block index. */
  droppedBlocks: DropBlockStats[];
}

/** What a filter run dropped. */
export interface DropStats {
  /** Page records seen. */
  pageRecords: number;
  /** Records dropped. */
  droppedRecords: number;
  /** Input bytes dropped. */
  droppedBytes: number;
  /** Kept records whose RAMBlock name was restored (CONTINUE cleared). */
  renamedRecords: number;
  /** Bytes added by restored names. */
  renamedBytes: number;
  /** Per device, in stream order. */
  devices: DropDeviceStats[];
  /** The first `maxDropDetails` dropped records. */
  dropped: DroppedRecord[];
}

interface DeviceCounters {
  /**
   * The table the report describes, in whose block geometry `blocks` counts:
   * the table in use, except that one with another block size (a plug map
   * narrowed by the stream's late statement) does not replace it once drops
   * were counted (no page follows a late statement).
   */
  table: BlockPlugTable;
  kept: number;
  /** Where kept records landed. */
  passed: KeptMap;
  droppedRecords: number;
  droppedBytes: number;
  blocks: Map<number, { records: number; bytes: number }>;
}

/**
 * The filter engine, a {@linkcode RecordStage}: feed it record batches in
 * stream order, it returns the records to emit. Synchronous per batch, so a
 * pipeline awaits once per batch, not per page. Nothing is held back.
 *
 * @example Filter a file into another
 * ```ts ignore
 * import { openInput, runMigrationPipeline, UnpluggedPageDropper } from "@vmem-dump/vmem-dump";
 * const input = await openInput("in.mig");
 * const out = await Deno.open("out.mig", { write: true, create: true, truncate: true });
 * const dropper = new UnpluggedPageDropper();
 * await runMigrationPipeline(input.reader, {
 *   stages: [dropper],
 *   output: async (c) => { let n = 0; while (n < c.length) n += await out.write(c.subarray(n)); },
 * });
 * console.log(dropper.stats.droppedRecords);
 * ```
 */
export class UnpluggedPageDropper implements RecordStage {
  #tables: PlugTables;
  #map: PlugMap | undefined;
  #requirePlugState: boolean;
  #allowMismatch: boolean;
  #maxDetails: number;
  /** Output side: the last RAMBlock named on the output (QEMU's `last_recv_block` of the destination). */
  #lastEmittedBlock: string | undefined;
  #lastRamBlock: string | undefined;
  #lastTable: BlockPlugTable | undefined;
  #lastCounters: DeviceCounters | undefined;
  #counters = new Map<string, DeviceCounters>();
  #untracked = new Set<string>();
  /** RAMBlocks whose plug state the stream itself stated (early or device section). */
  #inBand = new Set<string>();
  #pageRecords = 0;
  #droppedRecords = 0;
  #droppedBytes = 0;
  #renamedRecords = 0;
  #renamedBytes = 0;
  #details: DroppedRecord[] = [];
  #sawPage = false;
  /** The MEM_SIZE list was seen. */
  #listed = false;
  /** The section the records belong to, when the decoder tagged it as after device state. */
  #lateSection: string | undefined;

  /**
   * Create the filter.
   *
   * @param options Plug state and checks.
   */
  constructor(options: DropUnpluggedPagesOptions = {}) {
    this.#map = options.plugMap;
    this.#tables = new PlugTables(options.plugMap);
    this.#requirePlugState = options.requirePlugState ?? true;
    this.#allowMismatch = options.allowPlugStateMismatch ?? false;
    this.#maxDetails = options.maxDropDetails ?? 1000;
  }

  /** Records dropped so far (cheap, unlike {@linkcode stats}). */
  get droppedRecords(): number {
    return this.#droppedRecords;
  }

  /** What was dropped so far, per device and block (builds a fresh report). */
  get stats(): DropStats {
    const devices: DropDeviceStats[] = [];
    for (const c of this.#counters.values()) {
      const t = c.table;
      let pluggedBlocks = 0;
      for (let i = 0; i < t.plugged.length; i++) pluggedBlocks += t.plugged[i]!;
      devices.push({
        ramBlock: t.ramBlock,
        devicePath: t.devicePath,
        gpa: t.gpa,
        blockSize: t.blockSize,
        source: t.source,
        pluggedBlocks,
        blocks: t.plugged.length,
        keptRecords: c.kept,
        droppedRecords: c.droppedRecords,
        droppedBytes: c.droppedBytes,
        droppedBlocks: [...c.blocks].sort((a, b) => a[0] - b[0]).map(([blockIndex, v]) => ({
          blockIndex,
          gpa: t.gpa + blockIndex * t.blockSize,
          droppedRecords: v.records,
          droppedBytes: v.bytes,
        })),
      });
    }
    return {
      pageRecords: this.#pageRecords,
      droppedRecords: this.#droppedRecords,
      droppedBytes: this.#droppedBytes,
      renamedRecords: this.#renamedRecords,
      renamedBytes: this.#renamedBytes,
      devices,
      dropped: this.#details.slice(),
    };
  }

  #install(table: BlockPlugTable): void {
    this.#tables.set(table);
    const old = this.#counters.get(table.ramBlock);
    const regrid = old !== undefined && old.droppedRecords > 0 &&
      old.table.blockSize !== table.blockSize;
    this.#counters.set(table.ramBlock, {
      table: regrid ? old.table : table,
      kept: old?.kept ?? 0,
      passed: old?.passed ?? keptMap(table),
      droppedRecords: old?.droppedRecords ?? 0,
      droppedBytes: old?.droppedBytes ?? 0,
      blocks: old?.blocks ?? new Map(),
    });
    this.#lastRamBlock = undefined;
  }

  /** Handle a record that is not a page: state updates and checks. */
  #control(r: MigrationRecord): void {
    switch (r.kind) {
      case "section-start":
      case "section-part":
      case "section-end":
      case "section-full":
        // A page in it is refused when it comes (process()); a section without pages loads
        // nothing, and verify passes it too.
        this.#lateSection = r.afterDeviceState
          ? `a ${JSON.stringify(r.idstr)} section (${r.kind.slice(8).toUpperCase()}) at ${
            hex(r.streamOffset)
          }`
          : undefined;
        return;
      case "command":
        // The output must verify clean, and a PACKAGED command after device state never does.
        if (r.afterDeviceState) this.#late("a PACKAGED command", r.streamOffset);
        return;
      case "ram-mem-size":
        // The record after a list names its block (the decoder refuses CONTINUE there).
        this.#lastEmittedBlock = undefined;
        this.#lastRamBlock = undefined;
        // A later list repeats the first (the decoder refuses any other): keep what was learnt.
        if (this.#listed) return;
        this.#listed = true;
        this.#tables.setRamBlocks(r.blocks, r.streamOffset);
        this.#counters.clear();
        for (const t of this.#tables.values()) this.#install(t);
        return;
      case "virtio-mem-early":
      case "virtio-mem-device": {
        const inBand = this.#tables.tableFromRecord(r);
        if (inBand === undefined) return;
        if (this.#inBand.has(inBand.ramBlock)) {
          throw new FormatError(
            `Cannot filter migration stream: the plug state of ${r.devicePath} is stated a second ` +
              "time; the destination would end with the last statement while pages were dropped " +
              "by the first, so no output of this stream can verify clean",
            { format: "migration", code: "bad-virtio-mem", offset: r.streamOffset },
          );
        }
        this.#inBand.add(inBand.ramBlock);
        const current = this.#tables.get(inBand.ramBlock);
        if (current === undefined) {
          if (
            this.#requirePlugState && this.#untracked.has(inBand.ramBlock) &&
            inBand.plugged.includes(0)
          ) {
            throw new UnsupportedFeatureError(
              `Cannot filter migration stream: the plug state of ${r.devicePath} arrives after pages of ${
                JSON.stringify(inBand.ramBlock)
              } were passed (late layout); give a plug map or filter a seekable file in two passes`,
              "migration",
              r.streamOffset,
            );
          }
          if (r.kind === "virtio-mem-early") this.#install(inBand);
          return;
        }
        if (!this.#allowMismatch) {
          const bad = firstDroppedButPlugged(current, inBand);
          if (bad >= 0) {
            throw new FormatError(
              `Cannot filter migration stream: the plug map marks block ${bad} (gpa ${
                hex(current.gpa + bad * current.blockSize)
              }) of ${r.devicePath} unplugged, but the stream marks it plugged`,
              { format: "migration", code: "invariant", offset: r.streamOffset },
            );
          }
          this.#unplugAsStream(current, inBand, r.devicePath, r.streamOffset);
        }
        return;
      }
      default:
        return;
    }
  }

  /**
   * The stream states memory unplugged that the plug map marks plugged: the
   * destination takes the stream's state, so a page kept there would load
   * into an unplugged block and the output would never verify clean. Such
   * pages are dropped from here on; one kept before (late layout) cannot be
   * taken back: refuse the stream.
   */
  #unplugAsStream(
    current: BlockPlugTable,
    inBand: BlockPlugTable,
    devicePath: string,
    streamOffset: number,
  ): void {
    const { table, keptAt } = narrowToStream(
      current,
      inBand,
      this.#counters.get(current.ramBlock)?.passed,
    );
    if (keptAt >= 0) {
      throw new FormatError(
        `Cannot filter migration stream: the plug map marks gpa ${
          hex(current.gpa + keptAt)
        } of ${devicePath} plugged, but the stream marks it unplugged after a page there was ` +
          "passed; the destination would load it into an unplugged block",
        { format: "migration", code: "invariant", offset: streamOffset },
      );
    }
    if (table !== current) this.#install(table);
  }

  /** Refuse the stream: RAM loaded after device state began never verifies clean. */
  #late(what: string, streamOffset: number): never {
    throw new FormatError(
      `Cannot filter migration stream: ${what} after device state began: QEMU would load RAM ` +
        "after the devices, so no output of this stream can verify clean",
      { format: "migration", code: "bad-section", offset: streamOffset },
    );
  }

  #noPlugState(r: RamPageLikeRecord): never {
    throw new UnsupportedFeatureError(
      "Cannot filter migration stream: the virtio-mem plug state is not known at the first RAM page " +
        "(late layout, QEMU < 8.0 machine types); give a plug map or filter a seekable file in two passes",
      "migration",
      r.streamOffset,
    );
  }

  /**
   * Filter one batch of records (in stream order).
   *
   * @param batch Records, e.g. from `decodeMigrationBatches`.
   * @returns The records to emit: `batch` itself when nothing changed, else a new array.
   * @throws {UnsupportedFeatureError} when the plug state is unknown at the first page.
   * @throws {FormatError} when a plug map disagrees with the stream or matches no RAMBlock.
   */
  process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
    let out: MigrationRecord[] | undefined;
    for (let i = 0; i < batch.length; i++) {
      const r = batch[i]!;
      if (!isPageRecord(r)) {
        this.#control(r);
        if (out !== undefined) out.push(r);
        continue;
      }
      this.#pageRecords++;
      if (this.#lateSection !== undefined) {
        this.#late(`a page record (${r.kind}) in ${this.#lateSection},`, r.streamOffset);
      }
      if (!this.#sawPage) {
        this.#sawPage = true;
        if (this.#requirePlugState && !this.#tables.known) this.#noPlugState(r);
      }
      let table: BlockPlugTable | undefined;
      let counters: DeviceCounters | undefined;
      if (r.ramBlock === this.#lastRamBlock) {
        table = this.#lastTable;
        counters = this.#lastCounters;
      } else {
        table = this.#tables.get(r.ramBlock);
        counters = this.#counters.get(r.ramBlock);
        this.#lastRamBlock = r.ramBlock;
        this.#lastTable = table;
        this.#lastCounters = counters;
        if (table === undefined) this.#untracked.add(r.ramBlock);
      }
      if (table !== undefined) {
        const blockIndex = Math.floor(r.ramOffset / table.blockSize);
        if (table.plugged[blockIndex] !== 1) {
          // Drop.
          if (out === undefined) out = batch.slice(0, i);
          const byteLength = pageRecordByteLength(r);
          this.#droppedRecords++;
          this.#droppedBytes += byteLength;
          const c = counters!;
          c.droppedRecords++;
          c.droppedBytes += byteLength;
          // Counted in the report's block geometry (see DeviceCounters.table).
          const reportIndex = Math.floor(r.ramOffset / c.table.blockSize);
          const b = c.blocks.get(reportIndex);
          if (b === undefined) c.blocks.set(reportIndex, { records: 1, bytes: byteLength });
          else {
            b.records++;
            b.bytes += byteLength;
          }
          if (this.#details.length < this.#maxDetails) {
            this.#details.push({
              recordKind: r.kind,
              ramBlock: r.ramBlock,
              ramOffset: r.ramOffset,
              gpa: table.gpa + r.ramOffset,
              blockIndex: reportIndex,
              streamOffset: r.streamOffset,
              byteLength,
            });
          }
          continue;
        }
        const c = counters!;
        c.kept++;
        c.passed.bytes[Math.floor(r.ramOffset / c.passed.granule)] = 1;
      }
      // Kept.
      if (!r.continued) {
        this.#lastEmittedBlock = r.ramBlock;
        if (out !== undefined) out.push(r);
      } else if (r.ramBlock !== this.#lastEmittedBlock) {
        if (out === undefined) out = batch.slice(0, i);
        out.push({ ...r, continued: false });
        this.#renamedRecords++;
        this.#renamedBytes += 1 + r.ramBlock.length;
        this.#lastEmittedBlock = r.ramBlock;
      } else if (out !== undefined) {
        out.push(r);
      }
    }
    return out ?? batch;
  }

  /**
   * End of the stream: the filter holds nothing back.
   *
   * @returns An empty list.
   */
  end(): readonly MigrationRecord[] {
    return [];
  }

  /** The plug map this dropper was given, if any. */
  get plugMap(): PlugMap | undefined {
    return this.#map;
  }
}

/**
 * A `TransformStream` that drops the RAM records of unplugged virtio-mem
 * blocks. It accepts single records or batches (arrays) and emits the same
 * shape: a batch in gives a batch out (skipped when empty), a dropped single
 * record gives nothing.
 *
 * @example Send-side pipeline
 * ```ts ignore
 * import { DropUnpluggedPagesStream, MigrationDecoderStream, MigrationEncoderStream } from "@vmem-dump/vmem-dump";
 * const file = await Deno.open("q10-s3.mig");
 * const drop = new DropUnpluggedPagesStream();
 * await file.readable
 *   .pipeThrough(new MigrationDecoderStream())
 *   .pipeThrough(drop)
 *   .pipeThrough(new MigrationEncoderStream())
 *   .pipeTo((await Deno.create("out.mig")).writable);
 * console.log(drop.stats.droppedRecords);
 * ```
 */
export class DropUnpluggedPagesStream extends TransformStream<RecordOrBatch, RecordOrBatch> {
  #dropper: UnpluggedPageDropper;

  /**
   * Create the filter.
   *
   * @param options Plug state and checks.
   */
  constructor(options: DropUnpluggedPagesOptions = {}) {
    const dropper = new UnpluggedPageDropper(options);
    super(stageTransformer(dropper));
    this.#dropper = dropper;
  }

  /** What was dropped so far. */
  get stats(): DropStats {
    return this.#dropper.stats;
  }
}
