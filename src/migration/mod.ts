/**
 * QEMU migration streams: decode to records, encode back byte for byte.
 *
 * @example Round trip a stream
 * ```ts ignore
 * import { ByteWriter, decodeMigrationBatches, encodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * const chunks: Uint8Array[] = [];
 * await encodeMigration(decodeMigrationBatches(input.reader), new ByteWriter((c) => { chunks.push(c); }));
 * ```
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
export * from "./virtio_mem_device.ts";
export * from "./plug_state.ts";
export * from "./stream_plug_state.ts";
export * from "./wire_bitmap.ts";
export * from "./vmdesc.ts";
export * from "./inspect.ts";
export * from "./filter.ts";
export * from "./verify.ts";
export * from "./stage.ts";
export * from "./pipeline.ts";
export * from "./return_path.ts";
export * from "./mapped_ram/header.ts";
export * from "./mapped_ram/block_layout.ts";
export * from "./mapped_ram/bitmap.ts";
export * from "./mapped_ram/file.ts";
export * from "./mapped_ram/unplugged_pages.ts";
export * from "./mapped_ram/inspect.ts";
export * from "./mapped_ram/verify.ts";
export * from "./mapped_ram/filter.ts";
