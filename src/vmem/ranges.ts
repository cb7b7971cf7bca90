/**
 * Byte ranges in the two address spaces virtio-mem memory lives in:
 * guest-physical (`gpa`) and inside a RAMBlock (`ramOffset`), plus runs of
 * device blocks.
 *
 * @module
 */

/**
 * A half-open guest-physical range `[gpa, gpa + byteLength)`.
 *
 * @example
 * ```ts
 * import type { GpaRange } from "@vmem-dump/vmem-dump";
 * const r: GpaRange = { gpa: 0x1_0000_0000, byteLength: 0x20_0000 };
 * console.log(r.gpa + r.byteLength); // 4296015872
 * ```
 */
export interface GpaRange {
  /** First guest-physical address. */
  gpa: number;
  /** Length in bytes. */
  byteLength: number;
}

/**
 * A half-open range `[ramOffset, ramOffset + byteLength)` inside one RAMBlock.
 *
 * @example
 * ```ts
 * import type { RamRange } from "@vmem-dump/vmem-dump";
 * const r: RamRange = { ramBlock: "0000:00:01.0/vmem0mem", ramOffset: 0, byteLength: 0x20_0000 };
 * console.log(r.ramBlock);
 * ```
 */
export interface RamRange {
  /** RAMBlock idstr. */
  ramBlock: string;
  /** First byte inside the RAMBlock. */
  ramOffset: number;
  /** Length in bytes. */
  byteLength: number;
}

/**
 * A run of device blocks: `[firstBlock, blockCount]`, the form the JSON
 * exchange format uses for `plugged`.
 *
 * @example
 * ```ts
 * import type { BlockRun } from "@vmem-dump/vmem-dump";
 * const run: BlockRun = [64, 36]; // blocks 64..99
 * console.log(run[0] + run[1] - 1); // 99
 * ```
 */
export type BlockRun = [firstBlock: number, blockCount: number];

/**
 * Sort ranges by address and merge the ones that overlap or touch. Empty
 * ranges are dropped. The input is not modified.
 *
 * @param ranges Ranges in any order.
 * @returns New sorted, disjoint, non-adjacent ranges.
 *
 * @example
 * ```ts
 * import { mergeGpaRanges } from "@vmem-dump/vmem-dump";
 * const merged = mergeGpaRanges([{ gpa: 8, byteLength: 8 }, { gpa: 0, byteLength: 8 }]);
 * console.log(merged); // [{ gpa: 0, byteLength: 16 }]
 * ```
 */
export function mergeGpaRanges(ranges: readonly GpaRange[]): GpaRange[] {
  const sorted = ranges.filter((r) => r.byteLength > 0).map((r) => ({ ...r }));
  sorted.sort((a, b) => a.gpa - b.gpa);
  const out: GpaRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.gpa <= last.gpa + last.byteLength) {
      const end = Math.max(last.gpa + last.byteLength, r.gpa + r.byteLength);
      last.byteLength = end - last.gpa;
    } else {
      out.push(r);
    }
  }
  return out;
}

/**
 * Format a guest-physical range as `0xSTART-0xEND` (END exclusive), the
 * form the range-list input of `--plugmap` accepts.
 *
 * @param range The range.
 * @returns E.g. `0x100000000-0x101c00000`.
 *
 * @example
 * ```ts
 * import { formatGpaRange } from "@vmem-dump/vmem-dump";
 * console.log(formatGpaRange({ gpa: 0x1_0000_0000, byteLength: 0x1c0_0000 }));
 * // "0x100000000-0x101c00000"
 * ```
 */
export function formatGpaRange(range: GpaRange): string {
  return `0x${range.gpa.toString(16)}-0x${(range.gpa + range.byteLength).toString(16)}`;
}

/**
 * The parts of `ranges` outside every range of `exclude`.
 *
 * @param ranges Ranges in any order (merged first).
 * @param exclude Ranges to cut out, in any order.
 * @returns Sorted, disjoint ranges.
 *
 * @example
 * ```ts
 * import { subtractGpaRanges } from "@vmem-dump/vmem-dump";
 * console.log(subtractGpaRanges([{ gpa: 0, byteLength: 16 }], [{ gpa: 4, byteLength: 4 }]));
 * // [{ gpa: 0, byteLength: 4 }, { gpa: 8, byteLength: 8 }]
 * ```
 */
export function subtractGpaRanges(
  ranges: readonly GpaRange[],
  exclude: readonly GpaRange[],
): GpaRange[] {
  const cut = mergeGpaRanges(exclude);
  const out: GpaRange[] = [];
  let j = 0;
  for (const r of mergeGpaRanges(ranges)) {
    let at = r.gpa;
    const end = r.gpa + r.byteLength;
    while (j > 0 && cut[j - 1]!.gpa + cut[j - 1]!.byteLength > at) j--;
    for (let k = j; k < cut.length && cut[k]!.gpa < end; k++) {
      const x = cut[k]!;
      if (x.gpa + x.byteLength <= at) {
        j = k + 1;
        continue;
      }
      if (x.gpa > at) out.push({ gpa: at, byteLength: x.gpa - at });
      at = Math.max(at, x.gpa + x.byteLength);
    }
    if (at < end) out.push({ gpa: at, byteLength: end - at });
  }
  return out;
}

/**
 * The parts of `ranges` inside some range of `within`.
 *
 * @param ranges Ranges in any order (merged first).
 * @param within Ranges to keep, in any order.
 * @returns Sorted, disjoint ranges.
 *
 * @example
 * ```ts
 * import { intersectGpaRanges } from "@vmem-dump/vmem-dump/vmem";
 * console.log(intersectGpaRanges([{ gpa: 0, byteLength: 16 }], [{ gpa: 4, byteLength: 20 }]));
 * // [{ gpa: 4, byteLength: 12 }]
 * ```
 */
export function intersectGpaRanges(
  ranges: readonly GpaRange[],
  within: readonly GpaRange[],
): GpaRange[] {
  return subtractGpaRanges(ranges, subtractGpaRanges(ranges, within));
}
