/**
 * The virtio-mem device model: one device's geometry, sizes and plug bitmap
 * (set = plugged), the limits QEMU puts on them, and the invariants every
 * device must satisfy however it was obtained (migration stream, JSON, QMP
 * reply, range list).
 *
 * @module
 */

import { bitmapByteLength, firstBitBeyond, isPowerOfTwo, popcount } from "../io/bits.ts";
import { hex } from "../io/text.ts";
import { invariantError as invariant, isU64 } from "./_checks.ts";

/** Smallest virtio-mem block size QEMU accepts (1 MiB). */
export const VIRTIO_MEM_MIN_BLOCK_SIZE = 1 << 20;

/** NUMA nodes QEMU supports (MAX_NODES in include/sysemu/numa.h): a node id is below this. */
export const QEMU_MAX_NODES = 128;

/**
 * Most device blocks (bitmap bits) accepted for one virtio-mem device, from
 * any source: 2^27 blocks are 128 TiB at the smallest block size, and the
 * bitmap is 16 MiB. A cap so that no bitmap is sized by an unchecked field.
 */
export const VIRTIO_MEM_MAX_BLOCKS = 1 << 27;

/**
 * One virtio-mem device: geometry, sizes and the plug bitmap.
 *
 * @example
 * ```ts
 * import type { VmemDevice } from "@vmem-dump/vmem-dump";
 * const device: VmemDevice = {
 *   path: "0000:00:01.0", ramBlock: "0000:00:01.0/vmem0mem",
 *   gpa: 0x1_0000_0000, regionSize: 0x1000_0000, blockSize: 0x20_0000, node: 0,
 *   usableRegionSize: undefined, size: 0x20_0000, requestedSize: undefined,
 *   bitmap: new Uint8Array([0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
 * };
 * console.log(device.regionSize / device.blockSize); // 128 blocks
 * ```
 */
export interface VmemDevice {
  /** PCI path (the device path P of its sections), e.g. `0000:00:01.0`; `""` when unknown. */
  path: string;
  /**
   * RAMBlock idstr, e.g. `0000:00:01.0/vmem0mem`. When `path` is `""` this may
   * be the memory backend id alone (`vmem0mem`), matched as the last
   * component of an idstr; `""` when unknown.
   */
  ramBlock: string;
  /** Guest-physical base of the region (`memaddr`). */
  gpa: number;
  /** Region size in bytes (the memory backend size). */
  regionSize: number;
  /** Device block size in bytes (power of two, at least 1 MiB). */
  blockSize: number;
  /** NUMA node. */
  node: number;
  /** Usable region size in bytes, when known. */
  usableRegionSize: number | undefined;
  /** Plugged bytes (`size` in QEMU). */
  size: number;
  /** Requested size in bytes, when known. */
  requestedSize: number | undefined;
  /** One bit per block, LSB-first bytes: bit i is byte `i >> 3`, bit `i & 7`; set = plugged. */
  bitmap: Uint8Array;
}

/**
 * Check every invariant of one device and throw a `FormatError` (format
 * `plugmap`, code `invariant`) naming the first that fails:
 *
 * - block size is a power of two of at least 1 MiB; node is below 128 (QEMU's MAX_NODES);
 * - region size is a non-zero multiple of the block size, memaddr is aligned to it;
 * - the bitmap has exactly `ceil(blocks / 8)` bytes and no bit past the last block;
 * - `size == popcount × block size`;
 * - when known: `size <= usable <= region size`, usable aligned to the block
 *   size, no plugged block at or beyond usable; `requested <= region size`,
 *   requested aligned, `requested <= usable`.
 *
 * @param device The device.
 * @param label How to name the device in messages.
 * @throws {FormatError} when an invariant does not hold.
 *
 * @example
 * ```ts
 * import { validateVmemDevice } from "@vmem-dump/vmem-dump/vmem";
 * try {
 *   validateVmemDevice({
 *     path: "", ramBlock: "", gpa: 0, regionSize: 1 << 21, blockSize: 1 << 20, node: 0,
 *     usableRegionSize: undefined, size: 0, requestedSize: undefined, bitmap: new Uint8Array([1]),
 *   });
 * } catch (e) {
 *   console.log((e as Error).message); // size 0x0 is not 1 plugged blocks × ...
 * }
 * ```
 */
export function validateVmemDevice(device: VmemDevice, label = "device"): void {
  const d = device;
  if (typeof d.path !== "string" || typeof d.ramBlock !== "string") {
    throw invariant(`${label}: path and ramBlock must be strings`);
  }
  // No QEMU device path or RAMBlock idstr holds these (object ids are letters, digits, '-',
  // '.', '_'), and the range-list form could not carry them (whitespace separates its fields,
  // '#' starts a comment).
  for (const [name, v] of [["path", d.path], ["ramBlock", d.ramBlock]] as const) {
    if (/[\s#]/.test(v) || [...v].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) {
      throw invariant(
        `${label}: ${name} ${JSON.stringify(v)} contains whitespace, '#' or a control character`,
      );
    }
  }
  for (
    const [name, v] of [["memaddr", d.gpa], ["region size", d.regionSize], [
      "block size",
      d.blockSize,
    ], [
      "size",
      d.size,
    ]] as const
  ) {
    if (!isU64(v)) throw invariant(`${label}: ${name} ${v} is not a non-negative safe integer`);
  }
  if (!Number.isInteger(d.node) || d.node < 0 || d.node >= QEMU_MAX_NODES) {
    throw invariant(`${label}: node ${d.node} is not a NUMA node below ${QEMU_MAX_NODES}`);
  }
  if (d.blockSize < VIRTIO_MEM_MIN_BLOCK_SIZE || !isPowerOfTwo(d.blockSize)) {
    throw invariant(
      `${label}: block size ${hex(d.blockSize)} is not a power of two of at least 1 MiB`,
    );
  }
  if (d.regionSize === 0 || d.regionSize % d.blockSize !== 0) {
    throw invariant(
      `${label}: region size ${hex(d.regionSize)} is not a non-zero multiple of block size ${
        hex(d.blockSize)
      }`,
    );
  }
  if (d.gpa % d.blockSize !== 0) {
    throw invariant(
      `${label}: memaddr ${hex(d.gpa)} is not aligned to block size ${hex(d.blockSize)}`,
    );
  }
  if (!Number.isSafeInteger(d.gpa + d.regionSize)) {
    throw invariant(`${label}: region ${hex(d.gpa)}+${hex(d.regionSize)} exceeds 2^53`);
  }
  const blocks = d.regionSize / d.blockSize;
  if (blocks > VIRTIO_MEM_MAX_BLOCKS) {
    throw invariant(`${label}: ${blocks} blocks are too many (at most ${VIRTIO_MEM_MAX_BLOCKS})`);
  }
  if (!(d.bitmap instanceof Uint8Array) || d.bitmap.byteLength !== bitmapByteLength(blocks)) {
    throw invariant(
      `${label}: bitmap must have ${bitmapByteLength(blocks)} bytes for ${blocks} blocks`,
    );
  }
  const stray = firstBitBeyond(d.bitmap, blocks);
  if (stray >= 0) {
    throw invariant(`${label}: bitmap sets bit ${stray} beyond the last block ${blocks - 1}`);
  }
  const plugged = popcount(d.bitmap);
  if (d.size !== plugged * d.blockSize) {
    throw invariant(
      `${label}: size ${hex(d.size)} is not ${plugged} plugged blocks × block size ${
        hex(d.blockSize)
      }`,
    );
  }
  if (d.usableRegionSize !== undefined) {
    const u = d.usableRegionSize;
    if (!isU64(u)) {
      throw invariant(`${label}: usable region size ${u} is not a non-negative safe integer`);
    }
    if (u > d.regionSize || u < d.size) {
      throw invariant(
        `${label}: usable region size ${hex(u)} is not between size ${
          hex(d.size)
        } and region size ${hex(d.regionSize)}`,
      );
    }
    if (u % d.blockSize !== 0) {
      throw invariant(
        `${label}: usable region size ${hex(u)} is not aligned to block size ${hex(d.blockSize)}`,
      );
    }
    const beyond = firstBitBeyond(d.bitmap, u / d.blockSize);
    if (beyond >= 0) {
      throw invariant(`${label}: block ${beyond} is plugged beyond usable region size ${hex(u)}`);
    }
  }
  if (d.requestedSize !== undefined) {
    const r = d.requestedSize;
    if (!isU64(r)) {
      throw invariant(`${label}: requested size ${r} is not a non-negative safe integer`);
    }
    if (r > d.regionSize || r % d.blockSize !== 0) {
      throw invariant(
        `${label}: requested size ${hex(r)} is not a block-aligned size within region size ${
          hex(d.regionSize)
        }`,
      );
    }
    if (d.usableRegionSize !== undefined && r > d.usableRegionSize) {
      throw invariant(
        `${label}: requested size ${hex(r)} exceeds usable region size ${hex(d.usableRegionSize)}`,
      );
    }
  }
}
