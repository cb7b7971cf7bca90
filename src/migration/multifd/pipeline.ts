/**
 * The record pipeline of one multifd channel: decode the channel, pass,
 * filter or verify every packet, encode what goes on. The proxy runs one per
 * channel, on the thread that owns its sockets; tests run it on captured channels.
 *
 * The channel's packets cannot be judged alone: the page size, the block
 * list and the plug state come from the main channel. The caller hands them
 * over as the main channel shows them ({@linkcode MultifdPipeline.setPageSize},
 * {@linkcode MultifdPipeline.control}, {@linkcode MultifdPipeline.setupComplete}).
 * Until they are known, packets with pages are held back (copied, up to
 * `maxHeldBytes`), and so is everything after them: the channel's order is
 * kept. Holding never stops the input, because the main channel's state may
 * only arrive after the source has written more pages (QEMU buffers the
 * main channel).
 *
 * - `pass`: every packet goes on (after the page size is known).
 * - `verify`: packets with pages wait for the block list; every page is
 *   checked as it passes (early state, plug map) or tracked until the late
 *   device section (see `MultifdChannelVerifier`). From the first violation
 *   on, packets go on without their pages ({@linkcode MultifdPipeline.stripPages}),
 *   and the input is read to its end to report every violation.
 * - `filter`: packets with pages wait for the end of the main channel's
 *   setup phase (its early sections); then unplugged pages leave their
 *   packets (see `MultifdChannelFilter`).
 *
 * @module
 */

import { UnsupportedFeatureError } from "../../errors.ts";
import type { ByteReader } from "../../io/byte_reader.ts";
import { ByteWriter } from "../../io/byte_writer.ts";
import { type OrderedSink, orderedSink } from "../../io/ordered_sink.ts";
import type { PlugMap } from "../../vmem/plug_map.ts";
import type { VerifyResult } from "../verify.ts";
import { decodeMultifdChannel } from "./decoder.ts";
import { MultifdEncoder } from "./encoder.ts";
import { MultifdChannelFilter, type MultifdDropStats } from "./filter.ts";
import { checkMultifdPageSize, writeMultifdRamPacketHeader } from "./packet.ts";
import type { MultifdRamPacketRecord, MultifdRecord } from "./types.ts";
import {
  MultifdChannelVerifier,
  type MultifdControlRecord,
  type MultifdPlugStateViolation,
} from "./verify.ts";

/** What a {@linkcode MultifdPipeline} does to its channel. */
export type MultifdPipelineMode = "pass" | "filter" | "verify";

/** Options for {@linkcode MultifdPipeline}. */
export interface MultifdPipelineOptions {
  /** Pass, filter or verify. @default {"pass"} */
  mode?: MultifdPipelineMode;
  /** Out-of-band plug state (filter, verify). @default {undefined} */
  plugMap?: PlugMap;
  /** Target page size, when known up front (else {@linkcode MultifdPipeline.setPageSize}). @default {undefined} */
  pageSize?: number;
  /**
   * Writes one output chunk. Without it nothing is encoded (a check-only run).
   * @default {undefined}
   */
  output?: (chunk: Uint8Array<ArrayBuffer>) => Promise<void> | void;
  /** Size of the output chunks. @default {1048576} */
  chunkSize?: number;
  /**
   * Reuse output chunks once `output` resolved (set `false` when `output`
   * keeps or transfers them).
   * @default {true}
   */
  reuseChunks?: boolean;
  /** Supplies output chunk buffers (see `ByteWriterOptions.allocate`). @default {undefined} */
  allocateChunk?: () => Uint8Array<ArrayBuffer>;
  /** Most bytes held back while the main channel's state is unknown. @default {67108864} */
  maxHeldBytes?: number;
  /** Verify mode: called with the violations each packet (or late decision) adds. @default {undefined} */
  onViolations?: (violations: MultifdPlugStateViolation[]) => void;
  /** Called after every decoded batch, cheaply. @default {undefined} */
  onBatch?: (progress: MultifdProgress) => void;
}

/** Counts of a running or finished channel pipeline. */
export interface MultifdProgress {
  /** Channel id from the initial packet (`undefined` before it). */
  channel: number | undefined;
  /** Input bytes decoded. */
  bytesIn: number;
  /** Output bytes written (acknowledged by the output). */
  bytesOut: number;
  /** RAM packets processed. */
  packets: number;
  /** Pages with data processed. */
  pages: number;
  /** Zero pages processed. */
  zeroPages: number;
  /** SYNC packets processed (checked and forwarded): the channel's sync rounds. */
  syncPackets: number;
  /** Main-channel records taken with {@linkcode MultifdPipeline.control}. */
  controls: number;
  /** Bytes held back now. */
  heldBytes: number;
  /** Verify mode: violations found. */
  violations: number;
  /** Filter mode: pages removed. */
  droppedPages: number;
}

/** Outcome of a channel pipeline. */
export interface MultifdPipelineResult extends MultifdProgress {
  /** Verify mode: every violation found in this channel. */
  violationList: MultifdPlugStateViolation[];
  /** Verify mode: the verifier's outcome for this channel. */
  verify: VerifyResult | undefined;
  /** Filter mode: what was removed. */
  dropStats: MultifdDropStats | undefined;
}

const EMPTY = new Uint8Array(0);

const hasPages = (p: MultifdRamPacketRecord) =>
  p.normalRamOffsets.length + p.zeroRamOffsets.length > 0;

/**
 * One multifd channel through pass, filter or verify.
 *
 * @example Verify a captured channel against its main channel
 * ```ts ignore
 * import { bytesReader } from "@vmem-dump/vmem-dump";
 * import { isMultifdControlRecord, MultifdPipeline } from "@vmem-dump/vmem-dump/migration";
 * const p = new MultifdPipeline(bytesReader(channelBytes), { mode: "verify", pageSize: 4096 });
 * for (const r of mainRecords) if (isMultifdControlRecord(r)) p.control(r);
 * const result = await p.run();
 * console.log(result.violationList.map((v) => v.gpa));
 * ```
 */
export class MultifdPipeline {
  #reader: ByteReader;
  #options: MultifdPipelineOptions;
  #mode: MultifdPipelineMode;
  #pageSize: number | undefined;
  #pageSizeKnown!: (n: number) => void;
  #pageSizePromise: Promise<number>;
  #sink: OrderedSink | undefined;
  #writer: ByteWriter | undefined;
  #encoder: MultifdEncoder | undefined;
  #controls: MultifdControlRecord[] = [];
  #verifier: MultifdChannelVerifier | undefined;
  #filter: MultifdChannelFilter | undefined;
  #setupDone = false;
  #held: MultifdRecord[] = [];
  #heldBytes = 0;
  #strip = false;
  #mainComplete = false;
  #wakeHeld: (() => void) | undefined;
  #started = false;
  #channel: number | undefined;
  #packets = 0;
  #pages = 0;
  #zeroPages = 0;
  #syncPackets = 0;
  #controlCount = 0;
  #violationsReported = 0;
  #lastSyncOutputEnd = 0;
  #loadsSinceSync = 0;

  /**
   * Set the pipeline up (nothing is read until {@linkcode MultifdPipeline.run}).
   *
   * @param reader The channel's bytes.
   * @param options Mode, plug map, page size, output, hooks.
   */
  constructor(reader: ByteReader, options: MultifdPipelineOptions = {}) {
    this.#reader = reader;
    this.#options = options;
    this.#mode = options.mode ?? "pass";
    this.#pageSizePromise = new Promise((resolve) => (this.#pageSizeKnown = resolve));
    if (options.pageSize !== undefined) this.setPageSize(options.pageSize);
    if (options.output !== undefined) {
      const output = options.output;
      this.#sink = orderedSink(async (chunk) => {
        await output(chunk);
      });
      this.#writer = new ByteWriter(this.#sink.sink, {
        chunkSize: options.chunkSize ?? 1 << 20,
        reuseChunks: options.reuseChunks ?? true,
        ...(options.allocateChunk ? { allocate: options.allocateChunk } : {}),
      });
      this.#encoder = new MultifdEncoder(this.#writer);
    }
  }

  /** Counts so far. */
  get progress(): MultifdProgress {
    return {
      channel: this.#channel,
      bytesIn: this.#reader.offset,
      bytesOut: this.#sink?.written ?? 0,
      packets: this.#packets,
      pages: this.#pages,
      zeroPages: this.#zeroPages,
      syncPackets: this.#syncPackets,
      controls: this.#controlCount,
      heldBytes: this.#heldBytes,
      violations: this.#verifier?.violationCount ?? 0,
      droppedPages: this.#filter?.droppedPages ?? 0,
    };
  }

  /**
   * Where the channel stands after its latest SYNC packet: `outputEnd`, the
   * output offset just after that packet (0 before any); `loadsSince`, what
   * the packets forwarded after it give the destination to load (their
   * pages, with data or zero, plus one per device-state packet). A
   * destination loads a SYNC packet's own pages before it handles the flag,
   * so once it has passed its last sync point it had every byte up to
   * `outputEnd`; after it, QEMU sends nothing it would load (QEMU < 9.0 may
   * send one empty packet, see docs/multifd.md).
   */
  get lastSync(): { outputEnd: number; loadsSince: number } {
    return { outputEnd: this.#lastSyncOutputEnd, loadsSince: this.#loadsSinceSync };
  }

  /** Whether verify mode found a violation (pages are stripped from then on). */
  get failed(): boolean {
    return this.#verifier?.failed ?? false;
  }

  /**
   * The target page size (the main channel's `configuration/target-page-bits`,
   * else 4096). Decoding starts once it is known.
   *
   * @param pageSize Bytes.
   */
  setPageSize(pageSize: number): void {
    if (this.#pageSize !== undefined) return;
    checkMultifdPageSize(pageSize);
    this.#pageSize = pageSize;
    this.#pageSizeKnown(pageSize);
  }

  /**
   * A main-channel record with the block list or plug state, in main-channel
   * order. Held packets that may now go are processed at once.
   *
   * @param r The record.
   * @throws {FormatError} when a plug map does not fit the stream.
   */
  control(r: MultifdControlRecord): void {
    this.#controlCount++;
    if (this.#channel === undefined) this.#controls.push(r);
    this.#verifier?.control(r);
    this.#filter?.control(r);
    this.#reportViolations();
    this.#release();
  }

  /**
   * The main channel has left its setup phase (its early sections are all
   * known): filter and verify mode may judge packets now.
   */
  setupComplete(): void {
    this.#setupDone = true;
    this.#release();
  }

  /**
   * The main channel's stream is complete: no more block list or plug state
   * will come. A channel that still holds packets then fails.
   */
  mainComplete(): void {
    this.#mainComplete = true;
    this.#wakeHeld?.();
  }

  /** Hand buffered output to the output now (call before waiting for more input). */
  sendBuffered(): void {
    this.#writer?.sendBuffered();
  }

  /**
   * From now on every RAM packet goes on with an empty page list (its SYNC
   * flag and packet number kept, no payload): the migration was vetoed.
   * The destination gets no page of this channel any more, but still every
   * SYNC: QEMU 10.0 waits for them in its main thread and its receive
   * threads' failure does not wake it, so a channel that ended or broke
   * off would leave the destination hanging instead of failing on the main
   * channel's missing `QEMU_VM_EOF`. Verify mode strips from its first
   * violation on (the violating packet included).
   */
  stripPages(): void {
    this.#strip = true;
  }

  /**
   * Run to the end of the channel.
   *
   * @returns Counts and the verify or filter outcome.
   * @throws {FormatError} for a malformed or truncated channel, or packets that do not fit
   * the main channel's block list.
   * @throws {UnsupportedFeatureError} filter mode: no plug state, or a page with data in a
   * compressed packet; any mode: more than `maxHeldBytes` held back.
   */
  async run(): Promise<MultifdPipelineResult> {
    if (this.#started) throw new TypeError("MultifdPipeline.run() was already called");
    this.#started = true;
    const pageSize = await this.#pageSizePromise;
    for await (const batch of decodeMultifdChannel(this.#reader, { pageSize })) {
      for (const r of batch) {
        if (this.#held.length > 0 || this.#mustWait(r)) this.#hold(r);
        else this.#process(r);
      }
      if (this.#writer !== undefined) {
        await this.#writer.flushIfFull();
        this.#sink!.check();
      }
      this.#options.onBatch?.(this.progress);
    }
    // The channel may end before the main channel said what its packets wait for.
    while (this.#held.length > 0 && !this.#mainComplete) {
      await new Promise<void>((resolve) => (this.#wakeHeld = resolve));
    }
    if (this.#held.length > 0) {
      throw new UnsupportedFeatureError(
        `Cannot ${this.#mode} multifd channel ${this.#channel}: ${this.#heldBytes} bytes of it ` +
          "waited for a block list or plug state the main channel never gave",
        "migration",
        this.#held[0]!.streamOffset,
      );
    }
    if (this.#writer !== undefined) {
      await this.#writer.flush();
      await this.#sink!.drain(this.#writer.offset);
    }
    return {
      ...this.progress,
      violationList: this.#verifier?.violations ?? [],
      verify: this.#verifier?.result,
      dropStats: this.#filter?.stats,
    };
  }

  #mustWait(r: MultifdRecord): boolean {
    if (r.kind !== "multifd-ram-packet" || !hasPages(r)) return false;
    // Both judging modes wait for the main channel's setup phase: an early plug state is then
    // known, and no page of a block it shows unplugged is forwarded before it is judged.
    if (this.#mode === "verify") return !this.#setupDone || !this.#verifier!.ready;
    if (this.#mode === "filter") return !this.#setupDone;
    return false;
  }

  #hold(r: MultifdRecord): void {
    const copy: MultifdRecord = r.kind === "multifd-init" ? r : { ...r, data: r.data.slice() };
    this.#held.push(copy);
    this.#heldBytes += r.kind === "multifd-init"
      ? r.bytes.byteLength
      : r.header.byteLength + r.data.byteLength;
    const max = this.#options.maxHeldBytes ?? 64 << 20;
    if (this.#heldBytes > max) {
      throw new UnsupportedFeatureError(
        `Cannot ${this.#mode} multifd channel ${this.#channel}: more than ${max} bytes of it arrived ` +
          "before the main channel's block list or plug state",
        "migration",
        r.streamOffset,
      );
    }
  }

  /** Process held records that may go now, in order. */
  #release(): void {
    if (this.#held.length === 0) return;
    let i = 0;
    while (i < this.#held.length && !this.#mustWait(this.#held[i]!)) {
      this.#process(this.#held[i++]!);
    }
    if (i === 0) return;
    this.#held.splice(0, i);
    if (this.#held.length === 0) this.#wakeHeld?.();
    this.#heldBytes = 0;
    for (const r of this.#held) {
      this.#heldBytes += r.kind === "multifd-init"
        ? r.bytes.byteLength
        : r.header.byteLength + r.data.byteLength;
    }
    this.sendBuffered();
  }

  #process(r: MultifdRecord): void {
    let out: MultifdRecord = r;
    if (r.kind === "multifd-init") {
      this.#channel = r.channelId;
      this.#start(r.channelId);
    } else if (r.kind === "multifd-ram-packet") {
      this.#packets++;
      this.#pages += r.normalRamOffsets.length;
      this.#zeroPages += r.zeroRamOffsets.length;
      if (this.#verifier !== undefined) {
        if (!this.#verifier.checkPacket(r)) this.#strip = true;
        this.#reportViolations();
      } else if (this.#filter !== undefined) {
        out = this.#filter.filterPacket(r);
      }
      if (this.#strip) out = this.#stripped(r);
      if (r.sync) this.#syncPackets++;
    } else if (this.#channel === undefined) {
      throw new TypeError("MultifdPipeline: a packet before the initial packet");
    }
    this.#encoder?.write(out);
    if (out.kind === "multifd-ram-packet") {
      if (out.sync) {
        this.#lastSyncOutputEnd = this.#writer?.offset ?? 0;
        this.#loadsSinceSync = 0;
      } else this.#loadsSinceSync += out.normalRamOffsets.length + out.zeroRamOffsets.length;
    } else if (out.kind === "multifd-device-state-packet") this.#loadsSinceSync++;
  }

  /** The packet without pages (or itself when it has none). */
  #stripped(p: MultifdRamPacketRecord): MultifdRamPacketRecord {
    if (!hasPages(p)) return p;
    const header = writeMultifdRamPacketHeader(
      {
        flags: p.flags,
        pagesAlloc: p.pagesAlloc,
        normalRamOffsets: [],
        nextPacketSize: 0,
        packetNum: p.packetNum,
        ramBlock: p.ramBlock,
      },
      this.#pageSize!,
      p.header,
    );
    return {
      ...p,
      normalRamOffsets: [],
      zeroRamOffsets: [],
      nextPacketSize: 0,
      header,
      data: EMPTY,
    };
  }

  /** The channel id is known: create the mode's checker and give it what the main channel said. */
  #start(channel: number): void {
    const plugMap = this.#options.plugMap;
    const common = { channel, pageSize: this.#pageSize!, ...(plugMap ? { plugMap } : {}) };
    if (this.#mode === "verify") this.#verifier = new MultifdChannelVerifier(common);
    else if (this.#mode === "filter") this.#filter = new MultifdChannelFilter(common);
    for (const c of this.#controls) {
      this.#verifier?.control(c);
      this.#filter?.control(c);
    }
    this.#controls = [];
  }

  #reportViolations(): void {
    const v = this.#verifier;
    if (v === undefined || this.#options.onViolations === undefined) return;
    const count = v.violationCount;
    if (count === this.#violationsReported) return;
    const fresh = v.violations.slice(this.#violationsReported);
    this.#violationsReported = count;
    if (fresh.length > 0) this.#options.onViolations(fresh);
  }
}
