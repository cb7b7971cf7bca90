/**
 * Where the bytes of guest-physical ranges sit in an ELF core, without
 * reading them: file pieces, zero-fill tails and memory no PT_LOAD covers.
 * Same rules as `iterateGpaRange` of src/elf/reader.ts (where PT_LOADs
 * overlap, the one that starts lower wins), but as a plan, so the scanner
 * can read with its own reused, double-buffered chunks.
 *
 * TODO(dedup): replace with a planning export of src/elf/reader.ts (or a
 * caller-supplied buffer option of `iterateGpaRange`) once it has one.
 */

import type { LoadSegment } from "../elf/reader.ts";
import type { GpaRange } from "../vmem/ranges.ts";
import type { FilePiece } from "./_memory_pages.ts";

/** One piece of a guest-physical range in a core. */
export type ElfPiece =
  | ({ kind: "data" } & FilePiece)
  | { kind: "zero"; gpa: number; byteLength: number }
  | { kind: "absent"; gpa: number; byteLength: number };

interface PhysPiece {
  gpa: number;
  end: number;
  segment: LoadSegment;
}

/** Disjoint physical pieces of the PT_LOADs, sorted by gpa, lower-starting segment first. */
function physPieces(loads: readonly LoadSegment[]): PhysPiece[] {
  const sorted = loads.filter((s) => s.gpa !== undefined && s.byteLength > 0)
    .sort((a, b) => a.gpa! - b.gpa! || a.index - b.index);
  const out: PhysPiece[] = [];
  let covered = -1;
  for (const s of sorted) {
    const end = s.gpa! + s.byteLength;
    const start = Math.max(s.gpa!, covered);
    if (start < end) out.push({ gpa: start, end, segment: s });
    covered = Math.max(covered, end);
  }
  return out;
}

/**
 * The pieces of each range (ranges sorted and disjoint), in ascending gpa.
 *
 * @param loads The PT_LOADs of the core.
 * @param ranges Guest-physical ranges.
 * @returns Pieces that cover every range exactly.
 */
export function* elfPieces(
  loads: readonly LoadSegment[],
  ranges: readonly GpaRange[],
): Generator<ElfPiece> {
  const map = physPieces(loads);
  for (const { gpa, byteLength } of ranges) {
    const end = gpa + byteLength;
    let lo = 0;
    let hi = map.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (map[mid]!.end <= gpa) lo = mid + 1;
      else hi = mid;
    }
    let at = gpa;
    for (let i = lo; i < map.length && at < end; i++) {
      const piece = map[i]!;
      if (piece.gpa >= end) break;
      if (piece.gpa > at) {
        yield { kind: "absent", gpa: at, byteLength: piece.gpa - at };
        at = piece.gpa;
      }
      const s = piece.segment;
      const stop = Math.min(end, piece.end);
      const fileEnd = s.fileOffset === undefined ? s.gpa! : s.gpa! + s.fileByteLength;
      if (at < Math.min(stop, fileEnd)) {
        const n = Math.min(stop, fileEnd) - at;
        yield { kind: "data", gpa: at, byteLength: n, fileOffset: s.fileOffset! + (at - s.gpa!) };
        at += n;
      }
      if (at < stop) {
        yield { kind: "zero", gpa: at, byteLength: stop - at };
        at = stop;
      }
    }
    if (at < end) yield { kind: "absent", gpa: at, byteLength: end - at };
  }
}
