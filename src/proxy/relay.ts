/**
 * Relay the main channel of one precopy migration from a source to a
 * destination: the record pipeline with the proxy's command guard and the
 * mode's stage (pass through, drop unplugged pages, or verify plug state).
 * Runtime-neutral: the caller supplies a `ByteReader` for the source and a
 * sink for the destination ({@linkcode ProxySession} wires sockets to them).
 *
 * Guarantees:
 * - Backpressure: at most one decoded batch plus the writer's chunks are
 *   held; the relay waits for the destination before reading on.
 * - Only what the source sent is forwarded: if the source ends early, the
 *   relay fails without ever emitting `QEMU_VM_EOF`, so the destination's
 *   load fails instead of starting a VM.
 * - Postcopy and COLO are refused before the command that asks for them is
 *   forwarded; so is `OPEN_RETURN_PATH` unless the caller relays the return
 *   path (`allowReturnPath`, as `ProxySession` does).
 *
 * @module
 */

import { FormatError, VerificationError } from "../errors.ts";
import type { ByteReader } from "../io/byte_reader.ts";
import type { ByteSink } from "../io/byte_writer.ts";
import { type DropStats, UnpluggedPageDropper } from "../migration/filter.ts";
import { MigrationPipeline, type PipelineProgress } from "../migration/pipeline.ts";
import { PassThroughStage, type RecordStage } from "../migration/stage.ts";
import {
  describeViolation,
  PlugStateVerifier,
  type PlugStateViolation,
  type VerifyResult,
} from "../migration/verify.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import { CommandGuard } from "./_command_guard.ts";

/** What the relay does to the stream. */
export type RelayMode = "pass" | "filter" | "verify";

/** Progress of a relay. */
export interface RelayProgress {
  /** Stream bytes decoded from the source. */
  bytesIn: number;
  /** Bytes handed to the destination sink. */
  bytesOut: number;
  /** Page records seen. */
  pageRecords: number;
  /** Records dropped (filter mode). */
  droppedRecords: number;
}

/** Options for {@linkcode relayMigration} and {@linkcode MigrationRelay}. */
export interface RelayOptions {
  /** `pass`, `filter` (drop unplugged pages) or `verify` (forward nothing from the first violation on, never the EOF). @default {"pass"} */
  mode?: RelayMode;
  /** Out-of-band plug state for `filter` and `verify`. @default {undefined} */
  plugMap?: PlugMap;
  /** Called with progress at most every `progressIntervalMs`, and once at the end. @default {undefined} */
  onProgress?: (progress: RelayProgress) => void;
  /** Minimum time between progress calls. @default {500} */
  progressIntervalMs?: number;
  /** Size of the chunks handed to the sink. @default {1048576} */
  chunkSize?: number;
  /**
   * Verify mode: called once, at the first violation, so the caller can drop
   * the destination at once. The relay then reads the source to its end to
   * report every violation, forwards nothing more, and throws a
   * {@linkcode RelayVerificationError}.
   * @default {undefined}
   */
  onVerificationFailure?: (first: PlugStateViolation) => void;
  /**
   * Let `OPEN_RETURN_PATH` through: the caller relays the destination's
   * answers back to the source (`ProxySession` does). A one-way relay must
   * refuse it: the source would wait for answers forever.
   * @default {false}
   */
  allowReturnPath?: boolean;
  /** Called when `OPEN_RETURN_PATH` passes the relay (before it reaches the destination). @default {undefined} */
  onReturnPathOpened?: () => void;
  /**
   * Stages that observe the stream before the mode stage (they must forward
   * every batch unchanged), e.g. what extra channels learn from the main one.
   * @default {[]}
   */
  observers?: readonly RecordStage[];
  /**
   * Awaited before `QEMU_VM_EOF` goes to the destination; a rejection
   * withholds it (the session waits here for its other channels).
   * @default {undefined}
   */
  beforeEof?: () => Promise<void>;
  /**
   * Called once the stream is complete (its vmdesc arrived, or the source
   * ended): everything, EOF included when it was clean, reached the sink.
   * The relay then waits for the source to close (with a return path the
   * source waits for the destination's answer first).
   * @default {undefined}
   */
  onComplete?: (progress: RelayProgress) => void;
}

/**
 * Verify mode found RAM records in unplugged blocks; carries all of them
 * (the fields of `VerificationError` describe the first).
 *
 * @example
 * ```ts ignore
 * import { RelayVerificationError } from "@vmem-dump/vmem-dump/proxy";
 * try { await relay(); } catch (e) {
 *   if (e instanceof RelayVerificationError) console.log(e.result.violations.map((v) => v.gpa));
 * }
 * ```
 */
export class RelayVerificationError extends VerificationError {
  /** Always `"RelayVerificationError"`. */
  override name = "RelayVerificationError";
  /** The verification outcome with every violation. */
  readonly result: VerifyResult;
  /**
   * The destination had already been given `QEMU_VM_EOF` when the violation
   * was found (a multifd page that arrived after the main channel's last
   * sync point; it was not forwarded, but the destination may have loaded).
   */
  readonly eofForwarded: boolean;

  /**
   * Wrap a failed verification.
   *
   * @param result The failed verification.
   * @param eofForwarded Whether the destination already had `QEMU_VM_EOF`.
   */
  constructor(result: VerifyResult, eofForwarded = false) {
    const v = result.violations[0]!;
    const more = result.violationCount > 1 ? ` (and ${result.violationCount - 1} more)` : "";
    super(`${describeViolation(v)}${more}`, {
      gpa: v.gpa ?? -1,
      ramBlock: v.ramBlock,
      ramOffset: v.ramOffset,
      offset: v.streamOffset,
    });
    this.result = result;
    this.eofForwarded = eofForwarded;
  }
}

/** Outcome of a relay. */
export interface RelayResult extends RelayProgress {
  /** Filter mode: what was dropped. */
  dropStats: DropStats | undefined;
  /** Verify mode: the verification outcome. */
  verify: VerifyResult | undefined;
}

/**
 * The main-channel relay as an object the session steers while it runs:
 * it pushes buffered output out before waiting for its source, and knows
 * whether the return path was opened and which PINGs wait for a PONG.
 *
 * @example
 * ```ts ignore
 * import { MigrationRelay } from "@vmem-dump/vmem-dump/proxy";
 * import { openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("q10-s3.mig");
 * const relay = new MigrationRelay(input.reader, async (c) => {}, { mode: "verify" });
 * await relay.run(); // throws a RelayVerificationError for s3
 * ```
 */
export class MigrationRelay {
  #options: RelayOptions;
  #guard: CommandGuard;
  #dropper: UnpluggedPageDropper | undefined;
  #verifier: PlugStateVerifier | undefined;
  #stage: RecordStage;
  #pipeline: MigrationPipeline;
  #failureSignalled = false;

  /**
   * Set the relay up.
   *
   * @param source The source's bytes (e.g. a socket).
   * @param sink Writes a chunk to the destination; chunks are reused after its promise resolves.
   * @param options Mode, plug map, hooks.
   */
  constructor(source: ByteReader, sink: ByteSink, options: RelayOptions = {}) {
    this.#options = options;
    const mode = options.mode ?? "pass";
    const plugMap = options.plugMap;
    this.#guard = new CommandGuard(options.allowReturnPath ?? false, options.onReturnPathOpened);
    let stage: RecordStage;
    if (mode === "filter") {
      stage = this.#dropper = new UnpluggedPageDropper(plugMap ? { plugMap } : {});
    } else if (mode === "verify") {
      stage = this.#verifier = new PlugStateVerifier({
        mode: "report",
        ...(plugMap ? { plugMap } : {}),
      });
    } else {
      stage = new PassThroughStage();
    }
    this.#stage = stage;
    const interval = options.progressIntervalMs ?? 500;
    let lastReport = 0;
    this.#pipeline = new MigrationPipeline(source, {
      stages: [this.#guard, ...(options.observers ?? []), stage],
      output: async (chunk) => {
        await sink(chunk);
      },
      chunkSize: options.chunkSize ?? 1 << 20,
      onBatch: (p) => {
        const verifier = this.#verifier;
        if (verifier !== undefined && verifier.failed && !this.#failureSignalled) {
          // Nothing more goes to the destination; read on to report every violation.
          this.#failureSignalled = true;
          this.#pipeline.detachOutput();
          options.onVerificationFailure?.(verifier.violations[0]!);
        }
        if (options.onProgress !== undefined) {
          const now = Date.now();
          if (now - lastReport >= interval) {
            lastReport = now;
            options.onProgress(this.#progress(p));
          }
        }
      },
      // filter and verify judge by a plug state: a stream that brought none (and no plug map)
      // proves nothing, so its EOF is withheld (its destination keeps the plug state of its
      // own command line, and pages in blocks unplugged there would load).
      ...(mode === "pass" && options.beforeEof === undefined ? {} : {
        beforeEof: async () => {
          if (mode !== "pass" && !this.#judgedByPlugState()) {
            throw new FormatError(
              "Cannot prove the stream: it carries no virtio-mem plug state to judge its pages " +
                "by (give a plug map)",
              { format: "migration", code: "unproven", offset: this.#pipeline.progress.bytesIn },
            );
          }
          await options.beforeEof?.();
        },
      }),
      onComplete: (p) => options.onComplete?.(this.#progress(p)),
    });
  }

  /** Whether the mode's stage had a plug state (the stream's own, or the plug map's devices). */
  #judgedByPlugState(): boolean {
    if (this.#verifier !== undefined) return this.#verifier.result.devices.length > 0;
    if (this.#dropper !== undefined) return this.#dropper.stats.devices.length > 0;
    return true;
  }

  #progress(p: PipelineProgress): RelayProgress {
    return {
      bytesIn: p.bytesIn,
      bytesOut: p.bytesOut,
      pageRecords: this.#guard.pageRecords,
      droppedRecords: this.#dropper?.droppedRecords ?? 0,
    };
  }

  /** Progress so far. */
  get progress(): RelayProgress {
    return this.#progress(this.#pipeline.progress);
  }

  /** Whether `OPEN_RETURN_PATH` has passed (the destination may answer from then on). */
  get returnPathOpened(): boolean {
    return this.#guard.returnPathOpened;
  }

  /** PING values forwarded and not yet answered, oldest first (the session takes them off). */
  get pendingPings(): number[] {
    return this.#guard.pings;
  }

  /** Whether `QEMU_VM_EOF` was handed to the destination. */
  get eofForwarded(): boolean {
    return this.#pipeline.eofWritten;
  }

  /** The mode's stage: the dropper, the verifier or the pass-through. */
  get stage(): RecordStage {
    return this.#stage;
  }

  /** Whether the stream is complete (vmdesc or end of the source seen, output flushed). */
  get complete(): boolean {
    return this.#pipeline.complete;
  }

  /** Verify mode: the verification outcome so far. */
  get verifyResult(): VerifyResult | undefined {
    return this.#verifier?.result;
  }

  /** Whether verify mode found a violation. */
  get failed(): boolean {
    return this.#verifier?.failed ?? false;
  }

  /** Hand buffered output to the destination now (call before waiting for the source). */
  sendBuffered(): void {
    this.#pipeline.sendBuffered();
  }

  /** Forward nothing more (the destination is gone or was dropped). */
  detachOutput(): void {
    this.#pipeline.detachOutput();
  }

  /**
   * Relay to the end of the source.
   *
   * @returns Counts and the filter/verify outcome.
   * @throws {UnsupportedFeatureError} for postcopy and COLO streams.
   * @throws {RelayVerificationError} in verify mode when a record touched an unplugged block.
   * @throws {FormatError} for a malformed or truncated stream.
   */
  async run(): Promise<RelayResult> {
    await this.#pipeline.run();
    const verifier = this.#verifier;
    if (verifier?.failed) throw new RelayVerificationError(verifier.result);
    const done = this.progress;
    this.#options.onProgress?.(done);
    return { ...done, dropStats: this.#dropper?.stats, verify: verifier?.result };
  }
}

/**
 * Relay one migration stream from `source` to `sink`.
 *
 * The sink receives chunks one at a time (the next call waits for the
 * previous promise); it owns nothing after its promise resolves, so chunks
 * are reused.
 *
 * @param source The source's bytes (e.g. a socket).
 * @param sink Writes a chunk to the destination.
 * @param options Mode, plug map, progress.
 * @returns Counts and the filter/verify outcome.
 * @throws {UnsupportedFeatureError} for postcopy and COLO streams (and the return path unless allowed).
 * @throws {RelayVerificationError} in verify mode when a record touched an unplugged block
 * (after reading the source to its end; nothing after the first violation is forwarded).
 * @throws {FormatError} for a malformed or truncated stream.
 *
 * @example Relay a file into memory, dropping unplugged pages
 * ```ts ignore
 * import { openInput, relayMigration } from "@vmem-dump/vmem-dump";
 * const input = await openInput("q10-s3.mig");
 * const chunks: Uint8Array[] = [];
 * const r = await relayMigration(input.reader, (c) => { chunks.push(c.slice()); }, { mode: "filter" });
 * console.log(r.droppedRecords);
 * ```
 */
export function relayMigration(
  source: ByteReader,
  sink: ByteSink,
  options: RelayOptions = {},
): Promise<RelayResult> {
  return new MigrationRelay(source, sink, options).run();
}
