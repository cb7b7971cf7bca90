/**
 * The one record pipeline: decode a migration stream, run every batch
 * through a chain of {@linkcode RecordStage}s, and encode what they forward.
 * `vmem-dump filter`, `vmem-dump verify` and the proxy's channels are thin
 * users of it; they differ only in their stage and where the bytes go.
 *
 * Runtime-neutral: the input is a `ByteReader`, the output a function that
 * writes one chunk (a file, a pipe, a socket).
 *
 * - One await per decoded batch (all records decodable from buffered
 *   bytes), never per page; output chunks are reused once written.
 * - The stream is complete at its vmdesc (QEMU's last record), or at the end
 *   of the input when it has none. At that point every stage's `end()` runs
 *   and the output is flushed, before the pipeline waits for the input to
 *   close: a live source that keeps its connection open (the return path
 *   waits for the destination's answer) is not waited for. The input is
 *   then still read to its end, so trailing bytes are an error.
 * - `beforeEof` is awaited before `QEMU_VM_EOF` is written (the proxy holds
 *   it until every other channel of the migration has agreed).
 * - A stage that throws stops the pipeline; bytes it had not forwarded never
 *   reach the output.
 *
 * @module
 */

import type { ByteReader } from "../io/byte_reader.ts";
import { ByteWriter } from "../io/byte_writer.ts";
import { orderedSink } from "../io/ordered_sink.ts";
import { batchInputBytes, decodeMigrationBatches, type DecodeOptions } from "./decoder.ts";
import { MigrationEncoder, pageRecordByteLength } from "./encoder.ts";
import type { RecordStage } from "./stage.ts";
import { isPageRecord, type MigrationRecord, type RamPageLikeRecord } from "./types.ts";

/** Counts of a running or finished pipeline. */
export interface PipelineProgress {
  /** Input bytes decoded so far (the reader's offset). */
  bytesIn: number;
  /** Output bytes written so far (acknowledged by the output). */
  bytesOut: number;
  /** Records decoded so far. */
  records: number;
}

/** Options for {@linkcode runMigrationPipeline} and {@linkcode MigrationPipeline}. */
export interface MigrationPipelineOptions {
  /** Stages, in order; each sees what the one before forwarded. @default {[]} (pass through) */
  stages?: readonly RecordStage[];
  /**
   * Writes one whole output chunk (the chunk is reused after the promise
   * resolves). Without it nothing is encoded (a check-only run).
   * @default {undefined}
   */
  output?: (chunk: Uint8Array<ArrayBuffer>) => Promise<void>;
  /** Size of the output chunks. @default {1048576} */
  chunkSize?: number;
  /** Decoder options. @default {{}} */
  decode?: DecodeOptions;
  /** Called after every batch, cheaply (e.g. to update a progress line). @default {undefined} */
  onBatch?: (progress: PipelineProgress) => void;
  /**
   * Awaited just before `QEMU_VM_EOF` is written, after everything before it
   * was written; a rejection withholds the EOF and fails the pipeline.
   * @default {undefined}
   */
  beforeEof?: () => Promise<void>;
  /**
   * Called once the stream is complete and all output (EOF and vmdesc
   * included) was written, before the input is read to its end.
   * @default {undefined}
   */
  onComplete?: (progress: PipelineProgress) => void;
}

/**
 * One run of the pipeline, as an object a caller can steer while it runs
 * (the proxy stops the output at a veto and pushes buffered bytes out before
 * it waits for its source).
 *
 * @example Filter a file into memory
 * ```ts ignore
 * import { MigrationPipeline, openInput, UnpluggedPageDropper } from "@vmem-dump/vmem-dump";
 * const input = await openInput("q10-s3.mig");
 * const chunks: Uint8Array[] = [];
 * const dropper = new UnpluggedPageDropper();
 * const pipeline = new MigrationPipeline(input.reader, {
 *   stages: [dropper],
 *   output: async (c) => void chunks.push(c.slice()),
 * });
 * await pipeline.run();
 * console.log(dropper.stats.droppedRecords); // 2
 * ```
 */
export class MigrationPipeline {
  #reader: ByteReader;
  #stages: readonly RecordStage[];
  #options: MigrationPipelineOptions;
  #sink: ReturnType<typeof orderedSink> | undefined;
  #writer: ByteWriter | undefined;
  #encoder: MigrationEncoder | undefined;
  #records = 0;
  #detached = false;
  #ended = false;
  #eofWritten = false;
  #started = false;

  /**
   * Set the pipeline up (nothing is read until {@linkcode MigrationPipeline.run}).
   *
   * @param reader The input stream.
   * @param options Stages, output and hooks.
   */
  constructor(reader: ByteReader, options: MigrationPipelineOptions = {}) {
    this.#reader = reader;
    this.#stages = options.stages ?? [];
    this.#options = options;
    if (options.output !== undefined) {
      this.#sink = orderedSink(options.output);
      this.#writer = new ByteWriter(this.#sink.sink, {
        chunkSize: options.chunkSize ?? 1 << 20,
        reuseChunks: true,
      });
      this.#encoder = new MigrationEncoder(this.#writer);
    }
  }

  /** Counts so far. */
  get progress(): PipelineProgress {
    return {
      bytesIn: this.#reader.offset,
      bytesOut: this.#sink?.written ?? 0,
      records: this.#records,
    };
  }

  /** Whether `QEMU_VM_EOF` has been handed to the output. */
  get eofWritten(): boolean {
    return this.#eofWritten;
  }

  /** Whether the stream was complete (every stage ended and the output flushed). */
  get complete(): boolean {
    return this.#ended;
  }

  /**
   * Stop the output for good: nothing more is encoded or written (what is
   * buffered is dropped). The pipeline still decodes and runs its stages to
   * the end of the input, e.g. so a verifier can report every violation.
   */
  detachOutput(): void {
    this.#detached = true;
  }

  /**
   * Hand the buffered output to the output function now (see
   * `ByteWriter.sendBuffered`). A relay calls it before it waits for more
   * input, so the destination never waits for bytes the relay holds.
   */
  sendBuffered(): void {
    if (!this.#detached) this.#writer?.sendBuffered();
  }

  /**
   * Run to the end of the input.
   *
   * @returns The final counts.
   * @throws {FormatError} for a malformed or truncated stream (from the decoder).
   * @throws whatever a stage, the output or `beforeEof` throws.
   */
  async run(): Promise<PipelineProgress> {
    if (this.#started) throw new TypeError("MigrationPipeline.run() was already called");
    this.#started = true;
    const stages = this.#stages;
    const onBatch = this.#options.onBatch;
    for await (const batch of decodeMigrationBatches(this.#reader, this.#options.decode)) {
      if (this.#ended) {
        // The decoder yields nothing after the vmdesc (trailing bytes throw).
        throw new TypeError("MigrationPipeline: a record followed the end of the stream");
      }
      this.#records += batch.length;
      let out: readonly MigrationRecord[] = batch;
      for (let i = 0; i < stages.length && out.length > 0; i++) out = stages[i]!.process(out);
      if (out.length > 0) {
        await this.#write(out, out === batch ? batchInputBytes(batch) : undefined);
      }
      onBatch?.(this.progress);
      // QEMU's last record: the stream is complete even if the input stays open.
      if (batch[batch.length - 1]!.kind === "vmdesc") await this.#end();
    }
    if (!this.#ended) await this.#end();
    return this.progress;
  }

  /** Every stage's `end()`, in order (what one releases goes through the later ones), then flush. */
  async #end(): Promise<void> {
    this.#ended = true;
    const stages = this.#stages;
    for (let i = 0; i < stages.length; i++) {
      let out = stages[i]!.end();
      for (let j = i + 1; j < stages.length && out.length > 0; j++) out = stages[j]!.process(out);
      if (out.length > 0) await this.#write(out);
    }
    if (this.#writer !== undefined && !this.#detached) {
      await this.#writer.flush();
      await this.#sink!.drain(this.#writer.offset);
    }
    this.#options.onComplete?.(this.progress);
  }

  /**
   * Encode `records` into the output. `input`: the bytes they were decoded
   * from, when every stage forwarded the batch unchanged; a batch of page
   * records only whose bytes are exactly their encoding is copied as it is
   * (one copy, not one encode per record: most of a stream is such batches).
   */
  async #write(records: readonly MigrationRecord[], input?: Uint8Array): Promise<void> {
    const enc = this.#encoder;
    if (enc === undefined || this.#detached) return;
    if (input !== undefined && encodedPageBytes(records) === input.byteLength) {
      enc.writeVerbatim(records as readonly RamPageLikeRecord[], input);
      await enc.flushIfFull();
      this.#sink!.check();
      return;
    }
    let from = 0;
    if (this.#options.beforeEof !== undefined && !this.#eofWritten) {
      const at = records.findIndex((r) => r.kind === "eof");
      if (at >= 0) {
        for (; from < at; from++) enc.write(records[from]!);
        await this.#writer!.flush();
        await this.#sink!.drain(this.#writer!.offset);
        await this.#options.beforeEof();
        if (this.#detached) return;
      }
    }
    for (let i = from; i < records.length; i++) {
      const r = records[i]!;
      if (r.kind === "eof") this.#eofWritten = true;
      enc.write(r);
    }
    await enc.flushIfFull();
    this.#sink!.check();
  }
}

/** The encoded length of `records` if they are all page records, else -1. */
function encodedPageBytes(records: readonly MigrationRecord[]): number {
  let n = 0;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    if (!isPageRecord(r)) return -1;
    n += pageRecordByteLength(r);
  }
  return n;
}

/**
 * Decode a migration stream, run it through `stages` and encode what they
 * forward to `output`: the one loop behind `filter`, `verify` and the
 * proxy. See {@linkcode MigrationPipeline} for the guarantees.
 *
 * @param reader The input stream.
 * @param options Stages, output and hooks.
 * @returns The final counts.
 * @throws {FormatError} for a malformed or truncated stream.
 * @throws whatever a stage or the output throws.
 *
 * @example Verify a file without writing anything
 * ```ts ignore
 * import { openInput, PlugStateVerifier, runMigrationPipeline } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s3-malicious.mig");
 * const verifier = new PlugStateVerifier({ mode: "report" });
 * await runMigrationPipeline(input.reader, { stages: [verifier] });
 * console.log(verifier.result.clean); // false
 * ```
 */
export function runMigrationPipeline(
  reader: ByteReader,
  options: MigrationPipelineOptions = {},
): Promise<PipelineProgress> {
  return new MigrationPipeline(reader, options).run();
}
