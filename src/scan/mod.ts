/**
 * Forensic scans: did a guest (or anybody) put data into unplugged
 * virtio-mem memory? Scans raw memory images, ELF dumps and migration
 * streams against a plug map and reports every finding with its address,
 * RAMBlock offset, SHA-256 and a hexdump.
 *
 * @example Scan a migration stream with its own plug state
 * ```ts
 * import { decodeMigrationBatches, openInput } from "@vmem-dump/vmem-dump";
 * import { formatScanReport, scanMigration } from "@vmem-dump/vmem-dump/scan";
 * using input = await openInput("testdata/migration/q10-s3-malicious.mig.zst");
 * const { report } = await scanMigration(decodeMigrationBatches(input.reader), { path: input.path });
 * console.log(report.verdict); // findings
 * console.log(formatScanReport(report));
 * ```
 *
 * Not exported (per symbol, see the root module for the rule): the report
 * builder the scanners share (`FindingCollector`, `CoverageCounter`,
 * `unpluggedRangesPerDevice` and their option types), read sizes, and the
 * detail texts the scanners put in their reports.
 *
 * @module
 */

export * from "./zero.ts";
export * from "./hexdump.ts";
export {
  type BlockFindings,
  DEFAULT_MAX_FINDINGS,
  type DeviceFindings,
  type FindingContext,
  type FindingPageSink,
  type FindingSource,
  type FirstNonZero,
  type PageFinding,
  type PlugStateInfo,
  SCAN_REPORT_VERSION,
  type ScanInputInfo,
  type ScanInputKind,
  type ScanReport,
  type ScanSummary,
  type StreamSection,
} from "./findings.ts";
export { ABSENT_REASONS, type AbsentMemory, type AbsentReason, type Coverage } from "./coverage.ts";
export * from "./verdict.ts";
export * from "./extract.ts";
export * from "./format_report.ts";
export { type ScanDumpOptions, scanRawImage, type ScanRawOptions } from "./scan_raw.ts";
export { scanElfCore } from "./scan_elf.ts";
export {
  loadPageInflater,
  MigrationScanner,
  scanMigration,
  type ScanMigrationOptions,
  type ScanMigrationResult,
} from "./scan_stream.ts";
export { scanKdump } from "./scan_kdump.ts";
export { scanMappedRam, type ScanMappedRamOptions } from "./scan_mapped_ram.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { ElfHeader } from "../elf/ehdr.ts";
export type { ElfNote, ElfNoteKind } from "../elf/note.ts";
export type { ElfPhdr } from "../elf/phdr.ts";
export type { ElfCore, ElfCoreLayout, LoadSegment, NoteSegment } from "../elf/reader.ts";
export type { ElfShdr } from "../elf/shdr.ts";
export type { FileIdentity } from "../io/file.ts";
export type { PositionalReader } from "../io/positional.ts";
export type { KdumpBitmap } from "../kdump/bitmap.ts";
export type { DiskDumpHeader, KdumpSubHeader, KdumpUtsname } from "../kdump/header.ts";
export type { PageDesc } from "../kdump/page_desc.ts";
export type { IterateKdumpPagesOptions, KdumpFile, KdumpPage } from "../kdump/reader.ts";
export type {
  InspectRamBlock,
  InspectReport,
  InspectSection,
  InspectTailProblem,
  InspectVirtioMem,
} from "../migration/inspect.ts";
export type { BitmapByteOrder } from "../migration/mapped_ram/bitmap.ts";
export type { MappedRamBlock } from "../migration/mapped_ram/block_layout.ts";
export type {
  MappedRamBlockInfo,
  MappedRamFile,
  MappedRamLoad,
} from "../migration/mapped_ram/file.ts";
export type { MappedRamBitmapOptions } from "../migration/mapped_ram/inspect.ts";
export type {
  CommandRecord,
  ConfigurationRecord,
  ConfigurationSubsection,
  DeviceStateRecord,
  EofRecord,
  HeaderRecord,
  MigrationRecord,
  OpaqueRecord,
  RamBlockInfo,
  RamCompressedPageRecord,
  RamEosRecord,
  RamMemSizeRecord,
  RamMultifdFlushRecord,
  RamPageBase,
  RamPageRecord,
  RamXbzrlePageRecord,
  RamZeroPageRecord,
  RecordBase,
  SectionFooterRecord,
  SectionHeaderRecord,
  TailProblemCode,
  TailProblemRecord,
  VirtioMemDeviceRecord,
  VirtioMemDeviceState,
  VirtioMemEarlyRecord,
  VmdescRecord,
} from "../migration/types.ts";
export type { PlugMap, RangeClass } from "../vmem/plug_map.ts";
export type { PlugMapDeviceJson, PlugMapJson } from "../vmem/plug_map_json.ts";
export type { BlockRun, GpaRange, RamRange } from "../vmem/ranges.ts";
export type { VmemDevice } from "../vmem/vmem_device.ts";
// END-TYPES
