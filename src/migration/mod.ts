/**
 * QEMU migration streams: decode to records, encode back byte for byte.
 *
 * @example Round trip a stream
 * ```ts
 * import { ByteWriter, decodeMigrationBatches, encodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * using input = await openInput("testdata/migration/q72-tiny-unplugged.mig");
 * let byteLength = 0;
 * await encodeMigration(
 *   decodeMigrationBatches(input.reader),
 *   new ByteWriter((c) => void (byteLength += c.byteLength)),
 * );
 * console.log(byteLength === input.byteLength); // true
 * ```
 *
 * Not exported (per symbol, see the root module for the rule): the
 * mapped-ram header's field layout table, the path-level plug-state readers
 * (`extractPlugStateFromFile`, `fileRangeReader`: use `loadPlugState` of the
 * root module), and helpers one module shares with another
 * (`findVirtioMemRamBlock`, `firstWireBitBeyond`, `fullHeaderLength`,
 * `violationError`, `requireAccountedTail`, `swapBitmapWords`,
 * `setRunBatches`).
 *
 * @module
 */

export * from "./constants.ts";
export type * from "./types.ts";
export { isPageRecord } from "./types.ts";
export {
  commandName,
  decodeMigration,
  decodeMigrationBatches,
  type DecodeOptions,
  MigrationDecoderStream,
} from "./decoder.ts";
export {
  encodeMigration,
  MigrationEncoder,
  MigrationEncoderStream,
  pageRecordByteLength,
} from "./encoder.ts";
export {
  parseVirtioMemDeviceBody,
  type VirtioMemDeviceBody,
  type VirtioMemDeviceContext,
} from "./virtio_mem_device.ts";
export { bitmapFromWireWords, bitmapToWireWords } from "./wire_bitmap.ts";
export {
  extractPlugMap,
  type ExtractPlugMapOptions,
  type ExtractPlugMapResult,
  extractPlugStateFromReader,
  type ExtractPlugStateFromReaderOptions,
} from "./plug_state.ts";
export { StreamPlugState, type StreamPlugStateSource } from "./stream_plug_state.ts";
export { type VmdescSection, vmdescSections } from "./vmdesc.ts";
export * from "./inspect.ts";
export * from "./filter.ts";
export {
  PlugStateVerifier,
  type PlugStateViolation,
  type VerifiedDevice,
  type VerifyPlugStateOptions,
  VerifyPlugStateStream,
  type VerifyResult,
  type ViolationReason,
} from "./verify.ts";
export * from "./stage.ts";
export * from "./pipeline.ts";
export * from "./return_path.ts";
export {
  MAPPED_RAM_HEADER_SIZE,
  MAPPED_RAM_HEADER_VERSION,
  type MappedRamHeader,
  readMappedRamHeader,
  writeMappedRamHeader,
} from "./mapped_ram/header.ts";
export * from "./mapped_ram/block_layout.ts";
export {
  type BitmapByteOrder,
  type BitmapPiece,
  type BitmapReadOptions,
  readBitmapPieces,
} from "./mapped_ram/bitmap.ts";
export * from "./mapped_ram/file.ts";
export { isMappedRamStream } from "./mapped_ram/is_mapped_ram_stream.ts";
export * from "./mapped_ram/unplugged_pages.ts";
export * from "./mapped_ram/inspect.ts";
export {
  type MappedRamVerifiedDevice,
  type MappedRamVerifyResult,
  type MappedRamViolation,
  verifyMappedRam,
  type VerifyMappedRamOptions,
} from "./mapped_ram/verify.ts";
export * from "./mapped_ram/filter.ts";
export * from "./multifd/mod.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { ByteReader, ViewLifetime } from "../io/byte_reader.ts";
export type { ByteWriter } from "../io/byte_writer.ts";
export type { FileIdentity } from "../io/file.ts";
export type { ChunkSink, CopyOutput, PositionalReader, SparseSink } from "../io/positional.ts";
export type { PlugMap, RangeClass } from "../vmem/plug_map.ts";
export type { PlugMapDeviceJson, PlugMapJson } from "../vmem/plug_map_json.ts";
export type { BlockRun, GpaRange, RamRange } from "../vmem/ranges.ts";
export type { VmemDevice } from "../vmem/vmem_device.ts";
// END-TYPES
