/**
 * Mapped-ram files for tests: a producer that has real QEMU 10 write one
 * from the tiny guest (plugged, unplugged and written-into-unplugged
 * blocks), and a deliberately small reader of the file layout, independent
 * of `src/`, to count what the product code counts.
 *
 * @module
 */

import { evilPage } from "./guest.ts";
import { type QemuGuest, startGuest, VMEM_GPA } from "./qemu.ts";
import { readFileBytes } from "./files.ts";

const MiB = 1 << 20;
/** virtio-mem device block size of the tiny guest's layout. */
export const BLOCK = 2 * MiB;
/** Unplugged blocks (in the s2/s3 shape) written during pause-before-switchover. */
export const EVIL_BLOCKS = [39, 53];
/** Guest-physical addresses of the pages written there: they are in the file. */
export const EVIL_GPAS = EVIL_BLOCKS.map((b) => VMEM_GPA + b * BLOCK + 0x1000);
/** Pages written into unplugged blocks before the migration starts: QEMU leaves them out. */
export const PRE_GPAS = [VMEM_GPA + 14 * BLOCK, VMEM_GPA + 128 * BLOCK - 0x1000];

/** Options for {@linkcode makeMappedRamFile}. */
export interface MakeMappedRamOptions {
  /** Also enable the `multifd` capability (2 channels). */
  multifd: boolean;
  /** Machine type. @default {"q35"} (pc-q35-10.0: early virtio-mem layout) */
  machine?: string;
  /** Bytes before the stream (`file:PATH,offset=N`), already in the file (e.g. a libvirt header). @default {0} */
  offset?: number;
}

/**
 * Boot the tiny guest on QEMU 10, give it the s2/s3 plug shape (blocks 0-13
 * and 64-99 plugged, a marker page in each), write EVIL-PRE pages into
 * unplugged blocks, then migrate to `path` with `mapped-ram` (and
 * `multifd`) while EVIL-MIG pages are written into unplugged blocks 39 and
 * 53 during pause-before-switchover. The source stays paused.
 *
 * @param path The file (its first `offset` bytes are kept).
 * @param options Capabilities, machine, offset.
 * @returns The source QEMU (dispose it) and `query-migrate`'s RAM statistics.
 */
export async function makeMappedRamFile(
  path: string,
  options: MakeMappedRamOptions,
): Promise<{ src: QemuGuest; ram: Record<string, number> }> {
  const src = await startGuest({
    qemu: "10",
    guest: "tiny",
    ...(options.machine ? { machine: options.machine } : {}),
  });
  try {
    await src.plugHolesShape();
    await src.pause();
    for (const gpa of PRE_GPAS) await src.gdbWritePhys(gpa, evilPage("EVIL-PRE", gpa));
    await src.qmp("migrate-set-capabilities", { capabilities: mappedRamCaps(options.multifd) });
    const offset = options.offset ?? 0;
    const info = await src.migrate(`file:${path}${offset ? `,offset=${offset}` : ""}`, {
      onPreSwitchover: async (g) => {
        for (const gpa of EVIL_GPAS) await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
      },
    });
    return { src, ram: info.ram ?? {} };
  } catch (e) {
    await src.kill();
    throw e;
  }
}

/** The capabilities a mapped-ram migration (or restore) sets. */
export function mappedRamCaps(multifd: boolean): { capability: string; state: boolean }[] {
  return [
    { capability: "mapped-ram", state: true },
    { capability: "multifd", state: multifd },
  ];
}

/** One block as the independent reader sees it. */
export interface IndependentBlock {
  /** idstr. */
  idstr: string;
  /** used_length. */
  usedLength: number;
  /** bitmap_offset. */
  bitmapOffset: number;
  /** pages_offset. */
  pagesOffset: number;
  /** Set bits among the block's pages. */
  setBits: number;
  /** Indexes of the set bits (pages). */
  pages: number[];
}

/**
 * Read the MEM_SIZE list of a mapped-ram file (x86, no target-page-bits,
 * no postcopy, no x-ignore-shared) with plain file reads, and count each
 * block's set bits: an oracle for the product's reader.
 *
 * @param path The file.
 * @param payloadOffset Where `QEVM` is.
 * @returns The blocks.
 */
export async function readMappedRamIndependently(
  path: string,
  payloadOffset = 0,
): Promise<IndependentBlock[]> {
  const head = await readFileBytes(path, payloadOffset, 4096);
  const v = new DataView(head.buffer);
  if (v.getUint32(0) !== 0x5145564d || head[8] !== 0x07) throw new Error("not a QEVM + config");
  let p = 9;
  p += 4 + v.getUint32(p); // machine name
  while (head[p] === 0x05) {
    p += 2 + head[p + 1]! + 4; // subsection header
    const count = v.getUint32(p);
    p += 4;
    for (let i = 0; i < count; i++) p += 1 + head[p]!;
  }
  if (head[p] !== 0x01) throw new Error("expected the ram START section");
  p += 1 + 4 + 1 + head[p + 5]! + 8;
  let total = Number(v.getBigUint64(p) & ~0xfffn);
  let at = payloadOffset + p + 8;
  const blocks: IndependentBlock[] = [];
  while (total > 0) {
    const b = await readFileBytes(path, at, 1 + 255 + 8 + 28);
    const bv = new DataView(b.buffer);
    const len = b[0]!;
    const idstr = new TextDecoder().decode(b.subarray(1, 1 + len));
    const usedLength = Number(bv.getBigUint64(1 + len));
    const h = 1 + len + 8;
    const bitmapOffset = Number(bv.getBigUint64(h + 12));
    const pagesOffset = Number(bv.getBigUint64(h + 20));
    const pageCount = usedLength / 4096;
    const bitmap = await readFileBytes(path, bitmapOffset, Math.ceil(pageCount / 64) * 8);
    const pages: number[] = [];
    for (let i = 0; i < pageCount; i++) if ((bitmap[i >> 3]! >> (i & 7)) & 1) pages.push(i);
    blocks.push({ idstr, usedLength, bitmapOffset, pagesOffset, setBits: pages.length, pages });
    total -= usedLength;
    at = pagesOffset + usedLength;
  }
  return blocks;
}

/**
 * Disk usage of a file in KiB, as `du -k` reports it.
 *
 * @param path The file.
 * @returns KiB allocated.
 */
export async function duKiB(path: string): Promise<number> {
  const out = await new Deno.Command("du", { args: ["-k", path], stdout: "piped" }).output();
  if (!out.success) throw new Error(`du -k ${path} failed`);
  return Number(new TextDecoder().decode(out.stdout).split(/\s/)[0]);
}
