/**
 * vmem-dump: read, rewrite and check QEMU migration streams and guest memory
 * dumps while knowing which virtio-mem memory is unplugged.
 *
 * @example Open the bundled demo stream (zstd) and list the pages its plug state says are unplugged
 * ```ts
 * import { decodeMigrationBatches, loadPlugState, openInput } from "@vmem-dump/vmem-dump";
 * const path = "testdata/migration/q10-s3-malicious.mig.zst";
 * const { plugMap } = await loadPlugState({ stream: path });
 * using input = await openInput(path);
 * for await (const batch of decodeMigrationBatches(input.reader)) {
 *   for (const r of batch) {
 *     if (r.kind === "ram-page" && plugMap.isRamOffsetPlugged(r.ramBlock, r.ramOffset) === false) {
 *       console.log(r.ramBlock, r.ramOffset.toString(16)); // 0000:00:01.0/vmem0mem 4e01000, …
 *     }
 *   }
 * }
 * ```
 *
 * ## What this module exports, and what it leaves to the subpaths
 *
 * The root module is the API of someone who writes a migration proxy or
 * analyses evidence: open any input ({@linkcode openInput}), load a plug
 * state ({@linkcode loadPlugState}, {@linkcode PlugMap}), decode, filter,
 * verify and re-encode migration streams, relay a live migration, read,
 * strip and convert dumps, and scan any input for data in unplugged memory.
 * Each symbol here is either such an entry point, a value a caller hands to
 * one (readers, writers, atomic outputs, errors to catch), or a type that
 * their signatures name.
 *
 * The subpaths (`./migration`, `./elf`, `./kdump`, `./container`, `./raw`,
 * `./vmem`, `./dumps`, `./scan`, `./proxy`) each list their folder's public
 * surface, which also holds what someone working on that format itself needs:
 * record-level codecs, on-disk constants, header readers and writers, and the
 * types of other folders their signatures name. A symbol that only serves our own implementation (a helper one
 * module shares with another, a cap, a field layout table) is in no `mod.ts`
 * at all; tests import it from its file. Files whose name starts with `_`
 * are never exported. The command-line tool is `./cli`.
 *
 * @module
 */

// Inputs of any kind, and the plug state.
export {
  type Input,
  type InputKind,
  type LoadedPlugState,
  loadPlugState,
  openInput,
  type OpenInputOptions,
  type PlugMapFileSource,
  type PlugStateFromFile,
  type PlugStateFromStream,
  type PlugStateOrigin,
  type StreamSource,
} from "./src/input/mod.ts";
export type {
  ContainerKind,
  InnerCompression,
  LibvirtSaveFixedHeader,
  LibvirtSaveHeader,
} from "./src/container/mod.ts";
export {
  type BlockRun,
  formatGpaRange,
  formatPlugMapJson,
  formatRangeList,
  type GpaRange,
  mergeGpaRanges,
  parsePlugMapSource,
  PlugMap,
  type PlugMapDeviceJson,
  plugMapFromQmp,
  plugMapFromRangeList,
  type PlugMapJson,
  type PlugMapSourceFormat,
  type RamRange,
  type RangeClass,
  subtractGpaRanges,
  type VmemDevice,
} from "./src/vmem/mod.ts";

// Errors: every bad input is one of these, with a code and an offset.
export {
  type ErrorFormat,
  FormatError,
  type FormatErrorCode,
  type FormatErrorDetails,
  InputChangedError,
  OutputError,
  type OutputErrorCode,
  type OutputErrorDetails,
  UnexpectedEofError,
  UnsupportedFeatureError,
  VerificationError,
  type VerificationErrorDetails,
} from "./src/errors.ts";

// Bytes in and out.
export {
  type ByteReader,
  bytesReader,
  PullByteReader,
  type PullByteReaderOptions,
  StreamByteReader,
  type ViewLifetime,
} from "./src/io/byte_reader.ts";
export { type ByteSink, ByteWriter, type ByteWriterOptions } from "./src/io/byte_writer.ts";
export {
  bytesPositional,
  type ChunkSink,
  type CopyOutput,
  openPositional,
  type PositionalReader,
  type SparseSink,
} from "./src/io/positional.ts";
export {
  type AtomicDirectory,
  type AtomicDirectoryFile,
  type AtomicDirectoryOptions,
  type AtomicOutput,
  type AtomicOutputOptions,
  type AtomicOutputPositional,
  checkOutput,
  checkOutputDirectory,
  createAtomicDirectory,
  createAtomicOutput,
  type FileIdentity,
  type FileReaderOptions,
  writeAtomically,
} from "./src/io/file.ts";

// Migration streams: records, decoder and encoder.
export {
  type CommandRecord,
  type ConfigurationRecord,
  type ConfigurationSubsection,
  decodeMigration,
  decodeMigrationBatches,
  type DecodeOptions,
  type DeviceStateRecord,
  encodeMigration,
  type EofRecord,
  type HeaderRecord,
  isPageRecord,
  MigrationDecoderStream,
  MigrationEncoder,
  MigrationEncoderStream,
  type MigrationRecord,
  type OpaqueRecord,
  type RamBlockInfo,
  type RamCompressedPageRecord,
  type RamEosRecord,
  type RamMemSizeRecord,
  type RamMultifdFlushRecord,
  type RamPageBase,
  type RamPageLikeRecord,
  type RamPageRecord,
  type RamXbzrlePageRecord,
  type RamZeroPageRecord,
  type RecordBase,
  type SectionFooterRecord,
  type SectionHeaderRecord,
  type TailProblemCode,
  type TailProblemRecord,
  type VirtioMemDeviceRecord,
  type VirtioMemDeviceState,
  type VirtioMemEarlyRecord,
  type VmdescRecord,
} from "./src/migration/mod.ts";

// Migration streams: inspect, filter, verify, the record pipeline.
export {
  type DropBlockStats,
  type DropDeviceStats,
  type DroppedRecord,
  type DropStats,
  DropUnpluggedPagesStream,
  type ExtractPlugMapResult,
  inspectMigration,
  type InspectRamBlock,
  type InspectReport,
  type InspectSection,
  type InspectTailProblem,
  type InspectVirtioMem,
  MigrationPipeline,
  type MigrationPipelineOptions,
  PassThroughStage,
  type PipelineProgress,
  type PlugStateSource,
  PlugStateVerifier,
  type PlugStateViolation,
  type RecordOrBatch,
  type RecordStage,
  runMigrationPipeline,
  UnpluggedPageDropper,
  type VerifiedDevice,
  VerifyPlugStateStream,
  type VerifyResult,
  type ViolationReason,
} from "./src/migration/mod.ts";

// Mapped-ram files (`migrate file:` with mapped-ram, libvirt "sparse" images).
export {
  type BitmapByteOrder,
  filterMappedRam,
  type FilterMappedRamOptions,
  inspectMappedRam,
  type MappedRamBitmapOptions,
  type MappedRamBlock,
  type MappedRamBlockInfo,
  type MappedRamDroppedPage,
  type MappedRamFile,
  type MappedRamFilterResult,
  type MappedRamInspectBlock,
  type MappedRamInspectReport,
  type MappedRamLoad,
  type MappedRamVerifiedDevice,
  type MappedRamVerifyResult,
  type MappedRamViolation,
  readMappedRamFile,
  type ReadMappedRamFileOptions,
  verifyMappedRam,
  type VerifyMappedRamOptions,
} from "./src/migration/mod.ts";

// Live migrations: the proxy between two QEMUs.
export { type Endpoint, parseEndpoint } from "./src/io/endpoint.ts";
export type { SocketConnection } from "./src/io/socket.ts";
export type { ReturnPathMessage } from "./src/migration/mod.ts";
export {
  type ChannelEvent,
  type ChannelHandler,
  type ChannelSummary,
  type ExtraChannel,
  type ExtraChannelInit,
  MultifdChannelHandler,
  type MultifdChannelSummary,
  type MultifdDroppedPage,
  type ProxyEvent,
  type ProxyResult,
  ProxySession,
  type ProxySessionOptions,
  ProxyState,
  relayMigration,
  type RelayMode,
  type RelayOptions,
  type RelayProgress,
  type RelayResult,
  type ReturnPathSummary,
} from "./src/proxy/mod.ts";

// Guest memory dumps: read, strip unplugged memory, convert, provenance.
export {
  type ElfCore,
  type ElfCoreLayout,
  type ElfHeader,
  type ElfNote,
  type ElfNoteKind,
  type ElfPhdr,
  type ElfShdr,
  type KeptSegment,
  type LoadSegment,
  type NoteSegment,
  readElfCore,
  type ReadElfCoreOptions,
  type RemovedRange,
  type StripReport,
} from "./src/elf/mod.ts";
export {
  type DiskDumpHeader,
  type IterateKdumpPagesOptions,
  type KdumpBitmap,
  type KdumpFile,
  type KdumpPage,
  type KdumpSubHeader,
  type KdumpUtsname,
  type KdumpWriteCodec,
  type KdumpWriteResult,
  type PageDesc,
  readKdump,
  type StripKdumpReport,
} from "./src/kdump/mod.ts";
export {
  convertDump,
  type ConvertDumpOptions,
  type ConvertDumpReport,
  type ElfToKdumpReport,
  findProvenance,
  type KdumpToElfReport,
  type KernelUtsname,
  type Provenance,
  PROVENANCE_KIND,
  PROVENANCE_VERSION,
  type ProvenanceStep,
  type RemovalReason,
  stripDump,
  type StripDumpOptions,
  type StripDumpReport,
} from "./src/dumps/mod.ts";

// Scans for data in unplugged memory.
export {
  type AbsentMemory,
  type AbsentReason,
  type BlockFindings,
  type Coverage,
  type DeviceFindings,
  type FindingContext,
  type FindingPageSink,
  type FindingSource,
  type FirstNonZero,
  formatScanReport,
  type HexWindow,
  type PageFinding,
  type PlugStateInfo,
  type ScanDumpOptions,
  scanElfCore,
  type ScanInputInfo,
  type ScanInputKind,
  scanKdump,
  scanMappedRam,
  type ScanMappedRamOptions,
  scanMigration,
  type ScanMigrationOptions,
  type ScanMigrationResult,
  scanRawImage,
  type ScanRawOptions,
  type ScanReport,
  type ScanSummary,
  type ScanVerdict,
  type StreamSection,
  VERDICT_EXIT_CODES,
} from "./src/scan/mod.ts";
