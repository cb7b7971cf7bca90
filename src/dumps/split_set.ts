/**
 * Checks that the files of a split kdump dump (makedumpfile `--split`: one
 * dump cut into files by pfn range) belong together before one of them is
 * rewritten: the same dump, cut in one run, with the same plug state.
 *
 * What identifies a member (makedumpfile `--reassemble` requires the whole
 * `disk_dump_header` to be byte-identical across the files; its timestamp
 * is the dump's VMCOREINFO `CRASHTIME`, 0 without): the header's identity
 * fields, the sub-header's `max_mapnr`, `dump_level` and `phys_base`, the
 * ELF notes (each CPU's registers at dump time tell two dumps of one kernel
 * apart; our provenance note aside) and VMCOREINFO, pfn ranges that tile
 * `[0, max_mapnr)` without gap or overlap, the same 1st bitmap (a strip with
 * a plug map clears unplugged pfns there, so a member stripped with another
 * plug map, or cut from a dump taken at another plug state, differs), and a
 * 2nd bitmap that agrees with each member about that member's own range
 * (every file carries the set's 2nd bitmap; readers take the other files'
 * pages from it). `sub_hdr_size` may differ: the notes of stripped members
 * carry each input's own name.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { parseNotes } from "../elf/note.ts";
import {
  type DiskDumpHeaderField,
  diskDumpHeaderLayout,
  kdumpSubHeaderLayout,
} from "../kdump/header.ts";
import type { KdumpFile } from "../kdump/reader.ts";
import { isProvenanceNote } from "./provenance.ts";

/** One opened file of a split set, with the name errors give it. */
export interface SplitSetMember {
  /** The file's name as the user gave it. */
  readonly name: string;
  /** The opened file. */
  readonly dump: KdumpFile;
}

/** `disk_dump_header` fields that must be equal in every member of a set. */
const IDENTITY_FIELDS: readonly DiskDumpHeaderField[] = [
  "headerVersion",
  "timestampSeconds",
  "timestampMicroseconds",
  "status",
  "blockSize",
  "bitmapBlocks",
  "maxMapnr32",
  "currentCpu",
  "nrCpus",
];

function mismatch(m: SplitSetMember, offset: number, message: string): FormatError {
  return new FormatError(`Cannot use ${m.name} as a member of the split set: ${message}`, {
    format: "kdump",
    code: "split-set",
    offset,
  });
}

/** File offset of a `kdump_sub_header` field of `m` (`…64` when the version has it). */
function subOffset(
  m: SplitSetMember,
  field: "split" | "dumpLevel" | "physBase" | "startPfn" | "maxMapnr",
): number {
  const h = m.dump.header;
  const f = kdumpSubHeaderLayout(h.wordSize).fields;
  const v6 = h.headerVersion >= 6;
  const wire = field === "startPfn"
    ? (v6 ? f.startPfn64 : f.startPfn)
    : field === "maxMapnr"
    ? (v6 ? f.maxMapnr64 : undefined)
    : f[field];
  return h.blockSize + (wire?.offset ?? 0);
}

/** File offsets of the two bitmaps of `m`. */
function bitmapOffsets(m: SplitSetMember): { first: number; second: number } {
  const h = m.dump.header;
  const first = (1 + h.subHdrSize) * h.blockSize;
  return { first, second: first + Math.floor(h.bitmapBlocks / 2) * h.blockSize };
}

/** Index of the first byte where `a` and `b` differ in bits `[from, end)`, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array, from: number, end: number): number {
  for (let pfn = from; pfn < end;) {
    const byte = pfn >>> 3;
    if (pfn % 8 === 0 && pfn + 8 <= end) {
      if (a[byte] !== b[byte]) return byte;
      pfn += 8;
      continue;
    }
    const bit = 1 << (pfn & 7);
    if ((a[byte]! & bit) !== (b[byte]! & bit)) return byte;
    pfn++;
  }
  return -1;
}

/**
 * Check that `members` are the complete set of files of one split dump,
 * cut in one run and with the same plug state. The first member is the
 * reference; errors name the member that disagrees with it (or the one
 * after a gap) and the offset of the field or bitmap byte.
 *
 * @param members The opened files, in any order; at least one.
 * @throws {FormatError} code `split-set` (format `kdump`) on the first mismatch.
 *
 * @example
 * ```ts ignore
 * import { checkSplitSet, readKdump } from "@vmem-dump/vmem-dump/kdump";
 * using a = await readKdump("vmcore.1");
 * using b = await readKdump("vmcore.2");
 * checkSplitSet([{ name: "vmcore.1", dump: a }, { name: "vmcore.2", dump: b }]);
 * ```
 */
export function checkSplitSet(members: readonly SplitSetMember[]): void {
  for (const m of members) {
    if (m.dump.subHeader.split === 0) {
      throw mismatch(m, subOffset(m, "split"), "it is not a file of a split dump (split flag 0)");
    }
  }
  const ref = members[0];
  if (ref === undefined) return;
  const rh = ref.dump.header;
  const rs = ref.dump.subHeader;
  for (const m of members.slice(1)) {
    const h = m.dump.header;
    const s = m.dump.subHeader;
    if (h.wordSize !== rh.wordSize || h.littleEndian !== rh.littleEndian) {
      throw mismatch(m, 0, `its word size or byte order differs from ${ref.name}'s`);
    }
    const f = diskDumpHeaderLayout(h.wordSize).fields;
    for (const key of IDENTITY_FIELDS) {
      if (h[key] !== rh[key]) {
        throw mismatch(
          m,
          f[key].offset,
          `${f[key].name} is ${h[key]}, ${ref.name} has ${
            rh[key]
          } (not cut from the same dump in one run)`,
        );
      }
    }
    for (const [key, value] of Object.entries(h.utsname)) {
      if (value !== rh.utsname[key as keyof typeof rh.utsname]) {
        throw mismatch(m, f.utsname.offset, `utsname.${key} differs from ${ref.name}'s`);
      }
    }
    if (s.maxMapnr !== rs.maxMapnr) {
      throw mismatch(
        m,
        subOffset(m, "maxMapnr"),
        `max_mapnr is ${s.maxMapnr}, ${ref.name} has ${rs.maxMapnr}`,
      );
    }
    if (s.dumpLevel !== rs.dumpLevel) {
      throw mismatch(
        m,
        subOffset(m, "dumpLevel"),
        `dump_level is ${s.dumpLevel}, ${ref.name} has ${rs.dumpLevel}`,
      );
    }
    if (s.physBase !== rs.physBase) {
      throw mismatch(m, subOffset(m, "physBase"), `phys_base differs from ${ref.name}'s`);
    }
  }
  // The notes (without our provenance note) and VMCOREINFO: the same dump.
  const refNotes = dumpNotes(ref.dump);
  for (const m of members.slice(1)) {
    const notes = dumpNotes(m.dump);
    const n = Math.min(notes.length, refNotes.length);
    let i = 0;
    while (i < n && equalBytes(notes[i]!.bytes, refNotes[i]!.bytes)) i++;
    if (i < notes.length || i < refNotes.length) {
      const at = notes[i]?.fileOffset ?? (m.dump.subHeader.offsetNote + m.dump.subHeader.sizeNote);
      throw mismatch(
        m,
        at,
        `its ELF notes differ from ${ref.name}'s (note ${i + 1}: another dump)`,
      );
    }
    if (m.dump.vmcoreinfo !== ref.dump.vmcoreinfo) {
      throw mismatch(
        m,
        m.dump.subHeader.offsetVmcoreinfo,
        `its VMCOREINFO differs from ${ref.name}'s (another dump)`,
      );
    }
  }
  // The pfn ranges tile [0, max_mapnr).
  const maxMapnr = ref.dump.maxMapnr;
  const sorted = [...members].sort((a, b) => a.dump.subHeader.startPfn - b.dump.subHeader.startPfn);
  let next = 0;
  for (const m of sorted) {
    const { startPfn, endPfn } = m.dump.subHeader;
    if (startPfn !== next) {
      throw mismatch(
        m,
        subOffset(m, "startPfn"),
        startPfn > next
          ? `no file of the set holds pfns 0x${next.toString(16)}-0x${
            startPfn.toString(16)
          } (name every file of the set)`
          : `its pfns 0x${startPfn.toString(16)}-0x${
            endPfn.toString(16)
          } overlap another file's (the same file twice, or files of two splits)`,
      );
    }
    next = endPfn;
  }
  if (next !== maxMapnr) {
    const last = sorted.at(-1)!;
    throw mismatch(
      last,
      subOffset(last, "startPfn"),
      `no file of the set holds pfns 0x${next.toString(16)}-0x${
        maxMapnr.toString(16)
      } (name every file of the set)`,
    );
  }
  // Bitmaps: the same pages exist everywhere; each member's own pages are
  // what every other member's 2nd bitmap says about its range.
  const present = ref.dump.present.copyBytes();
  const dumpable = members.map((m) => m.dump.dumpable.copyBytes());
  for (const m of members.slice(1)) {
    const at = firstDifference(m.dump.present.copyBytes(), present, 0, maxMapnr);
    if (at >= 0) {
      throw mismatch(
        m,
        bitmapOffsets(m).first + at,
        `its 1st bitmap differs from ${ref.name}'s near pfn 0x${
          (at * 8).toString(16)
        } (another dump, or another plug state: strip every file with the same plug map)`,
      );
    }
  }
  for (const [i, m] of members.entries()) {
    const { startPfn, endPfn } = m.dump.subHeader;
    for (const [j, other] of members.entries()) {
      if (j === i) continue;
      const at = firstDifference(dumpable[j]!, dumpable[i]!, startPfn, endPfn);
      if (at >= 0) {
        throw mismatch(
          other,
          bitmapOffsets(other).second + at,
          `its 2nd bitmap disagrees with ${m.name} about that file's pages near pfn 0x${
            (at * 8).toString(16)
          } (another dump, or another plug state)`,
        );
      }
    }
  }
}

/** The notes of a dump other than our provenance note, with their file offsets. */
function dumpNotes(dump: KdumpFile): Array<{ bytes: Uint8Array; fileOffset: number }> {
  const le = dump.header.littleEndian;
  return parseNotes(dump.notes, 0, le).filter((n) => !isProvenanceNote(n)).map((n) => ({
    bytes: dump.notes.subarray(n.fileOffset, n.fileOffset + n.byteLength),
    fileOffset: dump.subHeader.offsetNote + n.fileOffset,
  }));
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
