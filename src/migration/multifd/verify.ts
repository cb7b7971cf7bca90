/**
 * Receive-side verification of one multifd channel: every page offset a RAM
 * packet carries (pages with data and zero pages alike: QEMU writes both
 * into guest memory) is checked against the virtio-mem plug state exactly
 * as a main-channel page record is, by the same {@linkcode PlugStateVerifier}
 * (early layout and plug maps: on arrival; late layout: touched memory kept
 * per MiB and decided when the device section arrives).
 *
 * The plug state and the block list come from the main channel: hand the
 * main channel's `ram-mem-size`, `virtio-mem-early` and `virtio-mem-device`
 * records to {@linkcode MultifdChannelVerifier.control} (in main-channel
 * order) before or between packets. The offsets are in the packet headers,
 * so compressed channels are verified without decompressing them.
 *
 * @module
 */

import type { PlugMap } from "../../vmem/plug_map.ts";
import { DEFAULT_PAGE_SIZE } from "../constants.ts";
import type {
  MigrationRecord,
  RamMemSizeRecord,
  RamPageRecord,
  RamZeroPageRecord,
  VirtioMemDeviceRecord,
  VirtioMemEarlyRecord,
} from "../types.ts";
import { PlugStateVerifier, type PlugStateViolation, type VerifyResult } from "../verify.ts";
import { PacketBounds } from "./_packet_bounds.ts";
import { checkMultifdPageSize, multifdOffsetSlotStreamOffset } from "./packet.ts";
import type { MultifdRamPacketRecord } from "./types.ts";

/** The main-channel records a multifd channel's filter or verifier needs. */
export type MultifdControlRecord = RamMemSizeRecord | VirtioMemEarlyRecord | VirtioMemDeviceRecord;

/**
 * Whether a main-channel record is one a multifd channel's filter or
 * verifier needs (block list or plug state).
 *
 * @param r A main-channel record.
 * @returns `true` for `ram-mem-size`, `virtio-mem-early` and `virtio-mem-device`.
 *
 * @example
 * ```ts
 * import { isMultifdControlRecord } from "@vmem-dump/vmem-dump/migration";
 * console.log(isMultifdControlRecord({ kind: "ram-eos", streamOffset: 0 })); // false
 * ```
 */
export function isMultifdControlRecord(r: MigrationRecord): r is MultifdControlRecord {
  return r.kind === "ram-mem-size" || r.kind === "virtio-mem-early" ||
    r.kind === "virtio-mem-device";
}

/** Options for {@linkcode MultifdChannelVerifier}. */
export interface MultifdVerifyOptions {
  /** The channel's id (from its initial packet), for reports. */
  channel: number;
  /** Target page size. @default {4096} */
  pageSize?: number;
  /** Out-of-band plug state, checked in addition to the stream's. @default {undefined} */
  plugMap?: PlugMap;
  /** Violations described one by one. @default {10000} */
  maxViolations?: number;
  /** Memory cap of the touched-memory set (late layout). @default {268435456} */
  maxTrackedBytes?: number;
}

/** A violation found in a multifd channel (`streamOffset` is the page's offset slot in that channel). */
export interface MultifdPlugStateViolation extends PlugStateViolation {
  /** Channel id. */
  channel: number;
}

const EMPTY = new Uint8Array(0);

/**
 * Verifies the packets of one multifd channel.
 *
 * @example Verify a captured channel against the main channel's state
 * ```ts ignore
 * import { decodeMultifdChannel, MultifdChannelVerifier } from "@vmem-dump/vmem-dump/migration";
 * const v = new MultifdChannelVerifier({ channel: 0 });
 * for (const r of mainControlRecords) v.control(r);
 * for await (const batch of decodeMultifdChannel(reader)) {
 *   for (const r of batch) if (r.kind === "multifd-ram-packet") v.checkPacket(r);
 * }
 * console.log(v.violations);
 * ```
 */
export class MultifdChannelVerifier {
  #verifier: PlugStateVerifier;
  #bounds: PacketBounds;
  #channel: number;
  #pages: RamPageRecord[] = [];
  #zeros: RamZeroPageRecord[] = [];
  #packets = 0;

  /**
   * Create the verifier.
   *
   * @param options Channel, page size, plug map, limits.
   */
  constructor(options: MultifdVerifyOptions) {
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    checkMultifdPageSize(pageSize);
    this.#channel = options.channel;
    this.#bounds = new PacketBounds(pageSize);
    this.#verifier = new PlugStateVerifier({
      mode: "report",
      ...(options.plugMap ? { plugMap: options.plugMap } : {}),
      ...(options.maxViolations !== undefined ? { maxViolations: options.maxViolations } : {}),
      ...(options.maxTrackedBytes !== undefined
        ? { maxTrackedBytes: options.maxTrackedBytes }
        : {}),
    });
  }

  /** Whether the block list is known (packets with pages can be checked). */
  get ready(): boolean {
    return this.#bounds.known;
  }

  /** Whether a violation was found. */
  get failed(): boolean {
    return this.#verifier.failed;
  }

  /** RAM packets checked. */
  get packets(): number {
    return this.#packets;
  }

  /** Violations described so far (cheap; at most `maxViolations`). */
  get violationCount(): number {
    return this.#verifier.violations.length;
  }

  /** Violations so far. */
  get violations(): MultifdPlugStateViolation[] {
    return this.#verifier.violations.map((v) => ({ ...v, channel: this.#channel }));
  }

  /** The outcome so far (`pageRecords` counts the pages of this channel; violations carry no channel). */
  get result(): VerifyResult {
    return this.#verifier.result;
  }

  /**
   * Take a main-channel record: the block list or plug state.
   *
   * @param r The record.
   * @throws {FormatError} when a plug map does not fit the stream.
   */
  control(r: MultifdControlRecord): void {
    if (r.kind === "ram-mem-size") this.#bounds.setRamBlocks(r.blocks);
    this.#verifier.process([r]);
  }

  /**
   * Check one RAM packet.
   *
   * @param p The packet.
   * @returns `true` when every page is allowed so far (the packet may be forwarded).
   * @throws {FormatError} for a block not in the block list, an offset beyond the block or
   * not page aligned.
   * @throws {TypeError} before the block list arrived (see {@linkcode ready}).
   */
  checkPacket(p: MultifdRamPacketRecord): boolean {
    this.#packets++;
    const normal = p.normalRamOffsets;
    const zero = p.zeroRamOffsets;
    const n = normal.length + zero.length;
    if (n === 0) return !this.#verifier.failed;
    if (!this.#bounds.known) {
      throw new TypeError("MultifdChannelVerifier needs the block list before packets with pages");
    }
    this.#bounds.check(p);
    const batch: (RamPageRecord | RamZeroPageRecord)[] = new Array(n);
    for (let i = 0; i < n; i++) {
      let r: RamPageRecord | RamZeroPageRecord;
      if (i < normal.length) {
        r = this.#pages[i] ??= {
          kind: "ram-page",
          streamOffset: 0,
          ramBlock: "",
          ramOffset: 0,
          continued: false,
          data: EMPTY,
        };
        r.ramOffset = normal[i]!;
      } else {
        r = this.#zeros[i - normal.length] ??= {
          kind: "ram-zero-page",
          streamOffset: 0,
          ramBlock: "",
          ramOffset: 0,
          continued: false,
          fill: 0,
        };
        r.ramOffset = zero[i - normal.length]!;
      }
      r.ramBlock = p.ramBlock;
      r.streamOffset = multifdOffsetSlotStreamOffset(p, i);
      batch[i] = r;
    }
    this.#verifier.process(batch);
    return !this.#verifier.failed;
  }
}
