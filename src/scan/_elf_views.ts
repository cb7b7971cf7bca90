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
import { subtractGpaRanges } from "../vmem/ranges.ts";
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
    if (length === 0n || p.paddr >= MAX_SAFE) continue;
    // Not `p_memsz`: a PT_LOAD whose memory runs past 2^53 still shows its file bytes.
    const end = p.paddr + length > MAX_SAFE ? MAX_SAFE : p.paddr + length;
    const gpa = Number(p.paddr);
    const byteLength = Number(end - p.paddr);
    const hits = within.some((r) => r.gpa < gpa + byteLength && gpa < r.gpa + r.byteLength);
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
 * @param ranges Unplugged ranges, each inside one device.
 * @param plan The plan's pieces over `ranges`.
 * @returns The views with their pieces (views without any are left out).
 */
export function otherViews(
  core: ElfCore,
  ranges: readonly GpaRange[],
  plan: readonly GpaPiece[],
): Array<{ view: ElfView; pieces: FilePiece[] }> {
  const out: Array<{ view: ElfView; pieces: FilePiece[] }> = [];
  for (const view of readerViews(core, ranges)) {
    const read = plan.filter((p) => p.kind === "data" && p.segmentIndex === view.index);
    const pieces: FilePiece[] = [];
    for (const r of ranges) {
      const from = Math.max(r.gpa, view.gpa);
      const to = Math.min(r.gpa + r.byteLength, view.gpa + view.byteLength);
      if (from >= to) continue;
      for (const x of subtractGpaRanges([{ gpa: from, byteLength: to - from }], read)) {
        pieces.push({
          gpa: x.gpa,
          byteLength: x.byteLength,
          fileOffset: view.fileOffset + (x.gpa - view.gpa),
        });
      }
    }
    if (pieces.length > 0) out.push({ view, pieces });
  }
  return out;
}
