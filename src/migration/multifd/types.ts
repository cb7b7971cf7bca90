/**
 * The records a multifd channel decodes into: one initial packet, then RAM
 * packets (and, from QEMU 10.0, device-state packets) until the source
 * closes the channel. `MultifdEncoder` turns them back into the exact bytes.
 *
 * `header` fields are the packet's own bytes (a copy the record owns), so a
 * packet re-encodes byte for byte, including what QEMU 7.2 leaves stale in
 * it (offset slots and the ramblock name of earlier packets, the payload
 * size of the last packet with pages). `data` is a view into the input:
 * copy it to keep it past the next batch.
 *
 * @module
 */

import type { MultifdCompression } from "./constants.ts";

/** Fields every multifd record has. */
export interface MultifdRecordBase {
  /** Offset of the record's first byte in the channel. */
  streamOffset: number;
}

/** `MultiFDInit_t`: the first 64 bytes of a channel. */
export interface MultifdInitRecord extends MultifdRecordBase {
  /** Record discriminator. */
  kind: "multifd-init";
  /** Protocol version (1). */
  version: number;
  /** The source's `-uuid` (16 bytes; all zero by default). The destination requires its own. */
  uuid: Uint8Array;
  /** Channel number, 0 … channels − 1. */
  channelId: number;
  /** The 64 bytes as received (the reserved fields included). */
  bytes: Uint8Array;
}

/** A RAM packet (`MultiFDPacket_t`) and the payload after it. */
export interface MultifdRamPacketRecord extends MultifdRecordBase {
  /** Record discriminator. */
  kind: "multifd-ram-packet";
  /** `flags` as sent. */
  flags: number;
  /** `MULTIFD_FLAG_SYNC` is set: the end of a sync round on this channel. */
  sync: boolean;
  /** Compression method named by the flags (`none` also for packets without page data). */
  compression: MultifdCompression;
  /** `pages_alloc`: slots the sender allocated (0 in QEMU >= 9.0 SYNC packets). */
  pagesAlloc: number;
  /** Offsets, inside `ramBlock`, of the pages whose data follows. */
  normalRamOffsets: number[];
  /** Offsets of zero pages (QEMU >= 9.0, `zero-page-detection=multifd`); no data. */
  zeroRamOffsets: number[];
  /** `next_packet_size` as sent (payload bytes; stale in QEMU 7.2 packets without pages). */
  nextPacketSize: number;
  /** `packet_num`: a counter shared by all channels of the source. */
  packetNum: number;
  /** RAMBlock idstr (empty in QEMU >= 9.0 SYNC packets; stale in QEMU 7.2 packets without pages). */
  ramBlock: string;
  /** The header bytes, offset table included (1344 bytes for 4 KiB pages). */
  header: Uint8Array;
  /** The payload: the pages' bytes (`none`) or the compressed bytes. */
  data: Uint8Array;
}

/** A device-state packet (`MultiFDPacketDeviceState_t`, QEMU >= 10.0, VFIO) and its payload. */
export interface MultifdDeviceStatePacketRecord extends MultifdRecordBase {
  /** Record discriminator. */
  kind: "multifd-device-state-packet";
  /** `flags` as sent. */
  flags: number;
  /** Section idstr of the device. */
  idstr: string;
  /** Instance id of the device. */
  instanceId: number;
  /** The header bytes (276). */
  header: Uint8Array;
  /** The device-state bytes. */
  data: Uint8Array;
}

/** Every record a multifd channel decodes into. */
export type MultifdRecord =
  | MultifdInitRecord
  | MultifdRamPacketRecord
  | MultifdDeviceStatePacketRecord;
