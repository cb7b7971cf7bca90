/**
 * The scan report model (the `scan --json` schema, documented in
 * docs/scan.md) and the collector the scanners feed.
 *
 * A finding is always one page (4 KiB for dumps, the target page size for
 * streams) in an unplugged block of a virtio-mem device:
 *
 * - dumps and raw images: a page whose content is not all zero (unplugged
 *   memory reads as zero, so zero pages are no findings);
 * - migration streams: every page-carrying record (PAGE, ZERO, COMPRESS,
 *   XBZRLE) for an unplugged block, whatever its content.
 *
 * Totals are always exact; only the list of pages is bounded by
 * `maxFindings`.
 *
 * @module
 */

import { sha256Hex as sha256HexTs } from "../io/sha256.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import type { VmemDevice } from "../vmem/vmem_device.ts";
import { TOOL } from "../version.ts";
import { countNonZeroBytes, firstNonZeroIndex } from "./zero.ts";
import { HEXDUMP_WINDOW, type HexWindow, hexWindow } from "./hexdump.ts";
import type { Coverage, CoverageCounter } from "./coverage.ts";
import { decideVerdict, type ScanVerdict } from "./verdict.ts";

/** Version of the JSON report written by `scan --json`. */
export const SCAN_REPORT_VERSION = 2;

/** Pages listed in a report unless asked otherwise. */
export const DEFAULT_MAX_FINDINGS = 100;

/** What was scanned. */
export type ScanInputKind = "raw" | "elf" | "kdump" | "migration" | "mapped-ram";

/** Where the page of a finding came from. */
export type FindingSource =
  /** Dump or raw-image memory. */
  | "memory"
  /** A migration PAGE record. */
  | "ram-page"
  /** A migration ZERO record. */
  | "ram-zero-page"
  /** A migration COMPRESS_PAGE record (content inflated). */
  | "ram-compressed-page"
  /** A migration XBZRLE record (content unknown: it is a delta). */
  | "ram-xbzrle-page"
  /** A page of a mapped-ram file whose bitmap bit is set (`fileOffset` is where its data is). */
  | "mapped-ram-page";

/** The section a stream record came in (the last section header before it). */
export interface StreamSection {
  /** Section type: `start`, `part`, `end` or `full`. */
  type: "start" | "part" | "end" | "full";
  /** Section id. */
  sectionId: number;
  /** The section's idstr (e.g. `ram`). */
  idstr: string;
  /** Stream offset of the section header. */
  streamOffset: number;
}

/** One listed finding: a page in an unplugged block. */
export interface PageFinding {
  /** Guest-physical address of the page. */
  gpa: number;
  /** Offset of the page inside the device's RAMBlock (= gpa − device gpa). */
  ramOffset: number;
  /** Dumps: file offset of the page's first byte; `null` for streams or when not in one piece. */
  fileOffset: number | null;
  /** Streams: stream offset where the record starts (after decompression of a container); else `null`. */
  streamOffset: number | null;
  /** Streams: the section the record came in; else `null`. */
  section: StreamSection | null;
  /** What carried the page. */
  source: FindingSource;
  /** Non-zero bytes in the page, or `null` when the content is unknown (XBZRLE). */
  nonZeroBytes: number | null;
  /** Index of the first non-zero byte inside the page; `null` when all zero or unknown. */
  firstNonZeroOffset: number | null;
  /** SHA-256 of the page content (lowercase hex), or `null` when unknown. */
  sha256: string | null;
  /** Up to `hexdumpBytes` bytes from the first non-zero byte (rounded down to 16; the page start for a zero page), or `null`. */
  hexdump: HexWindow | null;
}

/** Position of the first non-zero byte of a block. */
export interface FirstNonZero {
  /** Offset inside the block. */
  blockOffset: number;
  /** Guest-physical address. */
  gpa: number;
}

/** All findings of one unplugged block. */
export interface BlockFindings {
  /** Device block index. */
  blockIndex: number;
  /** Guest-physical address of the block. */
  gpa: number;
  /** Offset of the block inside the device's RAMBlock. */
  ramOffset: number;
  /** Block size in bytes. */
  byteLength: number;
  /** Findings (dumps: non-zero pages; streams: page records). Exact. */
  findings: number;
  /** Findings whose content holds a non-zero byte. Exact. */
  nonZeroPages: number;
  /** Sum of the non-zero bytes of those findings. Exact. */
  nonZeroBytes: number;
  /** Findings whose content could not be known (XBZRLE records). */
  unknownContent: number;
  /** The lowest non-zero byte among the findings, or `null` when every finding is zero. */
  firstNonZero: FirstNonZero | null;
  /** The listed findings (dumps: ascending gpa; streams: stream order). */
  pages: PageFinding[];
}

/** One virtio-mem device of the plug map and its findings. */
export interface DeviceFindings {
  /** PCI path, `""` when unknown. */
  path: string;
  /** RAMBlock idstr, `""` when unknown. */
  ramBlock: string;
  /** Guest-physical base. */
  gpa: number;
  /** Region size. */
  regionSize: number;
  /** Block size. */
  blockSize: number;
  /** Plugged blocks. */
  pluggedBlocks: number;
  /** Unplugged blocks. */
  unpluggedBlocks: number;
  /** Findings in this device. */
  findings: number;
  /** Non-zero findings in this device. */
  nonZeroPages: number;
  /** Non-zero bytes in this device. */
  nonZeroBytes: number;
  /** Dumps: how much of this device's unplugged memory was examined or absent; `null` for streams. */
  coverage: Coverage | null;
  /** Blocks with findings, ascending block index. */
  blocks: BlockFindings[];
}

/** Totals of a scan. */
export interface ScanSummary {
  /** Findings. */
  findings: number;
  /** Findings with non-zero content. */
  nonZeroPages: number;
  /** Non-zero bytes in all findings. */
  nonZeroBytes: number;
  /** Findings of unknown content. */
  unknownContent: number;
  /** Blocks with findings. */
  blocksWithFindings: number;
  /** Devices with findings. */
  devicesWithFindings: number;
  /** Findings listed in `pages` arrays. */
  listedPages: number;
  /** Whether some findings are not listed (`listedPages < findings`). */
  truncated: boolean;
  /** Unplugged bytes according to the plug map. */
  unpluggedBytes: number;
  /** Streams: page-carrying records seen; `null` for dumps. */
  pageRecords: number | null;
}

/** Description of the input. */
export interface ScanInputInfo {
  /** Path given, `-` for standard input, `null` when scanned from memory. */
  path: string | null;
  /** Kind of input. */
  kind: ScanInputKind;
  /** Streams: outer container (`raw`, `gzip`, `zstd`, `libvirt-save`), else `null`. */
  container: string | null;
  /** Input size in bytes when known. */
  byteLength: number | null;
  /** Raw images: guest-physical address of the first byte; else `null`. */
  baseGpa: number | null;
}

/** Where the plug state came from. */
export interface PlugStateInfo {
  /**
   * `plugmap` (`--plugmap` file or caller's map), `plugmap-from` (extracted
   * from another stream), `stream-early` (the stream's early section),
   * `stream-late` (the stream's device section at the end),
   * `stream-early+late`.
   */
  source: string;
  /** Extra words, e.g. the file it came from; `null` when none. */
  detail: string | null;
}

/** The whole report (`scan --json`, version 2; docs/scan.md). */
export interface ScanReport {
  /** Always `"vmem-dump-scan"`. */
  format: "vmem-dump-scan";
  /** Report version: 2. */
  version: 2;
  /** The tool that wrote the report. */
  tool: { name: string; version: string };
  /**
   * `findings` (exit 3): some page of an unplugged block holds data (dumps)
   * or is carried by a record (streams). `clean` (exit 0): no findings, and
   * every unplugged byte of every device was examined (streams: no record
   * for an unplugged block). `inconclusive` (exit 4): no findings, but some
   * unplugged memory was not in the input, or there was nothing to check.
   */
  verdict: ScanVerdict;
  /** The verdict in one sentence: how much was not seen and why, for `inconclusive`. */
  verdictReason: string;
  /** The input. */
  input: ScanInputInfo;
  /** Plug state used. */
  plugState: PlugStateInfo;
  /** Page size of findings. */
  pageSize: number;
  /** Bound on listed pages. */
  maxFindings: number;
  /** Bytes of page content in each listed finding's hexdump. */
  hexdumpBytes: number;
  /**
   * `pages` when every finding is known page by page; `blocks` when some were
   * only counted per block (a late-layout stream read from a pipe: its plug
   * state came after its pages).
   */
  details: "pages" | "blocks";
  /** Dumps: how much unplugged memory was examined or absent, over all devices; `null` for streams. */
  coverage: Coverage | null;
  /** Totals. */
  summary: ScanSummary;
  /** Every device of the plug map, with its findings. */
  devices: DeviceFindings[];
  /** Things the reader of the report should know (unknown content, state mismatches …). */
  warnings: string[];
}

/** A page handed to {@linkcode FindingCollector.addPage}. */
export interface PageInput {
  /** Guest-physical address of the page. */
  gpa: number;
  /** The content (a view is fine, it is not kept), or `undefined` when unknown. */
  content: Uint8Array | undefined;
  /** What carried it. */
  source: FindingSource;
  /** File offset of the page, when it comes from a file in one piece. */
  fileOffset?: number;
  /** Stream offset of the record. */
  streamOffset?: number;
  /** The section the record came in. */
  section?: StreamSection;
}

/** Per-block totals added without page details (see {@linkcode FindingCollector.addBlockTotals}). */
export interface BlockTotals {
  /** Findings. */
  findings: number;
  /** Non-zero findings. */
  nonZeroPages: number;
  /** Non-zero bytes. */
  nonZeroBytes: number;
  /** Findings of unknown content. */
  unknownContent: number;
  /** Guest-physical address of the lowest non-zero byte, or -1. */
  firstNonZeroGpa: number;
}

/** Add `totals` into `acc` (the lowest non-zero gpa wins). */
function addTotals(acc: BlockTotals, totals: BlockTotals): void {
  acc.findings += totals.findings;
  acc.nonZeroPages += totals.nonZeroPages;
  acc.nonZeroBytes += totals.nonZeroBytes;
  acc.unknownContent += totals.unknownContent;
  const g = totals.firstNonZeroGpa;
  if (g >= 0 && (acc.firstNonZeroGpa < 0 || g < acc.firstNonZeroGpa)) acc.firstNonZeroGpa = g;
}

interface BlockAcc {
  findings: number;
  nonZeroPages: number;
  nonZeroBytes: number;
  unknownContent: number;
  firstNonZeroGpa: number; // -1 = none
  pages: PageFinding[];
}

/**
 * Receives every finding with its content, listed or not (what
 * `scan --extract` writes). `add` is called synchronously by the scanners;
 * `drain` between chunks, so that a sink that writes files keeps memory
 * bounded.
 */
export interface FindingPageSink {
  /**
   * One finding. `content` is a view valid only during the call (copy it to
   * keep it), `undefined` when the content is unknown (XBZRLE).
   * `context.provisional` marks a stream finding judged by a plug map given
   * before the stream's own state was known (see
   * `ScanMigrationResult.provisionalDiscarded`).
   */
  add(page: PageFinding, content: Uint8Array | undefined, context: FindingContext): void;
  /** Wait until what was added is written. */
  drain(): Promise<void>;
  /**
   * Hash a page (SHA-256, lowercase hex) for the findings this sink takes:
   * a sink that hashes many pages brings a native hash. Without it, the
   * collector hashes with `src/io/sha256.ts`, which needs no `node:crypto`
   * at start-up. @default {undefined}
   */
  hashPage?: (bytes: Uint8Array) => string;
}

/** Where a finding handed to a {@linkcode FindingPageSink} belongs. */
export interface FindingContext {
  /** The device whose unplugged block holds the page. */
  device: VmemDevice;
  /** Whether the finding is provisional (see {@linkcode FindingPageSink.add}). */
  provisional: boolean;
}

/** Options for {@linkcode FindingCollector}. */
export interface FindingCollectorOptions {
  /** Pages kept for listing at most. @default {100} */
  maxFindings?: number;
  /** Bytes of page content in each listed finding's hexdump (0 to 4096). @default {32} */
  hexdumpBytes?: number;
  /** Also hand every finding with its content to this sink. @default {undefined} */
  pageSink?: FindingPageSink;
  /** Hand findings to `pageSink` as provisional. @default {false} */
  provisional?: boolean;
}

const zeroPageHashes = new Map<number, string>();

/** SHA-256 of an all-zero page (cached per size: zero records are common findings). */
function zeroPageHash(content: Uint8Array): string {
  let h = zeroPageHashes.get(content.byteLength);
  if (h === undefined) {
    h = sha256HexTs(content);
    zeroPageHashes.set(content.byteLength, h);
  }
  return h;
}

/**
 * Accumulates findings per device and block while a scanner runs: exact
 * totals for every finding, page details (SHA-256, hexdump) only for the
 * first `maxFindings` (so memory stays bounded), then builds the report.
 *
 * @example Record one non-zero page and build a report
 * ```ts
 * import { FindingCollector } from "./findings.ts";
 * import { PlugMap } from "@vmem-dump/vmem-dump/vmem";
 * const map = new PlugMap([{
 *   path: "0000:00:01.0", ramBlock: "0000:00:01.0/vmem0mem", gpa: 0x1_0000_0000,
 *   regionSize: 0x40_0000, blockSize: 0x20_0000, node: 0, usableRegionSize: undefined,
 *   size: 0, requestedSize: undefined, bitmap: new Uint8Array(1),
 * }]);
 * const collector = new FindingCollector();
 * const page = new Uint8Array(4096);
 * page[0x10] = 0x41;
 * collector.addPage(map.devices[0]!, { gpa: 0x1_0020_0000, content: page, source: "memory" });
 * const report = collector.report(map, {
 *   input: { path: null, kind: "raw", container: null, byteLength: null, baseGpa: 0x1_0000_0000 },
 *   plugState: { source: "plugmap", detail: null },
 * });
 * console.log(report.summary.findings, report.devices[0]!.blocks[0]!.firstNonZero); // 1 { blockOffset: 16, gpa: 4297064464 }
 * ```
 */
export class FindingCollector {
  /** Bound on listed pages. */
  readonly maxFindings: number;
  /** Bytes of each listed finding's hexdump. */
  readonly hexdumpBytes: number;
  /** Where every finding also goes, if anywhere. */
  readonly pageSink: FindingPageSink | undefined;
  #provisional: boolean;
  #devices = new Map<number, Map<number, BlockAcc>>(); // device gpa → block index → acc
  #listed = 0;

  /**
   * Construct it.
   *
   * @param options Listing bound.
   */
  constructor(options: FindingCollectorOptions = {}) {
    const max = options.maxFindings ?? DEFAULT_MAX_FINDINGS;
    if (!Number.isSafeInteger(max) || max < 0) {
      throw new RangeError(`maxFindings must be a non-negative integer, got ${max}`);
    }
    this.maxFindings = max;
    const hexdumpBytes = options.hexdumpBytes ?? HEXDUMP_WINDOW;
    if (!Number.isSafeInteger(hexdumpBytes) || hexdumpBytes < 0 || hexdumpBytes > 4096) {
      throw new RangeError(`hexdumpBytes must be an integer from 0 to 4096, got ${hexdumpBytes}`);
    }
    this.hexdumpBytes = hexdumpBytes;
    this.pageSink = options.pageSink;
    this.#provisional = options.provisional ?? false;
  }

  /**
   * Wait until the page sink has written what it was given (nothing to wait
   * for without a sink). Scanners call it between chunks.
   */
  async drain(): Promise<void> {
    if (this.pageSink !== undefined) await this.pageSink.drain();
  }

  /** Findings listed so far. */
  get listed(): number {
    return this.#listed;
  }

  /** The gpas of the devices with at least one finding (or block totals). */
  devicesWithFindings(): number[] {
    return [...this.#devices.keys()];
  }

  #block(device: VmemDevice, blockIndex: number): BlockAcc {
    let blocks = this.#devices.get(device.gpa);
    if (blocks === undefined) {
      blocks = new Map();
      this.#devices.set(device.gpa, blocks);
    }
    let acc = blocks.get(blockIndex);
    if (acc === undefined) {
      acc = {
        findings: 0,
        nonZeroPages: 0,
        nonZeroBytes: 0,
        unknownContent: 0,
        firstNonZeroGpa: -1,
        pages: [],
      };
      blocks.set(blockIndex, acc);
    }
    return acc;
  }

  /**
   * Record one finding. The caller has decided that it is one (a non-zero
   * dump page, or any stream record, in an unplugged block).
   *
   * @param device The device whose region holds `page.gpa`.
   * @param page The page.
   * @throws {RangeError} when `page.gpa` is outside the device.
   */
  addPage(device: VmemDevice, page: PageInput): void {
    const ramOffset = page.gpa - device.gpa;
    if (!(ramOffset >= 0 && ramOffset < device.regionSize)) {
      throw new RangeError(
        `Page at gpa 0x${page.gpa.toString(16)} is outside device ${
          device.path || device.ramBlock
        }`,
      );
    }
    const blockIndex = Math.floor(ramOffset / device.blockSize);
    const acc = this.#block(device, blockIndex);
    acc.findings++;
    let nonZeroBytes: number | null = null;
    let first = -1;
    if (page.content === undefined) {
      acc.unknownContent++;
    } else {
      first = firstNonZeroIndex(page.content);
      nonZeroBytes = first < 0 ? 0 : countNonZeroBytes(page.content.subarray(first));
      if (first >= 0) {
        acc.nonZeroPages++;
        acc.nonZeroBytes += nonZeroBytes;
        const gpa = page.gpa + first;
        if (acc.firstNonZeroGpa < 0 || gpa < acc.firstNonZeroGpa) acc.firstNonZeroGpa = gpa;
      }
    }
    const listed = this.#listed < this.maxFindings;
    if (!listed && this.pageSink === undefined) return;
    let sha256: string | null = null;
    if (page.content !== undefined) {
      const c = page.content;
      sha256 = first < 0 ? zeroPageHash(c) : (this.pageSink?.hashPage ?? sha256HexTs)(c);
    }
    const finding: PageFinding = {
      gpa: page.gpa,
      ramOffset,
      fileOffset: page.fileOffset ?? null,
      streamOffset: page.streamOffset ?? null,
      section: page.section ?? null,
      source: page.source,
      nonZeroBytes,
      firstNonZeroOffset: first < 0 ? null : first,
      sha256,
      hexdump: page.content === undefined
        ? null
        : hexWindow(page.content, page.gpa, first, this.hexdumpBytes),
    };
    this.pageSink?.add(finding, page.content, { device, provisional: this.#provisional });
    if (!listed) return;
    this.#listed++;
    acc.pages.push(finding);
  }

  /**
   * Add per-block totals known without page details (a late-layout stream
   * read once). The block's listed pages stay as they are.
   *
   * @param device The device.
   * @param blockIndex Block index.
   * @param totals The totals to add.
   */
  addBlockTotals(device: VmemDevice, blockIndex: number, totals: BlockTotals): void {
    if (totals.findings === 0) return;
    addTotals(this.#block(device, blockIndex), totals);
  }

  /**
   * Move every finding of `device` (matched by gpa) from `other` into this
   * collector. Listed pages beyond this collector's bound are dropped.
   *
   * @param other Another collector.
   * @param device The device.
   */
  absorb(other: FindingCollector, device: VmemDevice): void {
    const blocks = other.#devices.get(device.gpa);
    if (blocks === undefined) return;
    for (const [blockIndex, src] of blocks) {
      const acc = this.#block(device, blockIndex);
      addTotals(acc, src);
      for (const p of src.pages) {
        if (this.#listed >= this.maxFindings) break;
        acc.pages.push(p);
        this.#listed++;
      }
    }
  }

  /**
   * Build the report: every device of `plugMap` (findings of devices not in
   * the map are dropped), blocks ascending, totals exact, at most
   * `maxFindings` pages listed in device and block order.
   *
   * @param plugMap The plug state the findings were judged by.
   * @param meta Input and plug-state descriptions, extra totals and warnings.
   * @returns The report.
   */
  report(
    plugMap: PlugMap,
    meta: {
      input: ScanInputInfo;
      plugState: PlugStateInfo;
      pageSize?: number;
      details?: "pages" | "blocks";
      coverage?: CoverageCounter;
      pageRecords?: number | null;
      warnings?: string[];
      sortPagesByGpa?: boolean;
      plugStateConflict?: string | undefined;
    },
  ): ScanReport {
    let listedBudget = this.maxFindings;
    const summary: ScanSummary = {
      findings: 0,
      nonZeroPages: 0,
      nonZeroBytes: 0,
      unknownContent: 0,
      blocksWithFindings: 0,
      devicesWithFindings: 0,
      listedPages: 0,
      truncated: false,
      unpluggedBytes: 0,
      pageRecords: meta.pageRecords ?? null,
    };
    const devices: DeviceFindings[] = [];
    const sorted = [...plugMap.devices].sort((a, b) => a.gpa - b.gpa);
    for (const d of sorted) {
      const blockCount = d.regionSize / d.blockSize;
      const plugged = plugMap.pluggedBlockCount(d);
      summary.unpluggedBytes += (blockCount - plugged) * d.blockSize;
      const out: DeviceFindings = {
        path: d.path,
        ramBlock: d.ramBlock,
        gpa: d.gpa,
        regionSize: d.regionSize,
        blockSize: d.blockSize,
        pluggedBlocks: plugged,
        unpluggedBlocks: blockCount - plugged,
        findings: 0,
        nonZeroPages: 0,
        nonZeroBytes: 0,
        coverage: meta.coverage?.device(d) ?? null,
        blocks: [],
      };
      const accs = this.#devices.get(d.gpa);
      const indexes = accs ? [...accs.keys()].sort((a, b) => a - b) : [];
      for (const blockIndex of indexes) {
        const acc = accs!.get(blockIndex)!;
        if (acc.findings === 0) continue;
        const blockGpa = d.gpa + blockIndex * d.blockSize;
        const pages = meta.sortPagesByGpa
          ? [...acc.pages].sort((a, b) => a.gpa - b.gpa)
          : acc.pages;
        const listed = pages.slice(0, listedBudget);
        listedBudget -= listed.length;
        out.blocks.push({
          blockIndex,
          gpa: blockGpa,
          ramOffset: blockIndex * d.blockSize,
          byteLength: d.blockSize,
          findings: acc.findings,
          nonZeroPages: acc.nonZeroPages,
          nonZeroBytes: acc.nonZeroBytes,
          unknownContent: acc.unknownContent,
          firstNonZero: acc.firstNonZeroGpa < 0
            ? null
            : { blockOffset: acc.firstNonZeroGpa - blockGpa, gpa: acc.firstNonZeroGpa },
          pages: listed,
        });
        out.findings += acc.findings;
        out.nonZeroPages += acc.nonZeroPages;
        out.nonZeroBytes += acc.nonZeroBytes;
        summary.unknownContent += acc.unknownContent;
        summary.listedPages += listed.length;
      }
      summary.findings += out.findings;
      summary.nonZeroPages += out.nonZeroPages;
      summary.nonZeroBytes += out.nonZeroBytes;
      summary.blocksWithFindings += out.blocks.length;
      if (out.findings > 0) summary.devicesWithFindings++;
      devices.push(out);
    }
    summary.truncated = summary.listedPages < summary.findings;
    const coverage = meta.coverage?.total() ?? null;
    const { verdict, reason } = decideVerdict({
      summary,
      devices,
      coverage,
      plugStateConflict: meta.plugStateConflict,
    });
    return {
      format: "vmem-dump-scan",
      version: SCAN_REPORT_VERSION,
      tool: { ...TOOL },
      verdict,
      verdictReason: reason,
      input: meta.input,
      plugState: meta.plugState,
      pageSize: meta.pageSize ?? 4096,
      maxFindings: this.maxFindings,
      hexdumpBytes: this.hexdumpBytes,
      details: meta.details ?? "pages",
      coverage,
      summary,
      devices,
      warnings: meta.warnings ?? [],
    };
  }
}
