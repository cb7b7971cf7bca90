/**
 * kdump-compressed file → ELF core in the classic layout (program headers
 * right after the ELF header) that crash, gdb, makedumpfile, drgn and
 * readelf open. Every run of pages in the dump becomes a PT_LOAD; pages the
 * dump does not hold (excluded or not present) are gaps between PT_LOADs.
 * The notes area becomes the PT_NOTE (with a VMCOREINFO note added when the
 * dump has VMCOREINFO outside its notes).
 *
 * @module
 */

import {
  EI_NIDENT,
  ELFMAG,
  EM_386,
  EM_AARCH64,
  EM_X86_64,
  ET_CORE,
  NT_VMCOREINFO,
  PF_R,
  PF_W,
  PF_X,
} from "../elf/constants.ts";
import { UnsupportedFeatureError } from "../errors.ts";
import type { ElfHeader } from "../elf/ehdr.ts";
import { encodeNote, parseNotes } from "../elf/note.ts";
import { planElfCore, type PlannedLoad } from "../elf/writer.ts";
import type { AtomicOutputOptions } from "../io/file.ts";
import { type ChunkSink, copyRangesTo } from "../io/positional.ts";
import { kdumpPhysicalReader } from "../kdump/physical.ts";
import type { KdumpFile } from "../kdump/reader.ts";
import type { GpaRange } from "../vmem/ranges.ts";

/** Options for {@linkcode kdumpToElf}. */
export interface KdumpToElfOptions {
  /** Notes area to write instead of the dump's (to add provenance). */
  notes?: Uint8Array;
  /** Called with output bytes written so far. */
  onProgress?: (byteLength: number) => void;
  /** With a path as output: the output policy (inputs, `force`); the input is always protected. @default {{}} */
  outputPolicy?: AtomicOutputOptions;
}

/** What {@linkcode kdumpToElf} wrote. */
export interface KdumpToElfReport {
  /** Output size. */
  byteLength: number;
  /** PT_LOADs written. */
  loadCount: number;
  /** Memory they describe. */
  memoryByteLength: number;
  /** Notes area size. */
  notesByteLength: number;
}

/**
 * The ELF notes a kdump dump should carry in ELF form: its notes area, plus
 * a VMCOREINFO note when the dump's VMCOREINFO is not among them.
 *
 * @param dump The dump.
 * @returns The notes area bytes.
 */
export function kdumpElfNotes(dump: KdumpFile): Uint8Array {
  const le = dump.header.littleEndian;
  const notes = dump.notes;
  const has = parseNotes(notes, 0, le).some((n) => n.kind === "vmcoreinfo");
  if (has || dump.vmcoreinfo === undefined) return notes;
  const extra = encodeNote(
    { name: "VMCOREINFO", type: NT_VMCOREINFO, desc: new TextEncoder().encode(dump.vmcoreinfo) },
    le,
  );
  const out = new Uint8Array(notes.byteLength + extra.byteLength);
  out.set(notes);
  out.set(extra, notes.byteLength);
  return out;
}

/**
 * Runs of consecutive pfns in the dump, as gpa ranges.
 *
 * @param dump The dump.
 * @returns Ranges, ascending.
 */
export function kdumpDumpedRanges(dump: KdumpFile): GpaRange[] {
  const B = dump.blockSize;
  const out: GpaRange[] = [];
  dump.dumpable.forEachRun(0, dump.maxMapnr, (pfn, n) => {
    out.push({ gpa: pfn * B, byteLength: n * B });
  });
  return out;
}

/** `struct elf_prstatus` sizes by machine (the NT_PRSTATUS descriptor). */
const PRSTATUS_MACHINES: ReadonlyMap<number, number> = new Map([
  [336, EM_X86_64],
  [392, EM_AARCH64],
  [144, EM_386],
]);

/**
 * The ELF machine of a kdump dump: from `utsname.machine` (QEMU < 9 and
 * makedumpfile fill it in; QEMU 10 writes "Unknown"), else from the size of
 * its NT_PRSTATUS notes (one `struct elf_prstatus` per CPU, whose size
 * differs by architecture); 0 when neither tells.
 */
function machineOf(dump: KdumpFile, notes: Uint8Array): number {
  const name = dump.header.utsname.machine;
  if (name === "x86_64") return EM_X86_64;
  if (name === "aarch64" || name === "arm64") return EM_AARCH64;
  if (/^i[3-6]86$/.test(name)) return EM_386;
  const sizes = new Set(
    parseNotes(notes, 0, dump.header.littleEndian).filter((n) => n.kind === "prstatus")
      .map((n) => n.desc.byteLength),
  );
  if (sizes.size !== 1) return 0;
  const machine = PRSTATUS_MACHINES.get([...sizes][0]!) ?? 0;
  // A 64-bit prstatus in a 32-bit dump (or the reverse) tells nothing.
  return (machine === EM_386) === (dump.header.wordSize === 4) ? machine : 0;
}

/**
 * Write a kdump dump as a classic-layout ELF core.
 *
 * @param dump The opened dump (left open).
 * @param output Path (atomic, `-` for stdout) or sink.
 * @param options Notes override and progress.
 * @returns What was written.
 *
 * @example
 * ```ts ignore
 * import { readKdump } from "@vmem-dump/vmem-dump/kdump";
 * import { kdumpToElf } from "@vmem-dump/vmem-dump/dumps";
 * using dump = await readKdump("vmcore.kdump");
 * await kdumpToElf(dump, "vmcore.elf");
 * ```
 */
export async function kdumpToElf(
  dump: KdumpFile,
  output: string | ChunkSink,
  options: KdumpToElfOptions = {},
): Promise<KdumpToElfReport> {
  const le = dump.header.littleEndian;
  const elfClass = dump.header.wordSize === 8 ? 64 : 32;
  const notes = options.notes ?? kdumpElfNotes(dump);
  const machine = machineOf(dump, notes);
  if (machine === 0) {
    // crash and gdb refuse an ELF core of machine 0: say so instead of writing one.
    throw new UnsupportedFeatureError(
      `Cannot write an ELF core of ${
        JSON.stringify(dump.header.utsname.machine)
      }: neither utsname.machine nor the NT_PRSTATUS notes name a machine we know (x86_64, aarch64, i386)`,
      "kdump",
      0,
    );
  }
  const ident = new Uint8Array(EI_NIDENT);
  ident.set(ELFMAG);
  ident[4] = elfClass === 64 ? 2 : 1;
  ident[5] = le ? 1 : 2;
  ident[6] = 1;
  const template: ElfHeader = {
    elfClass,
    littleEndian: le,
    ident,
    type: ET_CORE,
    machine,
    version: 1,
    entry: 0n,
    phdrFileOffset: 0,
    shdrFileOffset: 0,
    flags: 0,
    ehdrByteLength: 0,
    phdrEntrySize: 0,
    phdrCount: 0,
    shdrEntrySize: 0,
    shdrCount: 0,
    shstrIndex: 0,
  };
  const ranges = kdumpDumpedRanges(dump);
  // The "input" of the copy plan is the physical address space itself.
  const loads: PlannedLoad[] = ranges.map((r) => ({
    paddr: BigInt(r.gpa),
    vaddr: BigInt(r.gpa),
    flags: PF_R | PF_W | PF_X,
    align: 0n,
    memByteLength: r.byteLength,
    fileByteLength: r.byteLength,
    inputFileOffset: r.gpa,
  }));
  const plan = planElfCore(template, notes, loads, { pageAlign: dump.blockSize });
  const written = await copyRangesTo(kdumpPhysicalReader(dump), output, plan.steps, {
    format: "kdump",
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.outputPolicy ? { outputPolicy: options.outputPolicy } : {}),
  });
  return {
    byteLength: written,
    loadCount: loads.length,
    memoryByteLength: ranges.reduce((n, r) => n + r.byteLength, 0),
    notesByteLength: notes.byteLength,
  };
}
