/**
 * What the proxy's multifd channels learn from the main channel: a
 * pass-through stage on the main channel that records the page size, the
 * block list and plug state, the end of the setup phase, the sync points
 * and the stream's completion, and tells every subscribed channel.
 *
 * Private to src/proxy.
 *
 * @module
 */

import { DEFAULT_PAGE_SIZE, VIRTIO_MEM_EARLY_SUFFIX } from "../migration/constants.ts";
import { isMultifdControlRecord, type MultifdControlRecord } from "../migration/multifd/mod.ts";
import type { RecordStage } from "../migration/stage.ts";
import type { MigrationRecord } from "../migration/types.ts";

/** What the tap tells a channel, in main-channel order. */
export type TapMessage =
  | { type: "page-size"; pageSize: number }
  | { type: "control"; record: MultifdControlRecord }
  /** The main channel left its setup phase (its early sections are all known). */
  | { type: "setup-complete" }
  /** The main channel's stream is complete: no more plug state will come. */
  | { type: "main-complete" };

/** The part of the main channel the multifd channels need, observed as a pass-through stage. */
export class MainChannelTap implements RecordStage {
  pageSize: number | undefined;
  controls: MultifdControlRecord[] = [];
  setupDone = false;
  /** The main channel's stream is complete (no more plug state will come). */
  complete = false;
  flushes = 0;
  eos = 0;
  #listeners = new Set<(m: TapMessage) => void>();

  /** Sync points so far: MULTIFD_FLUSH when the stream has any (>= 8.1 machine types), else RAM EOS. */
  get syncPoints(): number {
    return this.flushes > 0 ? this.flushes : this.eos;
  }

  /** What a channel that opens now must be told first. */
  backlog(): TapMessage[] {
    const out: TapMessage[] = [];
    if (this.pageSize !== undefined) out.push({ type: "page-size", pageSize: this.pageSize });
    for (const record of this.controls) out.push({ type: "control", record });
    if (this.setupDone) out.push({ type: "setup-complete" });
    if (this.complete) out.push({ type: "main-complete" });
    return out;
  }

  #completeListeners = new Set<() => void>();

  /** Call `listener` when the main channel's stream is complete. */
  onComplete(listener: () => void): () => void {
    this.#completeListeners.add(listener);
    return () => this.#completeListeners.delete(listener);
  }

  subscribe(listener: (m: TapMessage) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #tell(m: TapMessage): void {
    for (const l of this.#listeners) l(m);
  }

  process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
    for (const r of batch) {
      if (this.pageSize === undefined && r.kind !== "header") {
        this.pageSize = r.kind === "configuration" && r.targetPageBits !== undefined
          ? 2 ** r.targetPageBits
          : DEFAULT_PAGE_SIZE;
        this.#tell({ type: "page-size", pageSize: this.pageSize });
      }
      if (isMultifdControlRecord(r)) {
        const record = detachControlRecord(r);
        this.controls.push(record);
        this.#tell({ type: "control", record });
      } else if (
        !this.setupDone &&
        (r.kind === "section-part" || r.kind === "section-end" || r.kind === "eof" ||
          (r.kind === "section-full" && !r.idstr.endsWith(VIRTIO_MEM_EARLY_SUFFIX)))
      ) {
        this.setupDone = true;
        this.#tell({ type: "setup-complete" });
      }
      if (r.kind === "ram-multifd-flush") this.flushes++;
      else if (r.kind === "ram-eos") this.eos++;
    }
    return batch;
  }

  end(): readonly MigrationRecord[] {
    this.complete = true;
    this.#tell({ type: "main-complete" });
    for (const l of this.#completeListeners) l();
    return [];
  }
}

/**
 * A copy of a control record that owns its bytes: the main channel's
 * records are views into its reader's arena, which is reused, and the tap
 * keeps them for channels that open later.
 */
function detachControlRecord(r: MultifdControlRecord): MultifdControlRecord {
  switch (r.kind) {
    case "ram-mem-size":
      return { ...r, blocks: r.blocks.map((b) => ({ ...b })) };
    case "virtio-mem-early":
      return { ...r, bitmap: r.bitmap.slice() };
    case "virtio-mem-device":
      return {
        ...r,
        data: r.data.slice(),
        state: { ...r.state, ...(r.state.bitmap ? { bitmap: r.state.bitmap.slice() } : {}) },
      };
  }
}
