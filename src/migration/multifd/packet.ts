/**
 * Read and write the fixed parts of a multifd channel: the initial packet,
 * RAM packet headers and device-state packet headers (field tables in
 * `layout.ts`). Every check QEMU's receiver makes is made here, with the
 * offset of the offending field, plus the ones a verifier needs to account
 * for every byte (unknown flag bits, payload sizes).
 *
 * How much payload follows a RAM packet header is the receiver's rule, not
 * `next_packet_size` alone: without compression `normal_pages` pages; with
 * compression `next_packet_size` bytes, and nothing when `normal_pages` is 0
 * (QEMU 7.2 leaves a stale `next_packet_size` in packets without pages).
 *
 * @module
 */

import { FormatError } from "../../errors.ts";
import { isPowerOfTwo } from "../../io/bits.ts";
import { viewOf } from "../../io/endian.ts";
import { getWireUint, setWireUint, type WireField } from "../../io/wire.ts";
import { hex, latin1Decode, latin1Encode } from "../../io/text.ts";
import {
  MULTIFD_COMPRESSION_BY_FLAG,
  MULTIFD_FLAG_COMPRESSION_MASK,
  MULTIFD_FLAG_DEVICE_STATE,
  MULTIFD_FLAG_NOCOMP,
  MULTIFD_FLAG_SYNC,
  MULTIFD_KNOWN_FLAGS,
  MULTIFD_MAGIC,
  MULTIFD_MAX_COMPRESSED_BYTES,
  MULTIFD_MAX_DEVICE_STATE_BYTES,
  MULTIFD_PACKET_SIZE,
  MULTIFD_VERSION,
  type MultifdCompression,
} from "./constants.ts";
import {
  MULTIFD_INIT,
  MULTIFD_OFFSET_SLOT_SIZE,
  MULTIFD_PACKET,
  MULTIFD_PACKET_DEVICE_STATE,
  MULTIFD_PACKET_HDR,
  multifdPageCount,
  multifdRamPacketHeaderSize,
} from "./layout.ts";
import type {
  MultifdDeviceStatePacketRecord,
  MultifdInitRecord,
  MultifdRamPacketRecord,
} from "./types.ts";

const WHAT = "Cannot decode multifd channel";
const EMPTY = new Uint8Array(0);

function fail(
  message: string,
  code: "bad-magic" | "bad-version" | "bad-record" | "out-of-range" | "too-large",
  offset: number,
): never {
  throw new FormatError(`${WHAT}: ${message}`, { format: "migration", code, offset });
}

/**
 * Check a target page size for multifd: a power of two that divides the
 * 512 KiB packet.
 *
 * @param pageSize Target page size.
 * @throws {RangeError} when it does not.
 */
export function checkMultifdPageSize(pageSize: number): void {
  if (
    !Number.isInteger(pageSize) || pageSize < 512 || pageSize > MULTIFD_PACKET_SIZE ||
    !isPowerOfTwo(pageSize)
  ) {
    throw new RangeError(`multifd page size ${pageSize} is not a power of two in 512 … 512 KiB`);
  }
}

/** The `magic` and `version` every multifd record starts with; returns the version. */
function checkMagicAndVersion(
  v: DataView,
  F: { magic: WireField; version: WireField },
  streamOffset: number,
  what: string,
): number {
  const magic = getWireUint(v, 0, F.magic, false);
  if (magic !== MULTIFD_MAGIC) {
    fail(
      `${what} magic ${hex(magic)} is not ${hex(MULTIFD_MAGIC)}`,
      "bad-magic",
      streamOffset + F.magic.offset,
    );
  }
  const version = getWireUint(v, 0, F.version, false);
  if (version !== MULTIFD_VERSION) {
    fail(
      `${what} version ${version} is not ${MULTIFD_VERSION}`,
      "bad-version",
      streamOffset + F.version.offset,
    );
  }
  return version;
}

/**
 * Read `MultiFDInit_t`.
 *
 * @param bytes The 64 bytes.
 * @param streamOffset Where they start in the channel.
 * @returns The record (`bytes` is a copy).
 * @throws {FormatError} `bad-magic` or `bad-version`.
 *
 * @example
 * ```ts
 * import { readMultifdInit, writeMultifdInit } from "@vmem-dump/vmem-dump/migration";
 * const bytes = writeMultifdInit({ channelId: 3, uuid: new Uint8Array(16) });
 * console.log(readMultifdInit(bytes, 0).channelId); // 3
 * ```
 */
export function readMultifdInit(bytes: Uint8Array, streamOffset: number): MultifdInitRecord {
  const F = MULTIFD_INIT.fields;
  if (bytes.byteLength !== MULTIFD_INIT.byteLength) {
    throw new RangeError(
      `MultiFDInit_t is ${MULTIFD_INIT.byteLength} bytes, not ${bytes.byteLength}`,
    );
  }
  const v = viewOf(bytes);
  const version = checkMagicAndVersion(v, F, streamOffset, "initial packet");
  const copy = bytes.slice();
  return {
    kind: "multifd-init",
    streamOffset,
    version,
    uuid: copy.subarray(F.uuid.offset, F.uuid.offset + F.uuid.width),
    channelId: getWireUint(v, 0, F.channelId, false),
    bytes: copy,
  };
}

/**
 * Build a `MultiFDInit_t` as QEMU sends it (reserved fields zero).
 *
 * @param fields Channel id and source UUID.
 * @returns 64 bytes.
 */
export function writeMultifdInit(
  fields: { channelId: number; uuid: Uint8Array },
): Uint8Array<ArrayBuffer> {
  const F = MULTIFD_INIT.fields;
  if (fields.uuid.byteLength !== F.uuid.width) throw new RangeError("the uuid is 16 bytes");
  const out = new Uint8Array(MULTIFD_INIT.byteLength);
  const v = viewOf(out);
  setWireUint(v, 0, F.magic, MULTIFD_MAGIC, false);
  setWireUint(v, 0, F.version, MULTIFD_VERSION, false);
  out.set(fields.uuid, F.uuid.offset);
  setWireUint(v, 0, F.channelId, fields.channelId, false);
  return out;
}

/** What the first 12 bytes of a packet say. */
export interface MultifdPacketHdr {
  /** `flags`. */
  flags: number;
  /** Size of the whole packet header for this kind of packet. */
  headerByteLength: number;
  /** Device-state packet (else RAM packet). */
  deviceState: boolean;
}

/**
 * Read `MultiFDPacketHdr_t` and decide which header follows.
 *
 * @param bytes At least 12 bytes.
 * @param streamOffset Where the packet starts in the channel.
 * @param pageSize Target page size (sizes the RAM packet's offset table).
 * @returns Flags and the full header size.
 * @throws {FormatError} `bad-magic`, `bad-version`, or `bad-record` for unknown flag bits
 * or compression values.
 */
export function readMultifdPacketHdr(
  bytes: Uint8Array,
  streamOffset: number,
  pageSize: number,
): MultifdPacketHdr {
  const F = MULTIFD_PACKET_HDR.fields;
  const v = viewOf(bytes);
  checkMagicAndVersion(v, F, streamOffset, "packet");
  const flags = getWireUint(v, 0, F.flags, false);
  const at = streamOffset + F.flags.offset;
  if ((flags & ~MULTIFD_KNOWN_FLAGS) !== 0) {
    fail(
      `packet flags ${hex(flags)} have unknown bits ${hex(flags & ~MULTIFD_KNOWN_FLAGS)}`,
      "bad-record",
      at,
    );
  }
  if (!MULTIFD_COMPRESSION_BY_FLAG.has(flags & MULTIFD_FLAG_COMPRESSION_MASK)) {
    fail(`packet flags ${hex(flags)} name no compression method`, "bad-record", at);
  }
  const deviceState = (flags & MULTIFD_FLAG_DEVICE_STATE) !== 0;
  if (deviceState && (flags & ~MULTIFD_FLAG_DEVICE_STATE) !== 0) {
    fail(`device-state packet flags ${hex(flags)} have other bits set`, "bad-record", at);
  }
  return {
    flags,
    deviceState,
    headerByteLength: deviceState
      ? MULTIFD_PACKET_DEVICE_STATE.byteLength
      : multifdRamPacketHeaderSize(pageSize),
  };
}

/** A RAM packet header and the size of the payload that follows it. */
export interface MultifdRamPacketHeader {
  /** The record, with an empty `data`. */
  record: MultifdRamPacketRecord;
  /** Payload bytes after the header. */
  dataByteLength: number;
}

/** The NUL-terminated name in a fixed field (QEMU forces the last byte to NUL). */
function cName(bytes: Uint8Array, from: number, width: number): string {
  let end = from;
  const last = from + width - 1;
  while (end < last && bytes[end] !== 0) end++;
  return latin1Decode(bytes.subarray(from, end));
}

/**
 * Read a whole RAM packet header (`MultiFDPacket_t` with its offset table)
 * with QEMU's receiver checks: `pages_alloc` at most the table size,
 * `normal_pages` at most `pages_alloc`, `zero_pages` at most the rest. The
 * offsets of the pages the packet carries are returned as numbers; the
 * other slots are kept only in `header`.
 *
 * @param header The header bytes (`multifdRamPacketHeaderSize(pageSize)` long); kept by the record.
 * @param streamOffset Where the packet starts in the channel.
 * @param pageSize Target page size.
 * @returns The record (without payload) and the payload size.
 * @throws {FormatError} `out-of-range` for counts beyond the table, `too-large` for a payload
 * size beyond the cap or a page offset beyond 2^53, `bad-record` for a compressed packet whose
 * payload size does not fit its page count.
 */
export function readMultifdRamPacketHeader(
  header: Uint8Array,
  streamOffset: number,
  pageSize: number,
): MultifdRamPacketHeader {
  const F = MULTIFD_PACKET.fields;
  const v = viewOf(header);
  const at = (f: { offset: number }) => streamOffset + f.offset;
  const flags = getWireUint(v, 0, F.flags, false);
  const compression: MultifdCompression = MULTIFD_COMPRESSION_BY_FLAG.get(
    flags & MULTIFD_FLAG_COMPRESSION_MASK,
  ) ?? fail(`packet flags ${hex(flags)} name no compression method`, "bad-record", at(F.flags));
  const slots = multifdPageCount(pageSize);
  const pagesAlloc = getWireUint(v, 0, F.pagesAlloc, false);
  if (pagesAlloc > slots) {
    fail(
      `packet allocates ${pagesAlloc} pages, more than the ${slots} of a ${pageSize}-byte-page packet`,
      "out-of-range",
      at(F.pagesAlloc),
    );
  }
  const normal = getWireUint(v, 0, F.normalPages, false);
  if (normal > pagesAlloc) {
    fail(
      `packet has ${normal} pages but allocates ${pagesAlloc}`,
      "out-of-range",
      at(F.normalPages),
    );
  }
  const zero = getWireUint(v, 0, F.zeroPages, false);
  if (zero > pagesAlloc - normal) {
    fail(
      `packet has ${zero} zero pages but room for ${pagesAlloc - normal}`,
      "out-of-range",
      at(F.zeroPages),
    );
  }
  const nextPacketSize = getWireUint(v, 0, F.nextPacketSize, false);
  let dataByteLength: number;
  if ((flags & MULTIFD_FLAG_COMPRESSION_MASK) === MULTIFD_FLAG_NOCOMP) {
    dataByteLength = normal * pageSize;
  } else if (normal === 0) {
    if (nextPacketSize !== 0) {
      fail(
        `${compression} packet without pages announces ${nextPacketSize} payload bytes`,
        "bad-record",
        at(F.nextPacketSize),
      );
    }
    dataByteLength = 0;
  } else {
    if (nextPacketSize === 0) {
      fail(
        `${compression} packet with ${normal} pages has no payload`,
        "bad-record",
        at(F.nextPacketSize),
      );
    }
    if (nextPacketSize > MULTIFD_MAX_COMPRESSED_BYTES) {
      fail(
        `${compression} payload of ${nextPacketSize} bytes exceeds ${MULTIFD_MAX_COMPRESSED_BYTES}`,
        "too-large",
        at(F.nextPacketSize),
      );
    }
    dataByteLength = nextPacketSize;
  }
  const packetNum = getWireUint(v, 0, F.packetNum, false, {
    format: "migration",
    fileOffset: streamOffset,
  });
  const normalRamOffsets = new Array<number>(normal);
  const zeroRamOffsets = new Array<number>(zero);
  const table = MULTIFD_PACKET.byteLength;
  for (let i = 0; i < normal + zero; i++) {
    const p = table + MULTIFD_OFFSET_SLOT_SIZE * i;
    const hi = v.getUint32(p);
    if (hi > 0x1fffff) {
      fail(`page offset slot ${i} holds ${hex(hi)}…, beyond 2^53`, "too-large", streamOffset + p);
    }
    const ramOffset = hi * 0x1_0000_0000 + v.getUint32(p + 4);
    if (i < normal) normalRamOffsets[i] = ramOffset;
    else zeroRamOffsets[i - normal] = ramOffset;
  }
  return {
    record: {
      kind: "multifd-ram-packet",
      streamOffset,
      flags,
      sync: (flags & MULTIFD_FLAG_SYNC) !== 0,
      compression,
      pagesAlloc,
      normalRamOffsets,
      zeroRamOffsets,
      nextPacketSize,
      packetNum,
      ramBlock: cName(header, F.ramBlock.offset, F.ramBlock.width),
      header,
      data: EMPTY,
    },
    dataByteLength,
  };
}

/** Fields of a RAM packet header to write. */
export interface MultifdRamPacketFields {
  /** `flags`. */
  flags: number;
  /** `pages_alloc`. @default {the table size} */
  pagesAlloc?: number;
  /** Offsets of the pages with data. */
  normalRamOffsets: readonly number[];
  /** Offsets of zero pages. @default {[]} */
  zeroRamOffsets?: readonly number[];
  /** `next_packet_size`. @default {normal pages × page size} */
  nextPacketSize?: number;
  /** `packet_num`. */
  packetNum: number;
  /** RAMBlock idstr (at most 255 bytes). */
  ramBlock: string;
}

/**
 * Write a RAM packet header. Unused offset slots are zero, as QEMU >= 9.0
 * sends them. With `base`, the reserved fields (and the name field, when it
 * names the same block) are taken from `base`; without it they are zero.
 *
 * @param fields The fields.
 * @param pageSize Target page size.
 * @param base A header to start from (same page size).
 * @returns The header bytes.
 * @throws {RangeError} when the pages do not fit the table or a value its field.
 *
 * @example
 * ```ts
 * import { readMultifdRamPacketHeader, writeMultifdRamPacketHeader } from "@vmem-dump/vmem-dump/migration";
 * const h = writeMultifdRamPacketHeader(
 *   { flags: 0, normalRamOffsets: [0x2000], packetNum: 7, ramBlock: "pc.ram" },
 *   4096,
 * );
 * console.log(readMultifdRamPacketHeader(h, 0, 4096).dataByteLength); // 4096
 * ```
 */
export function writeMultifdRamPacketHeader(
  fields: MultifdRamPacketFields,
  pageSize: number,
  base?: Uint8Array,
): Uint8Array<ArrayBuffer> {
  checkMultifdPageSize(pageSize);
  const F = MULTIFD_PACKET.fields;
  const size = multifdRamPacketHeaderSize(pageSize);
  const out = new Uint8Array(size);
  if (base !== undefined) {
    if (base.byteLength !== size) throw new RangeError(`the base header is not ${size} bytes`);
    out.set(base);
  }
  const slots = multifdPageCount(pageSize);
  const zero = fields.zeroRamOffsets ?? [];
  const n = fields.normalRamOffsets.length + zero.length;
  const pagesAlloc = fields.pagesAlloc ?? slots;
  if (n > pagesAlloc || pagesAlloc > slots) {
    throw new RangeError(`${n} pages do not fit a packet of ${pagesAlloc} of ${slots} slots`);
  }
  const name = latin1Encode(fields.ramBlock);
  if (name.byteLength >= F.ramBlock.width) {
    throw new RangeError("ramblock names are at most 255 bytes");
  }
  const v = viewOf(out);
  setWireUint(v, 0, F.magic, MULTIFD_MAGIC, false);
  setWireUint(v, 0, F.version, MULTIFD_VERSION, false);
  setWireUint(v, 0, F.flags, fields.flags, false);
  setWireUint(v, 0, F.pagesAlloc, pagesAlloc, false);
  setWireUint(v, 0, F.normalPages, fields.normalRamOffsets.length, false);
  setWireUint(
    v,
    0,
    F.nextPacketSize,
    fields.nextPacketSize ?? fields.normalRamOffsets.length * pageSize,
    false,
  );
  setWireUint(v, 0, F.packetNum, fields.packetNum, false);
  setWireUint(v, 0, F.zeroPages, zero.length, false);
  // Keep the base's name field (and what follows its NUL) when it names the same block.
  if (base === undefined || cName(base, F.ramBlock.offset, F.ramBlock.width) !== fields.ramBlock) {
    out.fill(0, F.ramBlock.offset, F.ramBlock.offset + F.ramBlock.width);
    out.set(name, F.ramBlock.offset);
  }
  let p = MULTIFD_PACKET.byteLength;
  for (const list of [fields.normalRamOffsets, zero]) {
    for (const ramOffset of list) {
      v.setUint32(p, Math.floor(ramOffset / 0x1_0000_0000));
      v.setUint32(p + 4, ramOffset >>> 0);
      p += MULTIFD_OFFSET_SLOT_SIZE;
    }
  }
  out.fill(0, p); // unused slots: zero, as QEMU >= 9.0 sends them
  return out;
}

/** A device-state packet header and the size of the payload that follows it. */
export interface MultifdDeviceStatePacketHeader {
  /** The record, with an empty `data`. */
  record: MultifdDeviceStatePacketRecord;
  /** Payload bytes after the header. */
  dataByteLength: number;
}

/**
 * Read `MultiFDPacketDeviceState_t` (QEMU >= 10.0).
 *
 * @param header The 276 header bytes; kept by the record.
 * @param streamOffset Where the packet starts in the channel.
 * @returns The record (without payload) and the payload size.
 * @throws {FormatError} `bad-record` for an empty payload, `too-large` beyond the cap.
 */
export function readMultifdDeviceStatePacketHeader(
  header: Uint8Array,
  streamOffset: number,
): MultifdDeviceStatePacketHeader {
  const F = MULTIFD_PACKET_DEVICE_STATE.fields;
  const v = viewOf(header);
  const size = getWireUint(v, 0, F.nextPacketSize, false);
  const at = streamOffset + F.nextPacketSize.offset;
  if (size === 0) fail("device-state packet has no payload", "bad-record", at);
  if (size > MULTIFD_MAX_DEVICE_STATE_BYTES) {
    fail(
      `device-state payload of ${size} bytes exceeds ${MULTIFD_MAX_DEVICE_STATE_BYTES}`,
      "too-large",
      at,
    );
  }
  return {
    record: {
      kind: "multifd-device-state-packet",
      streamOffset,
      flags: getWireUint(v, 0, F.flags, false),
      idstr: cName(header, F.idstr.offset, F.idstr.width),
      instanceId: getWireUint(v, 0, F.instanceId, false),
      header,
      data: EMPTY,
    },
    dataByteLength: size,
  };
}

/**
 * The stream offset of a page's offset slot in a RAM packet (index over the
 * normal pages, then the zero pages), for reports.
 *
 * @param packet The packet.
 * @param index Slot index.
 * @returns Offset in the channel.
 */
export function multifdOffsetSlotStreamOffset(
  packet: MultifdRamPacketRecord,
  index: number,
): number {
  return packet.streamOffset + MULTIFD_PACKET.byteLength + MULTIFD_OFFSET_SLOT_SIZE * index;
}
