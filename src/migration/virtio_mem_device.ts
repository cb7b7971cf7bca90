/**
 * Structural parser of the `P/virtio-mem` device section body: the
 * virtio-pci transport state, the virtio core header and queues, the
 * `virtio-mem-device` vmstate fields (late or early layout), and the virtio
 * core subsections that follow, so that the exact body length is known.
 *
 * Layout (all big-endian unless noted; hw/virtio/virtio.c `virtio_save`,
 * hw/virtio/virtio-pci.c, hw/pci/pci.c, hw/pci/msix.c, hw/virtio/virtio-mem.c):
 *
 * | Part | Bytes |
 * |---|---|
 * | PCI vmstate: be32 version (2), config space (256, or 4096 for PCI Express), 4 × be32 IRQ state (0/1) | 276 or 4116 |
 * | MSI-X (only when the config space has an MSI-X capability): table (16 per vector), PBA (ceil(vectors/8)), be16 config vector | 16v + ⌈v/8⌉ + 2 |
 * | u8 status, u8 isr, be16 queue_sel, be32 guest features (low 32 bits) | 8 |
 * | be32 config_len, config bytes (`struct virtio_mem_config`, little-endian) | 4 + len |
 * | be32 queue count; per queue be32 size, be64 desc, be16 last_avail_idx, [be16 MSI-X vector] | 4 + 14/16 per queue |
 * | `virtio-mem-device` fields, late layout: be64 addr, be64 region_size, be64 block_size, be32 node, be64 usable_region_size, be64 size, be64 requested_size, bitmap (be64 words) | 52 + 8⌈N/64⌉ |
 * | `virtio-mem-device` fields, early layout: be64 usable_region_size, be64 requested_size | 16 |
 * | subsections of `virtio` (0x05, cstr8 name, be32 version, body), e.g. `virtio/64bit_features`, `virtio/virtqueues`, `virtio/extra_state` (nesting `virtio_pci/modern_state`), `virtio/started` | variable |
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { isPowerOfTwo, popcount } from "../io/bits.ts";
import { tryGetSafeU64 } from "../io/endian.ts";
import { hex, latin1Decode } from "../io/text.ts";
import {
  QEMU_MAX_NODES,
  VIRTIO_MEM_MAX_BLOCKS,
  VIRTIO_MEM_MIN_BLOCK_SIZE,
} from "../vmem/vmem_device.ts";
import type { RamBlockInfo, VirtioMemDeviceState, VirtioMemEarlyRecord } from "./types.ts";
import { QEMU_VM_SECTION_FOOTER, QEMU_VM_SUBSECTION } from "./constants.ts";
import { firstWireBitBeyond } from "./wire_bitmap.ts";
import { nulMisreading } from "./_section_identity.ts";

/** Context for {@linkcode parseVirtioMemDeviceBody}. */
export interface VirtioMemDeviceContext {
  /** Device path P (the idstr without `/virtio-mem`). */
  devicePath: string;
  /** The MEM_SIZE list of the stream. */
  ramBlocks: readonly RamBlockInfo[];
  /** The early section of this device, when the stream had one (selects the early layout). @default {undefined} */
  early?: VirtioMemEarlyRecord | undefined;
  /** Stream offset of `body[0]` (for error offsets). */
  bodyStreamOffset: number;
  /** Section id; when given, the footer `0x7E` + be32 id must follow the body (if inside the window). @default {undefined} */
  sectionId?: number | undefined;
}

/** The parsed body: its exact length (the footer follows) and the device state. */
export interface VirtioMemDeviceBody {
  /** Bytes of the section body; the footer starts at `body[bodyLength]`. */
  bodyLength: number;
  /** The parsed `virtio-mem-device` state. */
  state: VirtioMemDeviceState;
}

/** PCI vendor id of virtio devices. */
const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
/** PCI device id of a modern virtio-mem device (0x1040 + VIRTIO_ID_MEM 24). */
const PCI_DEVICE_ID_VIRTIO_MEM = 0x1058;
/** Conventional PCI config space size. */
const PCI_CONFIG_SPACE_SIZE = 256;
/** PCI Express config space size. */
const PCIE_CONFIG_SPACE_SIZE = 4096;
/** Status register bit: capability list present. */
const PCI_STATUS_CAP_LIST = 0x10;
/** Offset of the first capability pointer. */
const PCI_CAPABILITY_LIST = 0x34;
/** Capability id of MSI-X. */
const PCI_CAP_ID_MSIX = 0x11;
/** Capability id of PCI Express. */
const PCI_CAP_ID_EXP = 0x10;
/** MSI-X message control: table size minus one. */
const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
/** Bytes per MSI-X table entry. */
const PCI_MSIX_ENTRY_SIZE = 16;
/** The PCIDevice vmstate version QEMU writes. */
const PCI_DEVICE_VMSTATE_VERSION = 2;
/** Queues a virtio device can have. */
const VIRTIO_QUEUE_MAX = 1024;
/** Largest virtqueue size. */
const VIRTQUEUE_MAX_SIZE = 1024;
/** "No MSI-X vector". */
const VIRTIO_NO_VECTOR = 0xffff;
/** Largest config_len we accept (virtio-mem uses 56). */
const MAX_CONFIG_LEN = 4096;
/** Bytes of `struct virtio_mem_config`. */
const VIRTIO_MEM_CONFIG_SIZE = 56;

/** A known subsection: where it may appear and how long its own fields are. */
interface SubsectionSpec {
  /** Name of the vmstate whose subsection it is. */
  parent: string;
  /** Bytes of its fields. */
  fieldBytes: number;
  /** A nested vmstate (no fields) whose subsections follow the fields, e.g. `virtio_pci` inside `virtio/extra_state`. */
  nested?: string;
}

/** Subsections of the virtio core and of the virtio-pci extra state (hw/virtio/virtio.c, hw/virtio/virtio-pci.c). */
const SUBSECTIONS = new Map<string, SubsectionSpec>([
  ["virtio/device_endian", { parent: "virtio", fieldBytes: 1 }],
  ["virtio/128bit_features", { parent: "virtio", fieldBytes: 8 }],
  ["virtio/64bit_features", { parent: "virtio", fieldBytes: 8 }],
  // VIRTIO_QUEUE_MAX × (be64 avail, be64 used)
  ["virtio/virtqueues", { parent: "virtio", fieldBytes: VIRTIO_QUEUE_MAX * 16 }],
  // VIRTIO_QUEUE_MAX × be32 num_default
  ["virtio/ringsize", { parent: "virtio", fieldBytes: VIRTIO_QUEUE_MAX * 4 }],
  ["virtio/broken", { parent: "virtio", fieldBytes: 1 }],
  ["virtio/extra_state", { parent: "virtio", fieldBytes: 0, nested: "virtio_pci" }],
  ["virtio/started", { parent: "virtio", fieldBytes: 1 }],
  // VIRTIO_QUEUE_MAX × (be16, u8, be16, u8, be32)
  ["virtio/packed_virtqueues", { parent: "virtio", fieldBytes: VIRTIO_QUEUE_MAX * 10 }],
  ["virtio/disabled", { parent: "virtio", fieldBytes: 1 }],
  // be32 dfselect, be32 gfselect, 2 × be32 guest features, VIRTIO_QUEUE_MAX × 28-byte queue state
  ["virtio_pci/modern_state", { parent: "virtio_pci", fieldBytes: 16 + VIRTIO_QUEUE_MAX * 28 }],
]);

/** Thrown inside the parser when the window ends too early: the caller gets `undefined`. */
class ShortWindow extends Error {}

/** Thrown inside the parser when the bytes are not a virtio-pci virtio-mem body: the caller gets `undefined`. */
class NotRecognised extends Error {}

/** Cursor over the body window with bounds checks. */
class Cursor {
  readonly view: DataView;
  p = 0;
  constructor(readonly body: Uint8Array, readonly streamOffset: number) {
    this.view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  }
  need(n: number): void {
    if (this.p + n > this.body.byteLength) throw new ShortWindow();
  }
  u8(): number {
    this.need(1);
    return this.body[this.p++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.p);
    this.p += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.p);
    this.p += 4;
    return v;
  }
  /** be64 as a number; `undefined` when it exceeds 2^53 (then the position is still advanced). */
  u64(): number | undefined {
    this.need(8);
    const v = tryGetSafeU64(this.view, this.p, false);
    this.p += 8;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.body.subarray(this.p, this.p + n);
    this.p += n;
    return b;
  }
  skip(n: number): void {
    this.need(n);
    this.p += n;
  }
  /** Stream offset of body position `at`. */
  at(at: number): number {
    return this.streamOffset + at;
  }
}

function invalid(message: string, streamOffset: number): FormatError {
  return new FormatError(`Invalid virtio-mem device state: ${message}`, {
    format: "migration",
    code: "bad-virtio-mem",
    offset: streamOffset,
  });
}

/** What the transport part told us. */
interface Transport {
  configSpaceSize: number;
  msixVectors: number;
  /** The virtio-mem config as the guest last read it (little-endian), if config_len allows. */
  config: Uint8Array | undefined;
}

/** Walk the capability list of a saved config space: MSI-X table size and whether it is PCI Express. */
function readCapabilities(config: Uint8Array): { msixVectors: number; express: boolean } {
  const status = config[6]! | (config[7]! << 8);
  if ((status & PCI_STATUS_CAP_LIST) === 0) return { msixVectors: 0, express: false };
  let msixVectors = 0;
  let express = false;
  const seen = new Set<number>();
  let ptr = config[PCI_CAPABILITY_LIST]! & 0xfc;
  while (ptr !== 0) {
    // Capabilities live after the standard header; a loop or a pointer into the header is malformed.
    if (ptr < 0x40 || ptr > PCI_CONFIG_SPACE_SIZE - 4 || seen.has(ptr)) throw new NotRecognised();
    seen.add(ptr);
    const id = config[ptr]!;
    if (id === PCI_CAP_ID_MSIX) {
      if (msixVectors !== 0) throw new NotRecognised();
      const control = config[ptr + 2]! | (config[ptr + 3]! << 8);
      msixVectors = (control & PCI_MSIX_FLAGS_QSIZE) + 1;
    } else if (id === PCI_CAP_ID_EXP) {
      express = true;
    }
    ptr = config[ptr + 1]! & 0xfc;
  }
  return { msixVectors, express };
}

/** Parse the virtio-pci transport part and the virtio core header and queues. */
function readTransport(c: Cursor): Transport {
  // PCIDevice vmstate: be32 version_id, config space, 4 × be32 IRQ state.
  if (c.u32() !== PCI_DEVICE_VMSTATE_VERSION) throw new NotRecognised();
  c.need(PCI_CONFIG_SPACE_SIZE);
  const head = c.body.subarray(c.p, c.p + PCI_CONFIG_SPACE_SIZE);
  const vendor = head[0]! | (head[1]! << 8);
  const device = head[2]! | (head[3]! << 8);
  if (vendor !== PCI_VENDOR_ID_REDHAT_QUMRANET || device !== PCI_DEVICE_ID_VIRTIO_MEM) {
    throw new NotRecognised();
  }
  const caps = readCapabilities(head);
  const configSpaceSize = caps.express ? PCIE_CONFIG_SPACE_SIZE : PCI_CONFIG_SPACE_SIZE;
  c.skip(configSpaceSize);
  for (let pin = 0; pin < 4; pin++) {
    const level = c.u32();
    if (level > 1) throw new NotRecognised();
  }
  // msix_save + config vector, only with MSI-X.
  const vectors = caps.msixVectors;
  if (vectors > 0) {
    c.skip(vectors * PCI_MSIX_ENTRY_SIZE + Math.ceil(vectors / 8));
    const configVector = c.u16();
    if (configVector !== VIRTIO_NO_VECTOR && configVector >= vectors) throw new NotRecognised();
  }
  // virtio core: status, isr, queue_sel, guest features (low 32), config.
  c.skip(2);
  const queueSel = c.u16();
  if (queueSel >= VIRTIO_QUEUE_MAX) throw new NotRecognised();
  c.skip(4);
  const configLen = c.u32();
  if (configLen > MAX_CONFIG_LEN) throw new NotRecognised();
  const configBytes = c.bytes(configLen);
  const numQueues = c.u32();
  if (numQueues > VIRTIO_QUEUE_MAX) throw new NotRecognised();
  for (let q = 0; q < numQueues; q++) {
    const size = c.u32();
    if (size > VIRTQUEUE_MAX_SIZE) throw new NotRecognised();
    c.skip(8 + 2); // desc GPA, last_avail_idx
    if (vectors > 0) {
      const vector = c.u16();
      if (vector !== VIRTIO_NO_VECTOR && vector >= vectors) throw new NotRecognised();
    }
  }
  return {
    configSpaceSize,
    msixVectors: vectors,
    config: configLen >= VIRTIO_MEM_CONFIG_SIZE ? configBytes : undefined,
  };
}

/**
 * The RAMBlock of a virtio-mem device: idstr starting with `P/` and
 * `usedLength == regionSize` (migration-stream spec §7.2).
 *
 * @param devicePath Device path P.
 * @param regionSize Region size from the device state.
 * @param ramBlocks The MEM_SIZE list.
 * @returns The block, or `undefined` when none matches.
 * @throws {FormatError} (code `bad-virtio-mem`) when several blocks match.
 *
 * @example
 * ```ts
 * import { findVirtioMemRamBlock } from "./virtio_mem_device.ts";
 * const blocks = [{ idstr: "0000:00:01.0/vmem0mem", usedLength: 0x1000_0000 }, { idstr: "pc.ram", usedLength: 0x800_0000 }];
 * console.log(findVirtioMemRamBlock("0000:00:01.0", 0x1000_0000, blocks)?.idstr); // "0000:00:01.0/vmem0mem"
 * ```
 */
export function findVirtioMemRamBlock(
  devicePath: string,
  regionSize: number,
  ramBlocks: readonly RamBlockInfo[],
): RamBlockInfo | undefined {
  const prefix = devicePath + "/";
  const found = ramBlocks.filter((b) => b.idstr.startsWith(prefix) && b.usedLength === regionSize);
  if (found.length > 1) {
    throw invalid(
      `RAMBlocks ${
        found.map((b) => JSON.stringify(b.idstr)).join(", ")
      } all match device ${devicePath} of region size ${hex(regionSize)}`,
      0,
    );
  }
  return found[0];
}

/**
 * Cross-check against the virtio-mem config space copy (little-endian), when
 * the guest ever read it: block size, node, addr and region size never change.
 * Its plugged/usable/requested fields may be stale and are not compared.
 */
function checkConfigCopy(
  config: Uint8Array | undefined,
  want: { blockSize: number; node: number; gpa: number; regionSize: number },
  where: number,
): void {
  if (config === undefined) return;
  const v = new DataView(config.buffer, config.byteOffset, config.byteLength);
  const u64le = (o: number) => tryGetSafeU64(v, o, true) ?? -1; // -1: never equal to a valid field
  const blockSize = u64le(0);
  if (blockSize === 0) return; // never read by the guest
  const node = v.getUint16(8, true);
  const gpa = u64le(16);
  const regionSize = u64le(24);
  if (
    blockSize !== want.blockSize || node !== want.node || gpa !== want.gpa ||
    regionSize !== want.regionSize
  ) {
    throw invalid(
      `device fields (addr ${hex(want.gpa)}, region ${hex(want.regionSize)}, block ${
        hex(want.blockSize)
      }, node ${want.node}) ` +
        `disagree with the config space copy (addr ${hex(gpa)}, region ${hex(regionSize)}, block ${
          hex(blockSize)
        }, node ${node})`,
      where,
    );
  }
}

/** Usable/requested checks shared by both layouts. */
function checkSizes(
  s: {
    regionSize: number;
    blockSize: number;
    size: number;
    usable: number;
    requested: number;
    wire: Uint8Array;
  },
  at: { usable: number; requested: number },
): void {
  if (s.usable > s.regionSize || s.usable < s.size || s.usable % s.blockSize !== 0) {
    throw invalid(
      `usable region size ${hex(s.usable)} is not a block-aligned size between size ${
        hex(s.size)
      } and region size ${hex(s.regionSize)}`,
      at.usable,
    );
  }
  const beyond = firstWireBitBeyond(s.wire, s.usable / s.blockSize);
  if (beyond >= 0 && beyond < s.regionSize / s.blockSize) {
    throw invalid(
      `block ${beyond} is plugged beyond usable region size ${hex(s.usable)}`,
      at.usable,
    );
  }
  if (s.requested > s.usable || s.requested % s.blockSize !== 0) {
    throw invalid(
      `requested size ${hex(s.requested)} is not a block-aligned size within usable region size ${
        hex(s.usable)
      }`,
      at.requested,
    );
  }
}

/** Walk subsections of vmstate `parent` starting at `c.p`; returns false at an unknown subsection (cursor on it). */
function walkSubsections(c: Cursor, parent: string, depth: number): boolean {
  if (depth > 4) throw new NotRecognised();
  while (c.p < c.body.byteLength && c.body[c.p] === QEMU_VM_SUBSECTION) {
    const start = c.p;
    c.need(2);
    const len = c.body[c.p + 1]!;
    c.need(2 + len + 4);
    const name = latin1Decode(c.body.subarray(c.p + 2, c.p + 2 + len));
    // QEMU looks subsections up as C strings: a NUL would make it read another name.
    const misread = nulMisreading(name);
    if (misread !== undefined) {
      throw invalid(`subsection name ${JSON.stringify(name)} ${misread}`, c.at(c.p + 2));
    }
    // QEMU ends a level at a subsection whose name does not start with the vmstate's name.
    if (!name.startsWith(parent)) return true;
    const version = c.view.getUint32(c.p + 2 + len);
    const spec = SUBSECTIONS.get(name);
    if (spec === undefined || spec.parent !== parent || version !== 1) {
      c.p = start;
      return false;
    }
    c.p += 2 + len + 4;
    c.skip(spec.fieldBytes);
    if (spec.nested !== undefined && !walkSubsections(c, spec.nested, depth + 1)) return false;
    if (!walkSubsections(c, name, depth + 1)) return false;
  }
  return true;
}

/** Position of the first `0x7E` + be32 `sectionId` at or after `from`, or -1. */
function findFooter(c: Cursor, from: number, sectionId: number): number {
  const b = c.body;
  for (
    let i = b.indexOf(QEMU_VM_SECTION_FOOTER, from);
    i >= 0 && i + 5 <= b.byteLength;
    i = b.indexOf(QEMU_VM_SECTION_FOOTER, i + 1)
  ) {
    if (c.view.getUint32(i + 1) === sectionId) return i;
  }
  return -1;
}

/**
 * Parse the body of a `P/virtio-mem` FULL section structurally and find
 * its exact length.
 *
 * The transport part is parsed field by field: PCI config space size from a
 * PCI Express capability, MSI-X table size from the MSI-X capability of the
 * saved config space (virtio-mem-pci has 2 vectors with ≥10.0 machine types,
 * none before). The layout of the `virtio-mem-device` fields follows from
 * `ctx.early`: with an early section only usable and requested size are
 * here; without, the sanity block, sizes and bitmap. The virtio core
 * subsections after the fields are walked by name and known size; at an
 * unknown subsection the end is taken at the first `0x7E` + `sectionId`
 * (only when `ctx.sectionId` is given).
 *
 * Result:
 * - `undefined` when the bytes are not a virtio-pci virtio-mem body (vendor /
 *   device id, PCI vmstate version, IRQ levels, capability list, queue
 *   counts and vectors do not fit), when the late-layout region size matches
 *   no RAMBlock `P/…` of that size, or when the window ends too early;
 * - a `FormatError` (code `bad-virtio-mem`) when the body is recognised but
 *   its state is impossible: invariants (block size, alignment,
 *   `size == popcount × block size`, `size ≤ usable ≤ region`, requested),
 *   a disagreement with the early section or the config-space copy, broken
 *   subsections or a footer that does not follow.
 *
 * @param body The body bytes, from the first body byte; may extend beyond the section.
 * @param ctx Device path, RAMBlock list, early section, stream offset, section id.
 * @returns The body length and the parsed state (the bitmap is a copy), or `undefined`.
 * @throws {FormatError} (code `bad-virtio-mem`) for a recognised but invalid state.
 *
 * @example Parse a device section body cut from a file
 * ```ts ignore
 * import { parseVirtioMemDeviceBody } from "@vmem-dump/vmem-dump/migration";
 * const parsed = parseVirtioMemDeviceBody(bodyBytes, {
 *   devicePath: "0000:00:01.0",
 *   ramBlocks: [{ idstr: "0000:00:01.0/vmem0mem", usedLength: 0x1000_0000 }],
 *   bodyStreamOffset: 110440589,
 *   sectionId: 40,
 * });
 * console.log(parsed?.state.size);
 * ```
 */
export function parseVirtioMemDeviceBody(
  body: Uint8Array,
  ctx: VirtioMemDeviceContext,
): VirtioMemDeviceBody | undefined {
  const c = new Cursor(body, ctx.bodyStreamOffset);
  try {
    const transport = readTransport(c);
    const fieldsOffset = c.p;
    let state: VirtioMemDeviceState;
    if (ctx.early !== undefined) {
      const e = ctx.early;
      const usableAt = c.p;
      const usable = c.u64();
      const requestedAt = c.p;
      const requested = c.u64();
      // The fields are followed by a virtio subsection or the footer.
      const next = c.p < body.byteLength ? body[c.p] : undefined;
      if (next !== undefined && next !== QEMU_VM_SUBSECTION && next !== QEMU_VM_SECTION_FOOTER) {
        throw new NotRecognised();
      }
      if (usable === undefined) throw invalid("usable region size exceeds 2^53", c.at(usableAt));
      if (requested === undefined) throw invalid("requested size exceeds 2^53", c.at(requestedAt));
      if (e.blockSize > 0 && e.regionSize > 0) {
        checkSizes(
          {
            regionSize: e.regionSize,
            blockSize: e.blockSize,
            size: e.size,
            usable,
            requested,
            wire: e.bitmap,
          },
          { usable: c.at(usableAt), requested: c.at(requestedAt) },
        );
      }
      checkConfigCopy(transport.config, e, c.at(fieldsOffset));
      state = {
        layout: "early",
        configSpaceSize: transport.configSpaceSize,
        msixVectors: transport.msixVectors,
        fieldsOffset,
        usableRegionSize: usable,
        requestedSize: requested,
      };
    } else {
      const gpaAt = c.p;
      const gpa = c.u64();
      const regionAt = c.p;
      const regionSize = c.u64();
      const blockAt = c.p;
      const blockSize = c.u64();
      const nodeAt = c.p;
      const node = c.u32();
      const usableAt = c.p;
      const usable = c.u64();
      const sizeAt = c.p;
      const size = c.u64();
      const requestedAt = c.p;
      const requested = c.u64();
      // Anchor: the region size is the used length of the device's RAMBlock.
      if (
        regionSize === undefined ||
        findVirtioMemRamBlock(ctx.devicePath, regionSize, ctx.ramBlocks) === undefined
      ) {
        throw new NotRecognised();
      }
      if (
        blockSize === undefined || blockSize < VIRTIO_MEM_MIN_BLOCK_SIZE || !isPowerOfTwo(blockSize)
      ) {
        throw invalid(
          `block size ${
            blockSize === undefined ? ">= 2^53" : hex(blockSize)
          } is not a power of two of at least 1 MiB`,
          c.at(blockAt),
        );
      }
      if (regionSize === 0 || regionSize % blockSize !== 0) {
        throw invalid(
          `region size ${hex(regionSize)} is not a non-zero multiple of block size ${
            hex(blockSize)
          }`,
          c.at(regionAt),
        );
      }
      if (gpa === undefined || gpa % blockSize !== 0 || !Number.isSafeInteger(gpa + regionSize)) {
        throw invalid(
          `memaddr ${gpa === undefined ? ">= 2^53" : hex(gpa)} is not aligned to block size ${
            hex(blockSize)
          }`,
          c.at(gpaAt),
        );
      }
      if (node >= QEMU_MAX_NODES) {
        throw invalid(`node ${node} is not below ${QEMU_MAX_NODES}`, c.at(nodeAt));
      }
      const bits = regionSize / blockSize;
      if (bits > VIRTIO_MEM_MAX_BLOCKS) {
        throw invalid(`${bits} blocks are too many`, c.at(regionAt));
      }
      const bitmapAt = c.p;
      const wire = c.bytes(8 * Math.ceil(bits / 64));
      if (size === undefined) throw invalid("size exceeds 2^53", c.at(sizeAt));
      if (usable === undefined) throw invalid("usable region size exceeds 2^53", c.at(usableAt));
      if (requested === undefined) throw invalid("requested size exceeds 2^53", c.at(requestedAt));
      const stray = firstWireBitBeyond(wire, bits);
      if (stray >= 0) {
        throw invalid(`bitmap sets bit ${stray} beyond the last block ${bits - 1}`, c.at(bitmapAt));
      }
      const plugged = popcount(wire);
      if (size !== plugged * blockSize) {
        throw invalid(
          `size ${hex(size)} is not ${plugged} plugged blocks × block size ${hex(blockSize)}`,
          c.at(sizeAt),
        );
      }
      checkSizes(
        { regionSize, blockSize, size, usable, requested, wire },
        { usable: c.at(usableAt), requested: c.at(requestedAt) },
      );
      checkConfigCopy(transport.config, { blockSize, node, gpa, regionSize }, c.at(fieldsOffset));
      state = {
        layout: "late",
        configSpaceSize: transport.configSpaceSize,
        msixVectors: transport.msixVectors,
        fieldsOffset,
        usableRegionSize: usable,
        requestedSize: requested,
        gpa,
        regionSize,
        blockSize,
        node,
        size,
        bitmap: wire.slice(),
      };
    }
    // Subsections of the virtio core, then the footer.
    const afterFields = c.p;
    let end: number;
    try {
      if (walkSubsections(c, "virtio", 0)) {
        end = c.p;
      } else {
        if (ctx.sectionId === undefined) {
          throw invalid(
            "unknown virtio subsection and no section id to find the footer",
            c.at(c.p),
          );
        }
        end = findFooter(c, c.p, ctx.sectionId);
        if (end < 0) throw new ShortWindow();
      }
    } catch (e) {
      if (e instanceof ShortWindow && body.byteLength >= afterFields + (1 << 20)) {
        throw invalid("virtio subsections run past the look-ahead window", c.at(afterFields));
      }
      throw e;
    }
    if (ctx.sectionId !== undefined && end + 5 <= body.byteLength) {
      const view = c.view;
      if (body[end] !== QEMU_VM_SECTION_FOOTER || view.getUint32(end + 1) !== ctx.sectionId) {
        throw invalid(
          `the section footer 0x7e ${hex(ctx.sectionId)} does not follow the virtio subsections`,
          c.at(end),
        );
      }
    }
    return { bodyLength: end, state };
  } catch (e) {
    if (e instanceof ShortWindow || e instanceof NotRecognised) return undefined;
    throw e;
  }
}
