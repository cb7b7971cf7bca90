/**
 * The transformer behind the record stages' `TransformStream`s
 * (`DropUnpluggedPagesStream`, `VerifyPlugStateStream`): items are single
 * records or batches; each goes through the stage as a batch and comes out in
 * the form it came in.
 *
 * @module
 */

import type { RecordOrBatch, RecordStage } from "./stage.ts";
import type { MigrationRecord } from "./types.ts";

/**
 * The transformer behind the stages' `TransformStream`s: each item goes
 * through `stage.process` as a batch and comes out in the form it came in (a
 * batch as one batch, skipped when empty; a record as records). At the end
 * of the input, what `end()` returns (or throws) is enqueued (one batch when
 * the input came in batches).
 *
 * @param stage The stage.
 * @param end Replaces `stage.end()` (e.g. to throw a summary error).
 * @returns The transformer.
 */
export function stageTransformer(
  stage: RecordStage,
  end: () => readonly MigrationRecord[] = () => stage.end(),
): Transformer<RecordOrBatch, RecordOrBatch> {
  let batches = false;
  return {
    transform(item, controller) {
      if (Array.isArray(item)) {
        batches = true;
        const out = stage.process(item as readonly MigrationRecord[]);
        if (out.length > 0) controller.enqueue(out);
      } else {
        for (const r of stage.process([item as MigrationRecord])) controller.enqueue(r);
      }
    },
    flush(controller) {
      const rest = end();
      if (rest.length === 0) return;
      if (batches) controller.enqueue(rest);
      else for (const r of rest) controller.enqueue(r);
    },
  };
}
