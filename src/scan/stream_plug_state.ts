/**
 * The plug state a migration stream carries about itself, learnt record by
 * record: the `virtio-mem-device-early` sections (QEMU >= 8.0 machine types,
 * before any RAM) and the `virtio-mem` device sections after all RAM (their
 * late layout holds the bitmap, their early layout only usable and requested
 * sizes).
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import type {
  MigrationRecord,
  RamBlockInfo,
  VirtioMemDeviceRecord,
  VirtioMemEarlyRecord,
} from "../migration/types.ts";
import { PlugMap, type VmemDevice } from "../vmem/plug_map.ts";

/** Where a stream's plug state came from. */
export type StreamPlugStateSource = "stream-early" | "stream-late" | "stream-early+late";

function badState(message: string, offset: number, cause?: unknown): FormatError {
  return new FormatError(
    `Cannot use the virtio-mem plug state of the stream: ${message}`,
    { format: "migration", code: "bad-virtio-mem", offset },
    cause === undefined ? undefined : { cause },
  );
}

/** QEMU's wire bitmap (be64 words, bit i of word w = block 64w+i) as LSB-first bytes, trimmed. */
function lsbBitmap(wire: Uint8Array, blocks: number, offset: number): Uint8Array<ArrayBuffer> {
  const words = Math.ceil(blocks / 64);
  if (wire.byteLength < words * 8) {
    throw badState(`bitmap of ${wire.byteLength} bytes is too short for ${blocks} blocks`, offset);
  }
  const out = new Uint8Array(Math.ceil(blocks / 8));
  for (let k = 0; k < words; k++) {
    for (let j = 0; j < 8; j++) {
      const i = 8 * k + j;
      const byte = wire[8 * k + 7 - j]!;
      if (i < out.byteLength) {
        // Bits past the last block must be clear.
        const valid = Math.min(8, blocks - i * 8);
        if (valid < 8 && (byte >>> valid) !== 0) {
          throw badState(`bitmap sets bits past block ${blocks - 1}`, offset);
        }
        out[i] = byte;
      } else if (byte !== 0) {
        throw badState(`bitmap sets bits past block ${blocks - 1}`, offset);
      }
    }
  }
  return out;
}

/** The RAMBlock of a device: `P/<memdev>`, preferring one as large as the region. */
function ramBlockFor(
  devicePath: string,
  regionSize: number,
  ramBlocks: readonly RamBlockInfo[],
): string {
  const prefix = `${devicePath}/`;
  const candidates = ramBlocks.filter((b) => b.idstr.startsWith(prefix));
  return (candidates.find((b) => b.usedLength === regionSize) ?? candidates[0])?.idstr ?? "";
}

interface Geometry {
  gpa: number;
  regionSize: number;
  blockSize: number;
  node: number;
  size: number;
  bitmap: Uint8Array;
}

function deviceOf(
  devicePath: string,
  g: Geometry,
  ramBlocks: readonly RamBlockInfo[],
  sizes: { usableRegionSize: number | undefined; requestedSize: number | undefined },
  offset: number,
): VmemDevice {
  if (!(g.blockSize > 0) || g.regionSize % g.blockSize !== 0) {
    throw badState(
      `block size 0x${g.blockSize.toString(16)} does not divide region size 0x${
        g.regionSize.toString(16)
      }`,
      offset,
    );
  }
  const blocks = g.regionSize / g.blockSize;
  return {
    path: devicePath,
    ramBlock: ramBlockFor(devicePath, g.regionSize, ramBlocks),
    gpa: g.gpa,
    regionSize: g.regionSize,
    blockSize: g.blockSize,
    node: g.node,
    usableRegionSize: sizes.usableRegionSize,
    size: g.size,
    requestedSize: sizes.requestedSize,
    bitmap: lsbBitmap(g.bitmap, blocks, offset),
  };
}

/**
 * Learns the plug state a stream carries, one record at a time.
 *
 * @example
 * ```ts ignore
 * import { decodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * import { StreamPlugState } from "@vmem-dump/vmem-dump/scan";
 * const input = await openInput("s2.mig");
 * const state = new StreamPlugState();
 * for await (const r of decodeMigration(input.reader)) state.observe(r);
 * console.log(state.source, state.finalMap()?.devices.length);
 * ```
 */
export class StreamPlugState {
  #ramBlocks: RamBlockInfo[] = [];
  #early = new Map<string, { record: VirtioMemEarlyRecord; device: VmemDevice }>();
  #late = new Map<string, { record: VirtioMemDeviceRecord; device: VmemDevice | undefined }>();
  #earlyMap: PlugMap | undefined;

  /**
   * Take in one record. Returns `true` when the early plug state changed
   * (a new early section), i.e. when {@linkcode earlyMap} has new content.
   *
   * @param record A record of the stream, in order.
   * @returns Whether the early map changed.
   * @throws {FormatError} (code `bad-virtio-mem`) when a section describes an impossible state.
   */
  observe(record: MigrationRecord): boolean {
    switch (record.kind) {
      case "ram-mem-size":
        this.#ramBlocks = record.blocks;
        return false;
      case "virtio-mem-early": {
        const device = deviceOf(record.devicePath, record, this.#ramBlocks, {
          usableRegionSize: undefined,
          requestedSize: undefined,
        }, record.streamOffset);
        this.#early.set(record.devicePath, { record, device });
        this.#earlyMap = this.#build(
          [...this.#early.values()].map((e) => e.device),
          record.streamOffset,
        );
        return true;
      }
      case "virtio-mem-device": {
        const s = record.state;
        let device: VmemDevice | undefined;
        if (
          s.layout === "late" && s.gpa !== undefined && s.regionSize !== undefined &&
          s.blockSize !== undefined &&
          s.node !== undefined && s.size !== undefined && s.bitmap !== undefined
        ) {
          device = deviceOf(
            record.devicePath,
            {
              gpa: s.gpa,
              regionSize: s.regionSize,
              blockSize: s.blockSize,
              node: s.node,
              size: s.size,
              bitmap: s.bitmap,
            },
            this.#ramBlocks,
            { usableRegionSize: s.usableRegionSize, requestedSize: s.requestedSize },
            record.streamOffset,
          );
        }
        this.#late.set(record.devicePath, { record, device });
        return false;
      }
      default:
        return false;
    }
  }

  #build(devices: VmemDevice[], offset: number): PlugMap {
    try {
      return new PlugMap(devices);
    } catch (e) {
      if (e instanceof FormatError) throw badState((e as Error).message, offset, e);
      throw e;
    }
  }

  /** The RAMBlocks of the MEM_SIZE list, once seen. */
  get ramBlocks(): readonly RamBlockInfo[] {
    return this.#ramBlocks;
  }

  /** The map of the early sections seen so far, or `undefined` when none. */
  earlyMap(): PlugMap | undefined {
    return this.#earlyMap;
  }

  /** Where the final map comes from, or `undefined` when the stream carried no plug state. */
  get source(): StreamPlugStateSource | undefined {
    const early = this.#early.size > 0;
    const late = [...this.#late.values()].some((l) => l.device !== undefined);
    if (early && late) return "stream-early+late";
    if (early) return "stream-early";
    if (late) return "stream-late";
    return undefined;
  }

  /**
   * The stream's own plug state: every device of an early section
   * (completed with usable and requested size from its device section),
   * plus every device whose late-layout device section carries a bitmap.
   * An early section wins over a late one for the same device: it is what
   * applied while RAM was sent.
   *
   * @returns The map, or `undefined` when the stream carried no plug state.
   * @throws {FormatError} (code `bad-virtio-mem`) when the devices contradict each other.
   */
  finalMap(): PlugMap | undefined {
    const devices: VmemDevice[] = [];
    let offset = 0;
    for (const [path, { device, record }] of this.#early) {
      const late = this.#late.get(path);
      offset = Math.max(offset, record.streamOffset);
      if (late !== undefined) {
        devices.push({
          ...device,
          usableRegionSize: late.record.state.usableRegionSize,
          requestedSize: late.record.state.requestedSize,
        });
        offset = Math.max(offset, late.record.streamOffset);
      } else {
        devices.push(device);
      }
    }
    for (const [path, late] of this.#late) {
      if (this.#early.has(path) || late.device === undefined) continue;
      devices.push(late.device);
      offset = Math.max(offset, late.record.streamOffset);
    }
    if (devices.length === 0) return undefined;
    return this.#build(devices, offset);
  }
}

/**
 * Read the plug state a stream carries (for `--plugmap-from STREAM`).
 *
 * @param records Records or batches of records of the whole stream.
 * @returns The map and where it came from, or `undefined` when the stream carries none.
 * @throws {FormatError} whatever the decoder throws, or code `bad-virtio-mem` for an impossible state.
 *
 * @example
 * ```ts ignore
 * import { decodeMigrationBatches, openInput } from "@vmem-dump/vmem-dump";
 * import { readStreamPlugMap } from "@vmem-dump/vmem-dump/scan";
 * const input = await openInput("s2-holes-100M.mig");
 * const found = await readStreamPlugMap(decodeMigrationBatches(input.reader));
 * console.log(found?.source, found?.map.toJSON());
 * ```
 */
export async function readStreamPlugMap(
  records: AsyncIterable<MigrationRecord | MigrationRecord[]>,
): Promise<{ map: PlugMap; source: StreamPlugStateSource } | undefined> {
  const state = new StreamPlugState();
  for await (const item of records) {
    if (Array.isArray(item)) {
      for (const r of item) {
        if (r.kind !== "ram-page" && r.kind !== "ram-zero-page") state.observe(r);
      }
    } else {
      state.observe(item);
    }
  }
  const map = state.finalMap();
  return map === undefined ? undefined : { map, source: state.source! };
}
