/**
 * A summary of a migration stream: header, machine type, every section with
 * its size, RAM blocks with record counts, and the virtio-mem sections. Built
 * in one streaming pass; the device-state tail is kept only up to a cap to
 * name its sections from the vmdesc.
 *
 * @module
 */

import { popcount } from "../io/bits.ts";
import {
  isPageRecord,
  type MigrationRecord,
  type RamPageLikeRecord,
  type VirtioMemDeviceState,
} from "./types.ts";
import { pageRecordByteLength } from "./encoder.ts";
import { fullHeaderLength, vmdescSections } from "./vmdesc.ts";
import { latin1Decode, latin1Encode } from "../io/text.ts";
import {
  QEMU_VM_SECTION_FOOTER,
  QEMU_VM_SECTION_FULL,
  VIRTIO_MEM_EARLY_SUFFIX,
} from "./constants.ts";
import { encodeLongHeader } from "./_tail.ts";

/** One section of the stream. */
export interface InspectSection {
  /** START, PART, END or FULL. */
  type: "start" | "part" | "end" | "full";
  /** Section id, or `null` for a tail section the report could not see. */
  sectionId: number | null;
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
  /** Whether the device-state tail matched the vmdesc exactly. */
  tailMatchesVmdesc: boolean | null;
}

/** Options for {@linkcode inspectMigration}. */
export interface InspectOptions {
  /** Tail bytes kept to name its sections. @default {16777216} */
  tailCap?: number;
}

/**
 * Summarise a stream from its records (or batches of records).
 *
 * @param records Records from `decodeMigration` or batches from `decodeMigrationBatches`.
 * @param options Tail cap.
 * @returns The report.
 * @throws {FormatError} whatever the decoder throws.
 *
 * @example
 * ```ts ignore
 * import { decodeMigrationBatches, inspectMigration, openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * const report = await inspectMigration(decodeMigrationBatches(input.reader));
 * console.log(report.machineType);
 * ```
 */
export async function inspectMigration(
  records: AsyncIterable<MigrationRecord | MigrationRecord[]>,
  options: InspectOptions = {},
): Promise<InspectReport> {
  const tailCap = options.tailCap ?? 16 << 20;
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
  };
  const blocks = new Map<string, InspectRamBlock>();
  let open: InspectSection | undefined;
  let tailStart = -1;
  let eofOffset = -1;
  const tail: Uint8Array[] = [];
  let tailBytes = 0;
  let tailComplete = true;
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
        if (r.kind === "section-full" && !r.idstr.endsWith(VIRTIO_MEM_EARLY_SUFFIX)) {
          // The device-state tail: its sections are counted from the vmdesc at the end.
          if (tailStart < 0) tailStart = r.streamOffset;
          keepTail(
            encodeLongHeader(
              QEMU_VM_SECTION_FULL,
              r.sectionId,
              latin1Encode(r.idstr),
              r.instanceId,
              r.versionId,
            ),
            r.streamOffset,
          );
          break;
        }
        open = {
          type: r.kind.slice(8) as InspectSection["type"],
          sectionId: r.sectionId,
          idstr: r.idstr,
          instanceId: r.instanceId,
          versionId: r.versionId,
          streamOffset: r.streamOffset,
          byteLength: 0,
        };
        report.sections.push(open);
        break;
      case "section-footer":
        if (tailStart >= 0) {
          const footer = new Uint8Array(5);
          footer[0] = QEMU_VM_SECTION_FOOTER;
          new DataView(footer.buffer).setUint32(1, r.sectionId);
          keepTail(footer, r.streamOffset);
          break;
        }
        if (open !== undefined && open.sectionId === r.sectionId && tailStart < 0) {
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
        keepTail(r.data, r.streamOffset);
        break;
      case "opaque":
        if (tailStart < 0) tailStart = r.streamOffset;
        keepTail(r.data, r.streamOffset);
        break;
      case "eof":
        report.eof = true;
        eofOffset = r.streamOffset;
        break;
      case "vmdesc":
        report.vmdescBytes = r.json.byteLength;
        describeTail(r.parsed);
        break;
      default: // ram-eos, ram-multifd-flush; page records go to page()
        break;
    }
  };

  // Tail bytes are kept in order, including the header bytes of recognised sections.
  let tailNext = -1;
  function keepTail(data: Uint8Array, streamOffset: number) {
    if (tailNext >= 0 && streamOffset !== tailNext) tailComplete = false;
    tailNext = streamOffset + data.byteLength;
    if (tailBytes + data.byteLength > tailCap) {
      tailComplete = false;
      return;
    }
    tail.push(data); // tail records are copies already (the decoder slices them)
    tailBytes += data.byteLength;
  }

  function describeTail(parsed: unknown) {
    const sections = vmdescSections(parsed);
    if (sections === undefined || tailStart < 0 || eofOffset < 0) return;
    const late = sections.filter((s) => !s.idstr.endsWith("/virtio-mem-device-early"));
    const total = late.reduce((a, s) => a + fullHeaderLength(s.idstr) + s.bodyLength + 5, 0);
    report.tailMatchesVmdesc = total === eofOffset - tailStart;
    if (!report.tailMatchesVmdesc) return;
    const bytes = tailComplete ? joinTail() : undefined;
    let at = tailStart;
    for (const s of late) {
      const rel = at - tailStart;
      let sectionId: number | null = null;
      if (bytes !== undefined && rel + 5 <= bytes.byteLength && bytes[rel] === 0x04) {
        const v = new DataView(bytes.buffer, bytes.byteOffset + rel);
        const nameLength = bytes[rel + 5]!;
        const name = latin1Decode(bytes.subarray(rel + 6, rel + 6 + nameLength));
        if (name === s.idstr) sectionId = v.getUint32(1);
      }
      const byteLength = fullHeaderLength(s.idstr) + s.bodyLength + 5;
      report.sections.push({
        type: "full",
        sectionId,
        idstr: s.idstr,
        instanceId: s.instanceId,
        versionId: s.versionId,
        streamOffset: at,
        byteLength,
      });
      at += byteLength;
    }
  }

  function joinTail(): Uint8Array {
    const out = new Uint8Array(tailBytes);
    let o = 0;
    for (const t of tail) {
      out.set(t, o);
      o += t.byteLength;
    }
    return out;
  }

  for await (const item of records) {
    if (Array.isArray(item)) {
      for (let i = 0; i < item.length; i++) {
        const r = item[i]!;
        if (isPageRecord(r)) page(r);
        else handle(r);
      }
    } else if (isPageRecord(item)) page(item);
    else handle(item);
  }
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
