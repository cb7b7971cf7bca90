/**
 * Corrupted kdump files through the reader, `strip` (the kdump writer) and
 * `convert --to elf`, and corrupted ELF dumps through `convert --to kdump`,
 * with oracles that say what a correct outcome is, not only that nothing
 * crashed. Seeds: the tiny VM's real dumps (testdata/tiny/: QEMU 7.2's
 * flattened kdump-zlib, QEMU 10.0's plain kdump-raw-zlib, makedumpfile's
 * plain dump, QEMU 7.2's ELF) and our own kdump output.
 *
 * Each mutated file (a byte flipped in the headers, sub-header, bitmaps,
 * descriptors, flattened record headers or page data, or the file cut
 * short) must give, from each path, either a typed error (FormatError,
 * UnexpectedEofError, UnsupportedFeatureError; no output file left), or:
 *
 * - reader: pages; `strip`: an output whose bitmaps are the input's minus
 *   the removed pfns and whose stored pages are the input's stored bytes,
 *   byte for byte (no recompression), minus the removed pfns;
 * - `convert --to elf`: an ELF holding at every dumped pfn the page the
 *   reader decodes from the (mutated) input; it may succeed only when the
 *   reader decodes every page;
 * - `convert --to kdump` of an ELF: a kdump whose every page equals the
 *   ELF's bytes at that address (read from the ELF's program headers here,
 *   not through our reader).
 *
 * @module
 */

import assert from "node:assert/strict";
import { convertDump, stripDump } from "../../src/dumps/mod.ts";
import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../../src/errors.ts";
import { readKdump } from "../../src/kdump/mod.ts";
import { PlugMap } from "../../src/vmem/mod.ts";
import { seededRandom } from "../_util/chunkings.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import { tinyPlugMapJson } from "../_util/fuzz/targets/dumps.ts";

const B = 4096;

/** What a path gave: a typed error, or a result. */
type Outcome<T> = { error: Error } | { value: T };

function isTyped(e: unknown): e is Error {
  return e instanceof FormatError || e instanceof UnexpectedEofError ||
    e instanceof UnsupportedFeatureError;
}

async function attempt<T>(what: string, fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { value: await fn() };
  } catch (e) {
    if (!isTyped(e)) {
      throw new Error(`${what}: an untyped error: ${e instanceof Error ? e.stack : String(e)}`);
    }
    return { error: e };
  }
}

/** A stored page: its descriptor flags and the bytes as stored. */
interface Stored {
  flags: number;
  bytes: Uint8Array;
}

/** Bitmaps and stored pages of a kdump file, through the reader's raw path. */
async function storedPages(path: string) {
  using dump = await readKdump(path);
  const present: number[] = [];
  dump.present.forEachRun(0, dump.maxMapnr, (p, n) => {
    for (let i = 0; i < n; i++) present.push(p + i);
  });
  const pages = new Map<number, Stored>();
  for await (const batch of dump.iteratePages(0, dump.maxMapnr, { raw: true })) {
    for (const p of batch) pages.set(p.pfn, { flags: p.desc.flags, bytes: p.data.slice() });
  }
  return { present, pages };
}

/** Every dumped page decoded. */
async function decodedPages(path: string): Promise<Map<number, Uint8Array>> {
  using dump = await readKdump(path);
  const pages = new Map<number, Uint8Array>();
  for await (const batch of dump.iteratePages(0, dump.maxMapnr)) {
    for (const p of batch) pages.set(p.pfn, p.data.slice());
  }
  return pages;
}

/** The bytes of an ELF core at each page of its PT_LOADs, read from the program headers here. */
function elfPages(bytes: Uint8Array): Map<number, Uint8Array> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.equal(v.getUint8(4), 2, "ELF64");
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  const pages = new Map<number, Uint8Array>();
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== 1) continue; // PT_LOAD
    const offset = Number(v.getBigUint64(at + 8, true));
    const paddr = Number(v.getBigUint64(at + 24, true));
    const filesz = Number(v.getBigUint64(at + 32, true));
    const memsz = Number(v.getBigUint64(at + 40, true));
    for (let o = 0; o < memsz; o += B) {
      const page = new Uint8Array(B);
      if (o < filesz) page.set(bytes.subarray(offset + o, offset + Math.min(filesz, o + B)));
      pages.set((paddr + o) / B, page);
    }
  }
  return pages;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Offsets to flip in a kdump file: header fields, sub-header, bitmaps, descriptors, data. */
function kdumpOffsets(bytes: Uint8Array, seed: number): number[] {
  const rnd = seededRandom(seed);
  const flattened = new TextDecoder().decode(bytes.subarray(0, 12)) === "makedumpfile";
  const offsets = new Set<number>();
  if (flattened) {
    // The flattened header, and the headers of the first records (offset, size: 16 bytes each).
    for (let i = 0; i < 24; i++) offsets.add(i);
    let at = B;
    for (let r = 0; r < 12 && at + 16 <= bytes.length; r++) {
      for (const o of [0, 3, 7, 8, 11, 15]) offsets.add(at + o);
      const size = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigInt64(at + 8, false));
      if (size < 0 || size > bytes.length) break;
      at += 16 + size;
    }
  } else {
    // disk_dump_header (signature, version, utsname edges, block_size, sub_hdr_size,
    // bitmap_blocks, max_mapnr, status, nr_cpus …) and kdump_sub_header.
    for (const o of [0, 7, 8, 11, 12, 400, 408, 412, 416, 420, 424, 428, 432, 436, 440, 444]) {
      offsets.add(o);
    }
    for (let o = B; o < B + 96; o += 4) offsets.add(o);
  }
  // Anywhere else: bitmaps, descriptors, page data.
  while (offsets.size < 48) offsets.add(Math.floor(rnd() * bytes.length));
  return [...offsets].filter((o) => o < bytes.length).sort((a, b) => a - b);
}

function cuts(length: number, seed: number): number[] {
  const rnd = seededRandom(seed);
  const out = new Set([0, 8, 100, B - 1, B, B + 1, 2 * B, length - 1]);
  while (out.size < 12) out.add(Math.floor(rnd() * length));
  return [...out].filter((n) => n >= 0 && n < length);
}

/** Check one mutated kdump file through every path; says which paths succeeded. */
async function checkKdump(
  dir: string,
  name: string,
  bytes: Uint8Array,
  map: PlugMap,
): Promise<{ strip: boolean; convert: boolean }> {
  const input = `${dir}/in.kdump`;
  await Deno.writeFile(input, bytes);
  const removed = map.unpluggedGpaRanges();
  const isRemoved = (pfn: number) =>
    removed.some((r) => pfn * B >= r.gpa && (pfn + 1) * B <= r.gpa + r.byteLength);

  const raw = await attempt(`${name}: reader (raw)`, () => storedPages(input));
  const decoded = await attempt(`${name}: reader`, () => decodedPages(input));

  // strip: typed error and no output, or exactly the input minus the removed pfns.
  const stripped = `${dir}/stripped.kdump`;
  const s = await attempt(`${name}: strip`, () => stripDump(input, stripped, { plugMap: map }));
  if ("error" in s) {
    assert.equal(
      await exists(stripped),
      false,
      `${name}: strip failed (${s.error.message}) and left its output`,
    );
  } else {
    assert.ok("value" in raw, `${name}: strip succeeded on a file the reader refuses`);
    const out = await storedPages(stripped);
    assert.deepEqual(
      out.present,
      raw.value.present.filter((p) => !isRemoved(p)),
      `${name}: 1st bitmap`,
    );
    const want = [...raw.value.pages].filter(([pfn]) => !isRemoved(pfn));
    assert.deepEqual([...out.pages.keys()], want.map(([pfn]) => pfn), `${name}: pages kept`);
    for (const [pfn, page] of want) {
      const got = out.pages.get(pfn)!;
      assert.equal(got.flags, page.flags, `${name}: pfn ${pfn} flags`);
      assert.ok(equalBytes(got.bytes, page.bytes), `${name}: pfn ${pfn} stored bytes`);
    }
    await Deno.remove(stripped);
  }

  // convert --to elf: typed error and no output, or every decoded page at its address.
  const elf = `${dir}/out.elf`;
  const c = await attempt(
    `${name}: convert --to elf`,
    () => convertDump(input, elf, { to: "elf" }),
  );
  if ("error" in c) {
    assert.equal(
      await exists(elf),
      false,
      `${name}: convert failed (${c.error.message}) and left its output`,
    );
  } else {
    assert.ok("value" in decoded, `${name}: convert --to elf succeeded where the reader fails`);
    const pages = elfPages(await Deno.readFile(elf));
    for (const [pfn, page] of decoded.value) {
      const got = pages.get(pfn);
      assert.ok(got && equalBytes(got, page), `${name}: pfn 0x${pfn.toString(16)} in the ELF`);
    }
    await Deno.remove(elf);
  }
  return { strip: "value" in s, convert: "value" in c };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The tiny VM's plug map with block 4 unplugged too, so that strip removes pages QEMU kept. */
async function lessPlugMap(): Promise<PlugMap> {
  const json = JSON.parse(await tinyPlugMapJson());
  const dev = json.devices[0];
  const runs = (dev.plugged as [number, number][]).flatMap(([s, n]) =>
    Array.from({ length: n }, (_, i) => s + i)
  ).filter((b) => b !== 4);
  dev.plugged = runs.map((b) => [b, 1]);
  dev.size = runs.length * dev["block-size"];
  return PlugMap.fromJSON(json);
}

const SEEDS = ["q72-tiny.kdump-zlib", "q10-tiny.kdump-raw-zlib", "q72-tiny.kdump"];

for (const [i, seed] of SEEDS.entries()) {
  Deno.test(`corrupted ${seed}: reader, strip and convert --to elf give typed errors or the right pages`, async () => {
    const bytes = await tinyFixture(seed);
    const map = await lessPlugMap();
    const dir = await Deno.makeTempDir({ prefix: "vmem-kdump-corrupt-" });
    try {
      // The unmutated file first: every path works, and strip removes pages.
      // (QEMU 10.0's tiny dump has no notes and utsname.machine "Unknown": convert --to elf
      // refuses it, UnsupportedFeatureError, and so every mutation of it.)
      const baseline = await checkKdump(dir, `${seed} as is`, bytes, map);
      assert.ok(baseline.strip, `${seed}: strip of the unmutated file`);
      const r = await stripDump(`${dir}/in.kdump`, `${dir}/s.kdump`, { plugMap: map });
      assert.ok(r.format === "kdump" && r.kdump.removedPages > 0, "strip removes block 4's pages");
      await Deno.remove(`${dir}/s.kdump`);
      const tally = { strip: [0, 0], convert: [0, 0] }; // [refused, done]
      const count = (r: { strip: boolean; convert: boolean }) => {
        tally.strip[r.strip ? 1 : 0]!++;
        tally.convert[r.convert ? 1 : 0]!++;
      };
      for (const at of kdumpOffsets(bytes, 11 + i)) {
        const m = bytes.slice();
        m[at]! ^= 1 << (at % 8);
        count(await checkKdump(dir, `${seed} bit ${at % 8} of byte 0x${at.toString(16)}`, m, map));
      }
      for (const n of cuts(bytes.length, 23 + i)) {
        count(await checkKdump(dir, `${seed} cut at ${n}`, bytes.subarray(0, n), map));
      }
      // Both outcomes happened on each path that takes the unmutated file: the oracles were
      // exercised, and the mutations bit.
      for (const [path, [refused, done]] of Object.entries(tally)) {
        if (!baseline[path as keyof typeof baseline]) continue;
        assert.ok(refused! > 0 && done! > 0, `${seed}: ${path} refused ${refused}, done ${done}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("corrupted QEMU 7.2 ELF: convert --to kdump gives a typed error or a kdump holding the ELF's bytes", async () => {
  const bytes = await tinyFixture("q72-tiny.elf");
  const dir = await Deno.makeTempDir({ prefix: "vmem-elf-corrupt-" });
  try {
    const rnd = seededRandom(5);
    // ELF header, program headers (QEMU's layout puts them after the section headers), notes.
    const v = new DataView(bytes.buffer);
    const phoff = Number(v.getBigUint64(32, true));
    const phnum = v.getUint16(56, true);
    const offsets = new Set<number>([0, 4, 5, 16, 18, 32, 40, 52, 54, 56, 58, 60, 62]);
    for (let p = 0; p < phnum; p++) {
      for (const o of [0, 8, 16, 24, 32, 40]) offsets.add(phoff + p * 56 + o + 2);
    }
    while (offsets.size < 64) offsets.add(Math.floor(rnd() * Math.min(bytes.length, 1 << 16)));
    const cases: Array<[string, Uint8Array]> = [["as is", bytes]];
    for (const at of [...offsets].sort((a, b) => a - b)) {
      const m = bytes.slice();
      m[at]! ^= 1 << (at % 8);
      cases.push([`bit ${at % 8} of byte 0x${at.toString(16)}`, m]);
    }
    for (const n of cuts(bytes.length, 7)) cases.push([`cut at ${n}`, bytes.subarray(0, n)]);
    let converted = 0;
    for (const [what, m] of cases) {
      const input = `${dir}/in.elf`;
      const out = `${dir}/out.kdump`;
      await Deno.writeFile(input, m);
      const c = await attempt(
        `ELF ${what}: convert --to kdump`,
        () => convertDump(input, out, { to: "kdump", workers: 0 }),
      );
      if ("error" in c) {
        assert.equal(await exists(out), false, `ELF ${what}: convert failed and left its output`);
        continue;
      }
      converted++;
      // Oracle: the ELF's bytes at each page, read from its program headers here.
      const want = elfPages(m);
      const got = await decodedPages(out);
      for (const [pfn, page] of want) {
        const g = got.get(pfn) ?? new Uint8Array(B); // a zero page may be left out only if zero
        assert.ok(equalBytes(g, page), `ELF ${what}: pfn 0x${pfn.toString(16)}`);
      }
      for (const pfn of got.keys()) {
        assert.ok(want.has(pfn), `ELF ${what}: pfn 0x${pfn.toString(16)} invented`);
      }
      await Deno.remove(out);
    }
    assert.ok(converted > 1, "some mutations leave a convertible ELF (the oracle was exercised)");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
