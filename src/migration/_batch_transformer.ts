/**
 * The transformer behind the record filters' `TransformStream`s: items are
 * single records or batches; each goes through one batch function and comes
 * out in the form it came in (a batch as one batch, a record as records).
 *
 * @module
 */

import type { MigrationRecord } from "./types.ts";

/** A single record or a batch of records. */
export type RecordOrBatch = MigrationRecord | MigrationRecord[];

/**
 * A transformer that runs `process` over every item as a batch and, at the
 * end, enqueues what `end` returns (as one batch when the input came in
 * batches). Empty output batches are not enqueued.
 *
 * @param process Filters one batch.
 * @param end Called once at the end of the input; may throw to error the stream.
 * @returns The transformer.
 */
export function batchTransformer(
  process: (batch: readonly MigrationRecord[]) => MigrationRecord[],
  end?: () => MigrationRecord[],
): Transformer<RecordOrBatch, RecordOrBatch> {
  let batches = false;
  return {
    transform(item, controller) {
      if (Array.isArray(item)) {
        batches = true;
        const out = process(item);
        if (out.length > 0) controller.enqueue(out);
      } else {
        for (const r of process([item])) controller.enqueue(r);
      }
    },
    ...(end === undefined ? {} : {
      flush(controller) {
        const rest = end();
        if (rest.length === 0) return;
        if (batches) controller.enqueue(rest);
        else for (const r of rest) controller.enqueue(r);
      },
    }),
  };
}
