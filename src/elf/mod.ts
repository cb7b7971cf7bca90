/**
 * ELF core dumps: a checked reader for QEMU `dump-guest-memory` output,
 * /proc/vmcore copies and makedumpfile `-E` files (ELF32/ELF64, both byte
 * orders, QEMU's pre- and post-7.2 layouts, PN_XNUM), record codecs, a
 * classic-layout writer, and the rewrite that strips unplugged virtio-mem
 * memory out of a dump.
 *
 * @example Strip the unplugged blocks of a plug map out of a dump
 * ```ts ignore
 * import { readElfCore, stripElf } from "@vmem-dump/vmem-dump/elf";
 * using core = await readElfCore("guest.elf");
 * console.log(core.loads.length, core.notes.map((n) => n.kind));
 * const report = await stripElf(core, "guest.stripped.elf", {
 *   exclude: [{ gpa: 0x101c00000, byteLength: 0x6400000 }],
 * });
 * console.log(report.removed);
 * ```
 *
 * Not exported (per symbol, see the root module for the rule): the field
 * layout tables (`EHDR32`, `PHDR64`, `SHDR32`, `NHDR`, …, `ehdrLayout`,
 * `phdrLayout`, `shdrLayout` and their field types), the width-specific
 * codecs `readPhdr32`/`writePhdr32`/`readPhdr64`/`writePhdr64` (`readPhdr`
 * and `writePhdr` take the class), and `emptyShdr`.
 *
 * @module
 */

export * from "./constants.ts";
export { ehdrSize, type ElfHeader, readEhdr, readIdent, writeEhdr } from "./ehdr.ts";
export { type ElfPhdr, phdrSize, readPhdr, writePhdr } from "./phdr.ts";
export { type ElfShdr, readShdr, shdrSize, writeShdr } from "./shdr.ts";
export {
  decodePrstatus,
  decodeQemuCpuState,
  type ElfNote,
  type ElfNoteInit,
  type ElfNoteKind,
  encodeNote,
  parseNotes,
  parseVmcoreinfo,
  type Prstatus,
  type QemuCpuState,
  type QemuSegment,
} from "./note.ts";
export {
  concatNoteSegments,
  type ElfCore,
  type ElfCoreLayout,
  type GpaChunk,
  type GpaPiece,
  iterateGpaRange,
  iterateLoadData,
  type IterateOptions,
  type LoadSegment,
  type NoteSegment,
  planGpaRange,
  readElfCore,
  type ReadElfCoreOptions,
  type SegmentDataChunk,
} from "./reader.ts";
export {
  classicHeadersByteLength,
  type ElfPlan,
  planElfCore,
  type PlanElfCoreOptions,
  type PlannedLoad,
} from "./writer.ts";
export {
  type KeptSegment,
  normalizeGpaRanges,
  planStrip,
  type RemovedRange,
  stripElf,
  type StripOptions,
  type StripPlan,
  type StripReport,
} from "./rewrite.ts";
export { elfFromRawImage, type ElfFromRawImageOptions, type RawToElfReport } from "./from_raw.ts";
export type { GpaRange } from "../vmem/ranges.ts";
export type { ChunkSink, CopyStep, PositionalReader } from "../io/positional.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { AtomicOutputOptions, FileIdentity } from "../io/file.ts";
// END-TYPES
