/**
 * The fixed layouts of a multifd channel, defined once as field tables
 * (QEMU's migration/multifd.h and multifd.c; all integers big-endian):
 *
 * | record | bytes | fields |
 * | --- | --- | --- |
 * | `MultiFDInit_t` (first thing on a channel) | 64 | magic, version, uuid, id, unused |
 * | `MultiFDPacket_t` (RAM packet) | 320 + 8 × (512 KiB / page size) | header, counts, packet number, ramblock name, offset table |
 * | `MultiFDPacketDeviceState_t` (QEMU >= 10.0, VFIO) | 276 | header, idstr, instance id, payload size |
 *
 * QEMU 7.2 and 10.0 lay `MultiFDPacket_t` out identically: 9.0 gave the
 * first four bytes of 7.2's reserved `unused[4]` to `zero_pages` (7.2 always
 * sends zero there), and 10.0 reads the 12-byte `MultiFDPacketHdr_t` first to
 * tell RAM packets from device-state packets.
 *
 * @module
 */

import { type WireLayout, wireLayout } from "../../io/wire.ts";
import { MULTIFD_PACKET_SIZE, MULTIFD_RAMBLOCK_NAME_SIZE } from "./constants.ts";

/** Fields of {@linkcode MULTIFD_INIT}. */
export type MultifdInitField = "magic" | "version" | "uuid" | "channelId" | "unused1" | "unused2";

/** Fields of {@linkcode MULTIFD_PACKET_HDR}. */
export type MultifdPacketHdrField = "magic" | "version" | "flags";

/** Fields of {@linkcode MULTIFD_PACKET}. */
export type MultifdPacketField =
  | MultifdPacketHdrField
  | "pagesAlloc"
  | "normalPages"
  | "nextPacketSize"
  | "packetNum"
  | "zeroPages"
  | "unused32"
  | "unused64"
  | "ramBlock";

/** Fields of {@linkcode MULTIFD_PACKET_DEVICE_STATE}. */
export type MultifdPacketDeviceStateField =
  | MultifdPacketHdrField
  | "idstr"
  | "instanceId"
  | "nextPacketSize";

/** `MultiFDInit_t`: the 64-byte packet that opens every multifd channel. */
export const MULTIFD_INIT: WireLayout<MultifdInitField> = wireLayout("MultiFDInit_t", 64, {
  magic: ["magic", 0, 4],
  version: ["version", 4, 4],
  uuid: ["uuid", 8, 16],
  channelId: ["id", 24, 1],
  unused1: ["unused1", 25, 7],
  unused2: ["unused2", 32, 32],
});

/** `MultiFDPacketHdr_t`: the 12 bytes every packet starts with. */
export const MULTIFD_PACKET_HDR: WireLayout<MultifdPacketHdrField> = wireLayout(
  "MultiFDPacketHdr_t",
  12,
  {
    magic: ["magic", 0, 4],
    version: ["version", 4, 4],
    flags: ["flags", 8, 4],
  },
);

/**
 * `MultiFDPacket_t` without its offset table (which follows at byte 320,
 * one be64 slot per page of a full packet).
 */
export const MULTIFD_PACKET: WireLayout<MultifdPacketField> = wireLayout("MultiFDPacket_t", 320, {
  magic: ["magic", 0, 4],
  version: ["version", 4, 4],
  flags: ["flags", 8, 4],
  /** Slots the sender allocated (QEMU 10.0 sends 0 in SYNC packets). */
  pagesAlloc: ["pages_alloc", 12, 4],
  normalPages: ["normal_pages", 16, 4],
  /** Bytes of payload after the header (compressed size; stale in QEMU 7.2 packets without pages). */
  nextPacketSize: ["next_packet_size", 20, 4],
  packetNum: ["packet_num", 24, 8],
  /** QEMU >= 9.0; the first half of the reserved `unused[0]` before (always 0). */
  zeroPages: ["zero_pages", 32, 4],
  unused32: ["unused32", 36, 4],
  unused64: ["unused64", 40, 24],
  ramBlock: ["ramblock", 64, MULTIFD_RAMBLOCK_NAME_SIZE],
});

/** `MultiFDPacketDeviceState_t` (QEMU >= 10.0): device state sent over a multifd channel. */
export const MULTIFD_PACKET_DEVICE_STATE: WireLayout<MultifdPacketDeviceStateField> = wireLayout(
  "MultiFDPacketDeviceState_t",
  276,
  {
    magic: ["magic", 0, 4],
    version: ["version", 4, 4],
    flags: ["flags", 8, 4],
    idstr: ["idstr", 12, 256],
    instanceId: ["instance_id", 268, 4],
    nextPacketSize: ["next_packet_size", 272, 4],
  },
);

/** Width of one slot of the offset table. */
export const MULTIFD_OFFSET_SLOT_SIZE = 8;

/**
 * Slots in the offset table of a RAM packet: `MULTIFD_PACKET_SIZE / pageSize`
 * (128 for 4 KiB pages).
 *
 * @param pageSize Target page size.
 * @returns Slots per packet.
 */
export function multifdPageCount(pageSize: number): number {
  return MULTIFD_PACKET_SIZE / pageSize;
}

/**
 * Size of a RAM packet header including its offset table: 1344 bytes for
 * 4 KiB pages.
 *
 * @param pageSize Target page size.
 * @returns Header bytes.
 *
 * @example
 * ```ts
 * import { multifdRamPacketHeaderSize } from "@vmem-dump/vmem-dump/migration";
 * console.log(multifdRamPacketHeaderSize(4096)); // 1344
 * ```
 */
export function multifdRamPacketHeaderSize(pageSize: number): number {
  return MULTIFD_PACKET.byteLength + MULTIFD_OFFSET_SLOT_SIZE * multifdPageCount(pageSize);
}
