/**
 * The plug state a migration stream carries about itself, learnt record by
 * record: the `virtio-mem-device-early` sections (QEMU >= 8.0 machine types,
 * before any RAM) and the `virtio-mem` device sections after all RAM (their
 * late layout holds the bitmap, their early layout only usable and requested
 * sizes).
 *
 * @module
 */

import type { MigrationRecord, RamBlockInfo } from "./types.ts";
import { PlugStateCollector } from "./_plug_state_collector.ts";
import type { PlugMap } from "../vmem/plug_map.ts";

/** Where a stream's plug state came from. */
export type StreamPlugStateSource = "stream-early" | "stream-late" | "stream-early+late";

/**
 * Learns the plug state a stream carries, one record at a time.
 *
 * @example
 * ```ts ignore
 * import { decodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * import { StreamPlugState } from "@vmem-dump/vmem-dump/migration";
 * const input = await openInput("s2.mig");
 * const state = new StreamPlugState();
 * for await (const r of decodeMigration(input.reader)) state.observe(r);
 * console.log(state.source, state.finalMap()?.devices.length);
 * ```
 */
export class StreamPlugState {
  #collector = new PlugStateCollector({ doing: "use the virtio-mem plug state of the stream" });
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
    const c = this.#collector;
    c.add(record);
    if (record.kind !== "virtio-mem-early") return false;
    this.#earlyMap = c.buildMap(c.earlyDevices(), record.streamOffset);
    return true;
  }

  /** Devices whose plug state the stream stated more than once (see `PlugStateCollector.replaced`). */
  get replaced(): readonly { devicePath: string; streamOffset: number; first: number }[] {
    return this.#collector.replaced;
  }

  /** The RAMBlocks of the MEM_SIZE list, once seen. */
  get ramBlocks(): readonly RamBlockInfo[] {
    return this.#collector.ramBlocks ?? [];
  }

  /** The map of the early sections seen so far, or `undefined` when none. */
  earlyMap(): PlugMap | undefined {
    return this.#earlyMap;
  }

  /** Where the final map comes from, or `undefined` when the stream carried no plug state. */
  get source(): StreamPlugStateSource | undefined {
    const early = this.#collector.early.size > 0;
    const late = this.#collector.sawLateLayout;
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
    const c = this.#collector;
    const devices = c.devices({ strict: false });
    if (devices.length === 0) return undefined;
    let offset = 0;
    for (const e of c.early.values()) offset = Math.max(offset, e.streamOffset);
    for (const l of c.late.values()) offset = Math.max(offset, l.streamOffset);
    return c.buildMap(devices, offset);
  }
}
