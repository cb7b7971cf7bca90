/**
 * `inspect` of an ELF dump: class, byte order, machine, layout, every
 * PT_LOAD with its gpa and file ranges, the notes by name, the VMCOREINFO
 * summary and our provenance note, as one JSON-ready object.
 *
 * @module
 */

import type { ElfNote } from "../elf/note.ts";
import type { ElfCore } from "../elf/reader.ts";
import type { GpaRange } from "../vmem/ranges.ts";
import { mergeGpaRanges } from "../vmem/ranges.ts";
import { elfMachineName } from "./kernel_utsname.ts";
import { findProvenance, type Provenance } from "./provenance.ts";
import { summarizeVmcoreinfo, type VmcoreinfoSummary } from "./vmcoreinfo_summary.ts";

/** One PT_LOAD. */
export interface ElfLoadDescription {
  /** Program header index. */
  index: number;
  /** Guest-physical start (`p_paddr`), or `null` when it is not an address we can use. */
  gpa: number | null;
  /** `p_vaddr` in hex (kernel virtual addresses do not fit a JSON number). */
  vaddr: string;
  /** Memory size (`p_memsz`). */
  byteLength: number;
  /** File offset of the data, or `null` when the segment has none in the file. */
  fileOffset: number | null;
  /** Bytes in the file (`p_filesz`); the rest of `byteLength` reads as zeros. */
  fileByteLength: number;
}

/** One ELF note. */
export interface ElfNoteDescription {
  /** Note name (`CORE`, `QEMU`, `VMCOREINFO`, `VMEMDUMP`, …). */
  name: string;
  /** `n_type`. */
  type: number;
  /** What we know it as (`prstatus`, `vmcoreinfo`, `qemu-cpu-state`, …, `other`). */
  kind: string;
  /** File offset of the note header. */
  fileOffset: number;
  /** Bytes of the descriptor. */
  descByteLength: number;
}

/**
 * The notes as `inspect` lists them.
 *
 * @param notes Parsed notes.
 * @returns Name, type, kind, offset and descriptor size of each.
 */
export function describeNotes(notes: readonly ElfNote[]): ElfNoteDescription[] {
  return notes.map((n) => ({
    name: n.name,
    type: n.type,
    kind: n.kind,
    fileOffset: n.fileOffset,
    descByteLength: n.desc.byteLength,
  }));
}

/** What `inspect` says about an ELF dump. */
export interface ElfDumpDescription {
  /** Always `elf`. */
  format: "elf";
  /** File size. */
  byteLength: number;
  /** 32 or 64. */
  elfClass: number;
  /** Byte order. */
  littleEndian: boolean;
  /** `e_machine`. */
  machine: number;
  /** `uname -m` name of `machine`. */
  machineName: string;
  /**
   * `classic`: program headers right after the ELF header (what makedumpfile,
   * crash and gdb expect); `qemu`: section headers first and `e_ehsize` 8,
   * as QEMU >= 7.2 writes (makedumpfile 1.7.2 cannot read it).
   */
  layout: "classic" | "qemu";
  /** File offset of the program headers. */
  phdrFileOffset: number;
  /** Program headers (real count, also with extended numbering). */
  phdrCount: number;
  /** `e_phnum` was PN_XNUM and the count came from section header 0. */
  extendedNumbering: boolean;
  /** End of the headers that precede the data. */
  headersEnd: number;
  /** The PT_LOADs, in file order. */
  loads: ElfLoadDescription[];
  /** Guest-physical memory the PT_LOADs describe (merged). */
  memory: GpaRange[];
  /** Bytes of `memory`. */
  memoryByteLength: number;
  /** The notes, in order. */
  notes: ElfNoteDescription[];
  /** NT_PRSTATUS notes (one per CPU). */
  cpuCount: number;
  /** The VMCOREINFO summary, or `null` without a VMCOREINFO note. */
  vmcoreinfo: VmcoreinfoSummary | null;
  /** Our provenance note, or `null`. */
  provenance: Provenance | null;
}

/**
 * Describe a parsed ELF dump (reads nothing beyond what `readElfCore` read).
 *
 * @param core The dump.
 * @returns The description.
 * @throws {FormatError} when our provenance note is there but not valid.
 *
 * @example
 * ```ts ignore
 * import { readElfCore } from "@vmem-dump/vmem-dump/elf";
 * import { describeElfDump } from "@vmem-dump/vmem-dump/dumps";
 * using core = await readElfCore("guest.elf");
 * console.log(describeElfDump(core).layout);
 * ```
 */
export function describeElfDump(core: ElfCore): ElfDumpDescription {
  const loads = core.loads.map((l) => ({
    index: l.index,
    gpa: l.gpa ?? null,
    vaddr: `0x${l.phdr.vaddr.toString(16)}`,
    byteLength: l.byteLength,
    fileOffset: l.fileOffset ?? null,
    fileByteLength: l.fileByteLength,
  }));
  const memory = mergeGpaRanges(
    core.loads.filter((l) => l.gpa !== undefined && l.byteLength > 0)
      .map((l) => ({ gpa: l.gpa!, byteLength: l.byteLength })),
  );
  const info = core.notes.find((n) => n.kind === "vmcoreinfo");
  return {
    format: "elf",
    byteLength: core.byteLength,
    elfClass: core.ehdr.elfClass,
    littleEndian: core.ehdr.littleEndian,
    machine: core.ehdr.machine,
    machineName: elfMachineName(core.ehdr.machine),
    layout: core.layout.sectionHeadersFirst || core.layout.ehdrByteLengthQuirk ? "qemu" : "classic",
    phdrFileOffset: core.ehdr.phdrFileOffset,
    phdrCount: core.phdrCount,
    extendedNumbering: core.layout.extendedNumbering,
    headersEnd: core.layout.headersEnd,
    loads,
    memory,
    memoryByteLength: memory.reduce((n, r) => n + r.byteLength, 0),
    notes: describeNotes(core.notes),
    cpuCount: core.notes.filter((n) => n.kind === "prstatus").length,
    vmcoreinfo: info === undefined ? null : summarizeVmcoreinfo(info.desc),
    provenance: findProvenance(core.notes) ?? null,
  };
}
