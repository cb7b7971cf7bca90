/**
 * The anatomy of real dumps for the mutation campaign, read with small
 * walkers of their own (independent of `src/`):
 *
 * - ELF64 little-endian cores (QEMU's layout and the classic one): the ELF
 *   header's offset, size and count fields, every program header, every
 *   section header, every note header inside PT_NOTE; program headers and
 *   notes are spans.
 * - kdump-compressed dumps, plain or flattened (makedumpfile's
 *   `disk_dump_header`, `kdump_sub_header`, the two bitmaps, the page
 *   descriptors): header fields, the sub-header's offsets and sizes, a
 *   sample of page descriptors; for a flattened file also each data
 *   header's offset and size, and every field is placed at its offset in the
 *   flattened file.
 *
 * Field offsets come from elf(5) and makedumpfile's diskdump_mod.h.
 *
 * @module
 */

import type { Anatomy, Field, FieldRole, Span } from "../mutate.ts";

type Width = 1 | 2 | 4 | 8;

/** ELF64 core: ehdr, phdrs, shdrs, notes. */
export function elfAnatomy(bytes: Uint8Array): Anatomy {
  const fields: Field[] = [];
  const spans: Span[] = [];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const f = (offset: number, width: Width, name: string, role: FieldRole) => {
    if (offset + width <= bytes.length) {
      fields.push({ offset, width, littleEndian: true, name, role });
    }
  };
  f(4, 1, "EI_CLASS", "id");
  f(5, 1, "EI_DATA", "id");
  f(16, 2, "e_type", "id");
  f(18, 2, "e_machine", "id");
  f(32, 8, "e_phoff", "offset");
  f(40, 8, "e_shoff", "offset");
  f(52, 2, "e_ehsize", "length");
  f(54, 2, "e_phentsize", "length");
  f(56, 2, "e_phnum", "count");
  f(58, 2, "e_shentsize", "length");
  f(60, 2, "e_shnum", "count");
  f(62, 2, "e_shstrndx", "id");
  const phoff = Number(v.getBigUint64(32, true));
  const phnum = v.getUint16(56, true);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * 56;
    if (at + 56 > bytes.length) break;
    const type = v.getUint32(at, true);
    const name = `phdr ${i} (${type === 1 ? "PT_LOAD" : type === 4 ? "PT_NOTE" : type})`;
    f(at, 4, `${name} p_type`, "id");
    f(at + 8, 8, `${name} p_offset`, "offset");
    f(at + 16, 8, `${name} p_vaddr`, "address");
    f(at + 24, 8, `${name} p_paddr`, "address");
    f(at + 32, 8, `${name} p_filesz`, "length");
    f(at + 40, 8, `${name} p_memsz`, "length");
    spans.push({ start: at, end: at + 56, name });
    if (type === 4) {
      const off = Number(v.getBigUint64(at + 8, true));
      const size = Number(v.getBigUint64(at + 32, true));
      let p = off;
      for (let n = 0; p + 12 <= off + size && p + 12 <= bytes.length && n < 64; n++) {
        const namesz = v.getUint32(p, true);
        const descsz = v.getUint32(p + 4, true);
        f(p, 4, `note ${n} n_namesz`, "length");
        f(p + 4, 4, `note ${n} n_descsz`, "length");
        f(p + 8, 4, `note ${n} n_type`, "id");
        const end = p + 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3);
        spans.push({ start: p, end: Math.min(end, bytes.length), name: `note ${n}` });
        p = end;
      }
    }
  }
  const shoff = Number(v.getBigUint64(40, true));
  const shnum = v.getUint16(60, true);
  for (let i = 0; i < shnum; i++) {
    const at = shoff + i * 64;
    if (at + 64 > bytes.length) break;
    f(at + 4, 4, `shdr ${i} sh_type`, "id");
    f(at + 24, 8, `shdr ${i} sh_offset`, "offset");
    f(at + 32, 8, `shdr ${i} sh_size`, "length");
    f(at + 44, 4, `shdr ${i} sh_info`, "count");
  }
  return { fields, spans };
}

/** One data record of a flattened kdump: `byteLength` bytes of the real file at `logical`, stored at `fileOffset`. */
interface Piece {
  logical: number;
  fileOffset: number;
  byteLength: number;
}

/** Data records of a flattened file (makedumpfile header 4096 bytes, then be64 offset + be64 size + data). */
function flattenedPieces(bytes: Uint8Array, fields: Field[], spans: Span[]): Piece[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pieces: Piece[] = [];
  let p = 4096;
  for (let i = 0; p + 16 <= bytes.length; i++) {
    const logical = Number(v.getBigInt64(p, false));
    const size = Number(v.getBigInt64(p + 8, false));
    if (logical < 0 || size < 0) break; // the end marker (-1, -1)
    if (i < 64 || i % 32 === 0) {
      fields.push({
        offset: p,
        width: 8,
        littleEndian: false,
        name: `record ${i} offset`,
        role: "offset",
      });
      fields.push({
        offset: p + 8,
        width: 8,
        littleEndian: false,
        name: `record ${i} buf_size`,
        role: "length",
      });
      spans.push({ start: p, end: Math.min(bytes.length, p + 16 + size), name: `record ${i}` });
    }
    pieces.push({ logical, fileOffset: p + 16, byteLength: size });
    p += 16 + size;
  }
  return pieces;
}

/**
 * kdump-compressed dump (plain or flattened), 64-bit little-endian.
 *
 * @param bytes The file.
 * @returns Its fields and spans.
 */
export function kdumpAnatomy(bytes: Uint8Array): Anatomy {
  const fields: Field[] = [];
  const spans: Span[] = [];
  const flattened = new TextDecoder().decode(bytes.subarray(0, 12)) === "makedumpfile";
  const pieces = flattened ? flattenedPieces(bytes, fields, spans) : [];
  /** File offset of a byte of the real dump, or -1 when the flattened file does not hold it. */
  const at = (logical: number): number => {
    if (!flattened) return logical;
    for (const p of pieces) {
      if (logical >= p.logical && logical < p.logical + p.byteLength) {
        return p.fileOffset + logical - p.logical;
      }
    }
    return -1;
  };
  const readU = (logical: number, width: Width): number => {
    const o = at(logical);
    if (o < 0 || o + width > bytes.length) return 0;
    let x = 0;
    for (let i = width - 1; i >= 0; i--) x = x * 256 + bytes[o + i]!;
    return x;
  };
  const f = (logical: number, width: Width, name: string, role: FieldRole) => {
    const o = at(logical);
    if (o >= 0 && o + width <= bytes.length) {
      fields.push({ offset: o, width, littleEndian: true, name, role });
    }
  };
  // disk_dump_header (64-bit)
  f(8, 4, "header_version", "id");
  f(424, 4, "status", "flags");
  f(428, 4, "block_size", "length");
  f(432, 4, "sub_hdr_size", "count");
  f(436, 4, "bitmap_blocks", "count");
  f(440, 4, "max_mapnr", "count");
  f(444, 4, "total_ram_blocks", "count");
  f(460, 4, "nr_cpus", "count");
  const blockSize = readU(428, 4) || 4096;
  const subHdrSize = readU(432, 4);
  const bitmapBlocks = readU(436, 4);
  // kdump_sub_header at block_size
  const sub = blockSize;
  f(sub, 8, "phys_base", "address");
  f(sub + 8, 4, "dump_level", "flags");
  f(sub + 12, 4, "split", "flags");
  f(sub + 32, 8, "offset_vmcoreinfo", "offset");
  f(sub + 40, 8, "size_vmcoreinfo", "length");
  f(sub + 48, 8, "offset_note", "offset");
  f(sub + 56, 8, "size_note", "length");
  f(sub + 64, 8, "offset_eraseinfo", "offset");
  f(sub + 72, 8, "size_eraseinfo", "length");
  f(sub + 80, 8, "start_pfn_64", "count");
  f(sub + 88, 8, "end_pfn_64", "count");
  f(sub + 96, 8, "max_mapnr_64", "count");
  const bitmapAt = (1 + subHdrSize) * blockSize;
  const bitmapBytes = bitmapBlocks * blockSize;
  // A few bitmap words of each half, where pages are (the first non-zero bytes).
  for (const half of [0, bitmapBytes / 2]) {
    let added = 0;
    for (let i = 0; i < bitmapBytes / 2 && added < 24; i += 8) {
      if (readU(bitmapAt + half + i, 4) !== 0 || readU(bitmapAt + half + i + 4, 4) !== 0) {
        f(bitmapAt + half + i, 8, `bitmap ${half === 0 ? 1 : 2} word ${i / 8}`, "flags");
        added++;
      }
    }
  }
  // page_desc array after the bitmaps: offset (8), size (4), flags (4), page_flags (8)
  const descAt = bitmapAt + bitmapBytes;
  for (let i = 0; i < 4096; i++) {
    const d = descAt + i * 24;
    if (at(d) < 0 || readU(d, 8) === 0) break;
    if (i < 32 || i % 64 === 0) {
      f(d, 8, `page_desc ${i} offset`, "offset");
      f(d + 8, 4, `page_desc ${i} size`, "length");
      f(d + 12, 4, `page_desc ${i} flags`, "flags");
    }
  }
  if (!flattened && bitmapBytes > 0) {
    spans.push({ start: 0, end: blockSize, name: "disk_dump_header block" });
    spans.push({ start: bitmapAt, end: bitmapAt + bitmapBytes / 2, name: "bitmap 1" });
    spans.push({
      start: bitmapAt + bitmapBytes / 2,
      end: bitmapAt + bitmapBytes,
      name: "bitmap 2",
    });
  }
  return { fields, spans };
}
