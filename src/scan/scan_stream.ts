/**
 * Scan a migration stream for page records of unplugged virtio-mem blocks.
 * Every such record is a finding, whatever its content: a destination that
 * loads it writes guest memory the device says is not there.
 *
 * @module
 */

import { hex } from "../io/text.ts";
import { isPageRecord, type MigrationRecord, type RamPageLikeRecord } from "../migration/types.ts";
import { PlugMap } from "../vmem/plug_map.ts";
import type { VmemDevice } from "../vmem/vmem_device.ts";
import {
  FindingCollector,
  type FindingPageSink,
  type FindingSource,
  type PlugStateInfo,
  type ScanReport,
  type StreamSection,
} from "./findings.ts";
import { conflictReason } from "./verdict.ts";
import { StreamPlugState } from "../migration/stream_plug_state.ts";
import { countNonZeroBytes, firstNonZeroIndex } from "./zero.ts";

/** Options for {@linkcode scanMigration} and {@linkcode MigrationScanner}. */
export interface ScanMigrationOptions {
  /**
   * Plug state to use when the stream carries none, and until its own
   * appears. When the stream has its own, that one is used and a
   * difference is reported as a warning. @default {undefined}
   */
  plugMap?: PlugMap;
  /** How the report names `plugMap`. @default {{ source: "plugmap", detail: null }} */
  plugState?: PlugStateInfo;
  /** Pages listed in the report at most (totals stay exact). @default {100} */
  maxFindings?: number;
  /** Bytes of page content in each listed finding's hexdump. @default {32} */
  hexdumpBytes?: number;
  /**
   * Also hand every finding with its content to this sink (`scan --extract`).
   * Findings judged by `plugMap` before the stream's own state is known are
   * handed over as provisional; when some of them do not stand,
   * `provisionalDiscarded` is set in the result and what the sink received
   * does not match the report. @default {undefined}
   */
  pageSink?: FindingPageSink;
  /**
   * The caller can scan the stream again (a file): records that can only be
   * judged once the stream's own plug state arrives (late layout) are not
   * counted per MiB on the side (that costs a zero check of every page of
   * every device-owned RAMBlock). When the state then differs from `plugMap`,
   * `rescan` is set in the result instead. @default {false}
   */
  rereadable?: boolean;
  /**
   * `plugMap` is the stream's own final plug state (from an earlier pass):
   * judge every record by it, not by the early sections seen so far (which
   * a later section may restate). @default {false}
   */
  plugMapIsFinal?: boolean;
  /** Path the report names as input. @default {null} */
  path?: string | null;
  /** Outer container the report names (`raw`, `gzip`, `zstd`, `libvirt-save`). @default {null} */
  container?: string | null;
  /** Input size the report names. @default {null} */
  byteLength?: number | null;
}

/** What {@linkcode scanMigration} returns. */
export interface ScanMigrationResult {
  /** The report. `report.details` is `blocks` when page details could not be kept (see below). */
  report: ScanReport;
  /**
   * Whether findings judged provisionally (by the map given, before the
   * stream's own state came) were dropped because that state differs: a
   * page sink then received findings the report does not have.
   */
  provisionalDiscarded: boolean;
  /**
   * With `rereadable`: the report misses findings (the stream's own plug
   * state came after its pages and differs from the map given, or names a
   * device the map does not have). Scan again with `{ plugMap }`.
   */
  rescan: boolean;
  /**
   * Devices on which the plug map given and the stream's own plug state
   * disagree (the stream's judged). Not empty: a report without findings is
   * `inconclusive`, also after a second pass with the stream's state.
   */
  plugStateConflicts: string[];
  /**
   * The plug state the report judged by (the stream's own, else the one
   * given), or `undefined` when there was none: then nothing was checked.
   * When `report.details` is `blocks`, scanning the stream again with
   * `{ plugMap }` set to this map gives every page.
   */
  plugMap: PlugMap | undefined;
}

/** Granularity of the counts kept while the plug state is not yet known: the smallest virtio-mem block. */
const GRANULE_SHIFT = 20;
const GRANULE = 1 << GRANULE_SHIFT;
/** Granules per lazily allocated page of counters. */
const GRANULES_PER_PAGE = 64;
/** Counters per granule: records, non-zero records, non-zero bytes, unknown content, first non-zero ramOffset + 1. */
const FIELDS = 5;

/**
 * Per-RAMBlock counts of page records by 1 MiB granule, kept while the
 * block's plug state is unknown (a late-layout stream sends it after all
 * RAM). Any virtio-mem block size is a power-of-two multiple of 1 MiB and
 * blocks start at RAMBlock offset 0, so granules add up to blocks exactly.
 * Counters live in small typed arrays allocated on first use, so memory
 * follows what the stream actually sends.
 */
class GranuleCounts {
  #pages = new Map<number, Float64Array>();

  add(ramOffset: number, nonZeroBytes: number, firstNonZero: number): void {
    const g = Math.floor(ramOffset / GRANULE);
    const key = Math.floor(g / GRANULES_PER_PAGE);
    let page = this.#pages.get(key);
    if (page === undefined) {
      page = new Float64Array(GRANULES_PER_PAGE * FIELDS);
      this.#pages.set(key, page);
    }
    const at = (g % GRANULES_PER_PAGE) * FIELDS;
    page[at]! += 1;
    if (nonZeroBytes < 0) {
      page[at + 3]! += 1;
    } else if (nonZeroBytes > 0) {
      page[at + 1]! += 1;
      page[at + 2]! += nonZeroBytes;
      if (firstNonZero >= 0) {
        const first = ramOffset + firstNonZero + 1;
        if (page[at + 4] === 0 || first < page[at + 4]!) page[at + 4] = first;
      }
    }
  }

  /**
   * Whether a non-zero page at `ramOffset` could lower its granule's first
   * non-zero byte (pages mostly come in ascending order: then only the
   * granule's first non-zero page needs the search).
   */
  needsFirst(ramOffset: number): boolean {
    const g = Math.floor(ramOffset / GRANULE);
    const page = this.#pages.get(Math.floor(g / GRANULES_PER_PAGE));
    if (page === undefined) return true;
    const stored = page[(g % GRANULES_PER_PAGE) * FIELDS + 4]!;
    return stored === 0 || ramOffset < stored - 1;
  }

  /** Counts of every granule with records, as [granule index, counters view]. */
  *entries(): Generator<[number, Float64Array]> {
    for (const [key, page] of this.#pages) {
      for (let i = 0; i < GRANULES_PER_PAGE; i++) {
        if (page[i * FIELDS] !== 0) {
          yield [key * GRANULES_PER_PAGE + i, page.subarray(i * FIELDS, (i + 1) * FIELDS)];
        }
      }
    }
  }
}

/** How records of one RAMBlock are judged right now. */
interface BlockRoute {
  /** Device from the stream's early state: records are judged for good. */
  final: VmemDevice | undefined;
  /** Device from the given map, while the stream's state is unknown. */
  provisional: VmemDevice | undefined;
  /** Counts kept while the stream's state is unknown. */
  counts: GranuleCounts | undefined;
  /**
   * With `final` from the stream's early sections: records per device block
   * judged plugged, for a later section that restates the plug state.
   */
  plugged: Float64Array | undefined;
}

const NO_ROUTE: BlockRoute = {
  final: undefined,
  provisional: undefined,
  counts: undefined,
  plugged: undefined,
};

/** Whether two devices have the same geometry and plug bitmap (sizes aside). */
export function sameDevice(a: VmemDevice, b: VmemDevice): boolean {
  if (a.gpa !== b.gpa || a.regionSize !== b.regionSize || a.blockSize !== b.blockSize) return false;
  if (a.bitmap.byteLength !== b.bitmap.byteLength) return false;
  for (let i = 0; i < a.bitmap.byteLength; i++) if (a.bitmap[i] !== b.bitmap[i]) return false;
  return true;
}

function isUnplugged(device: VmemDevice, ramOffset: number): boolean {
  return isUnpluggedBlock(device, Math.floor(ramOffset / device.blockSize));
}

function isUnpluggedBlock(device: VmemDevice, block: number): boolean {
  return ((device.bitmap[block >>> 3]! >>> (block & 7)) & 1) === 0;
}

const SECTION_TYPES = {
  "section-start": "start",
  "section-part": "part",
  "section-end": "end",
  "section-full": "full",
} as const;

/** The collector options a stream scan's options ask for. */
function collectorOptions(options: ScanMigrationOptions) {
  return {
    ...(options.maxFindings === undefined ? {} : { maxFindings: options.maxFindings }),
    ...(options.hexdumpBytes === undefined ? {} : { hexdumpBytes: options.hexdumpBytes }),
    ...(options.pageSink === undefined ? {} : { pageSink: options.pageSink }),
  };
}

/** `node:zlib`'s inflate, once a COMPRESS_PAGE record needed it. */
let inflatePage:
  | ((data: Uint8Array, options: { maxOutputLength: number }) => Uint8Array)
  | undefined;

/**
 * Load the inflater that COMPRESS_PAGE records need. `scanMigration` calls
 * it when a batch holds one; a caller that pushes records into a
 * {@linkcode MigrationScanner} itself calls it first when its stream may
 * hold them. (`node:zlib` loads Deno's Node compatibility layer: 30–60 ms
 * that a scan of a stream without them does not pay.)
 *
 * @example
 * ```ts ignore
 * import { loadPageInflater, MigrationScanner } from "@vmem-dump/vmem-dump/scan";
 * await loadPageInflater();
 * const scanner = new MigrationScanner();
 * ```
 */
export async function loadPageInflater(): Promise<void> {
  inflatePage ??= (await import("node:zlib")).inflateSync;
}

/**
 * A push-style stream scanner: feed it every record with `push`, then call
 * `finish`. Use {@linkcode scanMigration} unless records arrive some other way.
 *
 * Records are judged as they come when the plug state is known: from the
 * stream's early section, or from the map given in the options. When the
 * stream sends its state only at the end (late layout, QEMU < 8.0 machine
 * types), records of RAMBlocks that may belong to a virtio-mem device
 * (idstrs with a device path, `P/name`) are also counted per 1 MiB
 * granule. At the end the stream's own state decides: findings judged with
 * a given map that agrees with it are kept page by page; otherwise the
 * counts give exact per-block totals without page details
 * (`report.details = "blocks"`).
 *
 * @example
 * ```ts ignore
 * import { decodeMigrationBatches, openInput } from "@vmem-dump/vmem-dump";
 * import { MigrationScanner } from "@vmem-dump/vmem-dump/scan";
 * const input = await openInput("s3-malicious.mig");
 * const scanner = new MigrationScanner();
 * for await (const batch of decodeMigrationBatches(input.reader)) scanner.pushBatch(batch);
 * const { report } = scanner.finish();
 * ```
 */
export class MigrationScanner {
  #options: ScanMigrationOptions;
  #state = new StreamPlugState();
  #given: PlugMap | undefined;
  #early: PlugMap | undefined;
  #final: FindingCollector;
  #provisional: FindingCollector;
  #counts = new Map<string, GranuleCounts>();
  /** Per RAMBlock: records judged plugged by the early sections, per device block. */
  #judgedPlugged = new Map<string, Float64Array>();
  #routes = new Map<string, BlockRoute>();
  #lastName = "";
  #lastRoute: BlockRoute = NO_ROUTE;
  #pageSize = 4096;
  #zeroPages = new Map<number, Uint8Array>();
  #pageRecords = 0;
  #unjudged = new Set<string>();
  #section: StreamSection | undefined;
  #xbzrle = 0;
  #badCompressed = 0;
  #beyondRegion = 0;
  /** Inside a section the decoder tagged as loaded after device state. */
  #afterDeviceState: { streamOffset: number; what: string } | undefined;
  #firstLate: { streamOffset: number; what: string } | undefined;
  #lateRecords = 0;

  /**
   * Construct it.
   *
   * @param options Fallback plug map, listing bound, names for the report.
   */
  constructor(options: ScanMigrationOptions = {}) {
    this.#options = options;
    this.#given = options.plugMap;
    this.#final = new FindingCollector(collectorOptions(options));
    this.#provisional = new FindingCollector({ ...collectorOptions(options), provisional: true });
  }

  /** Wait until the page sink (if any) has written the findings handed to it. */
  async drain(): Promise<void> {
    if (this.#options.pageSink !== undefined) await this.#options.pageSink.drain();
  }

  /** Feed a batch of records (from `decodeMigrationBatches`). */
  pushBatch(records: readonly MigrationRecord[]): void {
    for (let i = 0; i < records.length; i++) this.push(records[i]!);
  }

  /**
   * Feed one record.
   *
   * @param r The next record of the stream.
   * @throws {FormatError} (code `bad-virtio-mem`) when the stream's plug state is impossible.
   */
  push(r: MigrationRecord): void {
    if (isPageRecord(r)) {
      if (this.#afterDeviceState !== undefined) {
        // What verify rejects is a page loaded late (or a PACKAGED command), not an empty section.
        this.#firstLate ??= this.#afterDeviceState;
        this.#lateRecords++;
      }
      this.#page(r);
      return;
    }
    if (
      r.kind === "section-start" || r.kind === "section-part" || r.kind === "section-end" ||
      r.kind === "section-full"
    ) {
      this.#afterDeviceState = r.afterDeviceState
        ? { streamOffset: r.streamOffset, what: `section ${JSON.stringify(r.idstr)}` }
        : undefined;
    } else if (r.kind === "command") {
      this.#afterDeviceState = r.afterDeviceState
        ? (this.#firstLate ??= { streamOffset: r.streamOffset, what: "a PACKAGED command" })
        : undefined;
    }
    switch (r.kind) {
      case "configuration":
        if (r.targetPageBits !== undefined && r.targetPageBits >= 9 && r.targetPageBits <= 30) {
          this.#pageSize = 2 ** r.targetPageBits;
        }
        return;
      case "section-start":
      case "section-part":
      case "section-end":
      case "section-full":
        this.#section = {
          type: SECTION_TYPES[r.kind],
          sectionId: r.sectionId,
          idstr: r.idstr,
          streamOffset: r.streamOffset,
        };
        if (this.#state.observe(r)) this.#stateChanged();
        return;
      default:
        if (this.#state.observe(r)) {
          this.#stateChanged();
        } else if (r.kind === "ram-mem-size") {
          this.#routes.clear();
          this.#lastName = "";
          this.#lastRoute = NO_ROUTE;
        }
    }
  }

  #stateChanged(): void {
    this.#early = this.#state.earlyMap();
    this.#routes.clear();
    this.#lastName = "";
    this.#lastRoute = NO_ROUTE;
  }

  #route(ramBlock: string): BlockRoute {
    if (ramBlock === this.#lastName) return this.#lastRoute;
    let route = this.#routes.get(ramBlock);
    if (route === undefined) {
      const judge = this.#options.plugMapIsFinal ? this.#given : this.#early;
      const final = judge?.deviceForRamBlock(ramBlock);
      if (final !== undefined) {
        let plugged: Float64Array | undefined;
        if (!this.#options.plugMapIsFinal) {
          const blocks = final.regionSize / final.blockSize;
          plugged = this.#judgedPlugged.get(ramBlock);
          if (plugged === undefined || plugged.length !== blocks) {
            plugged = new Float64Array(blocks);
            this.#judgedPlugged.set(ramBlock, plugged);
          }
        }
        route = { final, provisional: undefined, counts: undefined, plugged };
      } else {
        const provisional = this.#given?.deviceForRamBlock(ramBlock);
        const mayBeVmem = !this.#options.rereadable &&
          (ramBlock.lastIndexOf("/") > 0 || provisional !== undefined);
        let counts: GranuleCounts | undefined;
        if (mayBeVmem) {
          counts = this.#counts.get(ramBlock);
          if (counts === undefined) {
            counts = new GranuleCounts();
            this.#counts.set(ramBlock, counts);
          }
        }
        route = { final: undefined, provisional, counts, plugged: undefined };
        // Records of this block are not judged for good: a late state may need a second pass.
        this.#unjudged.add(ramBlock);
      }
      this.#routes.set(ramBlock, route);
    }
    this.#lastName = ramBlock;
    this.#lastRoute = route;
    return route;
  }

  #zeroPage(size: number, fill: number): Uint8Array {
    let page = this.#zeroPages.get(fill);
    if (page === undefined || page.byteLength !== size) {
      page = new Uint8Array(size).fill(fill);
      this.#zeroPages.set(fill, page);
    }
    return page;
  }

  /** The page content a record stands for, or `undefined` when it cannot be known. */
  #content(r: RamPageLikeRecord): Uint8Array | undefined {
    switch (r.kind) {
      case "ram-page":
        return r.data;
      case "ram-zero-page":
        return this.#zeroPage(this.#pageSize, r.fill);
      case "ram-compressed-page":
        if (inflatePage === undefined) {
          throw new TypeError(
            "Cannot scan a COMPRESS_PAGE record: call loadPageInflater() before pushing records",
          );
        }
        try {
          return inflatePage(r.data, { maxOutputLength: this.#pageSize });
        } catch {
          this.#badCompressed++;
          return undefined;
        }
      case "ram-xbzrle-page":
        this.#xbzrle++;
        return undefined;
    }
  }

  #page(r: RamPageLikeRecord): void {
    this.#pageRecords++;
    const route = this.#route(r.ramBlock);
    if (
      route === NO_ROUTE ||
      (route.final === undefined && route.provisional === undefined && route.counts === undefined)
    ) {
      return;
    }
    const device = route.final ?? route.provisional;
    let content: Uint8Array | undefined;
    let known = false;
    if (device !== undefined) {
      const block = Math.floor(r.ramOffset / device.blockSize);
      if (r.ramOffset >= device.regionSize) {
        this.#beyondRegion++;
      } else if (!isUnpluggedBlock(device, block)) {
        if (route.plugged !== undefined) route.plugged[block]! += 1;
      } else {
        content = this.#content(r);
        known = true;
        (route.final ? this.#final : this.#provisional).addPage(device, {
          gpa: device.gpa + r.ramOffset,
          content,
          source: r.kind as FindingSource,
          streamOffset: r.streamOffset,
          ...(this.#section === undefined ? {} : { section: this.#section }),
        });
      }
    }
    if (route.counts !== undefined) {
      let nonZeroBytes = -1;
      let first = -1;
      if (r.kind === "ram-zero-page") {
        // A ZERO record's page is its fill byte repeated: no need to look at it.
        if (r.fill !== 0) {
          first = 0;
          nonZeroBytes = this.#pageSize;
        } else nonZeroBytes = 0;
        route.counts.add(r.ramOffset, nonZeroBytes, first);
        return;
      }
      if (!known) content = this.#content(r);
      if (content !== undefined) {
        // One pass over the page; the first non-zero byte only when it can matter.
        nonZeroBytes = countNonZeroBytes(content);
        if (nonZeroBytes > 0 && route.counts.needsFirst(r.ramOffset)) {
          first = firstNonZeroIndex(content);
        }
      }
      route.counts.add(r.ramOffset, nonZeroBytes, first);
    }
  }

  /**
   * Decide and build the report.
   *
   * @returns The report and the plug map it judged by.
   * @throws {FormatError} (code `bad-virtio-mem`) when the stream's plug state is impossible.
   */
  finish(): ScanMigrationResult {
    const own = this.#state.finalMap();
    const warnings: string[] = [];
    if (this.#firstLate !== undefined) {
      warnings.push(
        `RAM is loaded after device state began (${this.#firstLate.what} at stream offset ${
          hex(this.#firstLate.streamOffset)
        }; ${this.#lateRecords} page records): QEMU loads it after the devices, which verify ` +
          "rejects; the pages were scanned like any others",
      );
    }
    for (const r of this.#state.replaced) {
      warnings.push(
        `The plug state of ${r.devicePath} is stated twice (at stream offsets ${hex(r.first)} and ${
          hex(r.streamOffset)
        }); pages were checked against what both mark plugged`,
      );
    }
    const plugMap = own ?? this.#given;
    // Findings are moved in here; the sink already has them.
    const { pageSink: _sink, ...bound } = collectorOptions(this.#options);
    const result = new FindingCollector(bound);
    let details: "pages" | "blocks" = "pages";
    /** Block totals from the late-layout counts. */
    let lateTotals = false;
    /** Records judged plugged by an early section that a later one restated as unplugged. */
    let restatedRecords = 0;
    let rescan = false;
    /** Devices on which the plug map given and the stream's own state disagree. */
    const conflicts: string[] = [];
    const keptProvisional = new Set<number>();
    if (own !== undefined && this.#given !== undefined) {
      for (const d of this.#given.devices) {
        if (own.deviceForGpa(d.gpa) !== undefined) continue;
        conflicts.push(d.path || d.ramBlock);
        warnings.push(
          `The plug map given has device ${d.path || d.ramBlock} at ${
            hex(d.gpa)
          }, which the stream's own plug state does not have; the stream's state was used`,
        );
      }
    }
    if (plugMap !== undefined) {
      for (const device of plugMap.devices) {
        result.absorb(this.#final, device);
        // A later section restated the plug state: records judged plugged under the earlier
        // one are in blocks the destination ends with unplugged (QEMU 10 keeps their data).
        const plugged = own === undefined ? undefined : this.#judgedPlugged.get(device.ramBlock);
        if (plugged !== undefined) {
          const blocks = Math.min(plugged.length, device.regionSize / device.blockSize);
          for (let b = 0; b < blocks; b++) {
            const n = plugged[b]!;
            if (n === 0 || !isUnpluggedBlock(device, b)) continue;
            result.addBlockTotals(device, b, {
              findings: n,
              nonZeroPages: 0,
              nonZeroBytes: 0,
              unknownContent: n,
              firstNonZeroGpa: -1,
            });
            restatedRecords += n;
            details = "blocks";
          }
        }
        const given = this.#given?.deviceForGpa(device.gpa);
        if (
          own !== undefined && this.#given !== undefined &&
          (given === undefined || !sameDevice(given, device))
        ) {
          warnings.push(
            `The plug map given differs from the stream's own plug state for device ${
              device.path || device.ramBlock
            } ` +
              `at ${hex(device.gpa)}; the stream's state was used`,
          );
          conflicts.push(device.path || device.ramBlock);
        }
        if (own === undefined || (given !== undefined && sameDevice(given, device))) {
          result.absorb(this.#provisional, device);
          keptProvisional.add(device.gpa);
          continue;
        }
        // Records judged neither for good nor with a matching map: read again, or use the counts.
        if (this.#options.rereadable) {
          if ([...this.#unjudged].some((name) => own.deviceForRamBlock(name) === device)) {
            rescan = true;
          }
          continue;
        }
        const counts = device.ramBlock === "" ? undefined : this.#countsFor(own, device);
        if (counts === undefined) continue;
        for (const [granule, c] of counts.entries()) {
          const ramOffset = granule * GRANULE;
          if (ramOffset >= device.regionSize || !isUnplugged(device, ramOffset)) continue;
          result.addBlockTotals(device, Math.floor(ramOffset / device.blockSize), {
            findings: c[0]!,
            nonZeroPages: c[1]!,
            nonZeroBytes: c[2]!,
            unknownContent: c[3]!,
            firstNonZeroGpa: c[4]! === 0 ? -1 : device.gpa + c[4]! - 1,
          });
          details = "blocks";
          lateTotals = true;
        }
      }
    }
    if (plugMap === undefined) {
      warnings.push(
        "The stream carries no virtio-mem plug state and no plug map was given: nothing was checked",
      );
    }
    if (this.#xbzrle > 0) {
      warnings.push(
        `${this.#xbzrle} XBZRLE records: their page content is a delta and cannot be known`,
      );
    }
    if (this.#badCompressed > 0) {
      warnings.push(
        `${this.#badCompressed} compressed page records did not inflate to a page: content unknown`,
      );
    }
    if (this.#beyondRegion > 0) {
      warnings.push(
        `${this.#beyondRegion} page records of a virtio-mem RAMBlock lie beyond its region`,
      );
    }
    if (rescan) {
      warnings.push(
        "The stream sent its plug state after its pages and it differs from the plug map given: " +
          "findings of that device are missing; scan the stream again with the stream's plug state",
      );
    }
    if (restatedRecords > 0) {
      warnings.push(
        `${restatedRecords} page records were judged by an early section whose plug state a ` +
          "later section restated with their blocks unplugged: they are findings, counted per " +
          "block (their content was not kept); scan the stream again with the stream's final " +
          "plug state to list them",
      );
    }
    if (lateTotals) {
      warnings.push(
        "The stream sent its plug state after its pages: findings are counted per block only; " +
          "scan the stream again with this plug state to list the pages",
      );
    }
    const source = this.#state.source;
    const plugState: PlugStateInfo = own !== undefined && source !== undefined
      ? { source, detail: null }
      : this.#options.plugState ??
        { source: plugMap === undefined ? "none" : "plugmap", detail: null };
    const report = result.report(plugMap ?? emptyMap(), {
      input: {
        path: this.#options.path ?? null,
        kind: "migration",
        container: this.#options.container ?? null,
        byteLength: this.#options.byteLength ?? null,
        baseGpa: null,
      },
      plugState,
      pageSize: this.#pageSize,
      details,
      pageRecords: this.#pageRecords,
      warnings,
      plugStateConflict: conflictReason(conflicts, "stream"),
    });
    const provisionalDiscarded = this.#provisional.devicesWithFindings()
      .some((gpa) => !keptProvisional.has(gpa));
    return { report, plugMap, provisionalDiscarded, rescan, plugStateConflicts: conflicts };
  }

  #countsFor(map: PlugMap, device: VmemDevice): GranuleCounts | undefined {
    for (const [name, counts] of this.#counts) {
      if (map.deviceForRamBlock(name) === device) return counts;
    }
    return undefined;
  }
}

let empty: PlugMap | undefined;

/** A map without devices, for the report of a stream that had no plug state. */
function emptyMap(): PlugMap {
  return empty ??= new PlugMap([]);
}

/**
 * Scan a whole stream: every page-carrying record of an unplugged block is
 * a finding (zero or not), reported with its stream offset, the SHA-256 and
 * a hexdump of the page it carries. The stream's own plug state is used when
 * it has one; `options.plugMap` otherwise.
 *
 * @param records Records or batches (`decodeMigrationBatches` is fastest).
 * @param options Fallback plug map, listing bound, names for the report.
 * @returns The report and the plug map it judged by.
 * @throws {FormatError} whatever the decoder throws, and code `bad-virtio-mem` for an impossible plug state.
 *
 * @example
 * ```ts ignore
 * import { decodeMigrationBatches, openInput } from "@vmem-dump/vmem-dump";
 * import { scanMigration } from "@vmem-dump/vmem-dump/scan";
 * const input = await openInput("s3-malicious.mig");
 * const { report } = await scanMigration(decodeMigrationBatches(input.reader));
 * for (const d of report.devices) for (const b of d.blocks) console.log(b.blockIndex, b.pages.map((p) => p.streamOffset));
 * ```
 */
export async function scanMigration(
  records: AsyncIterable<MigrationRecord | MigrationRecord[]>,
  options: ScanMigrationOptions = {},
): Promise<ScanMigrationResult> {
  const scanner = new MigrationScanner(options);
  const sink = options.pageSink !== undefined;
  for await (const item of records) {
    if (
      inflatePage === undefined &&
      (Array.isArray(item)
        ? item.some((r) => r.kind === "ram-compressed-page")
        : item.kind === "ram-compressed-page")
    ) {
      await loadPageInflater();
    }
    if (Array.isArray(item)) scanner.pushBatch(item);
    else scanner.push(item);
    if (sink) await scanner.drain();
  }
  return scanner.finish();
}
