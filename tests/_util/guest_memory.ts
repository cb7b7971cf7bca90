/**
 * Compare guest memory captured by QEMU `dump-guest-memory` (ELF, paging off)
 * from two VMs, e.g. a migration source and its destination. A deliberately
 * small ELF reader (independent of `src/elf`) so the harness can check the
 * product code rather than share its bugs.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** A guest-physical range. */
export interface GpaRange {
  /** Guest-physical start address. */
  gpa: number;
  /** Length in bytes. */
  byteLength: number;
}

/** One PT_LOAD of an ELF dump. */
export interface ElfLoad {
  /** Guest-physical start (`p_paddr`). */
  gpa: number;
  /** Bytes of guest memory described (`p_memsz`). */
  memByteLength: number;
  /** Where the data sits in the file (`p_offset`). */
  fileOffset: number;
  /** Bytes present in the file (`p_filesz`); the rest of `memByteLength` reads as zero. */
  fileByteLength: number;
}

const PT_LOAD = 1;
const PN_XNUM = 0xffff;

function u64(view: DataView, at: number, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`ELF ${what} too large: ${v}`);
  return Number(v);
}

async function readAt(file: Deno.FsFile, fileOffset: number, into: Uint8Array): Promise<void> {
  await file.seek(fileOffset, Deno.SeekMode.Start);
  let got = 0;
  while (got < into.length) {
    const n = await file.read(into.subarray(got));
    if (n === null) throw new Error(`ELF file ends at ${fileOffset + got}`);
    got += n;
  }
}

/**
 * The PT_LOAD segments of a little-endian ELF64 core file, sorted by GPA.
 *
 * @param path ELF file (e.g. QEMU `dump-guest-memory` output).
 * @returns The loads.
 * @throws {Error} When the file is not a little-endian ELF64 file.
 * @example
 * ```ts ignore
 * const loads = await readElfLoads("dump.elf");
 * ```
 */
export async function readElfLoads(path: string): Promise<ElfLoad[]> {
  using file = await Deno.open(path);
  const ehdr = new Uint8Array(64);
  await readAt(file, 0, ehdr);
  if (ehdr[0] !== 0x7f || ehdr[1] !== 0x45 || ehdr[2] !== 0x4c || ehdr[3] !== 0x46) {
    throw new Error(`${path} is not an ELF file`);
  }
  if (ehdr[4] !== 2 || ehdr[5] !== 1) throw new Error(`${path} is not little-endian ELF64`);
  const ev = new DataView(ehdr.buffer);
  const phoff = u64(ev, 32, "e_phoff");
  const shoff = u64(ev, 40, "e_shoff");
  const phentsize = ev.getUint16(54, true);
  let phnum = ev.getUint16(56, true);
  if (phnum === PN_XNUM && shoff !== 0) {
    const sh0 = new Uint8Array(64);
    await readAt(file, shoff, sh0);
    phnum = new DataView(sh0.buffer).getUint32(44, true); // sh_info of section 0
  }
  if (phentsize < 56 || phnum > 1 << 20) throw new Error(`${path}: bad program header table`);
  const table = new Uint8Array(phentsize * phnum);
  await readAt(file, phoff, table);
  const tv = new DataView(table.buffer);
  const loads: ElfLoad[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = i * phentsize;
    if (tv.getUint32(at, true) !== PT_LOAD) continue;
    loads.push({
      fileOffset: u64(tv, at + 8, "p_offset"),
      gpa: u64(tv, at + 24, "p_paddr"),
      fileByteLength: u64(tv, at + 32, "p_filesz"),
      memByteLength: u64(tv, at + 40, "p_memsz"),
    });
  }
  loads.sort((a, b) => a.gpa - b.gpa);
  return loads;
}

/** SHA-256 of one PT_LOAD's data. */
export interface ElfLoadDigest extends ElfLoad {
  /** Hex SHA-256 of the `fileByteLength` data bytes. */
  sha256: string;
}

/**
 * SHA-256 of each PT_LOAD's file data, streamed.
 *
 * @param path ELF file.
 * @returns One digest per load, sorted by GPA.
 * @example
 * ```ts ignore
 * for (const l of await hashElfLoads("a.elf")) console.log(l.gpa.toString(16), l.sha256);
 * ```
 */
export async function hashElfLoads(path: string): Promise<ElfLoadDigest[]> {
  const loads = await readElfLoads(path);
  using file = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  const out: ElfLoadDigest[] = [];
  for (const l of loads) {
    const h = createHash("sha256");
    for (let done = 0; done < l.fileByteLength;) {
      const n = Math.min(buf.length, l.fileByteLength - done);
      await readAt(file, l.fileOffset + done, buf.subarray(0, n));
      h.update(buf.subarray(0, n));
      done += n;
    }
    out.push({ ...l, sha256: h.digest("hex") });
  }
  return out;
}

/** Options for {@linkcode compareGuestMemory}. */
export interface CompareGuestMemoryOptions {
  /** Ranges whose content may differ (e.g. pages the guest touched). @default {[]} */
  ignoreGpaRanges?: readonly GpaRange[];
  /** Granularity of reported differences. @default {4096} */
  pageSize?: number;
  /** Stop collecting difference ranges after this many. @default {256} */
  maxDifferences?: number;
}

/** Result of {@linkcode compareGuestMemory}. */
export interface GuestMemoryComparison {
  /** True when both dumps cover the same GPAs and no compared page differs. */
  equal: boolean;
  /** Bytes compared (covered by both, not ignored). */
  comparedBytes: number;
  /** Differing pages, merged into ranges (capped at `maxDifferences`). */
  differences: GpaRange[];
  /** Number of differing pages in total. */
  differentPages: number;
  /** GPA ranges only the first dump covers (ignored ranges removed). */
  onlyInA: GpaRange[];
  /** GPA ranges only the second dump covers (ignored ranges removed). */
  onlyInB: GpaRange[];
  /** PT_LOADs of the first dump. */
  loadsA: ElfLoad[];
  /** PT_LOADs of the second dump. */
  loadsB: ElfLoad[];
}

type Interval = [number, number]; // [start, end)

function toIntervals(ranges: readonly GpaRange[]): Interval[] {
  const iv = ranges.filter((r) => r.byteLength > 0).map((
    r,
  ): Interval => [r.gpa, r.gpa + r.byteLength]);
  iv.sort((a, b) => a[0] - b[0]);
  const merged: Interval[] = [];
  for (const [s, e] of iv) {
    const last = merged[merged.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }
  return merged;
}

function subtract(a: Interval[], b: Interval[]): Interval[] {
  const out: Interval[] = [];
  for (const [s0, e0] of a) {
    let s = s0;
    for (const [bs, be] of b) {
      if (be <= s || bs >= e0) continue;
      if (bs > s) out.push([s, bs]);
      s = Math.max(s, be);
      if (s >= e0) break;
    }
    if (s < e0) out.push([s, e0]);
  }
  return out;
}

function intersect(a: Interval[], b: Interval[]): Interval[] {
  const out: Interval[] = [];
  let i = 0, j = 0;
  while (i < a.length && j < b.length) {
    const s = Math.max(a[i]![0], b[j]![0]);
    const e = Math.min(a[i]![1], b[j]![1]);
    if (s < e) out.push([s, e]);
    if (a[i]![1] < b[j]![1]) i++;
    else j++;
  }
  return out;
}

const asRanges = (iv: Interval[]): GpaRange[] =>
  iv.map(([s, e]) => ({ gpa: s, byteLength: e - s }));

/** Reads guest memory by GPA out of an ELF dump (zero beyond p_filesz). */
class ElfGpaReader {
  #file: Deno.FsFile;
  #loads: ElfLoad[];
  constructor(file: Deno.FsFile, loads: ElfLoad[]) {
    this.#file = file;
    this.#loads = loads;
  }
  async read(gpa: number, into: Uint8Array): Promise<void> {
    into.fill(0);
    const end = gpa + into.length;
    for (const l of this.#loads) {
      const s = Math.max(gpa, l.gpa);
      const e = Math.min(end, l.gpa + l.fileByteLength);
      if (s >= e) continue;
      await readAt(this.#file, l.fileOffset + (s - l.gpa), into.subarray(s - gpa, e - gpa));
    }
  }
}

function pagesEqual(a: Uint8Array, b: Uint8Array, at: number, n: number): boolean {
  if ((a.byteOffset + at) % 4 === 0 && (b.byteOffset + at) % 4 === 0 && n % 4 === 0) {
    const a32 = new Int32Array(a.buffer, a.byteOffset + at, n / 4);
    const b32 = new Int32Array(b.buffer, b.byteOffset + at, n / 4);
    for (let i = 0; i < a32.length; i++) if (a32[i] !== b32[i]) return false;
    return true;
  }
  for (let i = at; i < at + n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Compare the guest memory in two ELF dumps page by page, streaming (bounded
 * memory). Coverage is the union of each dump's PT_LOAD `[p_paddr, p_paddr +
 * p_memsz)`; GPAs covered by only one dump are reported in `onlyInA`/`onlyInB`
 * and make the result unequal. Ignored ranges are left out of everything.
 *
 * @param elfA First dump (e.g. the migration source).
 * @param elfB Second dump (e.g. the destination).
 * @param options Ranges to ignore, page size, cap on reported differences.
 * @returns The comparison.
 * @example
 * ```ts ignore
 * const cmp = await compareGuestMemory("src.elf", "dst.elf");
 * assert.ok(cmp.equal, JSON.stringify(cmp.differences.slice(0, 5)));
 * ```
 */
export async function compareGuestMemory(
  elfA: string,
  elfB: string,
  options: CompareGuestMemoryOptions = {},
): Promise<GuestMemoryComparison> {
  const pageSize = options.pageSize ?? 4096;
  const maxDifferences = options.maxDifferences ?? 256;
  const loadsA = await readElfLoads(elfA);
  const loadsB = await readElfLoads(elfB);
  const ignore = toIntervals(options.ignoreGpaRanges ?? []);
  const covA = subtract(
    toIntervals(loadsA.map((l) => ({ gpa: l.gpa, byteLength: l.memByteLength }))),
    ignore,
  );
  const covB = subtract(
    toIntervals(loadsB.map((l) => ({ gpa: l.gpa, byteLength: l.memByteLength }))),
    ignore,
  );
  const both = intersect(covA, covB);
  const onlyInA = asRanges(subtract(covA, covB));
  const onlyInB = asRanges(subtract(covB, covA));
  using fa = await Deno.open(elfA);
  using fb = await Deno.open(elfB);
  const ra = new ElfGpaReader(fa, loadsA);
  const rb = new ElfGpaReader(fb, loadsB);
  const step = 1 << 20;
  const bufA = new Uint8Array(step);
  const bufB = new Uint8Array(step);
  const diffs: Interval[] = [];
  let differentPages = 0;
  let comparedBytes = 0;
  for (const [s, e] of both) {
    for (let at = s; at < e; at += step) {
      const n = Math.min(step, e - at);
      await ra.read(at, bufA.subarray(0, n));
      await rb.read(at, bufB.subarray(0, n));
      comparedBytes += n;
      for (let p = 0; p < n; p += pageSize) {
        const m = Math.min(pageSize, n - p);
        if (pagesEqual(bufA, bufB, p, m)) continue;
        differentPages++;
        const last = diffs[diffs.length - 1];
        if (last && last[1] === at + p) last[1] = at + p + m;
        else if (diffs.length < maxDifferences) diffs.push([at + p, at + p + m]);
      }
    }
  }
  return {
    equal: differentPages === 0 && onlyInA.length === 0 && onlyInB.length === 0,
    comparedBytes,
    differences: asRanges(diffs),
    differentPages,
    onlyInA,
    onlyInB,
    loadsA,
    loadsB,
  };
}
