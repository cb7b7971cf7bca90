/**
 * Receive-side verifier: check that no RAM record of a migration stream
 * touches an unplugged virtio-mem block, while passing the records through.
 *
 * - Early layout (a `virtio-mem-device-early` section before RAM, QEMU >= 8.0
 *   machine types) or an out-of-band plug map: every page record is checked
 *   when it arrives, and the first offending record is the failure point.
 * - Late layout (the plug bitmap only in the `P/virtio-mem` device section
 *   after all RAM): the touched MiB of every RAMBlock are kept in a compact
 *   set and checked when the device section arrives. Nothing after a failed
 *   check is forwarded.
 * - `QEMU_VM_EOF` and the vmdesc are held back until the stream is complete
 *   (`end()`: the pipeline calls it at the vmdesc, or at the end of the
 *   input) and every check passed, so a destination never starts a VM from a stream
 *   that fails.
 * - RAM loaded after device state began (a `ram` section or PACKAGED command
 *   the decoder tags `afterDeviceState`) is a violation whatever the plug
 *   state says: QEMU loads it after the devices, the virtio-mem device
 *   included. So is a second statement of a device's plug state
 *   (`plug-state-replaced`): QEMU ends with the last one, but pages were
 *   loaded under the first; pages are checked against what every statement
 *   so far marks plugged. That the device state itself is accounted for byte
 *   by byte is the decoder's part (its default `deviceState: "prove"`).
 *
 * @module
 */

import { hex } from "../io/text.ts";
import { FormatError, VerificationError } from "../errors.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import { type BlockPlugTable, type PlugStateSource, PlugTables } from "./_filter_plug_state.ts";
import { CHUNK_SIZE, TouchedSet } from "./_touched_set.ts";
import { stageTransformer } from "./_batch_transformer.ts";
import type { RecordOrBatch, RecordStage } from "./stage.ts";
import { VIRTIO_MEM_DEVICE_SUFFIX } from "./constants.ts";
import {
  isPageRecord,
  type MigrationRecord,
  type RamPageLikeRecord,
  type VmdescRecord,
} from "./types.ts";

/** Options for {@linkcode PlugStateVerifier} and {@linkcode VerifyPlugStateStream}. */
export interface VerifyPlugStateOptions {
  /**
   * Out-of-band plug state. Records are checked against it as they arrive,
   * in addition to the stream's own state.
   * @default {undefined}
   */
  plugMap?: PlugMap;
  /**
   * `veto`: throw a `VerificationError` at the first decisive violation.
   * `report`: collect every violation, forward nothing after the first one,
   * and (for the stream class) fail at the end.
   * @default {"veto"}
   */
  mode?: "veto" | "report";
  /** Report mode: violations described one by one (the count goes on). @default {10000} */
  maxViolations?: number;
  /** Memory cap of the touched-memory set (late layout). @default {268435456} */
  maxTrackedBytes?: number;
}

/**
 * Why a violation is one:
 * - `unplugged-block`: a page record in an unplugged virtio-mem block;
 * - `ram-after-device-state`: a page record (or a PACKAGED command) after
 *   device state began, whichever block it touches;
 * - `plug-state-replaced`: a device's plug state stated a second time.
 */
export type ViolationReason = "unplugged-block" | "ram-after-device-state" | "plug-state-replaced";

/**
 * One record (or, in late layout, one MiB of records) in an unplugged block,
 * or a structural violation (see {@linkcode ViolationReason}).
 */
export interface PlugStateViolation {
  /** Why this is a violation. */
  reason: ViolationReason;
  /**
   * Kind of the offending record (the first one of its MiB in late layout):
   * a page record, `command` (PACKAGED), or the plug-state record that
   * restated the plug state.
   */
  recordKind: MigrationRecord["kind"];
  /** RAMBlock idstr (`""` for a PACKAGED command). */
  ramBlock: string;
  /** Device path P (`""` when the block is not virtio-mem memory). */
  devicePath: string;
  /** Offset of the record's page inside the RAMBlock (plug-state-replaced: of the first block that changed; 0 for PACKAGED). */
  ramOffset: number;
  /** Guest-physical address of the page, or `null` when the stream does not say (RAMBlocks other than virtio-mem memory). */
  gpa: number | null;
  /** Device block index, or `null` when not a virtio-mem block. */
  blockIndex: number | null;
  /** Stream offset where the record starts. */
  streamOffset: number;
  /**
   * Records this entry stands for: 1 when checked on arrival; in late layout
   * all records of the same MiB (the fields describe the first).
   */
  records: number;
  /** Which plug state showed the block unplugged; `structure` for the other reasons. */
  detectedBy: PlugStateSource | "structure";
}

/** Plug state of one device as the verifier used it. */
export interface VerifiedDevice {
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Device path P. */
  devicePath: string;
  /** Guest-physical base. */
  gpa: number;
  /** Block size. */
  blockSize: number;
  /** Device blocks. */
  blocks: number;
  /** Plugged blocks. */
  pluggedBlocks: number;
  /** Sources of the plug state. */
  sources: PlugStateSource[];
}

/** Outcome of a verification. */
export interface VerifyResult {
  /** No violation found (so far). */
  clean: boolean;
  /** `early`, `late`, or `none` (no virtio-mem state in the stream). */
  layout: "early" | "late" | "none";
  /** Page records checked. */
  pageRecords: number;
  /** Violations found (entries; see {@linkcode PlugStateViolation.records}). */
  violationCount: number;
  /** Offending records counted. */
  violatingRecords: number;
  /** The first `maxViolations` violations, in stream order of detection. */
  violations: PlugStateViolation[];
  /** Devices whose plug state was known. */
  devices: VerifiedDevice[];
}

const KIND_CODE: Record<RamPageLikeRecord["kind"], number> = {
  "ram-page": 0,
  "ram-zero-page": 1,
  "ram-xbzrle-page": 2,
  "ram-compressed-page": 3,
};

/**
 * A sentence for a violation (without its stream offset).
 *
 * @param v The violation.
 * @returns What was found, where in guest memory.
 *
 * @example
 * ```ts
 * import { describeViolation } from "./verify.ts";
 * console.log(describeViolation({
 *   reason: "unplugged-block", recordKind: "ram-page", ramBlock: "0000:00:01.0/vmem0mem",
 *   devicePath: "0000:00:01.0", ramOffset: 0x4e01000, gpa: 0x104e01000, blockIndex: 39,
 *   streamOffset: 0, records: 1, detectedBy: "early",
 * }));
 * ```
 */
export function describeViolation(v: PlugStateViolation): string {
  const where = `${v.gpa === null ? "" : `gpa ${hex(v.gpa)}, `}${JSON.stringify(v.ramBlock)}+${
    hex(v.ramOffset)
  }`;
  switch (v.reason) {
    case "unplugged-block":
      return `RAM record (${v.recordKind}) in unplugged virtio-mem block ${v.blockIndex} of ${
        JSON.stringify(v.ramBlock)
      }: gpa ${hex(v.gpa ?? 0)}, ramOffset ${hex(v.ramOffset)}`;
    case "ram-after-device-state":
      return v.recordKind === "command"
        ? "PACKAGED command after device state began: QEMU loads what it carries after the devices"
        : `RAM record (${v.recordKind}) after device state began: ${where}`;
    case "plug-state-replaced":
      return `the plug state of ${v.devicePath} is stated a second time (${v.recordKind})` +
        (v.blockIndex === null
          ? ""
          : `; block ${v.blockIndex} (${where}) differs between the statements`);
  }
}

/** A `VerificationError` describing a violation. */
export function violationError(v: PlugStateViolation, more = 0): VerificationError {
  const tail = more > 0 ? ` (and ${more} more)` : "";
  return new VerificationError(`${describeViolation(v)}${tail}`, {
    gpa: v.gpa ?? -1,
    ramBlock: v.ramBlock,
    ramOffset: v.ramOffset,
    offset: v.streamOffset,
  });
}

interface BlockState {
  map: BlockPlugTable | undefined;
  stream: BlockPlugTable | undefined;
  track: boolean;
}

/**
 * The verifier engine, a {@linkcode RecordStage}. Feed it record batches in
 * stream order; it returns what may be forwarded now. {@linkcode
 * PlugStateVerifier.end} at the end of the stream releases the held-back EOF
 * and vmdesc (or throws, in veto mode, when the stream failed).
 *
 * @example Verify a file, report mode
 * ```ts ignore
 * import { openInput, PlugStateVerifier, runMigrationPipeline } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s3-malicious.mig");
 * const verifier = new PlugStateVerifier({ mode: "report" });
 * await runMigrationPipeline(input.reader, { stages: [verifier] });
 * for (const v of verifier.result.violations) console.log(v.gpa.toString(16));
 * ```
 */
export class PlugStateVerifier implements RecordStage {
  #tables: PlugTables;
  #veto: boolean;
  #maxViolations: number;
  #touched: TouchedSet;
  #stream = new Map<string, BlockPlugTable>();
  #state = new Map<string, BlockState>();
  #knownPaths = new Set<string>();
  #lastRamBlock: string | undefined;
  #last: BlockState | undefined;
  #violations: PlugStateViolation[] = [];
  #violationCount = 0;
  #violatingRecords = 0;
  #pageRecords = 0;
  #failed = false;
  #held: MigrationRecord[] | undefined;
  #ended = false;
  #layout: "early" | "late" | "none" = "none";
  /** Inside a `ram` section the decoder tagged as after device state. */
  #afterDeviceState = false;
  /** The MEM_SIZE list was seen. */
  #listed = false;
  /** Guest-physical addresses the MEM_SIZE list gives (x-ignore-shared). */
  #blockGpa = new Map<string, number>();

  /**
   * Create the verifier.
   *
   * @param options Plug map, mode and limits.
   */
  constructor(options: VerifyPlugStateOptions = {}) {
    this.#tables = new PlugTables(options.plugMap);
    this.#veto = (options.mode ?? "veto") === "veto";
    this.#maxViolations = options.maxViolations ?? 10_000;
    this.#touched = new TouchedSet(options.maxTrackedBytes ?? 256 << 20);
  }

  /** Whether a violation was found. */
  get failed(): boolean {
    return this.#failed;
  }

  /** The violations found so far (report mode: all, up to `maxViolations`). */
  get violations(): readonly PlugStateViolation[] {
    return this.#violations;
  }

  /** The outcome so far. */
  get result(): VerifyResult {
    const devices = new Map<string, VerifiedDevice>();
    const add = (t: BlockPlugTable) => {
      let d = devices.get(t.ramBlock);
      if (d === undefined) {
        let plugged = 0;
        for (let i = 0; i < t.plugged.length; i++) plugged += t.plugged[i]!;
        d = {
          ramBlock: t.ramBlock,
          devicePath: t.devicePath,
          gpa: t.gpa,
          blockSize: t.blockSize,
          blocks: t.plugged.length,
          pluggedBlocks: plugged,
          sources: [],
        };
        devices.set(t.ramBlock, d);
      }
      d.sources.push(t.source);
    };
    for (const t of this.#stream.values()) add(t);
    for (const t of this.#tables.values()) add(t);
    return {
      clean: !this.#failed,
      layout: this.#layout,
      pageRecords: this.#pageRecords,
      violationCount: this.#violationCount,
      violatingRecords: this.#violatingRecords,
      violations: this.#violations.slice(),
      devices: [...devices.values()],
    };
  }

  #blockState(ramBlock: string): BlockState {
    let s = this.#state.get(ramBlock);
    if (s === undefined) {
      const stream = this.#stream.get(ramBlock);
      s = { map: this.#tables.get(ramBlock), stream, track: stream === undefined };
      this.#state.set(ramBlock, s);
    }
    return s;
  }

  /** A page record after device state began: a violation wherever it lands. */
  #lateRam(r: RamPageLikeRecord): void {
    const t = this.#stream.get(r.ramBlock) ?? this.#tables.get(r.ramBlock);
    const base = t?.gpa ?? this.#blockGpa.get(r.ramBlock);
    this.#violation({
      reason: "ram-after-device-state",
      recordKind: r.kind,
      ramBlock: r.ramBlock,
      devicePath: t?.devicePath ?? "",
      ramOffset: r.ramOffset,
      gpa: base === undefined ? null : base + r.ramOffset,
      blockIndex: t === undefined ? null : Math.floor(r.ramOffset / t.blockSize),
      streamOffset: r.streamOffset,
      records: 1,
      detectedBy: "structure",
    });
  }

  #violation(v: PlugStateViolation): void {
    this.#failed = true;
    this.#violationCount++;
    this.#violatingRecords += v.records;
    if (this.#violations.length < this.#maxViolations) this.#violations.push(v);
    if (this.#veto) throw violationError(v);
  }

  /** The stream's own plug state for a RAMBlock arrived: decide on what it already sent. */
  #decide(table: BlockPlugTable): void {
    const map = this.#tables.get(table.ramBlock);
    const chunks = this.#touched.chunks(table.ramBlock);
    const found: PlugStateViolation[] = [];
    for (const c of chunks) {
      const blockIndex = Math.floor((c.chunk * CHUNK_SIZE) / table.blockSize);
      if (table.plugged[blockIndex] === 1) continue;
      // Already reported one by one against the plug map?
      if (map !== undefined && map.plugged[Math.floor(c.ramOffset / map.blockSize)] !== 1) continue;
      found.push({
        reason: "unplugged-block",
        recordKind: c.recordKind,
        ramBlock: table.ramBlock,
        devicePath: table.devicePath,
        ramOffset: c.ramOffset,
        gpa: table.gpa + c.ramOffset,
        blockIndex,
        streamOffset: c.streamOffset,
        records: c.records,
        detectedBy: table.source,
      });
    }
    this.#touched.delete(table.ramBlock);
    this.#stream.set(table.ramBlock, table);
    this.#knownPaths.add(table.devicePath);
    this.#state.delete(table.ramBlock);
    this.#lastRamBlock = undefined;
    found.sort((a, b) => a.streamOffset - b.streamOffset);
    if (this.#veto && found.length > 0) {
      this.#failed = true;
      this.#violationCount += found.length;
      for (const v of found) {
        this.#violatingRecords += v.records;
        if (this.#violations.length < this.#maxViolations) this.#violations.push(v);
      }
      throw violationError(found[0]!, found.length - 1);
    }
    for (const v of found) this.#violation(v);
  }

  /** Non-page records. Returns false when the record (and the rest) must be held back. */
  #control(r: MigrationRecord): boolean {
    switch (r.kind) {
      case "section-start":
      case "section-part":
      case "section-end":
      case "section-full":
        this.#afterDeviceState = r.afterDeviceState === true;
        return true;
      case "command":
        if (r.afterDeviceState) {
          this.#violation({
            reason: "ram-after-device-state",
            recordKind: "command",
            ramBlock: "",
            devicePath: "",
            ramOffset: 0,
            gpa: null,
            blockIndex: null,
            streamOffset: r.streamOffset,
            records: 1,
            detectedBy: "structure",
          });
        }
        return true;
      case "ram-mem-size":
        // A later list repeats the first (the decoder refuses any other): the plug state and
        // the pages already seen stay, as they do in QEMU.
        if (this.#listed) return true;
        this.#listed = true;
        this.#blockGpa = new Map(
          r.blocks.flatMap((b) => b.gpa === undefined ? [] : [[b.idstr, b.gpa] as const]),
        );
        this.#tables.setRamBlocks(r.blocks, r.streamOffset);
        for (const t of this.#tables.values()) this.#knownPaths.add(t.devicePath);
        return true;
      case "virtio-mem-early":
      case "virtio-mem-device": {
        if (r.kind === "virtio-mem-device") this.#knownPaths.add(r.devicePath);
        const table = this.#tables.tableFromRecord(r);
        if (table === undefined) return true;
        if (this.#layout === "none") {
          this.#layout = r.kind === "virtio-mem-early" ? "early" : "late";
        }
        const before = this.#stream.get(table.ramBlock);
        if (before !== undefined) {
          // A second statement of the plug state: never a silent choice. From here on the
          // stricter of the two counts (a block unplugged in either is unplugged).
          let changed = -1;
          for (let i = 0; i < table.plugged.length; i++) {
            if (changed < 0 && table.plugged[i] !== (before.plugged[i] ?? 0)) changed = i;
            table.plugged[i]! &= before.plugged[i] ?? 0;
          }
          table.source = before.source;
          this.#violation({
            reason: "plug-state-replaced",
            recordKind: r.kind,
            ramBlock: table.ramBlock,
            devicePath: table.devicePath,
            ramOffset: changed < 0 ? 0 : changed * table.blockSize,
            gpa: changed < 0 ? null : table.gpa + changed * table.blockSize,
            blockIndex: changed < 0 ? null : changed,
            streamOffset: r.streamOffset,
            records: 1,
            detectedBy: "structure",
          });
        }
        this.#decide(table);
        return true;
      }
      case "eof":
        return false;
      default:
        return true;
    }
  }

  /**
   * Check one batch of records (in stream order).
   *
   * @param batch Records, e.g. from `decodeMigrationBatches`.
   * @returns The records that may be forwarded now (possibly none).
   * @throws {VerificationError} in veto mode, at the first decisive violation.
   * @throws {FormatError} when a plug map does not fit the stream.
   */
  process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
    if (this.#ended) throw new TypeError("PlugStateVerifier.process() called after end()");
    // Index of the first record not to forward; -1 while everything may go.
    let forward = this.#failed || this.#held !== undefined ? 0 : -1;
    for (let i = 0; i < batch.length; i++) {
      const r = batch[i]!;
      if (!isPageRecord(r)) {
        if (this.#held !== undefined) {
          if (!this.#failed) this.#held.push(r);
          continue;
        }
        const wasFailed = this.#failed;
        const pass = this.#control(r);
        if (forward === -1 && (!pass || (!wasFailed && this.#failed))) forward = i;
        if (!pass) this.#held = this.#failed ? [] : [r];
        continue;
      }
      this.#pageRecords++;
      if (this.#afterDeviceState) {
        if (forward === -1) forward = i;
        this.#lateRam(r);
      }
      let s: BlockState;
      if (r.ramBlock === this.#lastRamBlock) s = this.#last!;
      else {
        s = this.#blockState(r.ramBlock);
        this.#lastRamBlock = r.ramBlock;
        this.#last = s;
      }
      const t = s.stream ?? s.map;
      if (t !== undefined) {
        const blockIndex = Math.floor(r.ramOffset / t.blockSize);
        let by: BlockPlugTable | undefined;
        if (t.plugged[blockIndex] !== 1) by = t;
        else if (s.stream !== undefined && s.map !== undefined) {
          if (s.map.plugged[Math.floor(r.ramOffset / s.map.blockSize)] !== 1) by = s.map;
        }
        if (by !== undefined) {
          if (forward === -1) forward = i;
          this.#violation({
            reason: "unplugged-block",
            recordKind: r.kind,
            ramBlock: r.ramBlock,
            devicePath: by.devicePath,
            ramOffset: r.ramOffset,
            gpa: by.gpa + r.ramOffset,
            blockIndex: Math.floor(r.ramOffset / by.blockSize),
            streamOffset: r.streamOffset,
            records: 1,
            detectedBy: by.source,
          });
        }
      }
      if (s.track) this.#touched.add(r.ramBlock, r.ramOffset, r.streamOffset, KIND_CODE[r.kind]);
    }
    if (forward === -1) return batch;
    return batch.slice(0, forward);
  }

  /**
   * End of the stream: final checks, then the held-back records (EOF, vmdesc).
   *
   * @returns The held records when the stream is clean; `[]` in report mode with violations.
   * @throws {VerificationError} in veto mode when a violation was found.
   * @throws {FormatError} when the vmdesc lists a virtio-mem device whose state was not recognised.
   */
  end(): readonly MigrationRecord[] {
    if (this.#ended) return [];
    this.#ended = true;
    const held = this.#held ?? [];
    this.#held = undefined;
    const vmdesc = held.find((r): r is VmdescRecord => r.kind === "vmdesc");
    if (vmdesc !== undefined) this.#checkVmdesc(vmdesc);
    if (this.#failed) {
      if (this.#veto) throw violationError(this.#violations[0]!);
      return [];
    }
    return held;
  }

  #checkVmdesc(v: VmdescRecord): void {
    const parsed = v.parsed as { devices?: unknown } | undefined;
    if (parsed === undefined || !Array.isArray(parsed.devices)) return;
    for (const d of parsed.devices as unknown[]) {
      const name = (d as { name?: unknown })?.name;
      if (typeof name !== "string" || !name.endsWith(VIRTIO_MEM_DEVICE_SUFFIX)) continue;
      const path = name.slice(0, -VIRTIO_MEM_DEVICE_SUFFIX.length);
      if (!this.#knownPaths.has(path)) {
        throw new FormatError(
          `Cannot verify migration stream: the state of virtio-mem device ${path} was not recognised, so its plug state is unknown`,
          { format: "migration", code: "bad-virtio-mem", offset: v.streamOffset },
        );
      }
    }
  }
}

/**
 * Verify plug state while passing records through: a `TransformStream` over
 * single records or batches (the output has the input's shape). Records
 * after a failure, and EOF plus vmdesc until the end of a clean input, are
 * held back. In veto mode the stream errors at the first decisive violation;
 * in report mode it reads to the end and then errors with a
 * `VerificationError` if any violation was found (see `violations`).
 *
 * @example Receive-side pipeline
 * ```ts ignore
 * import { MigrationDecoderStream, MigrationEncoderStream, VerifyPlugStateStream } from "@vmem-dump/vmem-dump";
 * const file = await Deno.open("s3-malicious.mig");
 * await file.readable
 *   .pipeThrough(new MigrationDecoderStream())
 *   .pipeThrough(new VerifyPlugStateStream())
 *   .pipeThrough(new MigrationEncoderStream())
 *   .pipeTo((await Deno.create("checked.mig")).writable); // rejects with a VerificationError
 * ```
 */
export class VerifyPlugStateStream extends TransformStream<RecordOrBatch, RecordOrBatch> {
  #verifier: PlugStateVerifier;

  /**
   * Create the verifier.
   *
   * @param options Plug map, mode and limits.
   */
  constructor(options: VerifyPlugStateOptions = {}) {
    const verifier = new PlugStateVerifier(options);
    super(stageTransformer(verifier, () => {
      const rest = verifier.end();
      if (verifier.failed) {
        const v = verifier.violations[0]!;
        throw violationError(v, verifier.result.violationCount - 1);
      }
      return rest;
    }));
    this.#verifier = verifier;
  }

  /** Violations found so far. */
  get violations(): readonly PlugStateViolation[] {
    return this.#verifier.violations;
  }

  /** The outcome so far. */
  get result(): VerifyResult {
    return this.#verifier.result;
  }
}
