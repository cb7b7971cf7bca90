/**
 * One proxied multifd channel: its `MultifdPipeline` reads the source
 * connection directly and writes its own destination connection, on the
 * thread that owns both (no Worker, no messages: each byte costs the two
 * socket copies, the stitch of a packet that spans reads into a reused
 * buffer, and the encoder's copy).
 *
 * - Packets wait for the main channel's state as `MultifdPipeline` decides
 *   (page size, block list, setup phase); a violation vetoes at once
 *   (`ExtraChannelInit.veto`) and later packets go on without pages.
 * - The EOF gate ({@linkcode MultifdProxyChannel.agree}) resolves once
 *   everything up to the main channel's last sync point was checked and
 *   handed to the destination (or the channel ended).
 * - The channel finishes (ends the destination's side, reports) only once
 *   the main channel's stream is complete: its late device section may
 *   still decide about this channel's pages.
 * - A pipeline error names the channel (`multifd channel N: …`); a failed
 *   write to the destination fails the channel unless the migration was
 *   vetoed (then the destination is failing anyway), or unless the
 *   destination closed the channel after its load: see
 *   {@linkcode MultifdProxyChannel.agree} and "After the last SYNC" below.
 *
 * ## After the last SYNC
 * A QEMU source before 9.0 may send one more packet after a channel's last
 * SYNC: empty, flags 0 (upstream f5f48a7891 describes the race: the last
 * pages and the SYNC are queued before the channel's thread wakes up, so it
 * sends them as one packet, then an empty one). The destination waits for
 * nothing after its last sync point: once it has `QEMU_VM_EOF` it finishes
 * loading and closes its multifd connections (7.2: `multifd_load_cleanup`),
 * maybe before the proxy relays that packet. A write that then finds the
 * channel closed is not a failure when everything up to the channel's last
 * SYNC was written before, the EOF was forwarded after every channel
 * agreed, and nothing after that SYNC carries a page or device state: the
 * rest of the channel is read and not forwarded. A page (or another SYNC)
 * after it fails the channel (`destination-gone`): the destination never
 * loaded it.
 *
 * Private to src/proxy.
 *
 * @module
 */

import { SocketClosedError, type SocketConnection } from "../io/socket.ts";
import {
  MultifdPipeline,
  type MultifdPipelineResult,
  type MultifdPlugStateViolation,
} from "../migration/multifd/mod.ts";
import type { ChannelSummary, ExtraChannel, ExtraChannelInit } from "./channel.ts";
import type { MainChannelTap, TapMessage } from "./_multifd_tap.ts";
import type { MultifdChannelSummary } from "./multifd.ts";
import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../errors.ts";

/** Size of the output chunks written to the destination. */
const OUTPUT_CHUNK_SIZE = 1 << 20;

/** One multifd channel with its pipeline on this thread. */
export class MultifdProxyChannel implements ExtraChannel {
  #init: ExtraChannelInit;
  #tap: MainChannelTap;
  #pipeline: MultifdPipeline;
  #label = "multifd channel ?";
  #destination: Promise<SocketConnection>;
  #result: MultifdPipelineResult | undefined;
  #error: Error | undefined;
  #violations: MultifdPlugStateViolation[] = [];
  #bytesOut = 0;
  /** What writing to the destination threw (passed on as it is). */
  #outputError: unknown;
  #aborted = false;
  #detached = false;
  /** The sync points the EOF gate waited for, once this channel agreed. */
  #agreedSyncPoints: number | undefined;
  /** The destination closed the channel after its load: nothing more is written. */
  #destinationDone = false;
  /** Bytes not forwarded because the destination had closed the channel after its load. */
  #notForwarded = 0;
  #abortReason: unknown;
  #changed = new Set<() => void>();
  #unsubscribe: () => void;
  readonly done: Promise<ChannelSummary>;
  #settle!: { resolve: (s: ChannelSummary) => void; reject: (e: unknown) => void };

  /**
   * Start relaying.
   *
   * @param init The connection and the session's hooks.
   * @param tap What the main channel showed so far, and what it shows from now on.
   */
  constructor(init: ExtraChannelInit, tap: MainChannelTap) {
    this.#init = init;
    this.#tap = tap;
    this.done = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    this.done.catch(() => {});
    this.#destination = init.connectDestination();
    this.#destination.then((d) => this.#watchDestination(d), (e) => this.#failWith(e));
    const pipeline: MultifdPipeline = new MultifdPipeline(
      init.source.byteReader({
        head: init.head,
        beforeRead: () => pipeline.sendBuffered(),
        reuseStitchBuffers: true,
      }),
      {
        mode: init.mode,
        ...(init.plugMap ? { plugMap: init.plugMap } : {}),
        output: async (chunk) => {
          const destination = await this.#destination;
          if (this.#destinationDone) {
            this.#notForwarded += chunk.byteLength;
            return;
          }
          try {
            await destination.write(chunk);
            this.#bytesOut += chunk.byteLength;
          } catch (e) {
            // After a veto the destination fails and may be gone: not this channel's failure.
            if (this.#detached) return;
            if (e instanceof SocketClosedError && this.#afterLoad()) {
              this.#destinationDone = true;
              this.#notForwarded += chunk.byteLength;
              return;
            }
            throw this.#outputError = this.#lostAfterLoad(e) ?? e;
          }
        },
        chunkSize: OUTPUT_CHUNK_SIZE,
        onViolations: (violations) => {
          this.#violations.push(...violations);
          init.veto(violations);
          this.#wake();
        },
        onBatch: (p) => {
          if (p.channel !== undefined) this.#label = `multifd channel ${p.channel}`;
          this.#wake();
        },
      },
    );
    this.#pipeline = pipeline;
    for (const m of tap.backlog()) this.#apply(m);
    const unsubscribe = tap.subscribe((m) => this.#apply(m));
    const unwatch = tap.onComplete(() => this.#wake());
    this.#unsubscribe = () => {
      unsubscribe();
      unwatch();
    };
    pipeline.run().then((result) => {
      this.#result = result;
      return this.#finish();
    }).catch((e) => this.#failPipeline(e));
  }

  /** Name for logs and reports. */
  get label(): string {
    return this.#label;
  }

  /**
   * Whether the destination may have closed this channel because its load
   * is done, losing nothing: this channel agreed to the EOF, which was
   * forwarded; it has had no SYNC since the last one the EOF gate waited
   * for; every byte up to that SYNC was written; nothing after it is to be
   * loaded.
   */
  #afterLoad(): boolean {
    const agreed = this.#agreedSyncPoints;
    if (agreed === undefined || !this.#init.eofForwarded()) return false;
    const last = this.#pipeline.lastSync;
    return this.#pipeline.progress.syncPackets === agreed && this.#bytesOut >= last.outputEnd &&
      last.loadsSince === 0;
  }

  /**
   * The error for a destination that closed this channel after the EOF was
   * forwarded although something after the channel's last SYNC was to be
   * loaded (`undefined` when that is not the case).
   */
  #lostAfterLoad(cause: unknown): SocketClosedError | undefined {
    if (this.#agreedSyncPoints === undefined || !this.#init.eofForwarded()) return undefined;
    const p = this.#pipeline.progress;
    const loads = this.#pipeline.lastSync.loadsSince;
    const extra = p.syncPackets - this.#agreedSyncPoints;
    if (extra > 0) {
      return new SocketClosedError(
        `the destination closed the channel after QEMU_VM_EOF, but the channel sent ${extra} ` +
          `SYNC ${extra === 1 ? "packet" : "packets"} after its sync points`,
        { cause },
      );
    }
    if (loads === 0 || p.syncPackets < this.#agreedSyncPoints) return undefined;
    return new SocketClosedError(
      `the destination closed the channel after QEMU_VM_EOF, before ${loads} ${
        loads === 1 ? "page" : "pages"
      } the channel sent after its last SYNC`,
      { cause },
    );
  }

  /** Hand what the main channel showed to the pipeline (it may release held packets). */
  #apply(m: TapMessage): void {
    if (this.#aborted) return;
    try {
      switch (m.type) {
        case "page-size":
          this.#pipeline.setPageSize(m.pageSize);
          break;
        case "control":
          this.#pipeline.control(m.record);
          break;
        case "setup-complete":
          this.#pipeline.setupComplete();
          break;
        case "main-complete":
          this.#pipeline.mainComplete();
          break;
      }
    } catch (e) {
      this.#failPipeline(e); // releasing held packets may find a bad one
    }
    this.#wake();
  }

  /** The pipeline failed: its own errors name the channel; a failed write is passed on as it is. */
  #failPipeline(e: unknown): void {
    const channel = this.#pipeline.progress.channel;
    if (channel !== undefined) this.#label = `multifd channel ${channel}`;
    this.#failWith(e === this.#outputError ? e : labelChannelError(e, this.#label));
  }

  #wake(): void {
    const waiters = [...this.#changed];
    this.#changed.clear();
    for (const w of waiters) w();
  }

  #waitChange(): Promise<void> {
    return new Promise((resolve) => this.#changed.add(resolve));
  }

  /**
   * The channel's source ended and its pipeline flushed. Wait for the main
   * channel's stream to be complete (its late device section may still
   * decide about this channel's pages), then end the destination's side.
   */
  async #finish(): Promise<void> {
    while (!this.#aborted && !this.#tap.complete) await this.#waitChange();
    if (this.#aborted) return;
    if (this.#destinationDone) {
      // What followed the channel's last SYNC was read on: it must not have needed loading.
      const lost = this.#lostAfterLoad(undefined);
      if (lost !== undefined) {
        this.#failWith(lost);
        return;
      }
      this.#init.emit({
        kind: "channel",
        label: this.#label,
        message: `the destination closed the channel after its load; the ${this.#notForwarded} ` +
          "bytes after its last SYNC (no pages) were not forwarded",
      });
    }
    const destination = await this.#destination;
    await destination.closeWrite();
    this.#init.source.close();
    this.#unsubscribe();
    this.#settle.resolve(
      channelSummary(this.#label, this.#result!, this.#bytesOut, this.#violations.length),
    );
  }

  /**
   * Read the destination's side: QEMU sends nothing on a multifd channel. It
   * closes it once its load is complete (or failed: then its main channel
   * ends too, which the session sees); a write after that fails the channel.
   */
  async #watchDestination(destination: SocketConnection): Promise<void> {
    const buf = new Uint8Array(64);
    let n: number | null;
    try {
      n = await destination.read(buf);
    } catch {
      n = null;
    }
    if (n !== null && !this.#aborted && !this.#detached) {
      this.#failWith(new Error(`${this.#label}: the destination sent data on a multifd channel`));
    }
  }

  #failWith(e: unknown): void {
    if (this.#aborted) return;
    this.#error ??= e instanceof Error ? e : new Error(String(e));
    this.abort(this.#error);
    this.#settle.reject(this.#error);
  }

  /**
   * Resolve once this channel has checked and forwarded everything up to its
   * SYNC packet for the main channel's last sync point and applied every
   * plug-state record (or has ended, or vetoed: then the EOF is not sent
   * anyway).
   */
  async agree(): Promise<void> {
    const syncPoints = this.#tap.syncPoints;
    const controls = this.#tap.controls.length;
    for (;;) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#aborted) throw this.#abortReason;
      if (this.#violations.length > 0) return; // vetoed: the EOF is not sent anyway
      const p = this.#pipeline.progress;
      if (p.controls >= controls && (p.syncPackets >= syncPoints || this.#result !== undefined)) {
        this.#pipeline.sendBuffered();
        this.#agreedSyncPoints = syncPoints;
        return;
      }
      await this.#waitChange();
    }
  }

  /**
   * The migration was vetoed: forward every later packet without its pages
   * (see `MultifdPipeline.stripPages`) and read the source on.
   */
  detachOutput(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.#pipeline.stripPages();
  }

  /** Close both ends now (a failure elsewhere). */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#abortReason = reason;
    this.#unsubscribe?.();
    this.#init.source.close();
    this.#destination.then((d) => d.close(), () => {});
    this.#settle.reject(this.#error ?? reason);
    this.#wake();
  }
}

/** The summary of a finished channel. */
function channelSummary(
  label: string,
  r: MultifdPipelineResult,
  bytesOut: number,
  violationCount: number,
): MultifdChannelSummary {
  return {
    label,
    bytesIn: r.bytesIn,
    bytesOut,
    channel: r.channel,
    packets: r.packets,
    pages: r.pages,
    zeroPages: r.zeroPages,
    syncPackets: r.syncPackets,
    droppedPages: r.dropStats?.droppedPages ?? 0,
    droppedByteLength: r.dropStats?.droppedBytes ?? 0,
    violationCount,
    ...(r.dropStats ? { dropped: r.dropStats.dropped } : {}),
  };
}

const OFFSET_SUFFIX = / at offset 0x[0-9a-f]+$/;

/**
 * A pipeline error with its message prefixed by the channel (a
 * `FormatError`'s offset is an offset in that channel, and its class and
 * fields are kept).
 */
function labelChannelError(e: unknown, label: string): Error {
  if (e instanceof FormatError) {
    const message = `${label}: ${e.message.replace(OFFSET_SUFFIX, "")}`;
    if (e instanceof UnexpectedEofError) return new UnexpectedEofError(message, e.format, e.offset);
    if (e instanceof UnsupportedFeatureError) {
      return new UnsupportedFeatureError(message, e.format, e.offset);
    }
    return new FormatError(message, { format: e.format, code: e.code, offset: e.offset });
  }
  if (!(e instanceof Error)) return new Error(`${label}: ${String(e)}`);
  const out = new Error(`${label}: ${e.message}`, { cause: e });
  out.name = e.name;
  return out;
}
