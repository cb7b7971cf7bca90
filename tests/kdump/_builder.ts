/**
 * A deterministic builder of small kdump-compressed files for tests: both
 * byte orders, the 64-bit and the 32-bit (QEMU/i386 packed) layouts, zlib,
 * zstd or uncompressed pages, the shared zero page, and the flattened
 * container with records in any order.
 */

import { deflateSync, zstdCompressSync } from "node:zlib";

/** What to build. */
export interface KdumpSpec {
  /** @default {true} */
  littleEndian?: boolean;
  /** @default {8} */
  wordSize?: 8 | 4;
  /** @default {4096} */
  blockSize?: number;
  /** Pfns covered. */
  maxMapnr: number;
  /** Pages in the dump (pfn → content of blockSize bytes; all-zero pages share one page). */
  pages: Map<number, Uint8Array>;
  /** Pfns present in the 1st bitmap only (excluded). @default {[]} */
  excluded?: number[];
  /** 0 = store as is, 1 = zlib, 0x20 = zstd. @default {1} */
  codec?: 0 | 1 | 0x20;
  /** VMCOREINFO text. @default {"OSRELEASE=test\nPAGESIZE=4096\n"} */
  vmcoreinfo?: string;
}

/** Field offsets inside the returned file, for corruption tests. */
export interface KdumpBuilt {
  bytes: Uint8Array<ArrayBuffer>;
  bitmapBlocksOffset: number;
  descTableOffset: number;
  dataOffset: number;
}

/** Build a kdump file. */
export function buildKdump(spec: KdumpSpec): KdumpBuilt {
  const le = spec.littleEndian ?? true;
  const w = spec.wordSize ?? 8;
  const B = spec.blockSize ?? 4096;
  const codec = spec.codec ?? 1;
  const info = new TextEncoder().encode(spec.vmcoreinfo ?? "OSRELEASE=test\nPAGESIZE=4096\n");
  // one VMCOREINFO ELF note: namesz 11 "VMCOREINFO\0" padded to 12
  const note = new Uint8Array(12 + 12 + Math.ceil(info.length / 4) * 4);
  const nv = new DataView(note.buffer);
  nv.setUint32(0, 11, le);
  nv.setUint32(4, info.length, le);
  nv.setUint32(8, 0, le);
  note.set(new TextEncoder().encode("VMCOREINFO"), 12);
  note.set(info, 24);
  const subSize = w === 8 ? 104 : 80;
  const subHdrSize = Math.ceil((subSize + note.length) / B);
  const mapBytes = Math.ceil(spec.maxMapnr / 8);
  const mapBlocks = Math.ceil(mapBytes / B);
  const bitmapBlocks = 2 * mapBlocks;
  const bitmapStart = (1 + subHdrSize) * B;
  const descTableOffset = bitmapStart + bitmapBlocks * B;
  const pfns = [...spec.pages.keys()].sort((a, b) => a - b);
  const dataOffset = descTableOffset + 24 * pfns.length;
  const chunks: Uint8Array[] = [new Uint8Array(B)]; // shared zero page first
  let dataEnd = dataOffset + B;
  const descs: [number, number, number][] = [];
  for (const pfn of pfns) {
    const page = spec.pages.get(pfn)!;
    if (page.every((b) => b === 0)) {
      descs.push([dataOffset, B, 0]);
      continue;
    }
    let stored: Uint8Array = page;
    let flags = 0;
    if (codec !== 0) {
      const c = codec === 1 ? deflateSync(page) : zstdCompressSync(page);
      if (c.length < B) {
        stored = new Uint8Array(c);
        flags = codec;
      }
    }
    descs.push([dataEnd, stored.length, flags]);
    chunks.push(stored);
    dataEnd += stored.length;
  }
  const out = new Uint8Array(dataEnd);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode("KDUMP   "));
  v.setUint32(8, 6, le); // header_version
  out.set(new TextEncoder().encode("x86_64"), 12 + 4 * 65);
  const o = w === 8
    ? { status: 424, bs: 428, sub: 432, bb: 436, mm: 440, cpus: 460 }
    : { status: 412, bs: 416, sub: 420, bb: 424, mm: 428, cpus: 448 };
  v.setUint32(o.status, codec, le);
  v.setUint32(o.bs, B, le);
  v.setUint32(o.sub, subHdrSize, le);
  v.setUint32(o.bb, bitmapBlocks, le);
  v.setUint32(o.mm, Math.min(spec.maxMapnr, 0xffff_ffff), le);
  v.setUint32(o.cpus, 1, le);
  const s = B; // sub header
  const offNote = B + subSize;
  const offInfo = offNote + 24;
  if (w === 8) {
    v.setBigUint64(s + 0, 0x1000000n, le); // phys_base
    v.setUint32(s + 8, 1, le); // dump_level
    v.setBigUint64(s + 32, BigInt(offInfo), le);
    v.setBigUint64(s + 40, BigInt(info.length), le);
    v.setBigUint64(s + 48, BigInt(offNote), le);
    v.setBigUint64(s + 56, BigInt(note.length), le);
    v.setBigUint64(s + 96, BigInt(spec.maxMapnr), le);
  } else {
    v.setUint32(s + 0, 0x1000000, le);
    v.setUint32(s + 4, 1, le);
    v.setBigUint64(s + 20, BigInt(offInfo), le);
    v.setUint32(s + 28, info.length, le);
    v.setBigUint64(s + 32, BigInt(offNote), le);
    v.setUint32(s + 40, note.length, le);
    v.setBigUint64(s + 72, BigInt(spec.maxMapnr), le);
  }
  out.set(note, offNote);
  const setBit = (base: number, pfn: number) => {
    out[base + (pfn >> 3)]! |= 1 << (pfn & 7);
  };
  for (const pfn of pfns) {
    setBit(bitmapStart, pfn);
    setBit(bitmapStart + mapBlocks * B, pfn);
  }
  for (const pfn of spec.excluded ?? []) setBit(bitmapStart, pfn);
  descs.forEach(([off, size, flags], i) => {
    const at = descTableOffset + 24 * i;
    v.setBigUint64(at, BigInt(off), le);
    v.setUint32(at + 8, size, le);
    v.setUint32(at + 12, flags, le);
  });
  let at = dataOffset;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return { bytes: out, bitmapBlocksOffset: o.bb, descTableOffset, dataOffset };
}

/**
 * Wrap a file in the flattened container: records of `recordSize` bytes in
 * the order `order` gives (default: reversed), plus a record of the file's
 * first 100 bytes written first (a later record covers it again, with the
 * same bytes: records that overlap must agree).
 */
export function flatten(
  file: Uint8Array,
  recordSize: number,
  order: "forward" | "reverse" = "reverse",
): Uint8Array<ArrayBuffer> {
  const records: [number, Uint8Array][] = [[0, file.slice(0, 100)]];
  const parts: [number, Uint8Array][] = [];
  for (let off = 0; off < file.length; off += recordSize) {
    parts.push([off, file.subarray(off, Math.min(file.length, off + recordSize))]);
  }
  if (order === "reverse") parts.reverse();
  records.push(...parts);
  const size = 4096 + records.reduce((n, [, d]) => n + 16 + d.length, 0) + 16;
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode("makedumpfile"));
  v.setBigInt64(16, 1n, false);
  v.setBigInt64(24, 1n, false);
  let at = 4096;
  for (const [off, d] of records) {
    v.setBigInt64(at, BigInt(off), false);
    v.setBigInt64(at + 8, BigInt(d.length), false);
    out.set(d, at + 16);
    at += 16 + d.length;
  }
  v.setBigInt64(at, -1n, false);
  v.setBigInt64(at + 8, -1n, false);
  return out;
}
