/**
 * Dump rewrites across formats: ELF ↔ kdump conversion, strip of either
 * format, raw images as ELF, and the provenance note every rewrite leaves.
 *
 * @example Convert QEMU's ELF dump to kdump-zstd without unplugged memory
 * ```ts ignore
 * import { convertDump } from "@vmem-dump/vmem-dump/dumps";
 * const report = await convertDump("guest.elf", "guest.kdump", { to: "kdump", codec: "zstd", plugMap });
 * console.log(report.kdump?.byteLength, report.removed);
 * ```
 *
 * @module
 */

export * from "./detect.ts";
export * from "./provenance.ts";
export * from "./kdump_output.ts";
export * from "./elf_to_kdump.ts";
export * from "./kernel_utsname.ts";
export * from "./kdump_to_elf.ts";
export * from "./raw_as_elf.ts";
export * from "./rewrite.ts";
export * from "./vmcoreinfo_summary.ts";
export * from "./describe_elf.ts";
export * from "./describe_kdump.ts";
export * from "./describe_raw.ts";
export * from "./split_set.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { ElfHeader } from "../elf/ehdr.ts";
export type { RawToElfReport } from "../elf/from_raw.ts";
export type { ElfNote, ElfNoteKind } from "../elf/note.ts";
export type { ElfPhdr } from "../elf/phdr.ts";
export type { ElfCore, ElfCoreLayout, LoadSegment, NoteSegment } from "../elf/reader.ts";
export type { KeptSegment, RemovedRange, StripReport } from "../elf/rewrite.ts";
export type { ElfShdr } from "../elf/shdr.ts";
export type { AtomicOutputOptions, FileIdentity } from "../io/file.ts";
export type { ChunkSink, PositionalReader } from "../io/positional.ts";
export type { KdumpBitmap } from "../kdump/bitmap.ts";
export type { KdumpWriteCodec } from "../kdump/compress.ts";
export type { DiskDumpHeader, KdumpSubHeader, KdumpUtsname } from "../kdump/header.ts";
export type { PageDesc } from "../kdump/page_desc.ts";
export type { IterateKdumpPagesOptions, KdumpFile, KdumpPage } from "../kdump/reader.ts";
export type { StripKdumpReport } from "../kdump/strip.ts";
export type { KdumpSink, KdumpWriteResult } from "../kdump/writer.ts";
export type { PlugMap, RangeClass } from "../vmem/plug_map.ts";
export type { PlugMapDeviceJson, PlugMapJson } from "../vmem/plug_map_json.ts";
export type { BlockRun, GpaRange, RamRange } from "../vmem/ranges.ts";
export type { VmemDevice } from "../vmem/vmem_device.ts";
// END-TYPES
