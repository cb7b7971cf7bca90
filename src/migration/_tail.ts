/**
 * The device-state tail of a precopy stream: everything from the first FULL
 * section that is not an early section to the end (device sections, EOF,
 * the vmdesc). Device sections carry no lengths, so the tail is buffered to
 * the end (up to a cap), where the vmdesc gives each body's size; the parser
 * then walks the buffered tail section by section (`_parser.ts`), and this
 * module holds what that walk needs and checks. Private to the decoder.
 *
 * What is proven, and how (docs/security.md):
 * - every byte is accounted for: each section is a FULL header, a body of
 *   the size the vmdesc gives (the `P/virtio-mem` body parsed structurally,
 *   its length compared with the vmdesc's), and the footer `0x7E` + its id
 *   that must follow; then the next section, and QEMU_VM_EOF exactly where
 *   the vmdesc begins;
 * - the vmdesc is a hint QEMU never reads: where it claims a body longer
 *   than the device's real one, QEMU would end the device early, check the
 *   footer there and go on with what follows. So inside every body, a footer
 *   (of any section id) followed, after any commands, by something that
 *   loads RAM or plug state makes the tail ambiguous ({@linkcode findAmbiguity}).
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { latin1Decode } from "../io/text.ts";
import {
  MIG_CMD_PACKAGED,
  QEMU_VM_COMMAND,
  QEMU_VM_EOF,
  QEMU_VM_SECTION_END,
  QEMU_VM_SECTION_FOOTER,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_SECTION_PART,
  QEMU_VM_SECTION_START,
  QEMU_VM_VMDESCRIPTION,
} from "./constants.ts";
import { sectionRole } from "./_section_identity.ts";
import type { TailProblemCode } from "./types.ts";
import { type VmdescSection, vmdescSections } from "./vmdesc.ts";

/** Largest vmdesc JSON accepted. */
export const MAX_VMDESC = 64 << 20;

/** A problem that keeps the tail from being proven. */
export interface TailProblem {
  /** What kind. */
  code: TailProblemCode;
  /** A sentence for people (without the offset). */
  message: string;
  /** Stream offset it is about. */
  streamOffset: number;
}

/**
 * The tail's bytes, copied as they arrive, up to a cap: the device state of
 * a real VM is a few hundred KiB (a q35 guest's is 78 KB), so the cap only
 * bounds what a hostile stream can make us hold.
 */
export class TailBuffer {
  #buf = new Uint8Array(1 << 16);
  #length = 0;
  #cap: number;
  /** Stream offset of the first tail byte. */
  readonly base: number;

  /**
   * @param base Stream offset of the first tail byte.
   * @param cap Most bytes held.
   */
  constructor(base: number, cap: number) {
    this.base = base;
    this.#cap = cap;
  }

  /** The bytes so far (a view; valid until the next append). */
  get bytes(): Uint8Array {
    return this.#buf.subarray(0, this.#length);
  }

  /**
   * Copy `bytes` in.
   * @throws {FormatError} (code `too-large`) when the tail would exceed the cap.
   */
  append(bytes: Uint8Array): void {
    const need = this.#length + bytes.byteLength;
    if (need > this.#cap) {
      throw new FormatError(
        `Cannot decode migration stream: the device state after the RAM runs past ${this.#cap} ` +
          "bytes (the cap for device state held until the vmdesc at the end gives its section " +
          "sizes; a real VM's is a few hundred KiB)",
        { format: "migration", code: "too-large", offset: this.base + this.#cap },
      );
    }
    if (need > this.#buf.byteLength) {
      const bigger = new Uint8Array(Math.min(this.#cap, Math.max(need, this.#buf.byteLength * 2)));
      bigger.set(this.#buf.subarray(0, this.#length));
      this.#buf = bigger;
    }
    this.#buf.set(bytes, this.#length);
    this.#length = need;
  }
}

/** EOF and the vmdesc at the end of the tail. */
export interface VmdescAtEnd {
  /** Index of the EOF byte in the tail. */
  eofAt: number;
  /** The JSON bytes (a copy). */
  json: Uint8Array;
  /** The parsed JSON, or `undefined` when it does not parse. */
  parsed: unknown;
  /** The sections it describes, or `undefined` when it is not shaped as QEMU writes it. */
  sections: VmdescSection[] | undefined;
}

function parseJson(json: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
  } catch {
    return undefined;
  }
}

/**
 * Find QEMU_VM_EOF and the vmdesc that end `bytes`: the EOF byte, 0x06, a
 * be32 length that ends exactly at the end, and the JSON's `{`. Candidates
 * are 0x06 bytes (native search), the last one first.
 *
 * @param bytes The tail so far.
 * @param mustParse Only accept a candidate whose JSON parses (for a live
 *   input that has not ended: the end must be unmistakable).
 */
export function findVmdescAtEnd(bytes: Uint8Array, mustParse: boolean): VmdescAtEnd | undefined {
  const end = bytes.byteLength;
  const view = new DataView(bytes.buffer, bytes.byteOffset, end);
  for (let at = end - 6; at > 0;) {
    const six = bytes.lastIndexOf(QEMU_VM_VMDESCRIPTION, at);
    if (six < 1) break;
    const p = six - 1;
    const length = end - p - 6;
    if (
      bytes[p] === QEMU_VM_EOF && bytes[p + 6] === 0x7b && length <= MAX_VMDESC &&
      view.getUint32(p + 2) === length
    ) {
      const json = bytes.slice(p + 6, end);
      const parsed = parseJson(json);
      if (parsed !== undefined || !mustParse) {
        return { eofAt: p, json, parsed, sections: vmdescSections(parsed) };
      }
    }
    at = six - 1;
  }
  return undefined;
}

/** An early section seen before the tail, for matching the vmdesc's first entries. */
export interface EarlySectionInfo {
  /** Section id. */
  sectionId: number;
  /** idstr. */
  idstr: string;
  /** Instance id. */
  instanceId: number;
  /** Version id. */
  versionId: number;
  /** Body bytes. */
  bodyLength: number;
  /** Stream offset of the header. */
  streamOffset: number;
}

/**
 * What the walk over the tail needs and finds: the vmdesc entries it
 * consumes (the early sections before the tail take the first ones), the
 * footers it passed (the legitimate boundaries), the section ids and where
 * the plug state is, and the disagreements with the vmdesc.
 */
export class TailPlan {
  /** Index of QEMU_VM_EOF in the tail. */
  readonly eofAt: number;
  /** The vmdesc. */
  readonly vmdesc: VmdescAtEnd;
  /** Stream offset of the tail's first byte. */
  readonly base: number;
  /** Disagreements with the vmdesc found so far. */
  readonly mismatches: TailProblem[] = [];
  /** Stream offsets of the footers the walk read. */
  readonly footers = new Set<number>();
  /** Ids of `ram` sections. */
  readonly ramIds = new Set<number>();
  /** Ids of plug-state sections (early and device sections of virtio-mem). */
  readonly plugStateIds = new Set<number>();
  #entries: VmdescSection[];
  #next = 0;

  /**
   * @param vmdesc EOF and vmdesc at the end of the tail (with its sections).
   * @param base Stream offset of the tail.
   * @param early Early sections before the tail (they take the first vmdesc entries).
   */
  constructor(vmdesc: VmdescAtEnd & { sections: VmdescSection[] }, base: number) {
    this.vmdesc = vmdesc;
    this.eofAt = vmdesc.eofAt;
    this.base = base;
    this.#entries = vmdesc.sections;
  }

  /** Note a section the stream has. */
  noteSection(sectionId: number, idstr: string): void {
    const role = sectionRole(idstr);
    if (role === "ram") this.ramIds.add(sectionId);
    else if (role !== "other") this.plugStateIds.add(sectionId);
  }

  /**
   * The vmdesc entry of the next FULL section (index order), compared with
   * its header; a disagreement is noted, the entry's size is still the hint.
   * @throws {FormatError} when the vmdesc has no entry left (the section cannot be delimited).
   */
  take(
    header: { sectionId: number; idstr: string; instanceId: number; versionId: number },
    streamOffset: number,
  ): VmdescSection {
    this.noteSection(header.sectionId, header.idstr);
    const entry = this.#entries[this.#next];
    if (entry === undefined) {
      throw new FormatError(
        `Cannot decode migration stream: section ${
          JSON.stringify(header.idstr)
        } is not described by the vmdesc (it lists ${this.#entries.length} sections), so its ` +
          "size is unknown",
        { format: "migration", code: "unproven", offset: streamOffset },
      );
    }
    const index = this.#next++;
    if (
      entry.idstr !== header.idstr || entry.instanceId !== header.instanceId ||
      (entry.versionId !== undefined && entry.versionId !== header.versionId)
    ) {
      this.mismatch(
        `vmdesc entry ${index} describes ${describe(entry)}, but the section there is ${
          describe(header)
        }`,
        streamOffset,
      );
    }
    return entry;
  }

  /** Note that a parsed length differs from the vmdesc's. */
  sizeMismatch(idstr: string, parsed: number, claimed: number, streamOffset: number): void {
    this.mismatch(
      `the vmdesc gives ${
        JSON.stringify(idstr)
      } a body of ${claimed} bytes, its structure has ${parsed}`,
      streamOffset,
    );
  }

  /** Note a disagreement with the vmdesc. */
  mismatch(message: string, streamOffset: number): void {
    this.mismatches.push({ code: "vmdesc-mismatch", message, streamOffset });
  }

  /** The walk reached EOF: note vmdesc entries no section took. */
  finish(): void {
    if (this.#next < this.#entries.length) {
      this.mismatch(
        `the vmdesc describes ${this.#entries.length} sections, the stream has ${this.#next}`,
        this.base + this.eofAt + 1,
      );
    }
  }
}

function describe(s: { idstr: string; instanceId: number; versionId: number | undefined }): string {
  return `${JSON.stringify(s.idstr)} instance ${s.instanceId}` +
    (s.versionId === undefined ? "" : ` version ${s.versionId}`);
}

/**
 * What QEMU would do with the bytes at `j` if a section had ended just
 * before them, when that could load RAM or plug state: a `ram` or virtio-mem
 * START/FULL header, a PART/END of a `ram` or plug-state section, or a
 * PACKAGED command, also after any other commands (they have no footer and
 * QEMU reads on after them: a POSTCOPY_ADVISE without payload is harmless
 * to a destination without postcopy). `undefined` otherwise.
 *
 * QEMU_VM_EOF (one zero byte) is not on the list: `0x7E` + a small id + a
 * zero byte is common in device state, and stopping early loads nothing more
 * (what it can leave out, the device section with the plug state, a stream
 * can also simply omit; see docs/security.md).
 */
function dangerousItem(bytes: Uint8Array, j: number, plan: TailPlan): string | undefined {
  const n = bytes.byteLength;
  const view = new DataView(bytes.buffer, bytes.byteOffset, n);
  // Commands other than PACKAGED: skip them by their length (each at least 5 bytes, so this ends).
  let commands = 0;
  while (
    bytes[j] === QEMU_VM_COMMAND && j + 5 <= n && view.getUint16(j + 1) !== MIG_CMD_PACKAGED
  ) {
    j += 5 + view.getUint16(j + 3);
    commands++;
  }
  const what = itemAt(bytes, view, j, plan);
  return what === undefined || commands === 0
    ? what
    : `${commands} command${commands === 1 ? "" : "s"}, then ${what}`;
}

/** {@linkcode dangerousItem} at `j`, after the commands. */
function itemAt(
  bytes: Uint8Array,
  view: DataView,
  j: number,
  plan: TailPlan,
): string | undefined {
  const n = bytes.byteLength;
  switch (bytes[j]) {
    case QEMU_VM_SECTION_START:
    case QEMU_VM_SECTION_FULL: {
      if (j + 6 > n) return undefined;
      const len = bytes[j + 5]!;
      if (j + 6 + len + 8 > n) return undefined;
      // Named as QEMU's loader resolves it: up to a NUL byte, compat names included.
      const idstr = latin1Decode(bytes.subarray(j + 6, j + 6 + len));
      if (sectionRole(idstr) !== "other") {
        return `a ${bytes[j] === QEMU_VM_SECTION_FULL ? "FULL" : "START"} section ${
          JSON.stringify(idstr)
        }`;
      }
      return undefined;
    }
    case QEMU_VM_SECTION_PART:
    case QEMU_VM_SECTION_END: {
      if (j + 5 > n) return undefined;
      const id = view.getUint32(j + 1);
      return plan.ramIds.has(id) || plan.plugStateIds.has(id)
        ? `a ${bytes[j] === QEMU_VM_SECTION_PART ? "PART" : "END"} of section ${id}`
        : undefined;
    }
    case QEMU_VM_COMMAND:
      if (j + 5 > n) return undefined;
      return view.getUint16(j + 1) === MIG_CMD_PACKAGED && view.getUint16(j + 3) === 4
        ? "a PACKAGED command"
        : undefined;
    default:
      return undefined;
  }
}

/**
 * Look for a second reading of the tail that loads more than the walk saw:
 * a footer (`0x7E` + a section id) anywhere before EOF that is not one of
 * the walk's own boundaries, followed (after any commands) by something
 * that loads RAM or plug state. Honest streams have none (tested on every
 * real stream we have); a vmdesc that enlarges a body to hide a section
 * inside it has one. The footer's id may be one the stream never used
 * elsewhere: QEMU gives a FULL section any id (it checks only that the
 * section's footer repeats it), so a hidden harmless section under a fresh
 * id can come between the device that ends early and the hidden RAM.
 *
 * @param bytes The tail.
 * @param plan The finished walk.
 * @returns The problem, or `undefined`.
 */
export function findAmbiguity(bytes: Uint8Array, plan: TailPlan): TailProblem | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stop = plan.eofAt;
  for (
    let k = bytes.indexOf(QEMU_VM_SECTION_FOOTER);
    k >= 0 && k + 5 < stop;
    k = bytes.indexOf(QEMU_VM_SECTION_FOOTER, k + 1)
  ) {
    const id = view.getUint32(k + 1);
    const at = plan.base + k;
    if (plan.footers.has(at)) continue;
    const what = dangerousItem(bytes, k + 5, plan);
    if (what !== undefined) {
      return {
        code: "ambiguous",
        message: `the bytes at offset 0x${at.toString(16)} read as the footer of section ${id} ` +
          `followed by ${what}: if the device there ends at that footer (its size comes only ` +
          "from the vmdesc), QEMU loads that too",
        streamOffset: at,
      };
    }
  }
  return undefined;
}
