/**
 * The provenance note: every dump vmem-dump rewrites says what was removed
 * and why, in an ELF note that readers which do not know it skip (name
 * `VMEMDUMP`, type 1). ELF outputs carry it in their PT_NOTE, kdump outputs
 * in their notes area. The descriptor is UTF-8 JSON (docs/dumps.md):
 *
 * ```json
 * {"kind":"vmem-dump-provenance","version":1,"steps":[{
 *   "tool":{"name":"vmem-dump","version":"0.1.0"},"command":"strip","reason":"unplugged virtio-mem blocks",
 *   "input":{"name":"guest.elf","byteLength":344199603,"sha256":"…"},
 *   "output":{"format":"elf"},
 *   "plugMap":{"version":1,"devices":[…]},
 *   "removed":[{"gpa":4328521728,"byteLength":104857600}],
 *   "zeroPagesExcluded":false}]}
 * ```
 *
 * A rewrite of a dump that already has the note appends a step only when it
 * removed something, so stripping twice keeps one note with one step.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { type ElfNote, encodeNote, parseNotes } from "../elf/note.ts";
import type { PlugMapJson } from "../vmem/plug_map_json.ts";
import { type GpaRange, mergeGpaRanges } from "../vmem/ranges.ts";
import { TOOL } from "../version.ts";

/** Name of the provenance note. */
export const PROVENANCE_NOTE_NAME = "VMEMDUMP";
/** `n_type` of the provenance note. */
export const PROVENANCE_NOTE_TYPE = 1;
/** `kind` of the descriptor JSON. */
export const PROVENANCE_KIND = "vmem-dump-provenance";
/** Version of the descriptor JSON. */
export const PROVENANCE_VERSION = 1;
/** Largest descriptor accepted when reading (a plug map of 128 devices fits easily). */
const MAX_PROVENANCE_BYTES = 16 << 20;

/** Why memory was removed. */
export type RemovalReason = "unplugged virtio-mem blocks";

/** One rewrite recorded in the note. */
export interface ProvenanceStep {
  /** The tool that made the step: `{ "name": "vmem-dump", "version": "0.1.0" }`. */
  tool: { name: string; version: string };
  /** The command that rewrote the dump (`strip`, `convert`). */
  command: string;
  /** Why the `removed` ranges were removed. */
  reason: RemovalReason;
  /** The input of this step. */
  input: { name: string; byteLength: number; sha256: string };
  /** The output format of this step (`elf`, `kdump`). */
  output: { format: string };
  /** The plug map used, in the JSON v1 exchange format (absent when none was given). */
  plugMap?: PlugMapJson;
  /** Guest-physical ranges of memory this step removed (sorted, merged). */
  removed: GpaRange[];
  /** Whether all-zero pages were left out of the page data (kdump: 2nd bitmap cleared). */
  zeroPagesExcluded: boolean;
}

/** The descriptor of a provenance note. */
export interface Provenance {
  /** Always {@linkcode PROVENANCE_KIND}. */
  kind: typeof PROVENANCE_KIND;
  /** Always {@linkcode PROVENANCE_VERSION}. */
  version: typeof PROVENANCE_VERSION;
  /** Rewrites, oldest first. */
  steps: ProvenanceStep[];
}

/**
 * Every gpa range removed by any step, sorted and merged.
 *
 * @param p The provenance.
 * @returns The ranges.
 *
 * @example
 * ```ts
 * import { provenanceRemoved } from "@vmem-dump/vmem-dump/dumps";
 * console.log(provenanceRemoved({ kind: "vmem-dump-provenance", version: 1, steps: [] })); // []
 * ```
 */
export function provenanceRemoved(p: Provenance): GpaRange[] {
  return mergeGpaRanges(p.steps.flatMap((s) => s.removed));
}

/** What {@linkcode provenanceStep} needs. */
export interface ProvenanceStepInit {
  /** The command. */
  command: string;
  /** Input name (as given), size and SHA-256. */
  input: { name: string; byteLength: number; sha256: string };
  /** Output format. */
  outputFormat: string;
  /** The plug map, JSON v1. */
  plugMap?: PlugMapJson | undefined;
  /** Ranges removed (any order). */
  removed: readonly GpaRange[];
  /** Zero pages left out. @default {false} */
  zeroPagesExcluded?: boolean;
}

/**
 * Build one step.
 *
 * @param init What happened.
 * @returns The step.
 *
 * @example
 * ```ts
 * import { provenanceStep } from "@vmem-dump/vmem-dump/dumps";
 * const s = provenanceStep({
 *   command: "strip", input: { name: "a.elf", byteLength: 1, sha256: "00" },
 *   outputFormat: "elf", removed: [{ gpa: 0, byteLength: 4096 }],
 * });
 * console.log(s.reason); // unplugged virtio-mem blocks
 * ```
 */
export function provenanceStep(init: ProvenanceStepInit): ProvenanceStep {
  return {
    tool: { ...TOOL },
    command: init.command,
    reason: "unplugged virtio-mem blocks",
    input: { ...init.input },
    output: { format: init.outputFormat },
    ...(init.plugMap === undefined ? {} : { plugMap: init.plugMap }),
    removed: mergeGpaRanges(init.removed),
    zeroPagesExcluded: init.zeroPagesExcluded ?? false,
  };
}

/**
 * The provenance to write: the input's, with `step` appended when it
 * removed something (or when the input has none). A step that removed
 * nothing from a dump that already has a note changes nothing, so a second
 * strip keeps the note as it was.
 *
 * @param existing The input's provenance, if any.
 * @param step This rewrite.
 * @returns The provenance for the output.
 *
 * @example
 * ```ts
 * import { nextProvenance, provenanceStep } from "@vmem-dump/vmem-dump/dumps";
 * const step = provenanceStep({
 *   command: "strip", input: { name: "a", byteLength: 1, sha256: "00" }, outputFormat: "elf", removed: [],
 * });
 * const first = nextProvenance(undefined, step);
 * console.log(nextProvenance(first, step).steps.length); // 1
 * ```
 */
export function nextProvenance(existing: Provenance | undefined, step: ProvenanceStep): Provenance {
  if (existing === undefined) {
    return { kind: PROVENANCE_KIND, version: PROVENANCE_VERSION, steps: [step] };
  }
  const changed = step.removed.length > 0 || (step.zeroPagesExcluded &&
    !existing.steps.some((s) => s.zeroPagesExcluded));
  return changed ? { ...existing, steps: [...existing.steps, step] } : existing;
}

/**
 * Encode the note (header, name, JSON descriptor).
 *
 * @param p The provenance.
 * @param littleEndian Byte order of the dump.
 * @returns The note bytes.
 *
 * @example
 * ```ts
 * import { encodeProvenanceNote, findProvenance } from "@vmem-dump/vmem-dump/dumps";
 * import { parseNotes } from "@vmem-dump/vmem-dump/elf";
 * const bytes = encodeProvenanceNote({ kind: "vmem-dump-provenance", version: 1, steps: [] }, true);
 * console.log(findProvenance(parseNotes(bytes, 0, true))?.steps.length); // 0
 * ```
 */
export function encodeProvenanceNote(
  p: Provenance,
  littleEndian: boolean,
): Uint8Array<ArrayBuffer> {
  const desc = new TextEncoder().encode(JSON.stringify(p));
  return encodeNote({ name: PROVENANCE_NOTE_NAME, type: PROVENANCE_NOTE_TYPE, desc }, littleEndian);
}

/**
 * Whether a note is a provenance note.
 *
 * @param n The note.
 * @returns Whether its name and type are ours.
 */
export function isProvenanceNote(n: Pick<ElfNote, "name" | "type">): boolean {
  return n.name === PROVENANCE_NOTE_NAME && n.type === PROVENANCE_NOTE_TYPE;
}

/**
 * Find and decode the provenance note among a dump's notes.
 *
 * @param notes The notes.
 * @returns The provenance, or `undefined` when there is no such note.
 * @throws {FormatError} (`bad-note`) when the note is there but not valid.
 */
export function findProvenance(notes: readonly ElfNote[]): Provenance | undefined {
  const found = notes.filter(isProvenanceNote);
  if (found.length === 0) return undefined;
  const note = found[0]!;
  const bad = (why: string) =>
    new FormatError(`Cannot read the vmem-dump provenance note: ${why}`, {
      format: "elf",
      code: "bad-note",
      offset: note.fileOffset,
    });
  if (found.length > 1) throw bad(`${found.length} notes, expected one`);
  if (note.desc.byteLength > MAX_PROVENANCE_BYTES) throw bad("descriptor too large");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(note.desc));
  } catch (e) {
    throw bad(`not UTF-8 JSON (${(e as Error).message})`);
  }
  const p = json as Partial<Provenance>;
  if (
    typeof p !== "object" || p === null || p.kind !== PROVENANCE_KIND ||
    p.version !== PROVENANCE_VERSION || !Array.isArray(p.steps)
  ) throw bad(`not a version ${PROVENANCE_VERSION} ${PROVENANCE_KIND}`);
  for (const s of p.steps) {
    if (
      typeof s !== "object" || s === null || !Array.isArray(s.removed) ||
      !s.removed.every((r) =>
        Number.isSafeInteger(r?.gpa) && Number.isSafeInteger(r?.byteLength) && r.gpa >= 0 &&
        r.byteLength >= 0
      )
    ) throw bad("a step without valid removed ranges");
  }
  return p as Provenance;
}

/**
 * Replace (or add) the provenance note in a notes area: every other note is
 * kept byte for byte and in order; ours goes last.
 *
 * @param notes The notes area bytes.
 * @param littleEndian Byte order.
 * @param p The provenance to store.
 * @returns The new notes area.
 * @throws {FormatError} when `notes` is not a valid notes area.
 */
export function withProvenanceNote(
  notes: Uint8Array,
  littleEndian: boolean,
  p: Provenance,
): Uint8Array<ArrayBuffer> {
  const parsed = parseNotes(notes, 0, littleEndian);
  const kept: Uint8Array[] = parsed.filter((n) => !isProvenanceNote(n)).map((n) =>
    notes.subarray(n.fileOffset, n.fileOffset + n.byteLength)
  );
  kept.push(encodeProvenanceNote(p, littleEndian));
  const out = new Uint8Array(kept.reduce((n, b) => n + b.byteLength, 0));
  let at = 0;
  for (const b of kept) {
    out.set(b, at);
    at += b.byteLength;
  }
  return out;
}
