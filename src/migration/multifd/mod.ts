/**
 * QEMU multifd channels: the extra connections that carry RAM pages when the
 * `multifd` capability is on. Decode a channel into records, encode them
 * back byte for byte, read and write the packet headers.
 *
 * @example Round trip a captured channel
 * ```ts ignore
 * import { ByteWriter, openInput } from "@vmem-dump/vmem-dump";
 * import { decodeMultifdChannel, MultifdEncoder } from "@vmem-dump/vmem-dump/migration";
 * const input = await openInput("channel-0.bin");
 * const chunks: Uint8Array[] = [];
 * const enc = new MultifdEncoder(new ByteWriter((c) => { chunks.push(c.slice()); }));
 * for await (const batch of decodeMultifdChannel(input.reader)) for (const r of batch) enc.write(r);
 * await enc.flush();
 * ```
 *
 * @module
 */

export * from "./constants.ts";
export type * from "./types.ts";
// The field layout tables (layout.ts) serve the codecs only: in no mod.ts.
export {
  MULTIFD_OFFSET_SLOT_SIZE,
  multifdPageCount,
  multifdRamPacketHeaderSize,
} from "./layout.ts";
export * from "./packet.ts";
export { decodeMultifdChannel, type DecodeMultifdOptions } from "./decoder.ts";
export { MultifdEncoder } from "./encoder.ts";
export {
  isMultifdControlRecord,
  MultifdChannelVerifier,
  type MultifdControlRecord,
  type MultifdPlugStateViolation,
  type MultifdVerifyOptions,
} from "./verify.ts";
export {
  MultifdChannelFilter,
  type MultifdDroppedPage,
  type MultifdDropStats,
  type MultifdFilterOptions,
} from "./filter.ts";
export {
  MultifdPipeline,
  type MultifdPipelineMode,
  type MultifdPipelineOptions,
  type MultifdPipelineResult,
  type MultifdProgress,
} from "./pipeline.ts";
