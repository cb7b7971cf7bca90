/**
 * Relay one precopy migration stream from a source to a destination,
 * passing it through unchanged, dropping unplugged pages, or verifying plug
 * state on the way. Runtime-neutral: the caller supplies a `ByteReader` for
 * the source and a sink for the destination (the CLI wires sockets to them).
 *
 * Guarantees:
 * - Backpressure: at most one decoded batch plus the writer's chunks are
 *   held; the relay waits for the destination before reading on.
 * - Only what the source sent is forwarded: if the source ends early, the
 *   relay fails without ever emitting `QEMU_VM_EOF`, so the destination's
 *   load fails instead of starting a VM.
 * - Return path and postcopy are refused before the command that asks for
 *   them is forwarded (the proxy relays one direction only).
 *
 * @module
 */

import { UnsupportedFeatureError, VerificationError } from "../errors.ts";
import type { ByteReader } from "../io/byte_reader.ts";
import { type ByteSink, ByteWriter } from "../io/byte_writer.ts";
import * as C from "../migration/constants.ts";
import { decodeMigrationBatches } from "../migration/decoder.ts";
import { MigrationEncoder } from "../migration/encoder.ts";
import { type DropStats, UnpluggedPageDropper } from "../migration/filter.ts";
import { isPageRecord, type MigrationRecord } from "../migration/types.ts";
import {
  PlugStateVerifier,
  type PlugStateViolation,
  type VerifyResult,
} from "../migration/verify.ts";
import type { PlugMap } from "../vmem/plug_map.ts";

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

/** Options for {@linkcode relayMigration}. */
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
}

/**
 * Verify mode found RAM records in unplugged blocks; carries all of them
 * (the fields of `VerificationError` describe the first).
 *
 * @example
 * ```ts ignore
 * import { RelayVerificationError } from "@vmem-dump/vmem-dump";
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
   * Wrap a failed verification.
   *
   * @param result The failed verification.
   */
  constructor(result: VerifyResult) {
    const v = result.violations[0]!;
    const more = result.violationCount > 1 ? ` (and ${result.violationCount - 1} more)` : "";
    super(
      `RAM record (${v.recordKind}) in unplugged virtio-mem block ${v.blockIndex} of ${
        JSON.stringify(v.ramBlock)
      }: gpa 0x${v.gpa.toString(16)}${more}`,
      { gpa: v.gpa, ramBlock: v.ramBlock, ramOffset: v.ramOffset, offset: v.streamOffset },
    );
    this.result = result;
  }
}

/** Outcome of a relay. */
export interface RelayResult extends RelayProgress {
  /** Filter mode: what was dropped. */
  dropStats: DropStats | undefined;
  /** Verify mode: the verification outcome. */
  verify: VerifyResult | undefined;
}

/** Commands that need the return path or postcopy, which a one-way relay cannot serve. */
const REFUSED_COMMANDS = new Set([
  C.MIG_CMD_OPEN_RETURN_PATH,
  C.MIG_CMD_POSTCOPY_ADVISE,
  C.MIG_CMD_POSTCOPY_LISTEN,
  C.MIG_CMD_POSTCOPY_RUN,
  C.MIG_CMD_POSTCOPY_RAM_DISCARD,
  C.MIG_CMD_PACKAGED,
  C.MIG_CMD_ENABLE_COLO,
  C.MIG_CMD_POSTCOPY_RESUME,
  C.MIG_CMD_RECV_BITMAP,
]);

function refuse(r: MigrationRecord & { kind: "command" }): never {
  const what = r.command === C.MIG_CMD_OPEN_RETURN_PATH
    ? "the return path (OPEN_RETURN_PATH)"
    : r.command === C.MIG_CMD_ENABLE_COLO
    ? "COLO (ENABLE_COLO)"
    : `postcopy (${r.name})`;
  throw new UnsupportedFeatureError(
    `Cannot relay migration: the proxy does not support ${what}; turn off the return-path, postcopy-ram, ` +
      "dirty-bitmaps, switchover-ack and x-colo capabilities on the source",
    "migration",
    r.streamOffset,
  );
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
 * @throws {UnsupportedFeatureError} for return path, postcopy and COLO streams.
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
export async function relayMigration(
  source: ByteReader,
  sink: ByteSink,
  options: RelayOptions = {},
): Promise<RelayResult> {
  const mode = options.mode ?? "pass";
  const plugMap = options.plugMap;
  const dropper = mode === "filter"
    ? new UnpluggedPageDropper(plugMap ? { plugMap } : {})
    : undefined;
  const verifier = mode === "verify"
    ? new PlugStateVerifier({ mode: "report", ...(plugMap ? { plugMap } : {}) })
    : undefined;
  let failureSignalled = false;
  const out = orderedSink(async (chunk) => {
    await sink(chunk);
  });
  const writer = new ByteWriter(out.sink, {
    chunkSize: options.chunkSize ?? 1 << 20,
    reuseChunks: true,
  });
  const enc = new MigrationEncoder(writer);
  const interval = options.progressIntervalMs ?? 500;
  let lastReport = 0;
  let pageRecords = 0;
  const progress = (): RelayProgress => ({
    bytesIn: source.offset,
    bytesOut: out.written,
    pageRecords,
    droppedRecords: dropper?.droppedRecords ?? 0,
  });

  const write = async (batch: MigrationRecord[]) => {
    for (const r of batch) enc.write(r);
    await enc.flushIfFull();
    out.check();
  };

  for await (const batch of decodeMigrationBatches(source)) {
    for (const r of batch) {
      if (r.kind === "command" && REFUSED_COMMANDS.has(r.command)) refuse(r);
      else if (isPageRecord(r)) pageRecords++;
    }
    let out: MigrationRecord[] = batch;
    if (dropper !== undefined) out = dropper.filterBatch(batch);
    else if (verifier !== undefined) {
      out = verifier.checkBatch(batch);
      if (verifier.failed) {
        // Nothing more goes to the destination; read on to report every violation.
        if (!failureSignalled) {
          failureSignalled = true;
          options.onVerificationFailure?.(verifier.violations[0]!);
        }
        continue;
      }
    }
    if (out.length > 0) await write(out);
    if (options.onProgress !== undefined) {
      const now = Date.now();
      if (now - lastReport >= interval) {
        lastReport = now;
        options.onProgress(progress());
      }
    }
  }
  if (verifier !== undefined) {
    const rest = verifier.end();
    if (verifier.failed) throw new RelayVerificationError(verifier.result);
    if (rest.length > 0) await write(rest);
  }
  await enc.flush();
  await out.drain(writer.offset);
  const done = progress();
  options.onProgress?.(done);
  return { ...done, dropStats: dropper?.stats, verify: verifier?.result };
}

/**
 * Format a byte count for people: `512 B`, `1.5 KiB`, `110.4 MiB`, `2.00 GiB`.
 *
 * @param n Bytes.
 * @returns Text.
 *
 * @example
 * ```ts
 * import { formatByteCount } from "@vmem-dump/vmem-dump";
 * console.log(formatByteCount(1536)); // 1.5 KiB
 * ```
 */
export function formatByteCount(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}

/** A sink that writes in order, remembers its first failure and can be drained. */
export interface OrderedSink {
  /** Give this to a `ByteWriter`. Its promises never reject. */
  sink: ByteSink;
  /** Bytes written so far. */
  readonly written: number;
  /** Throw the first write error, if any. */
  check(): void;
  /** Wait until `total` bytes were written (or a write failed: then throw). */
  drain(total: number): Promise<void>;
}

/**
 * Wrap an async write function as a {@linkcode ByteSink}: one write at a
 * time, in order (a pipe or socket may take part of a chunk); a failed write
 * is kept and rethrown by `check()`/`drain()` instead of leaving a rejected
 * promise nobody awaits when a pipeline stops early; `drain(writer.offset)`
 * waits until every byte handed to a `ByteWriter` has been written.
 *
 * @param write Writes one whole chunk.
 * @returns The sink and its controls.
 *
 * @example
 * ```ts ignore
 * import { ByteWriter, orderedSink } from "@vmem-dump/vmem-dump";
 * const file = await Deno.create("out.bin");
 * const out = orderedSink(async (c) => { let n = 0; while (n < c.length) n += await file.write(c.subarray(n)); });
 * const w = new ByteWriter(out.sink, { reuseChunks: true });
 * w.u32(1);
 * await w.flush();
 * await out.drain(w.offset);
 * ```
 */
export function orderedSink(write: (chunk: Uint8Array<ArrayBuffer>) => Promise<void>): OrderedSink {
  let tail: Promise<void> = Promise.resolve();
  let written = 0;
  let failed: { error: unknown } | undefined;
  let waiters: { total: number; resolve: () => void }[] = [];
  const wake = () => {
    const still: typeof waiters = [];
    for (const w of waiters) {
      if (failed !== undefined || written >= w.total) w.resolve();
      else still.push(w);
    }
    waiters = still;
  };
  const check = () => {
    if (failed !== undefined) throw failed.error;
  };
  return {
    sink(chunk) {
      tail = tail.then(async () => {
        if (failed === undefined) {
          try {
            await write(chunk);
            written += chunk.byteLength;
          } catch (error) {
            failed = { error };
          }
        }
        wake();
      });
      return tail;
    },
    get written() {
      return written;
    },
    check,
    async drain(total) {
      if (failed === undefined && written < total) {
        await new Promise<void>((resolve) => waiters.push({ total, resolve }));
      }
      check();
    },
  };
}
