/**
 * The memory of an ELF core as the other readers see it. `planGpaRange`
 * gives each address one segment (the lowest-starting PT_LOAD); the real
 * readers choose differently, and a crafted core can give one address other
 * bytes in each of their views:
 *
 * - crash (netdump.c `read_netdump`) takes the first program header in file
 *   order that covers a physical address, and takes every program header
 *   after the first as a PT_LOAD whatever its `p_type` (`nd->load64 =
 *   nd->notes64 + 1`). With one such header (`e_phnum` 2) it maps every
 *   address from its `p_paddr` on to the file, past `p_filesz`, up to the end
 *   of the file.
 * - drgn 0.0.22 (`drgn_program_set_core_dump`) adds the PT_LOADs in file
 *   order, a later one replacing an earlier one where they overlap: the last
 *   one wins.
 *
 * {@linkcode otherViews} lists, per unplugged range, the file bytes a reader
 * may show that the plan does not read, so a scan examines them too.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import type { ElfCore, GpaPiece } from "../elf/reader.ts";
import { phdrLayout } from "../elf/phdr.ts";
import { PT_LOAD } from "../elf/constants.ts";
import type { GpaRange } from "../vmem/ranges.ts";
import type { FilePiece } from "./_memory_pages.ts";

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** File bytes of one program header, as a reader maps them to guest-physical memory. */
export interface ElfView {
  /** Program header index. */
  index: number;
  /** Guest-physical address of the first file byte. */
  gpa: number;
  /** File offset of that byte. */
  fileOffset: number;
  /** Bytes mapped. */
  byteLength: number;
}

/**
 * Every program header's file bytes that some reader maps to physical
 * memory: each PT_LOAD's (also one whose `p_memsz` runs past 2^53, which
 * the plan leaves out), and, as crash reads them, each header's after the
 * first whatever its type (with one such header, up to the end of the
 * file). Headers at addresses past 2^53 lie outside every plug map and are
 * left out; one whose bytes cover `within` from a file offset past 2^53 is
 * refused.
 *
 * @throws {FormatError} when a header that maps unplugged memory has a file offset past 2^53.
 */
function readerViews(core: ElfCore, within: readonly GpaRange[]): ElfView[] {
  const views: ElfView[] = [];
  const fields = phdrLayout(core.ehdr.elfClass).fields;
  const entry = core.ehdr.phdrEntrySize;
  const crashSingle = core.phdrCount === 2;
  for (let i = 0; i < core.phdrs.length; i++) {
    const p = core.phdrs[i]!;
    // crash skips the first header (its notes) and takes every other one; drgn every PT_LOAD.
    if (p.type !== PT_LOAD && i === 0) continue;
    let length = p.fileByteLength;
    if (crashSingle && i === 1 && p.fileOffset < BigInt(core.byteLength)) {
      const toEnd = BigInt(core.byteLength) - p.fileOffset;
      if (toEnd > length) length = toEnd;
    }
    // A reader finds no bytes past the end of the file (its read fails there): those it cannot show.
    const fileEnd = BigInt(core.byteLength);
    if (p.fileOffset >= fileEnd) continue;
    if (length > fileEnd - p.fileOffset) length = fileEnd - p.fileOffset;
    if (length === 0n || p.paddr >= MAX_SAFE) continue;
    // Not `p_memsz`: a PT_LOAD whose memory runs past 2^53 still shows its file bytes.
    const end = p.paddr + length > MAX_SAFE ? MAX_SAFE : p.paddr + length;
    const gpa = Number(p.paddr);
    const byteLength = Number(end - p.paddr);
    const next = within[firstRangeEndingAfter(within, gpa)];
    const hits = next !== undefined && next.gpa < gpa + byteLength;
    if (!hits) continue;
    if (p.fileOffset > MAX_SAFE - length) {
      throw new FormatError(
        `Cannot scan program header ${i}: a reader takes guest memory at gpa 0x${
          gpa.toString(16)
        } from its file offset 0x${p.fileOffset.toString(16)}, past 2^53`,
        {
          format: "elf",
          code: "too-large",
          offset: core.ehdr.phdrFileOffset + i * entry + fields.fileOffset.offset,
        },
      );
    }
    views.push({ index: i, gpa, fileOffset: Number(p.fileOffset), byteLength });
  }
  return views;
}

/**
 * The file pieces inside `ranges` that some reader shows and `plan` (the
 * pieces of `planGpaRange` over the same ranges) does not read: for each
 * view, its bytes in `ranges` minus those the plan reads from the same
 * header. Grouped by view, so a page a piece boundary cuts can be put
 * together from the view's own bytes.
 *
 * @param core A parsed core.
 * @param ranges Unplugged ranges, ascending, each inside one device.
 * @param plan The plan's pieces over `ranges`.
 * @returns The views with their pieces (views without any are left out).
 */
export function otherViews(
  core: ElfCore,
  ranges: readonly GpaRange[],
  plan: readonly GpaPiece[],
): Array<{ view: ElfView; pieces: FilePiece[] }> {
  // The plan's data pieces by program header, ascending (the plan is in ascending gpa).
  const readBy = new Map<number, GpaPiece[]>();
  for (const p of plan) {
    if (p.kind !== "data") continue;
    const list = readBy.get(p.segmentIndex);
    if (list === undefined) readBy.set(p.segmentIndex, [p]);
    else list.push(p);
  }
  const out: Array<{ view: ElfView; pieces: FilePiece[] }> = [];
  for (const view of readerViews(core, ranges)) {
    const read = readBy.get(view.index) ?? [];
    const viewEnd = view.gpa + view.byteLength;
    const pieces: FilePiece[] = [];
    const add = (from: number, to: number) =>
      pieces.push({
        gpa: from,
        byteLength: to - from,
        fileOffset: view.fileOffset + (from - view.gpa),
      });
    // One sweep over the ranges the view meets and the pieces the plan reads from it.
    let k = 0;
    for (let i = firstRangeEndingAfter(ranges, view.gpa); i < ranges.length; i++) {
      const r = ranges[i]!;
      if (r.gpa >= viewEnd) break;
      let from = Math.max(r.gpa, view.gpa);
      const to = Math.min(r.gpa + r.byteLength, viewEnd);
      while (k < read.length && read[k]!.gpa + read[k]!.byteLength <= from) k++;
      for (let j = k; from < to; j++) {
        const q = read[j];
        if (q === undefined || q.gpa >= to) {
          add(from, to);
          break;
        }
        if (q.gpa > from) add(from, q.gpa);
        from = Math.max(from, q.gpa + q.byteLength);
      }
    }
    if (pieces.length > 0) out.push({ view, pieces });
  }
  return out;
}

/** Index of the first of the sorted, disjoint `ranges` that ends after `gpa`. */
function firstRangeEndingAfter(ranges: readonly GpaRange[], gpa: number): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[mid]!.gpa + ranges[mid]!.byteLength <= gpa) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
