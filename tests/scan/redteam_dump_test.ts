/**
 * Red team of the dump verdicts: dumps crafted from a real QEMU 7.2 dump of
 * a Linux guest (tests/_util/kernel_dumps.ts) so that a real reader shows
 * non-zero bytes at an unplugged gpa where the scan used to see zeros and
 * said "clean". Each case asks the reader (crash `rd -p`, drgn
 * `prog.read(gpa, n, True)`) what it shows, then checks the verdict.
 *
 * The honest base: the whole-region dump a QEMU < 6.2 writes (one PT_LOAD
 * over the device region) with the unplugged blocks zeroed, so it scans
 * clean; each attack adds one guest page (an EVIL marker the guest wrote
 * into an unplugged block) or moves descriptors.
 *
 * - ELF, overlapping PT_LOADs (another `p_vaddr - p_paddr`, so the reader
 *   takes them as aliases): crash takes the first program header that covers
 *   an address, drgn the last, the scan's plan the lowest-starting one.
 * - ELF, a PT_NULL program header with the EVIL page: crash takes every
 *   header after the first as a PT_LOAD, whatever its type.
 * - ELF, the first PT_LOAD with a `p_memsz` running past 2^53: the scan's
 *   plan leaves it out (no gpa), crash reads its file bytes.
 * - kdump, two descriptors with one data offset but their own size and
 *   flags (zlib of a zero page, then 4096 bytes stored as is from there):
 *   the scan decoded the shared offset once, with the first one's codec.
 * - flattened kdump, two records over the same bytes: makedumpfile -R keeps
 *   the last, crash the one its binary search meets.
 * - kdump, `bitmap_blocks` odd and `max_mapnr` one past a block of bits:
 *   crash (and the scan) read one bitmap, libkdumpfile (drgn) two, and ranks
 *   the descriptors by bytes the scan never read.
 */
import assert from "node:assert/strict";
import { type BuildLoad, readPhdrsIndependently, writeElf } from "../_util/elf_builder.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { readFileBytes } from "../_util/files.ts";
import { type KernelDumps, kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { requireTool, runTool, toolAvailable } from "../_util/tools.ts";
import { vmlinuxAvailable } from "../_util/vmlinux.ts";
import { assertReadError, assertVmlinuxOfGuest, hex, rdBytes, runCrash } from "../elf/_crash.ts";
import { runCli } from "../_util/cli.ts";
import { cli, drgnRead, requireDrgn } from "../kdump/_readers.ts";
import { listedPages, scanCli } from "./_cli.ts";

const PAGE = 4096;
const EVIL = [...new TextEncoder().encode("EVIL-")];

/** The notes and the PT_LOADs outside the device region of QEMU's own dump. */
async function baseOf(d: KernelDumps): Promise<{ notes: Uint8Array; loads: BuildLoad[] }> {
  const phdrs = await readPhdrsIndependently(d.elf);
  const note = phdrs.find((p) => p.type === 4)!;
  const notes = await readFileBytes(d.elf, note.offset, note.filesz);
  const start = BigInt(d.device.gpa);
  const end = start + BigInt(d.device.byteLength);
  const loads = phdrs
    .filter((p) => p.type === 1 && (p.paddr + BigInt(p.memsz) <= start || p.paddr >= end))
    .map((p) => ({
      paddr: p.paddr,
      vaddr: p.vaddr,
      data: { path: d.elf, fileOffset: p.offset, byteLength: p.filesz },
      memByteLength: p.memsz,
    }));
  return { notes, loads };
}

/** The device region's pmemsave image with every unplugged block zeroed. */
function writeCleanImage(d: KernelDumps, path: string): void {
  const image = Deno.readFileSync(d.raw);
  for (const r of d.unpluggedRanges) {
    image.fill(0, r.gpa - d.device.gpa, r.gpa - d.device.gpa + r.byteLength);
  }
  Deno.writeFileSync(path, image);
}

/** `vmem-dump scan FILE --plugmap MAP --json`: exit code, listed finding gpas, error text. */
async function scan(d: KernelDumps, file: string) {
  const run = await scanCli([file, "--plugmap", d.plugmap, "--json"]);
  const gpas = run.report ? listedPages(run.report).map((p) => p.gpa) : [];
  return { code: run.code, gpas, err: run.err + run.out };
}

/** crash `rd -p -8 GPA 16` on a dump: the bytes it printed. */
async function crashRead(d: KernelDumps, dump: string, gpa: number, dir: string) {
  const probe = { gpa, plugged: false, expected: [] };
  const run = await runCrash(
    d.vmlinux,
    dump,
    `${dir}/crash-${dump.slice(dump.lastIndexOf("/") + 1)}`,
    [
      probe,
    ],
  );
  return rdBytes(run.rd.get(gpa) ?? "");
}

// --- kdump fields (makedumpfile's diskdump_mod.h, 64-bit little-endian), read here, not by src/ ---

interface KdumpLayout {
  blockSize: number;
  bitmapBlocks: number;
  maxMapnr: number;
  secondBitmap: number;
  descTable: number;
}

function kdumpLayout(bytes: Uint8Array): KdumpLayout {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const blockSize = v.getInt32(428, true);
  const subHdrSize = v.getInt32(432, true);
  const bitmapBlocks = v.getInt32(436, true);
  const maxMapnr = Number(v.getBigUint64(blockSize + 96, true)); // max_mapnr_64
  const bitmaps = (1 + subHdrSize) * blockSize;
  return {
    blockSize,
    bitmapBlocks,
    maxMapnr,
    secondBitmap: bitmaps + Math.floor(bitmapBlocks / 2) * blockSize,
    descTable: bitmaps + bitmapBlocks * blockSize,
  };
}

/** Set bits of the 2nd bitmap below `pfn`: the index of its page descriptor. */
function rank(bytes: Uint8Array, l: KdumpLayout, pfn: number): number {
  let n = 0;
  for (let i = 0; i < Math.floor(pfn / 8); i++) {
    let b = bytes[l.secondBitmap + i]!;
    while (b) {
      n += b & 1;
      b >>= 1;
    }
  }
  for (let bit = 0; bit < pfn % 8; bit++) n += (bytes[l.secondBitmap + (pfn >> 3)]! >> bit) & 1;
  return n;
}

// --- the flattened container (makedumpfile's makedumpfile_data_header, big-endian), read here ---

/** One flattened record: offset, size, bytes. */
function record(offset: number, bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + bytes.byteLength);
  const v = new DataView(out.buffer);
  v.setBigInt64(0, BigInt(offset), false);
  v.setBigInt64(8, BigInt(bytes.byteLength), false);
  out.set(bytes, 16);
  return out;
}

/** Records of a flattened file: [offset, size, where its bytes are], in file order. */
function records(flat: Uint8Array): Array<[number, number, number]> {
  const v = new DataView(flat.buffer, flat.byteOffset, flat.byteLength);
  const out: Array<[number, number, number]> = [];
  for (let at = 4096;;) {
    const offset = Number(v.getBigInt64(at, false));
    const size = Number(v.getBigInt64(at + 8, false));
    if (offset === -1) return out;
    out.push([offset, size, at + 16]);
    at += 16 + size;
  }
}

/** The file a flattened file stands for, the last record winning (makedumpfile -R). */
function unflatten(flat: Uint8Array, byteLength: number): Uint8Array {
  const out = new Uint8Array(byteLength);
  for (const [offset, size, at] of records(flat)) out.set(flat.subarray(at, at + size), offset);
  return out;
}

/**
 * Where crash 8.0.2 reads byte `offset` of a flattened file (makedumpfile.c: records sorted by
 * offset as they are read, a later one before an equal one; then `read_flattened_format`'s binary
 * search): the file offset of the record's bytes.
 */
function crashPick(flat: Uint8Array, offset: number): number | undefined {
  const sorted: Array<[number, number, number]> = [];
  for (const r of records(flat)) {
    let i = sorted.length;
    while (i > 0 && sorted[i - 1]![0] >= r[0]) i--;
    sorted.splice(i, 0, r);
  }
  let lo = 0;
  let hi = sorted.length;
  for (;;) {
    const index = (lo + hi) >> 1;
    const [start, size, at] = sorted[index]!;
    if (start <= offset && offset < start + size) return at;
    if (index === lo && lo + 1 === hi) return undefined;
    if (offset < start) hi = index;
    else lo = index;
  }
}

/** A crash command file. */
async function commands(dir: string, lines: string[]): Promise<string> {
  const path = await Deno.makeTempFile({ dir, suffix: ".cmds" });
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return path;
}

Deno.test({
  name:
    "red team, dumps: crash and drgn show an unplugged gpa's bytes from overlapping or non-PT_LOAD program headers, shared kdump data offsets and an odd bitmap; scan finds them or refuses the dump",
  ignore: ![toolAvailable("crash"), vmlinuxAvailable(), kernelDumpsAvailable("7.2")].every(Boolean),
  fn: async () => {
    requireTool("crash");
    requireDrgn();
    const d = await kernelDumps("7.2");
    await assertVmlinuxOfGuest(d, d.vmlinux);
    const evil = d.evil[0]!;
    assert.equal(evil.gpa % PAGE, 0);
    const dir = Deno.makeTempDirSync({ prefix: "vmem-redteam-dump-" });
    try {
      const clean = `${dir}/clean.raw`;
      writeCleanImage(d, clean);
      const { notes, loads } = await baseOf(d);
      const region: BuildLoad = {
        paddr: BigInt(d.device.gpa),
        data: { path: clean, fileOffset: 0, byteLength: d.device.byteLength },
      };
      // The guest's page, as an alias of the direct map (another vaddr - paddr than the region's).
      const attack: BuildLoad = {
        paddr: BigInt(evil.gpa),
        vaddr: 0xffff_8880_0000_0000n + BigInt(evil.gpa),
        data: { path: d.raw, fileOffset: evil.gpa - d.device.gpa, byteLength: PAGE },
      };
      const honest = `${dir}/honest.elf`;
      const first = `${dir}/overlap-first.elf`;
      const last = `${dir}/overlap-last.elf`;
      const nullPhdr = `${dir}/pt-null.elf`;
      await writeElf(honest, { notes, loads: [...loads, region] });
      await writeElf(first, { notes, loads: [attack, ...loads, region] });
      await writeElf(last, { notes, loads: [...loads, region, attack] });
      await writeElf(nullPhdr, { notes, loads: [attack, ...loads, region] });
      {
        // program header 1 (classic layout: the table at 64, 56 bytes each) becomes PT_NULL
        using f = await Deno.open(nullPhdr, { read: true, write: true });
        await f.seek(64 + 56, Deno.SeekMode.Start);
        await f.write(new Uint8Array(4));
      }

      // The same PT_LOAD first, its p_memsz running past 2^53 (its file bytes are the page).
      const huge = `${dir}/memsz-past-2p53.elf`;
      await writeElf(huge, { notes, loads: [attack, ...loads, region] });
      {
        using f = await Deno.open(huge, { read: true, write: true });
        await f.seek(64 + 56 + 40, Deno.SeekMode.Start); // program header 1's p_memsz
        const memsz = new Uint8Array(8);
        new DataView(memsz.buffer).setBigUint64(0, (1n << 53n) - 0x8000_0000n, true);
        await f.write(memsz);
      }

      // What the readers show at the guest's page.
      const evilBytes = [...(await readFileBytes(d.raw, evil.gpa - d.device.gpa, 16))];
      assert.deepEqual(evilBytes.slice(0, 5), EVIL);
      assert.deepEqual(await crashRead(d, honest, evil.gpa, dir), new Array(16).fill(0));
      assert.deepEqual(await crashRead(d, first, evil.gpa, dir), evilBytes, "crash: first wins");
      assert.deepEqual(await crashRead(d, nullPhdr, evil.gpa, dir), evilBytes, "crash: PT_NULL");
      assert.deepEqual(await crashRead(d, huge, evil.gpa, dir), evilBytes, "crash: p_memsz");
      assert.deepEqual(await drgnRead(honest, [evil.gpa], 16), ["00".repeat(16)]);
      assert.deepEqual(
        await drgnRead(last, [evil.gpa], 16),
        [evilBytes.map((b) => b.toString(16).padStart(2, "0")).join("")],
        "drgn: the last PT_LOAD wins",
      );

      // The verdicts.
      const h = await scan(d, honest);
      assert.equal(h.code, 0, h.err);
      assert.deepEqual(h.gpas, []);
      for (const file of [first, last, nullPhdr, huge]) {
        const r = await scan(d, file);
        assert.equal(r.code, 3, `${file}: ${r.err}`);
        assert.deepEqual(r.gpas, [evil.gpa], file);
      }

      // The rewriting commands. strip cuts unplugged memory out of every PT_LOAD and keeps no
      // other header: crash and drgn find nothing at the guest's page in its output. The PT_LOAD
      // whose end runs past 2^53 has no gpa and cannot be cut: strip and convert --to elf kept it
      // whole (exit 0, crash and drgn showed the page); now they refuse it, leaving no output.
      for (const file of [first, last, nullPhdr]) {
        const out = `${file}.stripped`;
        const r = await runCli(["strip", file, out, "--plugmap", d.plugmap]);
        assert.equal(r.code, 0, `${file}: ${r.err}`);
        const s = await scan(d, out);
        assert.equal(s.code, 4, `${out}: unplugged memory is gone (absent): ${s.err}`);
        assert.deepEqual(s.gpas, []);
        assert.deepEqual(await drgnRead(out, [evil.gpa], 16), ["fault"], `drgn: ${out}`);
        const run = await runCrash(
          d.vmlinux,
          out,
          `${dir}/crash-stripped-${file.slice(dir.length + 1)}`,
          [
            { gpa: evil.gpa, plugged: false, expected: [] },
          ],
        );
        assertReadError(run.rd.get(evil.gpa) ?? "", evil.gpa, `crash: ${out}`);
      }
      for (const args of [["strip"], ["convert", "--to", "elf"]]) {
        const out = `${huge}.${args[0]}`;
        const r = await runCli([args[0]!, huge, out, ...args.slice(1), "--plugmap", d.plugmap]);
        assert.equal(r.code, 1, `${args[0]}: ${r.out}`);
        assert.match(r.err, /PT_LOAD 1: .* runs past 2\^53 .* at offset 0xa0$/m, args[0]);
        await assert.rejects(Deno.stat(out), Deno.errors.NotFound, `${args[0]}: no output`);
      }

      // kdump: two descriptors share a data offset, each with its own size and codec.
      const honestKdump = `${dir}/honest.kdump`;
      await cli(["convert", honest, honestKdump, "--to", "kdump"]);
      assert.equal((await scan(d, honestKdump)).code, 0);
      const base = Deno.readFileSync(honestKdump);
      const l = kdumpLayout(base);
      const pfnA = evil.gpa / PAGE;
      const pfnB = pfnA + 1;
      {
        const zlibZero = new Uint8Array(
          await new Response(
            new Blob([new Uint8Array(PAGE)]).stream().pipeThrough(new CompressionStream("deflate")),
          ).arrayBuffer(),
        );
        const guestPage = await readFileBytes(d.raw, evil.gpa - d.device.gpa, PAGE);
        const tail = new Uint8Array(PAGE);
        tail.set(zlibZero);
        tail.set(guestPage.subarray(0, PAGE - zlibZero.byteLength), zlibZero.byteLength);
        const out = new Uint8Array(base.byteLength + PAGE);
        out.set(base);
        out.set(tail, base.byteLength);
        const v = new DataView(out.buffer);
        const descA = l.descTable + 24 * rank(base, l, pfnA);
        const descB = l.descTable + 24 * rank(base, l, pfnB);
        assert.equal(descB, descA + 24, "both pages are in the dump");
        v.setBigUint64(descA, BigInt(base.byteLength), true); // zlib of a zero page
        v.setUint32(descA + 8, zlibZero.byteLength, true);
        v.setUint32(descA + 12, 1, true);
        v.setBigUint64(descB, BigInt(base.byteLength), true); // the same bytes, stored as is
        v.setUint32(descB + 8, PAGE, true);
        v.setUint32(descB + 12, 0, true);
        const shared = `${dir}/shared-offset.kdump`;
        Deno.writeFileSync(shared, out);
        const hexB = [...tail.subarray(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
        assert.deepEqual(await drgnRead(shared, [pfnA * PAGE, pfnB * PAGE], 16), [
          "00".repeat(16),
          hexB,
        ]);
        assert.deepEqual(await crashRead(d, shared, pfnB * PAGE, dir), [...tail.subarray(0, 16)]);
        const r = await scan(d, shared);
        assert.equal(r.code, 3, r.err);
        assert.deepEqual(r.gpas, [pfnB * PAGE]);
      }

      // Flattened kdump: a record with the guest's page over the shared zero page's data, before
      // the record that holds it. makedumpfile -R (and the scan) keep the last record; crash sorts
      // the records by offset and takes the one its binary search meets first.
      {
        const flat = `${dir}/honest.flat`;
        await cli(["convert", honest, flat, "--to", "kdump", "--flattened"]);
        const flatBytes = Deno.readFileSync(flat);
        assert.deepEqual(unflatten(flatBytes, base.byteLength), base, "the same dump, flattened");
        const v = new DataView(base.buffer, base.byteOffset);
        const zeroPage = Number(v.getBigUint64(l.descTable + 24 * rank(base, l, pfnA), true));
        assert.equal(v.getUint32(l.descTable + 24 * rank(base, l, pfnA) + 8, true), PAGE);
        const guestPage = await readFileBytes(d.raw, evil.gpa - d.device.gpa, PAGE);
        // n records of one byte each (copies of the dump's own bytes) shift crash's search
        let attack: Uint8Array | undefined;
        for (let n = 0; n < 64 && attack === undefined; n++) {
          const steer = Array.from(
            { length: n },
            (_, i) => record(8192 + i, base.subarray(8192 + i, 8193 + i)),
          );
          const candidate = concatBytes([
            flatBytes.subarray(0, 4096),
            ...steer,
            record(zeroPage, guestPage),
            flatBytes.subarray(4096),
          ]);
          if (crashPick(candidate, zeroPage) === 4096 + 17 * n + 16) attack = candidate;
        }
        assert.ok(attack, "a record count that steers crash's search to the guest's page");
        const steered = `${dir}/overlapping-records.flat`;
        Deno.writeFileSync(steered, attack);
        const minimal = await runTool("crash", [
          "--minimal",
          "-s",
          d.vmlinux,
          steered,
          "-i",
          await commands(dir, [`rd -p -8 ${hex(evil.gpa)} 16`, "exit"]),
        ], { timeoutMs: 600_000 });
        assert.deepEqual(rdBytes(minimal.stdout), [...guestPage.subarray(0, 16)], minimal.stderr);
        const r = await scan(d, steered);
        assert.equal(r.code, 1, r.err);
        assert.match(
          r.err,
          /record at (0x[0-9a-f]+) gives byte 0x[0-9a-f]+ .* another value .* at offset \1"/,
        );
      }

      // kdump: one more bitmap block and max_mapnr one past a whole block of bits. crash counts
      // blocks (69 < 2 × 35: one bitmap); libkdumpfile counts bits (0x110001 ≤ 69 × 4096 × 4: two,
      // the 2nd from block 34, where the honest file's 2nd bitmap is).
      {
        assert.equal(l.bitmapBlocks % 2, 0);
        assert.equal(l.maxMapnr % (l.blockSize * 8), 0, "max_mapnr fills whole bitmap blocks");
        const B = l.blockSize;
        const pages = rank(base, l, l.maxMapnr);
        const out = new Uint8Array(base.byteLength + B);
        out.set(base.subarray(0, l.descTable));
        out.set(base.subarray(l.descTable), l.descTable + B);
        const v = new DataView(out.buffer);
        for (let i = 0; i < pages; i++) {
          const at = l.descTable + B + 24 * i;
          v.setBigUint64(at, v.getBigUint64(at, true) + BigInt(B), true);
        }
        v.setInt32(436, l.bitmapBlocks + 1, true);
        v.setUint32(440, l.maxMapnr + 1, true);
        v.setBigUint64(B + 96, BigInt(l.maxMapnr + 1), true);
        // The first page of the last unplugged run and the last non-zero plugged page before it:
        // clearing the pages between them in libkdumpfile's bitmap only gives the unplugged
        // page the plugged one's descriptor.
        const target = d.unpluggedRanges.at(-1)!.gpa;
        let plugged = target - PAGE;
        while ((await readFileBytes(d.raw, plugged - d.device.gpa, PAGE)).every((b) => b === 0)) {
          plugged -= PAGE;
          assert.ok(
            plugged > d.device.gpa,
            "a non-zero plugged page before the last unplugged run",
          );
        }
        for (let pfn = plugged / PAGE; pfn < target / PAGE; pfn++) {
          out[l.secondBitmap + (pfn >> 3)]! &= ~(1 << (pfn & 7));
        }
        const odd = `${dir}/odd-bitmap.kdump`;
        Deno.writeFileSync(odd, out);
        const want = [...(await readFileBytes(d.raw, plugged - d.device.gpa, 16))];
        assert.ok(want.some((b) => b !== 0));
        assert.deepEqual(
          await drgnRead(odd, [target], 16),
          [want.map((b) => b.toString(16).padStart(2, "0")).join("")],
          "drgn shows the plugged page at the unplugged gpa",
        );
        const r = await scan(d, odd);
        assert.equal(r.code, 1, r.err);
        assert.match(r.err, /bitmap_blocks 69 .*crash and libkdumpfile .* at offset 0x1b4/);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
