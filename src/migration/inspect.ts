/**
 * A summary of a migration stream: header, machine type, every section with
 * its size, RAM blocks with record counts, the virtio-mem sections, and what
 * could not be proven about the device state. Built in one streaming pass
 * from the decoder's records (decode with `deviceState: "describe"` to
 * describe streams whose device state cannot be accounted for).
 *
 * @module
 */

import { popcount } from "../io/bits.ts";
import {
  isPageRecord,
  type MigrationRecord,
  type RamPageLikeRecord,
  type TailProblemCode,
  type VirtioMemDeviceState,
} from "./types.ts";
import { pageRecordByteLength } from "./encoder.ts";

/** One section of the stream. */
export interface InspectSection {
  /** START, PART, END or FULL. */
  type: "start" | "part" | "end" | "full";
  /** Section id. */
  sectionId: number;
  /** idstr. */
  idstr: string;
  /** Instance id. */
  instanceId: number;
  /** Version id. */
  versionId: number;
  /** Stream offset of the section header. */
  streamOffset: number;
  /** Bytes from the header to the end of the footer. */
  byteLength: number;
  /** A `ram` section after device state began (QEMU loads its RAM after the devices). */
  afterDeviceState?: true;
}

/** What keeps the device state after the RAM from being proven (see docs/security.md). */
export interface InspectTailProblem {
  /** Stable code. */
  code: TailProblemCode;
  /** A sentence for people. */
  message: string;
  /** Stream offset it is about. */
  streamOffset: number;
}

/** Record counts of one RAMBlock. */
export interface InspectRamBlock {
  /** RAMBlock idstr. */
  idstr: string;
  /** Used length in bytes. */
  usedLength: number;
  /** ZERO records. */
  zeroPages: number;
  /** PAGE records. */
  pages: number;
  /** XBZRLE records. */
  xbzrlePages: number;
  /** COMPRESS_PAGE records. */
  compressedPages: number;
  /** Stream bytes of all these records (headers, idstrs and payloads). */
  recordBytes: number;
}

/** A virtio-mem section found in the stream. */
export interface InspectVirtioMem {
  /** `early` (`P/virtio-mem-device-early`) or `device` (`P/virtio-mem`). */
  section: "early" | "device";
  /** Device path P. */
  devicePath: string;
  /** Stream offset of the section body. */
  streamOffset: number;
  /** Guest-physical base, when the section carries it. */
  gpa?: number;
  /** Region size, when carried. */
  regionSize?: number;
  /** Block size, when carried. */
  blockSize?: number;
  /** Plugged bytes, when carried. */
  size?: number;
  /** Number of plugged blocks in the bitmap, when carried. */
  pluggedBlocks?: number;
  /** Usable region size (device section). */
  usableRegionSize?: number;
  /** Requested size (device section). */
  requestedSize?: number;
}

/** The whole summary (the `inspect --json` schema). */
export interface InspectReport {
  /** Stream version. */
  version: number;
  /** Machine type from the configuration section, or `null`. */
  machineType: string | null;
  /** Capabilities from the configuration section. */
  capabilities: string[];
  /** Stream bytes. */
  byteLength: number;
  /** Commands in stream order. */
  commands: { name: string; streamOffset: number; byteLength: number }[];
  /** Sections in stream order. */
  sections: InspectSection[];
  /** RAM blocks in MEM_SIZE order. */
  ramBlocks: InspectRamBlock[];
  /** virtio-mem sections. */
  virtioMem: InspectVirtioMem[];
  /** Whether the stream ended with EOF. */
  eof: boolean;
  /** vmdesc JSON bytes, or `null` when absent. */
  vmdescBytes: number | null;
  /**
   * Whether the device state after the RAM was accounted for section by
   * section with the vmdesc sizes: `true` proven, `false` not (see
   * `tailProblems`), `null` when the stream has no device state after RAM.
   */
  tailMatchesVmdesc: boolean | null;
  /** What keeps the device state from being proven (empty when proven). */
  tailProblems: InspectTailProblem[];
}

/**
 * Summarise a stream from its records (or batches of records).
 *
 * @param records Records from `decodeMigration` or batches from `decodeMigrationBatches`.
 * @returns The report.
 * @throws {FormatError} whatever the decoder throws.
 *
 * @example
 * ```ts ignore
 * import { decodeMigrationBatches, inspectMigration, openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * const report = await inspectMigration(
 *   decodeMigrationBatches(input.reader, { deviceState: "describe" }),
 * );
 * console.log(report.machineType, report.tailProblems);
 * ```
 */
export async function inspectMigration(
  records: AsyncIterable<MigrationRecord | readonly MigrationRecord[]>,
): Promise<InspectReport> {
  const report: InspectReport = {
    version: 0,
    machineType: null,
    capabilities: [],
    byteLength: 0,
    commands: [],
    sections: [],
    ramBlocks: [],
    virtioMem: [],
    eof: false,
    vmdescBytes: null,
    tailMatchesVmdesc: null,
    tailProblems: [],
  };
  const blocks = new Map<string, InspectRamBlock>();
  let open: InspectSection | undefined;
  let eofOffset = -1;
  // Device state after the RAM: a FULL section that is not an early section, or opaque bytes.
  let sawTail = false;
  // Page records: the hot path, one Map lookup per change of block.
  let lastName: string | undefined;
  let last: InspectRamBlock | undefined;
  const page = (r: RamPageLikeRecord) => {
    if (r.ramBlock !== lastName) {
      lastName = r.ramBlock;
      last = blocks.get(r.ramBlock)!;
    }
    const block = last!;
    if (r.kind === "ram-page") block.pages++;
    else if (r.kind === "ram-zero-page") block.zeroPages++;
    else if (r.kind === "ram-xbzrle-page") block.xbzrlePages++;
    else block.compressedPages++;
    block.recordBytes += pageRecordByteLength(r);
  };

  const handle = (r: MigrationRecord) => {
    switch (r.kind) {
      case "header":
        report.version = r.version;
        break;
      case "configuration":
        report.machineType = r.machineType;
        report.capabilities = r.capabilities;
        break;
      case "command":
        report.commands.push({
          name: r.name,
          streamOffset: r.streamOffset,
          byteLength: 5 + r.payload.byteLength,
        });
        break;
      case "section-start":
      case "section-part":
      case "section-end":
      case "section-full":
        if (r.kind === "section-full" && r.idstr !== "ram" && !r.idstr.endsWith("-early")) {
          sawTail = true;
        }
        open = {
          type: r.kind.slice(8) as InspectSection["type"],
          sectionId: r.sectionId,
          idstr: r.idstr,
          instanceId: r.instanceId,
          versionId: r.versionId,
          streamOffset: r.streamOffset,
          byteLength: 0,
          ...(r.afterDeviceState ? { afterDeviceState: true as const } : {}),
        };
        report.sections.push(open);
        break;
      case "section-footer":
        if (open !== undefined && open.sectionId === r.sectionId) {
          open.byteLength = r.streamOffset + 5 - open.streamOffset;
          open = undefined;
        }
        break;
      case "ram-mem-size":
        lastName = undefined;
        for (const b of r.blocks) {
          const entry: InspectRamBlock = {
            idstr: b.idstr,
            usedLength: b.usedLength,
            zeroPages: 0,
            pages: 0,
            xbzrlePages: 0,
            compressedPages: 0,
            recordBytes: 0,
          };
          blocks.set(b.idstr, entry);
          report.ramBlocks.push(entry);
        }
        break;
      case "virtio-mem-early":
        report.virtioMem.push({
          section: "early",
          devicePath: r.devicePath,
          streamOffset: r.streamOffset,
          gpa: r.gpa,
          regionSize: r.regionSize,
          blockSize: r.blockSize,
          size: r.size,
          pluggedBlocks: popcount(r.bitmap),
        });
        break;
      case "virtio-mem-device":
        report.virtioMem.push(deviceEntry(r.devicePath, r.streamOffset, r.state));
        break;
      case "opaque":
        sawTail = true;
        break;
      case "tail-problem":
        report.tailProblems.push({
          code: r.code,
          message: r.message,
          streamOffset: r.streamOffset,
        });
        break;
      case "eof":
        report.eof = true;
        eofOffset = r.streamOffset;
        break;
      case "vmdesc":
        report.vmdescBytes = r.json.byteLength;
        break;
      default: // ram-eos, ram-multifd-flush, device-state; page records go to page()
        break;
    }
  };

  for await (const item of records) {
    if (Array.isArray(item)) {
      for (let i = 0; i < item.length; i++) {
        const r = item[i]!;
        if (isPageRecord(r)) page(r);
        else handle(r);
      }
    } else if (isPageRecord(item as MigrationRecord)) page(item as RamPageLikeRecord);
    else handle(item as MigrationRecord);
  }
  if (sawTail) report.tailMatchesVmdesc = report.tailProblems.length === 0;
  report.byteLength = eofOffset >= 0
    ? eofOffset + 1 + (report.vmdescBytes !== null ? 5 + report.vmdescBytes : 0)
    : 0;
  return report;
}

function deviceEntry(
  devicePath: string,
  streamOffset: number,
  s: VirtioMemDeviceState,
): InspectVirtioMem {
  const e: InspectVirtioMem = {
    section: "device",
    devicePath,
    streamOffset,
    usableRegionSize: s.usableRegionSize,
    requestedSize: s.requestedSize,
  };
  if (s.gpa !== undefined) e.gpa = s.gpa;
  if (s.regionSize !== undefined) e.regionSize = s.regionSize;
  if (s.blockSize !== undefined) e.blockSize = s.blockSize;
  if (s.size !== undefined) e.size = s.size;
  if (s.bitmap !== undefined) e.pluggedBlocks = popcount(s.bitmap);
  return e;
}
