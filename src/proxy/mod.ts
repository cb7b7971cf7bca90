/**
 * The migration proxy: {@linkcode ProxySession} relays one migration from a
 * source QEMU to a destination QEMU (pass, filter unplugged pages, or verify
 * plug state), with its return path; {@linkcode MigrationRelay} is its main
 * channel over any byte reader and sink; `channel.ts` is the extension point
 * for extra channels (multifd).
 *
 * @example Relay a stream between two byte channels
 * ```ts ignore
 * import { openInput, relayMigration } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s2.mig");
 * const out = await Deno.create("copy.mig");
 * await relayMigration(input.reader, async (c) => { await out.write(c); }, { mode: "verify" });
 * ```
 *
 * @module
 */

export type {
  ChannelEvent,
  ChannelHandler,
  ChannelSummary,
  ExtraChannel,
  ExtraChannelInit,
} from "./channel.ts";
export {
  MigrationRelay,
  relayMigration,
  type RelayMode,
  type RelayOptions,
  type RelayProgress,
  type RelayResult,
  RelayVerificationError,
} from "./relay.ts";
export {
  ProxyError,
  type ProxyErrorCode,
  type ProxyEvent,
  type ProxyResult,
  ProxySession,
  type ProxySessionOptions,
  ProxyState,
  type ReturnPathSummary,
} from "./session.ts";
export { MultifdChannelHandler, type MultifdChannelSummary } from "./multifd.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { ErrorFormat, FormatError, FormatErrorCode, VerificationError } from "../errors.ts";
export type { ByteReader, PullByteReader, ViewLifetime } from "../io/byte_reader.ts";
export type { ByteSink } from "../io/byte_writer.ts";
export type { Endpoint } from "../io/endpoint.ts";
export type { SocketConnection } from "../io/socket.ts";
export type {
  DropBlockStats,
  DropDeviceStats,
  DroppedRecord,
  DropStats,
  PlugStateSource,
} from "../migration/filter.ts";
export type { MappedRamBlock } from "../migration/mapped_ram/block_layout.ts";
export type { MultifdDroppedPage } from "../migration/multifd/filter.ts";
export type { ReturnPathMessage } from "../migration/return_path.ts";
export type { RecordStage } from "../migration/stage.ts";
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
  RamPageLikeRecord,
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
export type {
  PlugStateViolation,
  VerifiedDevice,
  VerifyResult,
  ViolationReason,
} from "../migration/verify.ts";
export type { PlugMap, RangeClass } from "../vmem/plug_map.ts";
export type { PlugMapDeviceJson, PlugMapJson } from "../vmem/plug_map_json.ts";
export type { BlockRun, GpaRange, RamRange } from "../vmem/ranges.ts";
export type { VmemDevice } from "../vmem/vmem_device.ts";
// END-TYPES
