/**
 * multifd for the proxy: a {@linkcode ChannelHandler} for the connections
 * that start with `MULTIFD_MAGIC`, and the stage it runs on the main
 * channel to learn what the channels need from it.
 *
 * Each channel is relayed as its own stream: the main thread reads the
 * source socket and writes the destination socket; a Worker per channel
 * runs the channel's `MultifdPipeline` (decode, pass/filter/verify,
 * encode), so a 4-channel migration spreads over the machine's cores.
 *
 * What the channels learn from the main channel (through
 * {@linkcode MultifdChannelHandler.mainStage}): the page size (from the
 * configuration section), the block list and the plug state (the
 * `ram-mem-size`, `virtio-mem-early` and `virtio-mem-device` records), the
 * end of the setup phase, and the sync points (one `MULTIFD_FLUSH`, or with
 * older machine types one RAM `EOS`, per SYNC packet of every channel).
 *
 * The EOF gate: before the main channel forwards `QEMU_VM_EOF`, every
 * channel must have checked and forwarded everything up to its SYNC packet
 * for the main channel's last sync point (or have ended), and must have
 * applied every plug-state record the main channel showed (the late layout
 * decides there). A violation in any channel vetoes the migration at once:
 * the session stops the main channel's output and closes the destination's
 * main connection without `QEMU_VM_EOF`.
 *
 * @module
 */

import { DEFAULT_PAGE_SIZE, VIRTIO_MEM_EARLY_SUFFIX } from "../migration/constants.ts";
import {
  isMultifdControlRecord,
  MULTIFD_MAGIC,
  type MultifdControlRecord,
  type MultifdDroppedPage,
  type MultifdPipelineResult,
  type MultifdPlugStateViolation,
  type MultifdProgress,
} from "../migration/multifd/mod.ts";
import type { RecordStage } from "../migration/stage.ts";
import type { MigrationRecord } from "../migration/types.ts";
import type { SocketConnection } from "../io/socket.ts";
import type { ChannelHandler, ChannelSummary, ExtraChannel, ExtraChannelInit } from "./channel.ts";
import {
  deserializeError,
  detachControlRecord,
  type FromMultifdWorker,
  type ToMultifdWorker,
} from "./_multifd_messages.ts";

/** Options for {@linkcode MultifdChannelHandler}. */
export interface MultifdChannelHandlerOptions {
  /** Source bytes read ahead of the Worker, per channel. @default {4194304} */
  maxInputInFlight?: number;
  /** Output bytes the Worker may post ahead of the destination, per channel. @default {4194304} */
  maxOutputInFlight?: number;
  /**
   * Workers to start (and load) before any channel connects, so channels do
   * not wait for one (about 0.1–0.3 s each on a busy machine, 12 MiB of
   * memory each); more start when more channels connect.
   * @default {0}
   */
  prewarm?: number;
}

/** What one multifd channel reports when it is done (a {@linkcode ChannelSummary}). */
export interface MultifdChannelSummary extends ChannelSummary {
  /** Channel id from its initial packet. */
  channel: number | undefined;
  /** RAM packets. */
  packets: number;
  /** Pages with data. */
  pages: number;
  /** Zero pages. */
  zeroPages: number;
  /** SYNC packets. */
  syncPackets: number;
  /** Filter mode: pages removed. */
  droppedPages: number;
  /** Filter mode: bytes removed (the removed pages' data). */
  droppedByteLength: number;
  /** Verify mode: violations found (described in the session's verification result). */
  violationCount: number;
  /** Filter mode: the first removed pages, described. */
  dropped?: MultifdDroppedPage[];
}

/**
 * Size of one source read. A unix socket hands over at most its buffer
 * (about 208 KiB by default) per read, so larger buffers would mostly sit
 * empty while they count against the read-ahead.
 */
const READ_SIZE = 256 << 10;

const WORKER_URL = new URL("./_multifd_worker.ts", import.meta.url).href;

/** A Worker and a promise for its first message (`ready`: its modules are loaded). */
interface PooledWorker {
  worker: Worker;
  ready: Promise<void>;
}

function spawnWorker(): PooledWorker {
  const worker = new Worker(WORKER_URL, { type: "module" });
  const ready = new Promise<void>((resolve, reject) => {
    worker.onmessage = () => resolve();
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`multifd Worker failed to start: ${e.message}`));
    };
  });
  ready.catch(() => {});
  return { worker, ready };
}

/** The part of the main channel the multifd channels need, observed as a pass-through stage. */
class MainChannelTap implements RecordStage {
  pageSize: number | undefined;
  controls: MultifdControlRecord[] = [];
  setupDone = false;
  /** The main channel's stream is complete (no more plug state will come). */
  complete = false;
  flushes = 0;
  eos = 0;
  #listeners = new Set<(m: ToMultifdWorker) => void>();

  /** Sync points so far: MULTIFD_FLUSH when the stream has any (>= 8.1 machine types), else RAM EOS. */
  get syncPoints(): number {
    return this.flushes > 0 ? this.flushes : this.eos;
  }

  /** What a channel that opens now must be told first. */
  backlog(): ToMultifdWorker[] {
    const out: ToMultifdWorker[] = [];
    if (this.pageSize !== undefined) out.push({ type: "page-size", pageSize: this.pageSize });
    for (const record of this.controls) out.push({ type: "control", record });
    if (this.setupDone) out.push({ type: "setup-complete" });
    if (this.complete) out.push({ type: "main-complete" });
    return out;
  }

  #completeListeners = new Set<() => void>();

  /** Call `listener` when the main channel's stream is complete. */
  onComplete(listener: () => void): () => void {
    this.#completeListeners.add(listener);
    return () => this.#completeListeners.delete(listener);
  }

  subscribe(listener: (m: ToMultifdWorker) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #tell(m: ToMultifdWorker): void {
    for (const l of this.#listeners) l(m);
  }

  process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
    for (const r of batch) {
      if (this.pageSize === undefined && r.kind !== "header") {
        this.pageSize = r.kind === "configuration" && r.targetPageBits !== undefined
          ? 2 ** r.targetPageBits
          : DEFAULT_PAGE_SIZE;
        this.#tell({ type: "page-size", pageSize: this.pageSize });
      }
      if (isMultifdControlRecord(r)) {
        const record = detachControlRecord(r);
        this.controls.push(record);
        this.#tell({ type: "control", record });
      } else if (
        !this.setupDone &&
        (r.kind === "section-part" || r.kind === "section-end" || r.kind === "eof" ||
          (r.kind === "section-full" && !r.idstr.endsWith(VIRTIO_MEM_EARLY_SUFFIX)))
      ) {
        this.setupDone = true;
        this.#tell({ type: "setup-complete" });
      }
      if (r.kind === "ram-multifd-flush") this.flushes++;
      else if (r.kind === "ram-eos") this.eos++;
    }
    return batch;
  }

  end(): readonly MigrationRecord[] {
    this.complete = true;
    this.#tell({ type: "main-complete" });
    for (const l of this.#completeListeners) l();
    return [];
  }
}

/**
 * Relays a migration's multifd channels: give it to `ProxySession` in
 * `channelHandlers`; the session runs {@linkcode MultifdChannelHandler.mainStage}
 * on the main channel.
 *
 * @example
 * ```ts ignore
 * import { MultifdChannelHandler, parseEndpoint, ProxySession } from "@vmem-dump/vmem-dump";
 * const session = await ProxySession.listen({
 *   listen: parseEndpoint("unix:/run/vm/mig.sock"),
 *   connect: parseEndpoint("unix:/run/vm/dst.sock"),
 *   mode: "verify",
 *   channelHandlers: [new MultifdChannelHandler()],
 * });
 * await session.run();
 * ```
 */
export class MultifdChannelHandler implements ChannelHandler {
  /** `MULTIFD_MAGIC`: multifd channels start with it. */
  readonly magic: number = MULTIFD_MAGIC;
  #tap = new MainChannelTap();
  #options: MultifdChannelHandlerOptions;
  #channels: MultifdProxyChannel[] = [];
  #pool: PooledWorker[] = [];

  /**
   * Create the handler (and start `prewarm` Workers).
   *
   * @param options Read-ahead and write-ahead per channel, Workers to start ahead.
   */
  constructor(options: MultifdChannelHandlerOptions = {}) {
    this.#options = options;
    for (let i = 0; i < (options.prewarm ?? 0); i++) this.#pool.push(spawnWorker());
  }

  /** Resolves when the prewarmed Workers have loaded. */
  async warm(): Promise<void> {
    await Promise.all(this.#pool.map((w) => w.ready));
  }

  /** Stop the Workers no channel took (call when the session is over). */
  close(): void {
    for (const w of this.#pool.splice(0)) w.worker.terminate();
  }

  /** The pass-through stage the session runs on the main channel (before its mode stage). */
  get mainStage(): RecordStage {
    return this.#tap;
  }

  /** The channels opened so far. */
  get channels(): readonly ExtraChannel[] {
    return this.#channels;
  }

  /**
   * Take over one multifd connection: start its Worker and relay it.
   *
   * @param init The connection and the session's hooks.
   * @returns The channel.
   */
  open(init: ExtraChannelInit): ExtraChannel {
    const channel = new MultifdProxyChannel(
      init,
      this.#tap,
      this.#options,
      this.#pool.shift() ?? spawnWorker(),
    );
    this.#channels.push(channel);
    return channel;
  }
}

/** One multifd channel: sockets on this thread, the pipeline in a Worker. */
class MultifdProxyChannel implements ExtraChannel {
  #init: ExtraChannelInit;
  #tap: MainChannelTap;
  #worker: Worker;
  #label = "multifd channel ?";
  #destination: Promise<SocketConnection>;
  #progress: MultifdProgress | undefined;
  #result: MultifdPipelineResult | undefined;
  #error: Error | undefined;
  #violations: MultifdPlugStateViolation[] = [];
  #free: ArrayBuffer[] = [];
  #inputInFlight = 0;
  #maxInput: number;
  #outputs: Uint8Array<ArrayBuffer>[] = [];
  #bytesOut = 0;
  #writing = false;
  #aborted = false;
  #detached = false;
  #abortReason: unknown;
  #changed = new Set<() => void>();
  #unsubscribe: () => void;
  readonly done: Promise<ChannelSummary>;
  #settle!: { resolve: (s: ChannelSummary) => void; reject: (e: unknown) => void };

  constructor(
    init: ExtraChannelInit,
    tap: MainChannelTap,
    options: MultifdChannelHandlerOptions,
    pooled: PooledWorker,
  ) {
    this.#init = init;
    this.#tap = tap;
    this.#maxInput = options.maxInputInFlight ?? 4 << 20;
    this.done = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    this.done.catch(() => {});
    this.#worker = pooled.worker;
    pooled.ready.catch((e) => this.#failWith(e));
    this.#worker.onmessage = (e: MessageEvent<FromMultifdWorker>) => this.#onMessage(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault();
      this.#failWith(new Error(`multifd Worker failed: ${e.message}`));
    };
    this.#post({
      type: "start",
      mode: init.mode,
      plugMapDevices: init.plugMap ? [...init.plugMap.devices] : undefined,
      maxOutputInFlight: options.maxOutputInFlight ?? 4 << 20,
    });
    for (const m of tap.backlog()) this.#post(m);
    const unsubscribe = tap.subscribe((m) => this.#post(m));
    const unwatch = tap.onComplete(() => this.#wake());
    this.#unsubscribe = () => {
      unsubscribe();
      unwatch();
    };
    this.#destination = init.connectDestination();
    this.#destination.then((d) => this.#watchDestination(d), (e) => this.#failWith(e));
    void this.#readSource();
  }

  get label(): string {
    return this.#label;
  }

  #post(m: ToMultifdWorker, transfer: Transferable[] = []): void {
    if (!this.#aborted) this.#worker.postMessage(m, transfer);
  }

  #wake(): void {
    const waiters = [...this.#changed];
    this.#changed.clear();
    for (const w of waiters) w();
  }

  #waitChange(): Promise<void> {
    return new Promise((resolve) => this.#changed.add(resolve));
  }

  async #readSource(): Promise<void> {
    const source = this.#init.source;
    try {
      const head = this.#init.head.slice();
      this.#inputInFlight += head.byteLength;
      this.#post({ type: "input", chunk: head }, [head.buffer]);
      for (;;) {
        while (this.#inputInFlight + READ_SIZE > this.#maxInput && !this.#aborted) {
          await this.#waitChange();
        }
        if (this.#aborted) return;
        const buffer = this.#free.pop() ?? new ArrayBuffer(READ_SIZE);
        const n = await source.read(new Uint8Array(buffer));
        if (n === null) break;
        this.#inputInFlight += buffer.byteLength;
        this.#post({ type: "input", chunk: new Uint8Array(buffer, 0, n) }, [buffer]);
      }
      this.#post({ type: "input-end" });
    } catch (e) {
      this.#failWith(e);
    }
  }

  #onMessage(m: FromMultifdWorker): void {
    if (this.#aborted) return;
    switch (m.type) {
      case "ready":
        break;
      case "release":
        for (const c of m.chunks) {
          this.#inputInFlight -= c.buffer.byteLength;
          if (c.buffer.byteLength === READ_SIZE) this.#free.push(c.buffer);
        }
        break;
      case "output":
        this.#outputs.push(m.chunk);
        void this.#writeOutputs();
        break;
      case "progress":
        this.#progress = m.progress;
        if (m.progress.channel !== undefined) this.#label = `multifd channel ${m.progress.channel}`;
        break;
      case "violations":
        this.#violations.push(...m.violations);
        this.#init.veto(m.violations);
        break;
      case "done":
        this.#result = m.result;
        this.#progress = m.result;
        void this.#finish();
        break;
      case "error":
        if (m.channel !== undefined) this.#label = `multifd channel ${m.channel}`;
        this.#failWith(deserializeError(m.error, this.#label));
        break;
    }
    this.#wake();
  }

  async #writeOutputs(): Promise<void> {
    if (this.#writing) return;
    this.#writing = true;
    try {
      const destination = await this.#destination;
      while (this.#outputs.length > 0 && !this.#aborted) {
        const chunk = this.#outputs.shift()!;
        try {
          await destination.write(chunk);
          this.#bytesOut += chunk.byteLength;
        } catch (e) {
          // After a veto the destination fails and may be gone: not this channel's failure.
          if (!this.#detached) throw e;
        }
        this.#post({ type: "written", chunk }, [chunk.buffer]);
      }
    } catch (e) {
      this.#failWith(e);
    } finally {
      this.#writing = false;
      this.#wake();
    }
  }

  /** Whether the Worker has applied every plug-state record the main channel showed so far. */
  #controlsApplied(): boolean {
    return (this.#progress?.controls ?? -1) >= this.#tap.controls.length;
  }

  /**
   * The channel's source ended. The main channel may still be on its way to
   * its late device section (QEMU 7.2 states the plug bitmap after all RAM,
   * and the source closes its channels soon after it wrote it): the Worker
   * keeps taking plug state until the main stream is complete, so the late
   * decision covers this channel too. Then write what is left, end the
   * destination's side, report.
   */
  async #finish(): Promise<void> {
    while (
      !this.#aborted &&
      (this.#outputs.length > 0 || this.#writing || !this.#tap.complete || !this.#controlsApplied())
    ) await this.#waitChange();
    if (this.#aborted) return;
    const destination = await this.#destination;
    await destination.closeWrite();
    this.#init.source.close();
    this.#stopWorker();
    const r = this.#result!;
    const summary: MultifdChannelSummary = {
      label: this.#label,
      bytesIn: r.bytesIn,
      bytesOut: this.#bytesOut,
      channel: r.channel,
      packets: r.packets,
      pages: r.pages,
      zeroPages: r.zeroPages,
      syncPackets: r.syncPackets,
      droppedPages: r.dropStats?.droppedPages ?? 0,
      droppedByteLength: r.dropStats?.droppedBytes ?? 0,
      violationCount: this.#violations.length,
      ...(r.dropStats ? { dropped: r.dropStats.dropped } : {}),
    };
    this.#settle.resolve(summary);
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

  #stopWorker(): void {
    this.#unsubscribe();
    this.#worker.terminate();
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
      const p = this.#progress;
      if (this.#violations.length > 0) return; // vetoed: the EOF is not sent anyway
      if (
        p !== undefined && p.controls >= controls &&
        (p.syncPackets >= syncPoints || this.#result !== undefined)
      ) return;
      await this.#waitChange();
    }
  }

  /**
   * The migration was vetoed: the Worker forwards every later packet without
   * its pages (see `MultifdPipeline.stripPages`) and reads its source on.
   */
  detachOutput(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.#post({ type: "strip" });
  }

  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#abortReason = reason;
    this.#stopWorker();
    this.#init.source.close();
    this.#destination.then((d) => d.close(), () => {});
    this.#settle.reject(this.#error ?? reason);
    this.#wake();
  }
}
