/**
 * ELF notes (Elf32_Nhdr / Elf64_Nhdr, both 12 bytes with 4-byte padding) as
 * they appear in the PT_NOTE segment of a guest memory dump: "CORE"
 * NT_PRSTATUS per CPU, QEMU's per-CPU "QEMU" state, the guest's VMCOREINFO.
 *
 * Notes are only parsed to describe them: rewriters copy the PT_NOTE bytes
 * verbatim, so every note survives byte for byte.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { viewOf } from "../io/endian.ts";
import { latin1Decode } from "../io/text.ts";
import { getWireUint, setWireUint, type WireLayout, wireLayout } from "../io/wire.ts";
import {
  EM_386,
  EM_X86_64,
  NHDR_SIZE,
  NT_PRSTATUS,
  NT_VMCOREDD,
  NT_VMCOREINFO,
} from "./constants.ts";
import { pad4 } from "./_fields.ts";

/** What a note is, from its name and type. */
export type ElfNoteKind =
  | "prstatus"
  | "prfpreg"
  | "prpsinfo"
  | "qemu-cpu-state"
  | "vmcoreinfo"
  | "vmcoredd"
  | "other";

/** One note of a PT_NOTE segment. */
export interface ElfNote {
  /** Classification from name and type. */
  kind: ElfNoteKind;
  /** Name without the terminating NUL (e.g. `"CORE"`, `"QEMU"`, `"VMCOREINFO"`). */
  name: string;
  /** `n_type`. */
  type: number;
  /** Descriptor bytes: a view into the segment bytes; copy to keep. */
  desc: Uint8Array;
  /** File offset of the note header. */
  fileOffset: number;
  /** Bytes the note takes in the segment, padding included. */
  byteLength: number;
}

const KINDS: ReadonlyMap<string, ElfNoteKind> = new Map([
  [`CORE/${NT_PRSTATUS}`, "prstatus"],
  ["CORE/2", "prfpreg"],
  ["CORE/3", "prpsinfo"],
  [`QEMU/${NT_VMCOREINFO}`, "qemu-cpu-state"],
  [`VMCOREINFO/${NT_VMCOREINFO}`, "vmcoreinfo"],
  [`LINUX/${NT_VMCOREDD}`, "vmcoredd"],
]);

/** `Elf32_Nhdr` / `Elf64_Nhdr` (the same 12 bytes in both classes). */
export const NHDR: WireLayout<"nameSize" | "descSize" | "type"> = wireLayout(
  "Elf_Nhdr",
  NHDR_SIZE,
  { nameSize: ["n_namesz", 0, 4], descSize: ["n_descsz", 4, 4], type: ["n_type", 8, 4] },
);

/**
 * Split the bytes of a PT_NOTE segment into notes. Trailing bytes shorter
 * than a note header are accepted only when they are all zero (some
 * producers pad the segment).
 *
 * @param bytes The segment bytes (`p_filesz` of them).
 * @param fileOffset File offset of `bytes[0]`, for offsets in errors and notes.
 * @param littleEndian Byte order of the file.
 * @returns The notes in file order; `desc` views point into `bytes`.
 * @throws {FormatError} (code `bad-note`) when a note runs past the segment.
 *
 * @example Parse one note
 * ```ts
 * import { encodeNote, parseNotes } from "@vmem-dump/vmem-dump/elf";
 * const bytes = encodeNote({ name: "VMCOREINFO", type: 0, desc: new TextEncoder().encode("PAGESIZE=4096\n") }, true);
 * const [note] = parseNotes(bytes, 0x1000, true);
 * console.log(note!.kind, note!.fileOffset); // "vmcoreinfo" 4096
 * ```
 */
export function parseNotes(
  bytes: Uint8Array,
  fileOffset: number,
  littleEndian: boolean,
): ElfNote[] {
  const view = viewOf(bytes);
  const notes: ElfNote[] = [];
  let pos = 0;
  while (pos < bytes.byteLength) {
    const left = bytes.byteLength - pos;
    if (left < NHDR_SIZE) {
      if (bytes.subarray(pos).every((b) => b === 0)) break;
      throw new FormatError(
        `Cannot parse ELF note: ${left} bytes left in the note segment, a note header needs 12`,
        { format: "elf", code: "bad-note", offset: fileOffset + pos },
      );
    }
    const nameSize = getWireUint(view, pos, NHDR.fields.nameSize, littleEndian);
    const descSize = getWireUint(view, pos, NHDR.fields.descSize, littleEndian);
    const type = getWireUint(view, pos, NHDR.fields.type, littleEndian);
    const nameAt = pos + NHDR_SIZE;
    const descAt = nameAt + pad4(nameSize);
    if (nameAt + nameSize > bytes.byteLength) {
      throw new FormatError(
        `Cannot parse ELF note: name of ${nameSize} bytes runs past the note segment`,
        { format: "elf", code: "bad-note", offset: fileOffset + pos },
      );
    }
    if (descAt + descSize > bytes.byteLength) {
      throw new FormatError(
        `Cannot parse ELF note: descriptor of ${descSize} bytes runs past the note segment`,
        { format: "elf", code: "bad-note", offset: fileOffset + pos + NHDR.fields.descSize.offset },
      );
    }
    const nameBytes = bytes.subarray(nameAt, nameAt + nameSize);
    const nul = nameBytes.indexOf(0);
    const name = latin1Decode(nul === -1 ? nameBytes : nameBytes.subarray(0, nul));
    const end = Math.min(descAt + pad4(descSize), bytes.byteLength);
    notes.push({
      kind: KINDS.get(`${name}/${type}`) ?? "other",
      name,
      type,
      desc: bytes.subarray(descAt, descAt + descSize),
      fileOffset: fileOffset + pos,
      byteLength: end - pos,
    });
    pos = end;
  }
  return notes;
}

/** A note to encode with {@linkcode encodeNote}. */
export interface ElfNoteInit {
  /** Name, without NUL (one is added). */
  name: string;
  /** `n_type`. */
  type: number;
  /** Descriptor bytes. */
  desc: Uint8Array;
}

/**
 * Encode one note: header, NUL-terminated name and descriptor, each padded
 * to 4 bytes.
 *
 * @param note Name, type and descriptor.
 * @param littleEndian Byte order of the file.
 * @returns The note bytes.
 *
 * @example
 * ```ts
 * import { encodeNote } from "@vmem-dump/vmem-dump/elf";
 * console.log(encodeNote({ name: "CORE", type: 1, desc: new Uint8Array(336) }, true).length); // 356
 * ```
 */
export function encodeNote(note: ElfNoteInit, littleEndian: boolean): Uint8Array<ArrayBuffer> {
  const name = new Uint8Array(note.name.length + 1);
  for (let i = 0; i < note.name.length; i++) name[i] = note.name.charCodeAt(i) & 0xff;
  const out = new Uint8Array(NHDR_SIZE + pad4(name.byteLength) + pad4(note.desc.byteLength));
  const view = viewOf(out);
  setWireUint(view, 0, NHDR.fields.nameSize, name.byteLength, littleEndian);
  setWireUint(view, 0, NHDR.fields.descSize, note.desc.byteLength, littleEndian);
  setWireUint(view, 0, NHDR.fields.type, note.type, littleEndian);
  out.set(name, NHDR_SIZE);
  out.set(note.desc, NHDR_SIZE + pad4(name.byteLength));
  return out;
}

/**
 * Decode a VMCOREINFO descriptor (`KEY=VALUE` lines) into a map.
 *
 * @param desc The descriptor of a "VMCOREINFO" note.
 * @returns Keys such as `OSRELEASE`, `PAGESIZE`, `NUMBER(phys_base)` with their text values.
 *
 * @example
 * ```ts
 * import { parseVmcoreinfo } from "@vmem-dump/vmem-dump/elf";
 * const info = parseVmcoreinfo(new TextEncoder().encode("OSRELEASE=6.1.0\nPAGESIZE=4096\n"));
 * console.log(info.get("PAGESIZE")); // "4096"
 * ```
 */
export function parseVmcoreinfo(desc: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of latin1Decode(desc).split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1).replace(/\0+$/, ""));
  }
  return out;
}

/** Register names of x86_64 `struct elf_prstatus` pr_reg, in order. */
const X86_64_PR_REG = [
  "r15",
  "r14",
  "r13",
  "r12",
  "rbp",
  "rbx",
  "r11",
  "r10",
  "r9",
  "r8",
  "rax",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "orig_rax",
  "rip",
  "cs",
  "eflags",
  "rsp",
  "ss",
  "fs_base",
  "gs_base",
  "ds",
  "es",
  "fs",
  "gs",
] as const;

/** Register names of i386 `struct elf_prstatus` pr_reg, in order. */
const I386_PR_REG = [
  "ebx",
  "ecx",
  "edx",
  "esi",
  "edi",
  "ebp",
  "eax",
  "ds",
  "es",
  "fs",
  "gs",
  "orig_eax",
  "eip",
  "cs",
  "eflags",
  "esp",
  "ss",
] as const;

/** The CPU state of an NT_PRSTATUS note. */
export interface Prstatus {
  /** `pr_pid` (QEMU: vCPU index + 1; /proc/vmcore: the task on that CPU). */
  pid: number;
  /** General registers by name (`rip`, `rsp`, `cs`, …). */
  registers: Record<string, bigint>;
}

/**
 * Decode the descriptor of an NT_PRSTATUS note of an x86_64 (336 bytes) or
 * i386 (144 bytes) guest.
 *
 * @param desc The note descriptor.
 * @param machine `e_machine` of the file (62 = EM_X86_64, 3 = EM_386).
 * @param littleEndian Byte order of the file.
 * @returns pid and registers, or `undefined` for another machine or a descriptor of the wrong size.
 *
 * @example
 * ```ts
 * import { decodePrstatus } from "@vmem-dump/vmem-dump/elf";
 * const desc = new Uint8Array(336);
 * new DataView(desc.buffer).setUint32(32, 1, true);
 * new DataView(desc.buffer).setBigUint64(112 + 16 * 8, 0xffffffff81a592ebn, true);
 * const s = decodePrstatus(desc, 62, true)!;
 * console.log(s.pid, s.registers.rip!.toString(16)); // 1 "ffffffff81a592eb"
 * ```
 */
export function decodePrstatus(
  desc: Uint8Array,
  machine: number,
  littleEndian: boolean,
): Prstatus | undefined {
  const v = viewOf(desc);
  const registers: Record<string, bigint> = {};
  if (machine === EM_X86_64 && desc.byteLength === 336) {
    X86_64_PR_REG.forEach((
      name,
      i,
    ) => (registers[name] = v.getBigUint64(112 + i * 8, littleEndian)));
    return { pid: v.getUint32(32, littleEndian), registers };
  }
  if (machine === EM_386 && desc.byteLength === 144) {
    I386_PR_REG.forEach((
      name,
      i,
    ) => (registers[name] = BigInt(v.getUint32(72 + i * 4, littleEndian))));
    return { pid: v.getUint32(24, littleEndian), registers };
  }
  return undefined;
}

/** One segment register of a QEMU CPU-state note. */
export interface QemuSegment {
  /** Selector. */
  selector: number;
  /** Limit. */
  limit: number;
  /** Flags (descriptor attributes). */
  flags: number;
  /** Base address. */
  base: bigint;
}

/** QEMU's x86 CPU state (`QEMUCPUState`, "QEMU" note). */
export interface QemuCpuState {
  /** Structure version (1). */
  version: number;
  /** Structure size as QEMU wrote it (432, or more in newer QEMU). */
  size: number;
  /** rax…r15, rip, rflags. */
  registers: Record<string, bigint>;
  /** cs, ds, es, fs, gs, ss, ldt, tr, gdt, idt. */
  segments: Record<string, QemuSegment>;
  /** cr0…cr4. */
  cr: bigint[];
}

const QEMU_REGS = [
  "rax",
  "rbx",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "rsp",
  "rbp",
  "r8",
  "r9",
  "r10",
  "r11",
  "r12",
  "r13",
  "r14",
  "r15",
  "rip",
  "rflags",
] as const;
const QEMU_SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt"] as const;

/**
 * Decode the descriptor of QEMU's x86 "QEMU" CPU-state note (version 1,
 * at least 432 bytes; QEMU 7.2 writes 440).
 *
 * @param desc The note descriptor.
 * @param littleEndian Byte order of the file.
 * @returns The state, or `undefined` when the version or size does not match.
 *
 * @example
 * ```ts
 * import { decodeQemuCpuState } from "@vmem-dump/vmem-dump/elf";
 * const desc = new Uint8Array(440);
 * const v = new DataView(desc.buffer);
 * v.setUint32(0, 1, true);
 * v.setUint32(4, 440, true);
 * v.setBigUint64(392 + 3 * 8, 0x1000n, true); // cr3
 * console.log(decodeQemuCpuState(desc, true)!.cr[3]); // 4096n
 * ```
 */
export function decodeQemuCpuState(
  desc: Uint8Array,
  littleEndian: boolean,
): QemuCpuState | undefined {
  if (desc.byteLength < 432) return undefined;
  const v = viewOf(desc);
  const version = v.getUint32(0, littleEndian);
  const size = v.getUint32(4, littleEndian);
  if (version !== 1 || size < 432 || size > desc.byteLength) return undefined;
  const registers: Record<string, bigint> = {};
  QEMU_REGS.forEach((name, i) => (registers[name] = v.getBigUint64(8 + i * 8, littleEndian)));
  const segments: Record<string, QemuSegment> = {};
  QEMU_SEGMENTS.forEach((name, i) => {
    const at = 152 + i * 24;
    segments[name] = {
      selector: v.getUint32(at, littleEndian),
      limit: v.getUint32(at + 4, littleEndian),
      flags: v.getUint32(at + 8, littleEndian),
      base: v.getBigUint64(at + 16, littleEndian),
    };
  });
  const cr = Array.from({ length: 5 }, (_, i) => v.getBigUint64(392 + i * 8, littleEndian));
  return { version, size, registers, segments, cr };
}
