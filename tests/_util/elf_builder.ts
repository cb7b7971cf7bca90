/**
 * Test helper: builds ELF core files the way their producers lay them out,
 * written independently of `src/elf` (its own header encoder) so tests can
 * check our reader and rewriter against it.
 *
 * Layouts:
 * - `"qemu-classic"`: QEMU <= 7.1 / Linux /proc/vmcore style. Ehdr, phdrs at
 *   64 (52), section header 0 after the phdrs only for PN_XNUM, notes, data
 *   packed back to back.
 * - `"qemu-7.2"`: QEMU >= 7.2. Ehdr with `e_ehsize` = 8, section headers
 *   (NULL + `.shstrtab`) at 64, phdrs after them, notes, data, then the 11
 *   bytes `"\0.shstrtab\0"` at the end.
 *
 * Segment data may be bytes in memory or a range of another file, so a
 * multi-hundred-MiB fixture streams from the real dumps.
 *
 * @module
 */

/** Where a segment's bytes come from. */
export type SegmentSource =
  | Uint8Array
  | { path: string; fileOffset: number; byteLength: number };

/** One PT_LOAD to build. */
export interface BuildLoad {
  paddr: bigint;
  /** Default: `paddr`. */
  vaddr?: bigint;
  /** File bytes (p_filesz = their length). Omit for a segment without file data. */
  data?: SegmentSource;
  /** p_memsz. Default: p_filesz. */
  memByteLength?: number;
  /** p_offset for a segment without data. Default: all ones (QEMU paging style). */
  emptyFileOffset?: bigint;
  flags?: number;
  align?: bigint;
}

/** An ELF core to build. */
export interface BuildSpec {
  elfClass?: 32 | 64;
  littleEndian?: boolean;
  machine?: number;
  layout?: "qemu-classic" | "qemu-7.2";
  /** Raw PT_NOTE bytes. */
  notes?: Uint8Array;
  /** Extra PT_NOTE segments (each its own phdr, bytes after the first notes). */
  extraNotes?: Uint8Array[];
  loads: BuildLoad[];
}

function srcLength(s: SegmentSource): number {
  return s instanceof Uint8Array ? s.byteLength : s.byteLength;
}

interface Layout {
  head: Uint8Array<ArrayBuffer>; // everything before the data
  dataStart: number;
  tail: Uint8Array<ArrayBuffer>; // after the data
  byteLength: number;
}

function layoutOf(spec: BuildSpec): Layout {
  const cls = spec.elfClass ?? 64;
  const le = spec.littleEndian ?? true;
  const layout = spec.layout ?? "qemu-classic";
  const ehSize = cls === 64 ? 64 : 52;
  const phEnt = cls === 64 ? 56 : 32;
  const shEnt = cls === 64 ? 64 : 40;
  const noteBlobs = [spec.notes ?? new Uint8Array(0), ...(spec.extraNotes ?? [])];
  const phnum = noteBlobs.length + spec.loads.length;
  const xnum = phnum >= 0xffff;
  let phoff: number;
  let shoff = 0;
  let shnum = 0;
  if (layout === "qemu-7.2") {
    shoff = ehSize;
    shnum = 2;
    phoff = shoff + shnum * shEnt;
  } else {
    phoff = ehSize;
    if (xnum) {
      shoff = phoff + phnum * phEnt;
      shnum = 1;
    }
  }
  const headersEnd = Math.max(phoff + phnum * phEnt, shoff + shnum * shEnt);
  const notesTotal = noteBlobs.reduce((n, b) => n + b.byteLength, 0);
  const dataStart = headersEnd + notesTotal;
  const dataTotal = spec.loads.reduce((n, l) => n + (l.data ? srcLength(l.data) : 0), 0);
  const shstrtab = new TextEncoder().encode("\0.shstrtab\0");
  const tail = layout === "qemu-7.2" ? shstrtab : new Uint8Array(0);
  const byteLength = dataStart + dataTotal + tail.byteLength;

  const head = new Uint8Array(dataStart);
  const v = new DataView(head.buffer);
  const w = (at: number, size: 2 | 4 | 8, value: number | bigint) => {
    if (size === 2) v.setUint16(at, Number(value), le);
    else if (size === 4) v.setUint32(at, Number(value), le);
    else v.setBigUint64(at, BigInt(value), le);
  };
  const word = cls === 64 ? 8 : 4;
  head.set([0x7f, 0x45, 0x4c, 0x46, cls === 64 ? 2 : 1, le ? 1 : 2, 1]);
  w(16, 2, 4); // e_type ET_CORE
  w(18, 2, spec.machine ?? (cls === 64 ? 62 : 3));
  w(20, 4, 1);
  // e_entry stays 0
  const o = cls === 64 ? 24 + 8 : 24 + 4; // e_phoff
  w(o, word, phoff);
  w(o + word, word, shoff);
  const f = o + 2 * word; // e_flags
  w(f + 4, 2, layout === "qemu-7.2" ? 8 : ehSize); // e_ehsize (QEMU >= 7.2 quirk)
  w(f + 6, 2, phEnt);
  w(f + 8, 2, xnum ? 0xffff : phnum);
  w(f + 10, 2, shnum > 0 ? shEnt : 0);
  w(f + 12, 2, shnum);
  w(f + 14, 2, layout === "qemu-7.2" ? 1 : 0);

  // Section headers.
  const shdr = (
    i: number,
    fields: { name?: number; type?: number; offset?: number; size?: number; info?: number },
  ) => {
    const at = shoff + i * shEnt;
    w(at, 4, fields.name ?? 0);
    w(at + 4, 4, fields.type ?? 0);
    if (cls === 64) {
      w(at + 24, 8, fields.offset ?? 0);
      w(at + 32, 8, fields.size ?? 0);
      w(at + 44, 4, fields.info ?? 0);
    } else {
      w(at + 16, 4, fields.offset ?? 0);
      w(at + 20, 4, fields.size ?? 0);
      w(at + 28, 4, fields.info ?? 0);
    }
  };
  if (shnum > 0) shdr(0, { info: xnum ? phnum : 0 });
  if (layout === "qemu-7.2") {
    shdr(1, { name: 1, type: 3, offset: dataStart + dataTotal, size: shstrtab.byteLength });
  }

  // Program headers.
  const phdr = (
    i: number,
    p: {
      type: number;
      flags: number;
      offset: bigint;
      vaddr: bigint;
      paddr: bigint;
      filesz: bigint;
      memsz: bigint;
      align: bigint;
    },
  ) => {
    const at = phoff + i * phEnt;
    w(at, 4, p.type);
    if (cls === 64) {
      w(at + 4, 4, p.flags);
      w(at + 8, 8, p.offset);
      w(at + 16, 8, p.vaddr);
      w(at + 24, 8, p.paddr);
      w(at + 32, 8, p.filesz);
      w(at + 40, 8, p.memsz);
      w(at + 48, 8, p.align);
    } else {
      const m = (x: bigint) => x & 0xffff_ffffn;
      w(at + 4, 4, m(p.offset));
      w(at + 8, 4, m(p.vaddr));
      w(at + 12, 4, m(p.paddr));
      w(at + 16, 4, p.filesz);
      w(at + 20, 4, p.memsz);
      w(at + 24, 4, p.flags);
      w(at + 28, 4, p.align);
    }
  };
  let at = headersEnd;
  noteBlobs.forEach((b, i) => {
    phdr(i, {
      type: 4,
      flags: 0,
      offset: BigInt(at),
      vaddr: 0n,
      paddr: 0n,
      filesz: BigInt(b.byteLength),
      memsz: BigInt(b.byteLength),
      align: 0n,
    });
    head.set(b, at);
    at += b.byteLength;
  });
  spec.loads.forEach((l, i) => {
    const filesz = l.data ? srcLength(l.data) : 0;
    phdr(noteBlobs.length + i, {
      type: 1,
      flags: l.flags ?? 0,
      offset: l.data
        ? BigInt(at)
        : (l.emptyFileOffset ?? (cls === 64 ? 0xffff_ffff_ffff_ffffn : 0xffff_ffffn)),
      vaddr: l.vaddr ?? l.paddr,
      paddr: l.paddr,
      filesz: BigInt(filesz),
      memsz: BigInt(l.memByteLength ?? filesz),
      align: l.align ?? 0n,
    });
    at += filesz;
  });
  return { head, dataStart, tail, byteLength };
}

/**
 * Build a small ELF core in memory (every segment source must be bytes).
 */
export function buildElf(spec: BuildSpec): Uint8Array<ArrayBuffer> {
  const { head, dataStart, tail, byteLength } = layoutOf(spec);
  const out = new Uint8Array(byteLength);
  out.set(head);
  let at = dataStart;
  for (const l of spec.loads) {
    if (!l.data) continue;
    if (!(l.data instanceof Uint8Array)) {
      throw new TypeError("buildElf needs in-memory data; use writeElf");
    }
    out.set(l.data, at);
    at += l.data.byteLength;
  }
  out.set(tail, at);
  return out;
}

/**
 * Write an ELF core to `path`, streaming file-backed segment sources in 4 MiB chunks.
 */
export async function writeElf(path: string, spec: BuildSpec): Promise<number> {
  const { head, tail, byteLength } = layoutOf(spec);
  using out = await Deno.open(path, { write: true, create: true, truncate: true });
  await writeAll(out, head);
  const buf = new Uint8Array(4 << 20);
  for (const l of spec.loads) {
    if (!l.data) continue;
    if (l.data instanceof Uint8Array) {
      await writeAll(out, l.data);
      continue;
    }
    using src = await Deno.open(l.data.path);
    await src.seek(l.data.fileOffset, Deno.SeekMode.Start);
    let left = l.data.byteLength;
    while (left > 0) {
      const n = await src.read(buf.subarray(0, Math.min(left, buf.byteLength)));
      if (n === null) throw new Error(`${l.data.path} ended early`);
      await writeAll(out, buf.subarray(0, n));
      left -= n;
    }
  }
  await writeAll(out, tail);
  return byteLength;
}

async function writeAll(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.byteLength) done += await f.write(data.subarray(done));
}

/** A PT_LOAD as read by {@linkcode readPhdrsIndependently}. */
export interface RawPhdr {
  type: number;
  offset: number;
  vaddr: bigint;
  paddr: bigint;
  filesz: number;
  memsz: number;
}

/**
 * Read ELF64 little-endian program headers without `src/elf` (for fixtures
 * derived from real QEMU dumps, which are ELF64 LE; PN_XNUM not handled).
 */
export async function readPhdrsIndependently(path: string): Promise<RawPhdr[]> {
  using f = await Deno.open(path);
  const head = new Uint8Array(64);
  await f.read(head);
  const v = new DataView(head.buffer);
  const phoff = Number(v.getBigUint64(32, true));
  const phnum = v.getUint16(56, true);
  const table = new Uint8Array(phnum * 56);
  await f.seek(phoff, Deno.SeekMode.Start);
  let got = 0;
  while (got < table.byteLength) got += (await f.read(table.subarray(got))) ?? Infinity;
  const t = new DataView(table.buffer);
  return Array.from({ length: phnum }, (_, i) => ({
    type: t.getUint32(i * 56, true),
    offset: Number(t.getBigUint64(i * 56 + 8, true)),
    vaddr: t.getBigUint64(i * 56 + 16, true),
    paddr: t.getBigUint64(i * 56 + 24, true),
    filesz: Number(t.getBigUint64(i * 56 + 32, true)),
    memsz: Number(t.getBigUint64(i * 56 + 40, true)),
  }));
}

/**
 * From a real QEMU (>= 6.2) dump and a `pmemsave` image of a virtio-mem
 * region, write the dump a QEMU < 6.2 (or a /proc/vmcore copy) would have
 * made: same notes and other segments, but one PT_LOAD covering the whole
 * region with the image's bytes (unplugged blocks included), classic layout.
 *
 * @returns The file size.
 */
export async function writeWholeRegionElf(
  realElf: string,
  rawImage: string,
  region: { gpa: number; byteLength: number },
  outPath: string,
  options: { layout?: "qemu-classic" | "qemu-7.2" } = {},
): Promise<number> {
  const phdrs = await readPhdrsIndependently(realElf);
  const note = phdrs.find((p) => p.type === 4)!;
  using f = await Deno.open(realElf);
  await f.seek(note.offset, Deno.SeekMode.Start);
  const notes = new Uint8Array(note.filesz);
  let got = 0;
  while (got < notes.byteLength) got += (await f.read(notes.subarray(got))) ?? Infinity;
  const regionEnd = BigInt(region.gpa + region.byteLength);
  const loads: BuildLoad[] = phdrs
    .filter((p) =>
      p.type === 1 && (p.paddr + BigInt(p.memsz) <= BigInt(region.gpa) || p.paddr >= regionEnd)
    )
    .map((p) => ({
      paddr: p.paddr,
      vaddr: p.vaddr,
      data: { path: realElf, fileOffset: p.offset, byteLength: p.filesz },
      memByteLength: p.memsz,
    }));
  loads.push({
    paddr: BigInt(region.gpa),
    data: { path: rawImage, fileOffset: 0, byteLength: region.byteLength },
  });
  loads.sort((a, b) => (a.paddr < b.paddr ? -1 : a.paddr > b.paddr ? 1 : 0));
  return await writeElf(outPath, { layout: options.layout ?? "qemu-classic", notes, loads });
}
