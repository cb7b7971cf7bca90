/**
 * Forensic scans: did a guest (or anybody) put data into unplugged
 * virtio-mem memory? Scans raw memory images, ELF dumps and migration
 * streams against a plug map and reports every finding with its address,
 * RAMBlock offset, SHA-256 and a hexdump.
 *
 * @example Scan a migration stream with its own plug state
 * ```ts ignore
 * import { decodeMigrationBatches, openInput } from "@vmem-dump/vmem-dump";
 * import { formatScanReport, scanMigration } from "@vmem-dump/vmem-dump/scan";
 * const input = await openInput("s3-malicious.mig");
 * const { report } = await scanMigration(decodeMigrationBatches(input.reader), { path: input.path });
 * input.close();
 * console.log(formatScanReport(report));
 * ```
 *
 * @module
 */

export * from "./zero.ts";
export * from "./hexdump.ts";
export * from "./findings.ts";
export * from "./coverage.ts";
export * from "./verdict.ts";
export * from "./extract.ts";
export * from "./format_report.ts";
export {
  outsideImageDetail,
  SCAN_CHUNK_SIZE,
  type ScanDumpOptions,
  scanRawImage,
  type ScanRawOptions,
} from "./scan_raw.ts";
export { ELF_NOT_IN_DUMP_DETAIL, ELF_ZERO_FILL_DETAIL, scanElfCore } from "./scan_elf.ts";
export {
  MigrationScanner,
  scanMigration,
  type ScanMigrationOptions,
  type ScanMigrationResult,
} from "./scan_stream.ts";
export { KDUMP_NOT_IN_DUMP_DETAIL, scanKdump } from "./scan_kdump.ts";
export { scanMappedRam, type ScanMappedRamOptions } from "./scan_mapped_ram.ts";
