/**
 * The records a migration stream decodes into. A stream is a flat sequence
 * of these; `encodeMigration` turns the same sequence back into the exact
 * input bytes.
 *
 * Every `Uint8Array` field is a view into the input: copy it to keep it past
 * the next record.
 *
 * @module
 */

import type { MappedRamBlock } from "./mapped_ram/block_layout.ts";

/** Fields every record has. */
export interface RecordBase {
  /** Stream offset of the record's first byte. */
  streamOffset: number;
}

/** `QEVM` magic and version. */
export interface HeaderRecord extends RecordBase {
  /** Record discriminator. */
  kind: "header";
  /** Stream version (3). */
  version: number;
}

/** One subsection of the configuration section. */
export interface ConfigurationSubsection {
  /** Subsection name, e.g. `configuration/capabilities`. */
  name: string;
  /** Subsection version. */
  versionId: number;
  /** Raw body bytes. */
  body: Uint8Array;
}

/** The configuration section: machine type and optional subsections. */
export interface ConfigurationRecord extends RecordBase {
  /** Record discriminator. */
  kind: "configuration";
  /** Machine type, e.g. `pc-q35-7.2`. */
  machineType: string;
  /** Subsections in stream order. */
  subsections: ConfigurationSubsection[];
  /** Capability names from `configuration/capabilities`, when present. */
  capabilities: string[];
  /** Target page bits from `configuration/target-page-bits`, when present. */
  targetPageBits: number | undefined;
}

/** A section header (START/FULL carry idstr, instance and version on the wire; PART/END only the id). */
export interface SectionHeaderRecord extends RecordBase {
  /** Record discriminator. */
  kind: "section-start" | "section-part" | "section-end" | "section-full";
  /** Section id. */
  sectionId: number;
  /** idstr (for PART/END: learnt from the START). */
  idstr: string;
  /** Instance id (for PART/END: learnt from the START). */
  instanceId: number;
  /** Version id (for PART/END: learnt from the START). */
  versionId: number;
  /**
   * Set on a `ram` section (START, PART, END, or the FULL section QEMU
   * never sends) that comes after device state began: QEMU loads its pages
   * after the devices it already loaded, which no verdict about the stream
   * may accept. Absent otherwise.
   */
  afterDeviceState?: true;
}

/** A section footer (0x7E + section id). */
export interface SectionFooterRecord extends RecordBase {
  /** Record discriminator. */
  kind: "section-footer";
  /** Section id repeated by the footer. */
  sectionId: number;
}

/** A command (0x08). PACKAGED is followed by the records of its nested stream. */
export interface CommandRecord extends RecordBase {
  /** Record discriminator. */
  kind: "command";
  /** MIG_CMD_* value. */
  command: number;
  /** Command name, e.g. `SWITCHOVER_START`. */
  name: string;
  /** Payload bytes (for PACKAGED: the be32 length only). */
  payload: Uint8Array;
  /**
   * Set on a PACKAGED command after device state began (what it carries is
   * loaded after the devices). Absent otherwise.
   */
  afterDeviceState?: true;
}

/** One RAMBlock of the MEM_SIZE list. */
export interface RamBlockInfo {
  /** RAMBlock idstr, e.g. `0000:00:01.0/vmem0mem` or `pc.ram`. */
  idstr: string;
  /** Used length in bytes. */
  usedLength: number;
  /** Block page size, present with postcopy-ram on hugepage blocks. */
  pageSize?: number;
  /** Guest-physical address, present with x-ignore-shared. */
  gpa?: number;
  /** Where the block's bitmap and pages are, in a mapped-ram file (decoded with `mappedRam`). */
  mappedRam?: MappedRamBlock;
}

/** The MEM_SIZE block list of the `ram` START section. */
export interface RamMemSizeRecord extends RecordBase {
  /** Record discriminator. */
  kind: "ram-mem-size";
  /** Sum of all used lengths, as sent. */
  totalBytes: number;
  /** Blocks in stream order. */
  blocks: RamBlockInfo[];
}

/** Fields of every record that carries one page. */
export interface RamPageBase extends RecordBase {
  /** RAMBlock idstr (resolved through CONTINUE). */
  ramBlock: string;
  /** Offset of the page inside its RAMBlock. */
  ramOffset: number;
  /** Whether the input had CONTINUE set (idstr omitted). */
  continued: boolean;
}

/** A ZERO record. */
export interface RamZeroPageRecord extends RamPageBase {
  /** Record discriminator. */
  kind: "ram-zero-page";
  /** Fill byte (QEMU always sends 0). */
  fill: number;
}

/** A PAGE record. */
export interface RamPageRecord extends RamPageBase {
  /** Record discriminator. */
  kind: "ram-page";
  /** The page bytes (page size long). */
  data: Uint8Array;
}

/** An XBZRLE record. */
export interface RamXbzrlePageRecord extends RamPageBase {
  /** Record discriminator. */
  kind: "ram-xbzrle-page";
  /** Encoding byte (0x01). */
  encoding: number;
  /** The encoded delta. */
  data: Uint8Array;
}

/** A COMPRESS_PAGE record (zlib stream of one page). */
export interface RamCompressedPageRecord extends RamPageBase {
  /** Record discriminator. */
  kind: "ram-compressed-page";
  /** The zlib bytes. */
  data: Uint8Array;
}

/** EOS: the end of a `ram` section body. */
export interface RamEosRecord extends RecordBase {
  /** Record discriminator. */
  kind: "ram-eos";
}

/** MULTIFD_FLUSH barrier. */
export interface RamMultifdFlushRecord extends RecordBase {
  /** Record discriminator. */
  kind: "ram-multifd-flush";
}

/** The body of a `P/virtio-mem-device-early` FULL section. */
export interface VirtioMemEarlyRecord extends RecordBase {
  /** Record discriminator. */
  kind: "virtio-mem-early";
  /** Device path P (the idstr without `/virtio-mem-device-early`). */
  devicePath: string;
  /** Guest-physical base of the region (`memaddr`). */
  gpa: number;
  /** Region size in bytes. */
  regionSize: number;
  /** Device block size in bytes. */
  blockSize: number;
  /** NUMA node. */
  node: number;
  /** Plugged bytes. */
  size: number;
  /** Plug bitmap as on the wire: be64 words, bit i of word w is block 64·w+i. */
  bitmap: Uint8Array;
}

/** What the `virtio-mem-device` vmstate of a `P/virtio-mem` section holds. */
export interface VirtioMemDeviceState {
  /** `late`: sanity block, sizes and bitmap here; `early`: only usable and requested size. */
  layout: "late" | "early";
  /** Saved PCI config space size (256 or 4096). */
  configSpaceSize: number;
  /** MSI-X vectors found in the saved config space. */
  msixVectors: number;
  /** Offset inside the section body where the `virtio-mem-device` fields start. */
  fieldsOffset: number;
  /** Usable region size in bytes. */
  usableRegionSize: number;
  /** Requested size in bytes. */
  requestedSize: number;
  /** Late layout only: guest-physical base. */
  gpa?: number;
  /** Late layout only: region size. */
  regionSize?: number;
  /** Late layout only: block size. */
  blockSize?: number;
  /** Late layout only: node. */
  node?: number;
  /** Late layout only: plugged bytes. */
  size?: number;
  /** Late layout only: plug bitmap as on the wire (be64 words). */
  bitmap?: Uint8Array;
}

/** The body of a `P/virtio-mem` FULL section, recognised and parsed in the device-state tail. */
export interface VirtioMemDeviceRecord extends RecordBase {
  /** Record discriminator. */
  kind: "virtio-mem-device";
  /** Device path P. */
  devicePath: string;
  /** The whole section body, verbatim. */
  data: Uint8Array;
  /** The parsed `virtio-mem-device` state. */
  state: VirtioMemDeviceState;
}

/**
 * The body of a device-state FULL section: delimited by the size the vmdesc
 * gives for it, checked by the section footer that must follow, and passed
 * through verbatim (the decoder does not know the device's fields).
 */
export interface DeviceStateRecord extends RecordBase {
  /** Record discriminator. */
  kind: "device-state";
  /** Section id (of the header before it). */
  sectionId: number;
  /** Section idstr (of the header before it). */
  idstr: string;
  /** The body, verbatim. */
  data: Uint8Array;
}

/** Why the device-state tail cannot be proven (see {@linkcode TailProblemRecord}). */
export type TailProblemCode =
  /** The stream has no vmdesc, so device sections cannot be delimited. */
  | "no-vmdesc"
  /** The vmdesc does not parse, or is not shaped as QEMU writes it. */
  | "bad-vmdesc"
  /** The stream has no section footers (QEMU <= 2.3 machine types): no boundary can be checked. */
  | "no-footers"
  /** The sections do not add up with the vmdesc sizes (a footer is missing, bytes are left over, …). */
  | "undelimited"
  /** The sections add up, but the vmdesc disagrees with their headers or with a parsed body. */
  | "vmdesc-mismatch"
  /** Bytes inside a device body could also be read as a footer and a section that loads RAM or plug state. */
  | "ambiguous";

/**
 * Only with the decoder option `deviceState: "describe"`: what could not be
 * proven about the device-state tail (by default such a stream is an
 * error). Carries no stream bytes of its own.
 */
export interface TailProblemRecord extends RecordBase {
  /** Record discriminator. */
  kind: "tail-problem";
  /** What kind of problem. */
  code: TailProblemCode;
  /** A sentence for people. */
  message: string;
}

/** Bytes passed through verbatim (device state inside PACKAGED, or a tail that could not be delimited). */
export interface OpaqueRecord extends RecordBase {
  /** Record discriminator. */
  kind: "opaque";
  /** The bytes. */
  data: Uint8Array;
}

/** QEMU_VM_EOF. */
export interface EofRecord extends RecordBase {
  /** Record discriminator. */
  kind: "eof";
}

/** The vmdesc JSON trailer. */
export interface VmdescRecord extends RecordBase {
  /** Record discriminator. */
  kind: "vmdesc";
  /** Raw JSON bytes. */
  json: Uint8Array;
  /** Parsed JSON, or `undefined` when it does not parse (QEMU only reports that). */
  parsed: unknown;
}

/** Every record a migration stream decodes into. */
export type MigrationRecord =
  | HeaderRecord
  | ConfigurationRecord
  | SectionHeaderRecord
  | SectionFooterRecord
  | CommandRecord
  | RamMemSizeRecord
  | RamZeroPageRecord
  | RamPageRecord
  | RamXbzrlePageRecord
  | RamCompressedPageRecord
  | RamEosRecord
  | RamMultifdFlushRecord
  | VirtioMemEarlyRecord
  | VirtioMemDeviceRecord
  | DeviceStateRecord
  | TailProblemRecord
  | OpaqueRecord
  | EofRecord
  | VmdescRecord;

/** The records that carry one page. */
export type RamPageLikeRecord =
  | RamZeroPageRecord
  | RamPageRecord
  | RamXbzrlePageRecord
  | RamCompressedPageRecord;

/**
 * Whether a record carries one page (PAGE, ZERO, XBZRLE or COMPRESS_PAGE):
 * the one test every consumer uses to tell page records from the rest.
 *
 * @param r A record.
 * @returns `true` for the {@linkcode RamPageLikeRecord} kinds.
 *
 * @example
 * ```ts
 * import { isPageRecord } from "@vmem-dump/vmem-dump";
 * console.log(isPageRecord({ kind: "ram-eos", streamOffset: 0 })); // false
 * ```
 */
export function isPageRecord(r: MigrationRecord): r is RamPageLikeRecord {
  const k = r.kind;
  return k === "ram-page" || k === "ram-zero-page" || k === "ram-xbzrle-page" ||
    k === "ram-compressed-page";
}
