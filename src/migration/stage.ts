/**
 * The stage interface of the record pipeline: one step between the decoder
 * and the encoder that sees every record batch in stream order and says
 * what goes on. The send-side filter ({@linkcode UnpluggedPageDropper}), the
 * receive-side verifier ({@linkcode PlugStateVerifier}) and
 * {@linkcode PassThroughStage} implement it; `runMigrationPipeline` and the
 * proxy drive it.
 *
 * @module
 */

import type { MigrationRecord } from "./types.ts";

/**
 * One step of a record pipeline.
 *
 * Contract:
 * - `process` is called with batches in stream order and returns the records
 *   to forward now, in order: `batch` itself when nothing changed (the
 *   common, allocation-free case), a new array otherwise, possibly empty.
 *   It is synchronous, so a pipeline awaits once per batch, never per page.
 * - A stage may hold records back (the verifier holds `QEMU_VM_EOF` and the
 *   vmdesc until the stream is proven clean); `end` is called once when the
 *   stream is complete and returns what was held back and may now go.
 * - A stage refuses a stream by throwing (a typed error from
 *   `src/errors.ts`); nothing the pipeline has not yet written goes out.
 * - Returned records and their byte views are valid until the next call
 *   (they may point into the reader's buffers).
 *
 * @example A stage that counts page records
 * ```ts
 * import type { MigrationRecord, RecordStage } from "@vmem-dump/vmem-dump";
 * class CountPages implements RecordStage {
 *   pages = 0;
 *   process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
 *     for (const r of batch) if (r.kind === "ram-page") this.pages++;
 *     return batch;
 *   }
 *   end(): readonly MigrationRecord[] {
 *     return [];
 *   }
 * }
 * console.log(new CountPages().pages); // 0
 * ```
 */
export interface RecordStage {
  /**
   * Take one batch (stream order) and return the records to forward now.
   *
   * @param batch Records, e.g. one batch of `decodeMigrationBatches`.
   * @returns The records to forward now (`batch` itself when unchanged).
   */
  process(batch: readonly MigrationRecord[]): readonly MigrationRecord[];
  /**
   * The stream is complete: return what was held back and may now go.
   *
   * @returns The held-back records, in stream order (often none).
   */
  end(): readonly MigrationRecord[];
}

/**
 * The stage that forwards everything unchanged (the proxy's `pass` mode).
 *
 * @example
 * ```ts
 * import { PassThroughStage } from "@vmem-dump/vmem-dump";
 * const stage = new PassThroughStage();
 * console.log(stage.process([{ kind: "eof", streamOffset: 0 }]).length); // 1
 * ```
 */
export class PassThroughStage implements RecordStage {
  /**
   * Forward the batch as it is.
   *
   * @param batch Records.
   * @returns `batch`.
   */
  process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
    return batch;
  }

  /**
   * Nothing is held back.
   *
   * @returns An empty list.
   */
  end(): readonly MigrationRecord[] {
    return [];
  }
}

/**
 * Run batches through a stage: a generator form for callers that hold an
 * async iterable of batches rather than a reader (the pipeline in
 * `runMigrationPipeline` is the usual driver). Empty batches are skipped;
 * what `end()` releases comes last.
 *
 * @param stage The stage.
 * @param batches Record batches in stream order.
 * @returns The forwarded batches.
 *
 * @example
 * ```ts ignore
 * import { decodeMigrationBatches, openInput, UnpluggedPageDropper } from "@vmem-dump/vmem-dump";
 * import { stageBatches } from "@vmem-dump/vmem-dump/migration";
 * const input = await openInput("q10-s3.mig");
 * for await (const batch of stageBatches(new UnpluggedPageDropper(), decodeMigrationBatches(input.reader))) {
 *   console.log(batch.length);
 * }
 * ```
 */
export async function* stageBatches(
  stage: RecordStage,
  batches: AsyncIterable<readonly MigrationRecord[]> | Iterable<readonly MigrationRecord[]>,
): AsyncGenerator<readonly MigrationRecord[]> {
  for await (const batch of batches) {
    const out = stage.process(batch);
    if (out.length > 0) yield out;
  }
  const rest = stage.end();
  if (rest.length > 0) yield rest;
}

/** A single record or a batch of records: what the stages' `TransformStream`s carry. */
export type RecordOrBatch = MigrationRecord | readonly MigrationRecord[];
