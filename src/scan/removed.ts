/**
 * Memory a dump lacks because vmem-dump removed it: the ranges its
 * provenance note records (`strip`, `convert --plugmap`), so that a scan
 * reports them as absent *because they were unplugged*, not as lost. Such
 * memory was never examined here, so the verdict stays inconclusive (exit
 * 4); the reason says who removed it, from which input, and why.
 *
 * @module
 */

import { type Provenance, provenanceRemoved } from "../dumps/provenance.ts";
import { type GpaRange, intersectGpaRanges, subtractGpaRanges } from "../vmem/ranges.ts";
import type { CoverageCounter } from "./coverage.ts";

/** The absence reason code for memory our provenance note says was removed. */
export const REMOVED_UNPLUGGED_REASON = "removed-unplugged";

/** What a dump's provenance note says was removed. */
export interface RemovedMemory {
  /** The removed gpa ranges, all steps, sorted and merged. */
  ranges: GpaRange[];
  /** The reason in words. */
  detail: string;
}

/**
 * The memory a provenance note says was removed, or `undefined` when the
 * note records none.
 *
 * @param provenance The dump's provenance note, if any.
 * @returns The ranges and the words for the report.
 *
 * @example
 * ```ts ignore
 * import { removedMemory } from "./removed.ts";
 * console.log(removedMemory(undefined)); // undefined
 * ```
 */
export function removedMemory(provenance: Provenance | undefined): RemovedMemory | undefined {
  if (provenance === undefined) return undefined;
  const ranges = provenanceRemoved(provenance);
  if (ranges.length === 0) return undefined;
  const steps = provenance.steps.filter((s) => s.removed.length > 0).map((s) =>
    `${s.tool.name} ${s.tool.version} ${s.command} of ${s.input.name} (sha256 ${
      s.input.sha256.slice(0, 16)
    }…)`
  );
  return {
    ranges,
    detail: `removed as unplugged virtio-mem memory by ${
      steps.join(", then ")
    }, as the dump's provenance note records: unplugged when the dump was rewritten, not examined here`,
  };
}

/**
 * Count `range` as absent: the parts the provenance note says were removed
 * as `removed-unplugged`, the rest with the scanner's own reason.
 *
 * @param coverage The scan's coverage counter.
 * @param range Absent unplugged memory, inside one device.
 * @param removed What the note says was removed, if anything.
 * @param reason The scanner's reason for the rest.
 * @param detail Its words.
 */
export function countAbsent(
  coverage: CoverageCounter,
  range: GpaRange,
  removed: RemovedMemory | undefined,
  reason: string,
  detail: string,
): void {
  if (removed === undefined) {
    coverage.absent(range, reason, detail);
    return;
  }
  for (const r of intersectGpaRanges([range], removed.ranges)) {
    coverage.absent(r, REMOVED_UNPLUGGED_REASON, removed.detail);
  }
  for (const r of subtractGpaRanges([range], removed.ranges)) coverage.absent(r, reason, detail);
}
