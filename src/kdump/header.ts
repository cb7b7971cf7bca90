/**
 * The two headers at the start of a kdump-compressed file: `disk_dump_header`
 * (block 0) and `kdump_sub_header` (block 1), in both word sizes and byte
 * orders (makedumpfile `diskdump_mod.h`, QEMU `include/system/dump.h`).
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { isPowerOfTwo } from "../io/bits.ts";
import { getSafeU64, viewOf } from "../io/endian.ts";
import { latin1Decode } from "../io/text.ts";

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

interface HeaderLayout {
  status: number;
  blockSize: number;
  subHdrSize: number;
  bitmapBlocks: number;
  maxMapnr: number;
  nrCpus: number;
  timestamp: number;
  timestampWord: 8 | 4;
}

// Offsets of the fields after utsname (12 + 6 × 65 = 402): the 64-bit struct
// aligns the timestamp to 8 (408), the 32-bit one to 4 (404).
const LAYOUT_64: HeaderLayout = {
  timestamp: 408, // timestamp: 16 bytes at 408
  timestampWord: 8,
  status: 424, // status: 4 bytes at 424
  blockSize: 428, // block_size: 4 bytes at 428
  subHdrSize: 432, // sub_hdr_size: 4 bytes at 432
  bitmapBlocks: 436, // bitmap_blocks: 4 bytes at 436
  maxMapnr: 440, // max_mapnr: 4 bytes at 440
  nrCpus: 460, // nr_cpus: 4 bytes at 460
};
const LAYOUT_32: HeaderLayout = {
  timestamp: 404, // timestamp: 8 bytes at 404
  timestampWord: 4,
  status: 412,
  blockSize: 416,
  subHdrSize: 420,
  bitmapBlocks: 424,
  maxMapnr: 428,
  nrCpus: 448,
};

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return latin1Decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Why a layout was rejected, or undefined when it fits. */
function layoutProblem(view: DataView, layout: HeaderLayout, le: boolean): string | undefined {
  const version = view.getUint32(8, le);
  if (version < 1 || version > KDUMP_MAX_HEADER_VERSION) return `header_version ${version}`;
  const blockSize = view.getUint32(layout.blockSize, le);
  if (
    !isPowerOfTwo(blockSize) || blockSize < KDUMP_MIN_BLOCK_SIZE ||
    blockSize > KDUMP_MAX_BLOCK_SIZE
  ) return `block_size 0x${blockSize.toString(16)}`;
  const bitmapBlocks = view.getUint32(layout.bitmapBlocks, le);
  const maxMapnr = view.getUint32(layout.maxMapnr, le);
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
  for (const [layout, wordSize] of [[LAYOUT_64, 8], [LAYOUT_32, 4]] as const) {
    for (const le of [true, false]) {
      const problem = layoutProblem(view, layout, le);
      if (problem !== undefined) {
        problems.push(`${wordSize * 8}-bit ${le ? "LE" : "BE"}: ${problem}`);
        continue;
      }
      const uts = (i: number) => cString(bytes.subarray(12 + i * UTS_LEN, 12 + (i + 1) * UTS_LEN));
      const ts = layout.timestamp;
      return {
        signature,
        headerVersion: view.getUint32(8, le), // header_version: 4 bytes at 8
        utsname: {
          sysname: uts(0),
          nodename: uts(1),
          release: uts(2),
          version: uts(3),
          machine: uts(4),
          domainname: uts(5),
        },
        timestampSeconds: layout.timestampWord === 8
          ? getSafeU64(view, ts, le, { format: "kdump", offset: ts })
          : view.getUint32(ts, le),
        timestampMicroseconds: layout.timestampWord === 8
          ? getSafeU64(view, ts + 8, le, { format: "kdump", offset: ts + 8 })
          : view.getUint32(ts + 4, le),
        status: view.getUint32(layout.status, le),
        blockSize: view.getUint32(layout.blockSize, le),
        subHdrSize: view.getUint32(layout.subHdrSize, le),
        bitmapBlocks: view.getUint32(layout.bitmapBlocks, le),
        maxMapnr32: view.getUint32(layout.maxMapnr, le),
        nrCpus: view.getUint32(layout.nrCpus, le),
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
  return wordSize === 8 ? 104 : 80;
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
  const w = header.wordSize;
  const u64 = (at: number) => getSafeU64(view, at, le, { format: "kdump", offset: base + at });
  const ulong = (at: number) => (w === 8 ? u64(at) : view.getUint32(at, le));
  // 64-bit offsets first, 32-bit (QEMU packed / i386) second.
  const at = (off64: number, off32: number) => (w === 8 ? off64 : off32);
  const sub: KdumpSubHeader = {
    physBase: w === 8 ? view.getBigUint64(0, le) : BigInt(view.getUint32(0, le)), // phys_base at 0
    dumpLevel: v >= 1 ? view.getUint32(at(8, 4), le) : 0, // dump_level: 4 bytes at 8 / 4
    split: v >= 2 ? view.getUint32(at(12, 8), le) : 0, // split: 4 bytes at 12 / 8
    startPfn: v >= 2 ? ulong(at(16, 12)) : 0, // start_pfn: ulong at 16 / 12
    endPfn: v >= 2 ? ulong(at(24, 16)) : 0, // end_pfn: ulong at 24 / 16
    offsetVmcoreinfo: v >= 3 ? u64(at(32, 20)) : 0, // offset_vmcoreinfo: 8 bytes at 32 / 20
    sizeVmcoreinfo: v >= 3 ? ulong(at(40, 28)) : 0, // size_vmcoreinfo: ulong at 40 / 28
    offsetNote: v >= 4 ? u64(at(48, 32)) : 0, // offset_note: 8 bytes at 48 / 32
    sizeNote: v >= 4 ? ulong(at(56, 40)) : 0, // size_note: ulong at 56 / 40
    offsetEraseinfo: v >= 5 ? u64(at(64, 44)) : 0, // offset_eraseinfo: 8 bytes at 64 / 44
    sizeEraseinfo: v >= 5 ? ulong(at(72, 52)) : 0, // size_eraseinfo: ulong at 72 / 52
    maxMapnr: header.maxMapnr32,
  };
  if (v >= 6) {
    sub.startPfn = u64(at(80, 56)); // start_pfn_64: 8 bytes at 80 / 56
    sub.endPfn = u64(at(88, 64)); // end_pfn_64: 8 bytes at 88 / 64
    sub.maxMapnr = u64(at(96, 72)); // max_mapnr_64: 8 bytes at 96 / 72
  }
  const checks: [string, number, number, number][] = [
    ["vmcoreinfo", sub.offsetVmcoreinfo, sub.sizeVmcoreinfo, at(32, 20)],
    ["note", sub.offsetNote, sub.sizeNote, at(48, 32)],
    ["eraseinfo", sub.offsetEraseinfo, sub.sizeEraseinfo, at(64, 44)],
  ];
  for (const [name, offset, size, field] of checks) {
    if (size === 0) continue;
    if (offset > fileByteLength || size > fileByteLength - offset) {
      throw new FormatError(
        `Cannot read kdump sub header: ${name} at 0x${offset.toString(16)} + 0x${
          size.toString(16)
        } lies beyond the end of the file (0x${fileByteLength.toString(16)})`,
        { format: "kdump", code: "out-of-range", offset: base + field },
      );
    }
  }
  return sub;
}
