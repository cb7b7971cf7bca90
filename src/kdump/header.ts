/**
 * The two headers at the start of a kdump-compressed file: `disk_dump_header`
 * (block 0) and `kdump_sub_header` (block 1), in both word sizes and byte
 * orders (makedumpfile `diskdump_mod.h`, QEMU `include/system/dump.h`).
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { isPowerOfTwo } from "../io/bits.ts";
import { viewOf } from "../io/endian.ts";
import { latin1Decode } from "../io/text.ts";
import {
  getWireBigUint,
  getWireUint,
  setWireUint,
  type WireField,
  type WireLayout,
  wireLayout,
} from "../io/wire.ts";

/** `KDUMP_SIGNATURE`: "KDUMP" and three spaces, no NUL. */
export const KDUMP_SIGNATURE = "KDUMP   ";

/** Bytes of `disk_dump_header` read for detection (the 64-bit struct is 464 bytes). */
export const DISK_DUMP_HEADER_SIZE = 464;

/** Length of each `new_utsname` field. */
const UTS_LEN = 65;

/** Highest `header_version` understood (makedumpfile and QEMU write 6). */
export const KDUMP_MAX_HEADER_VERSION = 6;

/** Smallest and largest accepted `block_size` (libkdumpfile's page size bounds). */
export const KDUMP_MIN_BLOCK_SIZE = 4096;
/** See {@linkcode KDUMP_MIN_BLOCK_SIZE}. */
export const KDUMP_MAX_BLOCK_SIZE = 65536;

/** `DUMP_DH_COMPRESSED_ZLIB`: page stored as a zlib stream. */
export const DUMP_DH_COMPRESSED_ZLIB = 0x1;
/** `DUMP_DH_COMPRESSED_LZO`: page stored as a raw LZO1X block. */
export const DUMP_DH_COMPRESSED_LZO = 0x2;
/** `DUMP_DH_COMPRESSED_SNAPPY`: page stored as a raw Snappy block. */
export const DUMP_DH_COMPRESSED_SNAPPY = 0x4;
/** `DUMP_DH_COMPRESSED_INCOMPLETE` (header status only): the dump was cut short. */
export const DUMP_DH_COMPRESSED_INCOMPLETE = 0x8;
/** `DUMP_DH_EXCLUDED_VMEMMAP` (header status only): `makedumpfile -e`. */
export const DUMP_DH_EXCLUDED_VMEMMAP = 0x10;
/** `DUMP_DH_COMPRESSED_ZSTD`: page stored as a zstd frame. */
export const DUMP_DH_COMPRESSED_ZSTD = 0x20;

/** The `new_utsname` of the dumped kernel (QEMU fills only `machine`). */
export interface KdumpUtsname {
  /** `sysname`. */
  sysname: string;
  /** `nodename`. */
  nodename: string;
  /** `release`. */
  release: string;
  /** `version`. */
  version: string;
  /** `machine`, e.g. `x86_64`. */
  machine: string;
  /** `domainname`. */
  domainname: string;
}

/** A decoded `disk_dump_header`. */
export interface DiskDumpHeader {
  /** `signature`: always {@linkcode KDUMP_SIGNATURE}. */
  signature: string;
  /** `header_version` (1–6). */
  headerVersion: number;
  /** `utsname`. */
  utsname: KdumpUtsname;
  /** `timestamp.tv_sec` (0 from QEMU). */
  timestampSeconds: number;
  /** `timestamp.tv_usec`. */
  timestampMicroseconds: number;
  /** `status`: `DUMP_DH_*` bits. */
  status: number;
  /** `block_size`: the page size, a power of two in 4096..65536. */
  blockSize: number;
  /** `sub_hdr_size`: blocks taken by the sub header and the notes. */
  subHdrSize: number;
  /** `bitmap_blocks`: blocks taken by both bitmaps together. */
  bitmapBlocks: number;
  /** `max_mapnr` (32-bit, obsolete since version 6: see the sub header). */
  maxMapnr32: number;
  /** `total_ram_blocks` (unused by readers). */
  totalRamBlocks: number;
  /** `device_blocks` (unused by readers). */
  deviceBlocks: number;
  /** `written_blocks` (unused by readers). */
  writtenBlocks: number;
  /** `current_cpu`: the CPU that crashed. */
  currentCpu: number;
  /** `nr_cpus`. */
  nrCpus: number;
  /** Byte order of the dumped machine. */
  littleEndian: boolean;
  /** Word size of the dumped machine's struct layout: 8 (64-bit) or 4 (32-bit, QEMU/i386 packed). */
  wordSize: 8 | 4;
}

/** A decoded `kdump_sub_header`; fields a version lacks are 0. */
export interface KdumpSubHeader {
  /** `phys_base` (v0+): kept as bigint, it is an address. */
  physBase: bigint;
  /** `dump_level` (v1+): makedumpfile `-d`, 1 from QEMU. */
  dumpLevel: number;
  /** `split` (v2+): 1 for one file of `makedumpfile --split`. */
  split: number;
  /** `offset_vmcoreinfo` (v3+): file offset of the VMCOREINFO text, 0 when none. */
  offsetVmcoreinfo: number;
  /** `size_vmcoreinfo` (v3+). */
  sizeVmcoreinfo: number;
  /** `offset_note` (v4+): file offset of the ELF notes, 0 when none. */
  offsetNote: number;
  /** `size_note` (v4+). */
  sizeNote: number;
  /** `offset_eraseinfo` (v5+): makedumpfile erase commands. */
  offsetEraseinfo: number;
  /** `size_eraseinfo` (v5+). */
  sizeEraseinfo: number;
  /** First pfn of a split file (`start_pfn_64`, or `start_pfn` before v6). */
  startPfn: number;
  /** End pfn (exclusive) of a split file. */
  endPfn: number;
  /** Pfn count: `max_mapnr_64` from v6, else the header's `max_mapnr`. */
  maxMapnr: number;
}

/** Integer fields of `disk_dump_header`, by {@linkcode DiskDumpHeader} key. */
export type DiskDumpHeaderField =
  | "headerVersion"
  | "timestampSeconds"
  | "timestampMicroseconds"
  | "status"
  | "blockSize"
  | "subHdrSize"
  | "bitmapBlocks"
  | "maxMapnr32"
  | "totalRamBlocks"
  | "deviceBlocks"
  | "writtenBlocks"
  | "currentCpu"
  | "nrCpus";

const DISK_DUMP_HEADER_INTEGERS: readonly DiskDumpHeaderField[] = [
  "headerVersion",
  "timestampSeconds",
  "timestampMicroseconds",
  "status",
  "blockSize",
  "subHdrSize",
  "bitmapBlocks",
  "maxMapnr32",
  "totalRamBlocks",
  "deviceBlocks",
  "writtenBlocks",
  "currentCpu",
  "nrCpus",
];

/** Offset of `utsname` (6 × 65 bytes) in both word sizes. */
const UTSNAME_OFFSET = 12;

/**
 * `disk_dump_header` of a 64-bit machine. After `utsname` (12 + 6 × 65 =
 * 402) the timestamp is aligned to 8. The signature (8 bytes at 0) and
 * `utsname` (390 bytes at 12) are byte arrays.
 */
export const DISK_DUMP_HEADER_64: WireLayout<DiskDumpHeaderField | "signature" | "utsname"> =
  wireLayout("disk_dump_header (64-bit)", 464, {
    signature: ["signature", 0, 8],
    headerVersion: ["header_version", 8, 4],
    utsname: ["utsname", UTSNAME_OFFSET, 6 * UTS_LEN],
    timestampSeconds: ["timestamp.tv_sec", 408, 8],
    timestampMicroseconds: ["timestamp.tv_usec", 416, 8],
    status: ["status", 424, 4],
    blockSize: ["block_size", 428, 4],
    subHdrSize: ["sub_hdr_size", 432, 4],
    bitmapBlocks: ["bitmap_blocks", 436, 4],
    maxMapnr32: ["max_mapnr", 440, 4],
    totalRamBlocks: ["total_ram_blocks", 444, 4],
    deviceBlocks: ["device_blocks", 448, 4],
    writtenBlocks: ["written_blocks", 452, 4],
    currentCpu: ["current_cpu", 456, 4],
    nrCpus: ["nr_cpus", 460, 4],
  });

/** `disk_dump_header` of a 32-bit machine (QEMU i386, packed to 4). */
export const DISK_DUMP_HEADER_32: WireLayout<DiskDumpHeaderField | "signature" | "utsname"> =
  wireLayout("disk_dump_header (32-bit)", 452, {
    signature: ["signature", 0, 8],
    headerVersion: ["header_version", 8, 4],
    utsname: ["utsname", UTSNAME_OFFSET, 6 * UTS_LEN],
    timestampSeconds: ["timestamp.tv_sec", 404, 4],
    timestampMicroseconds: ["timestamp.tv_usec", 408, 4],
    status: ["status", 412, 4],
    blockSize: ["block_size", 416, 4],
    subHdrSize: ["sub_hdr_size", 420, 4],
    bitmapBlocks: ["bitmap_blocks", 424, 4],
    maxMapnr32: ["max_mapnr", 428, 4],
    totalRamBlocks: ["total_ram_blocks", 432, 4],
    deviceBlocks: ["device_blocks", 436, 4],
    writtenBlocks: ["written_blocks", 440, 4],
    currentCpu: ["current_cpu", 444, 4],
    nrCpus: ["nr_cpus", 448, 4],
  });

/**
 * The `disk_dump_header` layout of a word size.
 *
 * @param wordSize 8 (64-bit) or 4 (32-bit).
 * @returns {@linkcode DISK_DUMP_HEADER_64} or {@linkcode DISK_DUMP_HEADER_32}.
 *
 * @example
 * ```ts
 * import { diskDumpHeaderLayout } from "./header.ts";
 * console.log(diskDumpHeaderLayout(8).fields.blockSize.offset); // 428
 * ```
 */
export function diskDumpHeaderLayout(
  wordSize: 8 | 4,
): WireLayout<DiskDumpHeaderField | "signature" | "utsname"> {
  return wordSize === 8 ? DISK_DUMP_HEADER_64 : DISK_DUMP_HEADER_32;
}

/** Fields of `kdump_sub_header`, by {@linkcode KdumpSubHeader} key (`…64`: the v6 fields). */
export type KdumpSubHeaderField =
  | "physBase"
  | "dumpLevel"
  | "split"
  | "startPfn"
  | "endPfn"
  | "offsetVmcoreinfo"
  | "sizeVmcoreinfo"
  | "offsetNote"
  | "sizeNote"
  | "offsetEraseinfo"
  | "sizeEraseinfo"
  | "startPfn64"
  | "endPfn64"
  | "maxMapnr64";

/** `kdump_sub_header` of a 64-bit machine (version 6, the newest). */
export const KDUMP_SUB_HEADER_64: WireLayout<KdumpSubHeaderField> = wireLayout(
  "kdump_sub_header (64-bit)",
  104,
  {
    physBase: ["phys_base", 0, 8],
    dumpLevel: ["dump_level", 8, 4],
    split: ["split", 12, 4],
    startPfn: ["start_pfn", 16, 8],
    endPfn: ["end_pfn", 24, 8],
    offsetVmcoreinfo: ["offset_vmcoreinfo", 32, 8],
    sizeVmcoreinfo: ["size_vmcoreinfo", 40, 8],
    offsetNote: ["offset_note", 48, 8],
    sizeNote: ["size_note", 56, 8],
    offsetEraseinfo: ["offset_eraseinfo", 64, 8],
    sizeEraseinfo: ["size_eraseinfo", 72, 8],
    startPfn64: ["start_pfn_64", 80, 8],
    endPfn64: ["end_pfn_64", 88, 8],
    maxMapnr64: ["max_mapnr_64", 96, 8],
  },
);

/** `kdump_sub_header` of a 32-bit machine (QEMU i386: `unsigned long` is 4 bytes, u64 packed to 4). */
export const KDUMP_SUB_HEADER_32: WireLayout<KdumpSubHeaderField> = wireLayout(
  "kdump_sub_header (32-bit)",
  80,
  {
    physBase: ["phys_base", 0, 4],
    dumpLevel: ["dump_level", 4, 4],
    split: ["split", 8, 4],
    startPfn: ["start_pfn", 12, 4],
    endPfn: ["end_pfn", 16, 4],
    offsetVmcoreinfo: ["offset_vmcoreinfo", 20, 8],
    sizeVmcoreinfo: ["size_vmcoreinfo", 28, 4],
    offsetNote: ["offset_note", 32, 8],
    sizeNote: ["size_note", 40, 4],
    offsetEraseinfo: ["offset_eraseinfo", 44, 8],
    sizeEraseinfo: ["size_eraseinfo", 52, 4],
    startPfn64: ["start_pfn_64", 56, 8],
    endPfn64: ["end_pfn_64", 64, 8],
    maxMapnr64: ["max_mapnr_64", 72, 8],
  },
);

/** The `header_version` that introduced each sub-header field. */
const SUB_HEADER_SINCE: Readonly<Record<KdumpSubHeaderField, number>> = {
  physBase: 0,
  dumpLevel: 1,
  split: 2,
  startPfn: 2,
  endPfn: 2,
  offsetVmcoreinfo: 3,
  sizeVmcoreinfo: 3,
  offsetNote: 4,
  sizeNote: 4,
  offsetEraseinfo: 5,
  sizeEraseinfo: 5,
  startPfn64: 6,
  endPfn64: 6,
  maxMapnr64: 6,
};

/**
 * The `kdump_sub_header` layout of a word size.
 *
 * @param wordSize 8 (64-bit) or 4 (32-bit).
 * @returns {@linkcode KDUMP_SUB_HEADER_64} or {@linkcode KDUMP_SUB_HEADER_32}.
 *
 * @example
 * ```ts
 * import { kdumpSubHeaderLayout } from "./header.ts";
 * console.log(kdumpSubHeaderLayout(4).fields.offsetNote.offset); // 32
 * ```
 */
export function kdumpSubHeaderLayout(wordSize: 8 | 4): WireLayout<KdumpSubHeaderField> {
  return wordSize === 8 ? KDUMP_SUB_HEADER_64 : KDUMP_SUB_HEADER_32;
}

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return latin1Decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Bytes of a `struct new_utsname` (6 fields of 65 bytes). */
export const UTSNAME_BYTE_LENGTH: number = 6 * UTS_LEN;

/**
 * Decode a `struct new_utsname`: six NUL-terminated fields of 65 bytes
 * (sysname, nodename, release, version, machine, domainname), as the kdump
 * header and the kernel's `init_uts_ns` hold it.
 *
 * @param bytes At least {@linkcode UTSNAME_BYTE_LENGTH} bytes.
 * @returns The six strings.
 * @throws {RangeError} when `bytes` is too short.
 *
 * @example
 * ```ts
 * import { decodeUtsname, UTSNAME_BYTE_LENGTH } from "@vmem-dump/vmem-dump/kdump";
 * const b = new Uint8Array(UTSNAME_BYTE_LENGTH);
 * b.set(new TextEncoder().encode("Linux"), 0);
 * console.log(decodeUtsname(b).sysname); // Linux
 * ```
 */
export function decodeUtsname(bytes: Uint8Array): KdumpUtsname {
  if (bytes.byteLength < UTSNAME_BYTE_LENGTH) {
    throw new RangeError(`A utsname needs ${UTSNAME_BYTE_LENGTH} bytes, not ${bytes.byteLength}`);
  }
  const uts = (i: number) => cString(bytes.subarray(i * UTS_LEN, (i + 1) * UTS_LEN));
  return {
    sysname: uts(0),
    nodename: uts(1),
    release: uts(2),
    version: uts(3),
    machine: uts(4),
    domainname: uts(5),
  };
}

/** Why a layout was rejected, or undefined when it fits. */
function layoutProblem(
  view: DataView,
  layout: WireLayout<DiskDumpHeaderField | "signature" | "utsname">,
  le: boolean,
): string | undefined {
  const f = layout.fields;
  const version = getWireUint(view, 0, f.headerVersion, le);
  if (version < 1 || version > KDUMP_MAX_HEADER_VERSION) return `header_version ${version}`;
  const blockSize = getWireUint(view, 0, f.blockSize, le);
  if (
    !isPowerOfTwo(blockSize) || blockSize < KDUMP_MIN_BLOCK_SIZE ||
    blockSize > KDUMP_MAX_BLOCK_SIZE
  ) return `block_size 0x${blockSize.toString(16)}`;
  const bitmapBlocks = getWireUint(view, 0, f.bitmapBlocks, le);
  const maxMapnr = getWireUint(view, 0, f.maxMapnr32, le);
  if (8 * bitmapBlocks * blockSize < maxMapnr) {
    return `bitmap_blocks ${bitmapBlocks} too small for max_mapnr ${maxMapnr}`;
  }
  return undefined;
}

/**
 * Decode a `disk_dump_header`. The byte order and word size are not
 * recorded in the file: the 64-bit layout is tried in both byte orders, then
 * the 32-bit one, and the first whose `header_version` (1–6), `block_size`
 * (power of two, 4096–65536) and `bitmap_blocks` (enough bits for
 * `max_mapnr`) make sense wins.
 *
 * @param bytes At least {@linkcode DISK_DUMP_HEADER_SIZE} bytes from file offset 0.
 * @returns The header.
 * @throws {FormatError} `bad-magic` without the signature, `bad-header` when no layout fits.
 *
 * @example
 * ```ts
 * import { readDiskDumpHeader } from "@vmem-dump/vmem-dump/kdump";
 * const b = new Uint8Array(464);
 * const v = new DataView(b.buffer);
 * b.set(new TextEncoder().encode("KDUMP   "));
 * v.setUint32(8, 6, true); // header_version
 * v.setUint32(428, 4096, true); // block_size
 * v.setUint32(432, 1, true); // sub_hdr_size
 * v.setUint32(436, 2, true); // bitmap_blocks
 * v.setUint32(440, 100, true); // max_mapnr
 * console.log(readDiskDumpHeader(b).blockSize); // 4096
 * ```
 */
export function readDiskDumpHeader(bytes: Uint8Array): DiskDumpHeader {
  if (bytes.byteLength < DISK_DUMP_HEADER_SIZE) {
    throw new FormatError(
      `Cannot read kdump header: ${bytes.byteLength} bytes, need ${DISK_DUMP_HEADER_SIZE}`,
      { format: "kdump", code: "unexpected-eof", offset: bytes.byteLength },
    );
  }
  const signature = latin1Decode(bytes.subarray(0, 8));
  if (signature !== KDUMP_SIGNATURE) {
    throw new FormatError(`Cannot read kdump header: signature is not "KDUMP   "`, {
      format: "kdump",
      code: "bad-magic",
      offset: 0,
    });
  }
  const view = viewOf(bytes);
  const problems: string[] = [];
  for (const wordSize of [8, 4] as const) {
    const layout = diskDumpHeaderLayout(wordSize);
    for (const le of [true, false]) {
      const problem = layoutProblem(view, layout, le);
      if (problem !== undefined) {
        problems.push(`${wordSize * 8}-bit ${le ? "LE" : "BE"}: ${problem}`);
        continue;
      }
      const where = { format: "kdump", fileOffset: 0 } as const;
      const n = (field: WireField) => getWireUint(view, 0, field, le, where);
      const f = layout.fields;
      return {
        signature,
        headerVersion: n(f.headerVersion),
        utsname: decodeUtsname(bytes.subarray(UTSNAME_OFFSET)),
        timestampSeconds: n(f.timestampSeconds),
        timestampMicroseconds: n(f.timestampMicroseconds),
        status: n(f.status),
        blockSize: n(f.blockSize),
        subHdrSize: n(f.subHdrSize),
        bitmapBlocks: n(f.bitmapBlocks),
        maxMapnr32: n(f.maxMapnr32),
        totalRamBlocks: n(f.totalRamBlocks),
        deviceBlocks: n(f.deviceBlocks),
        writtenBlocks: n(f.writtenBlocks),
        currentCpu: n(f.currentCpu),
        nrCpus: n(f.nrCpus),
        littleEndian: le,
        wordSize,
      };
    }
  }
  throw new FormatError(
    `Cannot read kdump header: no layout fits (${problems.join("; ")})`,
    { format: "kdump", code: "bad-header", offset: 8 },
  );
}

/** Size of `kdump_sub_header` of the newest version for a word size. */
export function kdumpSubHeaderSize(wordSize: 8 | 4): number {
  return kdumpSubHeaderLayout(wordSize).byteLength;
}

/**
 * Decode the `kdump_sub_header` that starts at file offset `block_size`,
 * reading only the fields its `header_version` has. Offsets and sizes are
 * checked against `fileByteLength`.
 *
 * @param bytes The sub header (at least {@linkcode kdumpSubHeaderSize} bytes).
 * @param header The decoded `disk_dump_header`.
 * @param fileByteLength Size of the kdump file, to check offsets against.
 * @returns The sub header.
 * @throws {FormatError} `too-large`/`out-of-range` for fields beyond 2^53 or the file.
 *
 * @example
 * ```ts ignore
 * import { readKdumpSubHeader } from "@vmem-dump/vmem-dump/kdump";
 * const sub = readKdumpSubHeader(block1, header, fileSize);
 * console.log(sub.maxMapnr);
 * ```
 */
export function readKdumpSubHeader(
  bytes: Uint8Array,
  header: DiskDumpHeader,
  fileByteLength: number,
): KdumpSubHeader {
  const base = header.blockSize; // file offset of the sub header
  const need = kdumpSubHeaderSize(header.wordSize);
  if (bytes.byteLength < need) {
    throw new FormatError(`Cannot read kdump sub header: ${bytes.byteLength} bytes`, {
      format: "kdump",
      code: "unexpected-eof",
      offset: base + bytes.byteLength,
    });
  }
  const le = header.littleEndian;
  const view = viewOf(bytes);
  const v = header.headerVersion;
  const f = kdumpSubHeaderLayout(header.wordSize).fields;
  const where = { format: "kdump", fileOffset: base } as const;
  // Fields newer than the header's version read as 0.
  const n = (key: KdumpSubHeaderField) =>
    v >= SUB_HEADER_SINCE[key] ? getWireUint(view, 0, f[key], le, where) : 0;
  const sub: KdumpSubHeader = {
    physBase: getWireBigUint(view, 0, f.physBase, le),
    dumpLevel: n("dumpLevel"),
    split: n("split"),
    startPfn: v >= 6 ? n("startPfn64") : n("startPfn"),
    endPfn: v >= 6 ? n("endPfn64") : n("endPfn"),
    offsetVmcoreinfo: n("offsetVmcoreinfo"),
    sizeVmcoreinfo: n("sizeVmcoreinfo"),
    offsetNote: n("offsetNote"),
    sizeNote: n("sizeNote"),
    offsetEraseinfo: n("offsetEraseinfo"),
    sizeEraseinfo: n("sizeEraseinfo"),
    maxMapnr: v >= 6 ? n("maxMapnr64") : header.maxMapnr32,
  };
  const checks: [string, number, number, WireField][] = [
    ["vmcoreinfo", sub.offsetVmcoreinfo, sub.sizeVmcoreinfo, f.offsetVmcoreinfo],
    ["note", sub.offsetNote, sub.sizeNote, f.offsetNote],
    ["eraseinfo", sub.offsetEraseinfo, sub.sizeEraseinfo, f.offsetEraseinfo],
  ];
  for (const [name, offset, size, field] of checks) {
    if (size === 0) continue;
    if (offset > fileByteLength || size > fileByteLength - offset) {
      throw new FormatError(
        `Cannot read kdump sub header: ${name} at 0x${offset.toString(16)} + 0x${
          size.toString(16)
        } lies beyond the end of the file (0x${fileByteLength.toString(16)})`,
        { format: "kdump", code: "out-of-range", offset: base + field.offset },
      );
    }
  }
  return sub;
}

/**
 * Encode a `disk_dump_header` at offset 0 of `bytes`, in the header's word
 * size and byte order. The signature is always {@linkcode KDUMP_SIGNATURE};
 * `utsname` strings are cut to 64 bytes and NUL-terminated.
 *
 * @param bytes Destination, at least the layout's size (bytes not covered are left as they are).
 * @param header The header.
 * @throws {RangeError} when a field does not fit its width.
 *
 * @example Round trip
 * ```ts
 * import { readDiskDumpHeader, writeDiskDumpHeader } from "@vmem-dump/vmem-dump/kdump";
 * const b = new Uint8Array(464);
 * writeDiskDumpHeader(b, {
 *   signature: "KDUMP   ", headerVersion: 6,
 *   utsname: { sysname: "Linux", nodename: "", release: "6.1.0", version: "", machine: "x86_64", domainname: "" },
 *   timestampSeconds: 0, timestampMicroseconds: 0, status: 0x20, blockSize: 4096, subHdrSize: 1,
 *   bitmapBlocks: 2, maxMapnr32: 1000, totalRamBlocks: 0, deviceBlocks: 0, writtenBlocks: 0,
 *   currentCpu: 0, nrCpus: 1, littleEndian: true, wordSize: 8,
 * });
 * console.log(readDiskDumpHeader(b).utsname.release); // 6.1.0
 * ```
 */
export function writeDiskDumpHeader(bytes: Uint8Array, header: DiskDumpHeader): void {
  const layout = diskDumpHeaderLayout(header.wordSize);
  const view = viewOf(bytes);
  const le = header.littleEndian;
  for (let i = 0; i < KDUMP_SIGNATURE.length; i++) bytes[i] = KDUMP_SIGNATURE.charCodeAt(i);
  const u = header.utsname;
  const strings = [u.sysname, u.nodename, u.release, u.version, u.machine, u.domainname];
  for (let k = 0; k < strings.length; k++) {
    const at = UTSNAME_OFFSET + k * UTS_LEN;
    bytes.fill(0, at, at + UTS_LEN);
    const text = strings[k]!;
    for (let i = 0; i < Math.min(text.length, UTS_LEN - 1); i++) {
      bytes[at + i] = text.charCodeAt(i) & 0xff;
    }
  }
  for (const key of DISK_DUMP_HEADER_INTEGERS) {
    setWireUint(view, 0, layout.fields[key], header[key], le);
  }
}

/**
 * Encode a version-6 `kdump_sub_header` at offset 0 of `bytes`. The pre-v6
 * `start_pfn`/`end_pfn` get the same values as their `_64` twins when they
 * fit, else 0 (as makedumpfile does).
 *
 * @param bytes Destination, at least {@linkcode kdumpSubHeaderSize} bytes.
 * @param sub The sub header.
 * @param header Word size and byte order come from it.
 * @throws {RangeError} when a field does not fit its width.
 *
 * @example
 * ```ts
 * import { writeKdumpSubHeader } from "@vmem-dump/vmem-dump/kdump";
 * const b = new Uint8Array(104);
 * writeKdumpSubHeader(b, {
 *   physBase: 0n, dumpLevel: 1, split: 0, offsetVmcoreinfo: 0, sizeVmcoreinfo: 0,
 *   offsetNote: 0, sizeNote: 0, offsetEraseinfo: 0, sizeEraseinfo: 0,
 *   startPfn: 0, endPfn: 0, maxMapnr: 0x48000,
 * }, { wordSize: 8, littleEndian: true });
 * console.log(new DataView(b.buffer).getUint32(96, true)); // 294912
 * ```
 */
export function writeKdumpSubHeader(
  bytes: Uint8Array,
  sub: KdumpSubHeader,
  header: Pick<DiskDumpHeader, "wordSize" | "littleEndian">,
): void {
  const layout = kdumpSubHeaderLayout(header.wordSize);
  const f = layout.fields;
  const view = viewOf(bytes);
  const le = header.littleEndian;
  const ulongMax = header.wordSize === 8 ? Number.MAX_SAFE_INTEGER : 0xffff_ffff;
  const legacy = (n: number) => (n <= ulongMax ? n : 0);
  const values: Record<KdumpSubHeaderField, number | bigint> = {
    physBase: sub.physBase,
    dumpLevel: sub.dumpLevel,
    split: sub.split,
    startPfn: legacy(sub.startPfn),
    endPfn: legacy(sub.endPfn),
    offsetVmcoreinfo: sub.offsetVmcoreinfo,
    sizeVmcoreinfo: sub.sizeVmcoreinfo,
    offsetNote: sub.offsetNote,
    sizeNote: sub.sizeNote,
    offsetEraseinfo: sub.offsetEraseinfo,
    sizeEraseinfo: sub.sizeEraseinfo,
    startPfn64: sub.startPfn,
    endPfn64: sub.endPfn,
    maxMapnr64: sub.maxMapnr,
  };
  for (const key of Object.keys(values) as KdumpSubHeaderField[]) {
    setWireUint(view, 0, f[key], values[key], le);
  }
}
