/**
 * `strip` of a file of a split kdump dump checks its whole set first, on
 * real split sets: makedumpfile 1.7.2 `--split` of the whole-region ELF of a
 * Linux guest dumped by QEMU 7.2 in the test (tests/_util/kernel_dumps.ts).
 *
 * A file stripped alone, a set with a member missing or named twice, a
 * member of another dump of the same kernel (QEMU 10's), and a member stripped with a plug map
 * (another plug state) beside an unstripped one all fail with one error line
 * (JSON: code `split-set`) naming the file and the offset of the field or
 * bitmap byte that differs; the offsets are computed here from the files'
 * bytes, not by `src/`. No output appears. The complete set strips, and so
 * does a set mixed from two makedumpfile runs over one dump (their files are
 * the same bytes: the header's timestamp is the dump's, not the run's).
 * A member that is no kdump file, or is cut short, fails with its own name
 * and the offset in it (QEMU 7.2's tiny kdump, made a split file); a FIFO
 * member is refused by name (exit 2) before it is opened.
 */
import assert from "node:assert/strict";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { assertOneErrorLine, runCli } from "../_util/cli.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { requireTool, toolAvailable } from "../_util/tools.ts";
import { makedumpfile } from "./_readers.ts";

/** Header facts read straight from a 64-bit little-endian kdump file. */
function rawFacts(path: string) {
  const b = Deno.readFileSync(path);
  const v = new DataView(b.buffer);
  const B = v.getInt32(428, true); // block_size
  const subHdrSize = v.getInt32(432, true);
  const bitmapBlocks = v.getUint32(436, true);
  const firstBitmap = (1 + subHdrSize) * B;
  return {
    bytes: b,
    B,
    firstBitmap,
    secondBitmap: firstBitmap + (bitmapBlocks / 2) * B,
    mapBytes: (bitmapBlocks / 2) * B,
  };
}

/**
 * Where two members of different dumps first differ, by what identifies a
 * dump, read from the bytes: a header field (sub_hdr_size and the three
 * block counters aside), else the first differing byte of the notes area
 * (the offset of the note holding it).
 */
function firstDifference(ref: string, member: string): number {
  const a = rawFacts(ref).bytes;
  const b = rawFacts(member).bytes;
  const fields: Array<[number, number]> = [
    [8, 4],
    [12, 390],
    [408, 8],
    [416, 8],
    [424, 4],
    [
      428,
      4,
    ],
    [436, 4],
    [440, 4],
    [456, 4],
    [460, 4],
  ];
  for (const [at, n] of fields) {
    for (let i = at; i < at + n; i++) if (a[i] !== b[i]) return at;
  }
  const va = new DataView(a.buffer);
  const vb = new DataView(b.buffer);
  const B = va.getInt32(428, true);
  const noteAt = (v: DataView) => Number(v.getBigUint64(B + 48, true));
  const noteSize = (v: DataView) => Number(v.getBigUint64(B + 56, true));
  // Walk b's notes (4-byte aligned name and desc) until one differs from a's.
  let pa = noteAt(va);
  let pb = noteAt(vb);
  const endB = pb + noteSize(vb);
  while (pb < endB) {
    const len = 12 + Math.ceil(vb.getUint32(pb, true) / 4) * 4 +
      Math.ceil(vb.getUint32(pb + 4, true) / 4) * 4;
    for (let i = 0; i < len; i++) if (a[pa + i] !== b[pb + i]) return pb;
    pa += len;
    pb += len;
  }
  throw new Error("the two files have the same header and notes");
}

/** Run strip with --json; returns exit code, the JSON error (if any), and the output's existence. */
async function strip(args: string[], out: string) {
  const r = await runCli(["strip", ...args, out, "--json"]);
  let exists = true;
  try {
    Deno.statSync(out);
  } catch {
    exists = false;
  }
  const error = r.code === 0 ? undefined : JSON.parse(r.err).error as {
    code: string;
    message: string;
    offset: number | null;
  };
  return { code: r.code, error, exists };
}

Deno.test({
  name:
    "strip of a split kdump file checks its set: alone, incomplete, twice, another dump, another plug state fail closed with file and offset; two runs over one dump make one set",
  ignore: !(toolAvailable("makedumpfile") && kernelDumpsAvailable("7.2")),
  fn: async () => {
    requireTool("makedumpfile");
    const d = await kernelDumps("7.2");
    const dir = Deno.makeTempDirSync({ prefix: "vmem-split-set-" });
    try {
      const input = `${dir}/whole-region.elf`;
      await writeWholeRegionElf(d.elf, d.raw, d.device, input);
      const a = [`${dir}/a1.kdump`, `${dir}/a2.kdump`];
      await makedumpfile(["--split", "-c", "-d", "0", input, ...a]);
      // A second run of makedumpfile over the same dump: another set.
      const b = [`${dir}/b1.kdump`, `${dir}/b2.kdump`];
      await makedumpfile(["--split", "-c", "-d", "0", input, ...b]);
      const pm = ["--plugmap", d.plugmap];
      let ok;
      const out = `${dir}/out.kdump`;

      // Alone: refused, the offset is the sub-header's split flag.
      const fa = rawFacts(a[0]!);
      let r = await strip([a[0]!, ...pm], out);
      assert.equal(r.code, 1);
      assert.equal(r.error!.code, "split-set");
      assert.match(r.error!.message, /a1\.kdump alone: it is one file of a split dump/);
      assert.equal(r.error!.offset, fa.B + 12, "kdump_sub_header.split");
      assert.equal(r.exists, false);

      // The same file twice: overlapping ranges.
      r = await strip([a[0]!, "--split-set", a[0]!, ...pm], out);
      assert.equal(r.error?.code, "split-set");
      assert.match(r.error!.message, /overlap/);
      assert.equal(r.exists, false);

      // A file of another dump of the same kernel (QEMU 10's, same guest layout): refused.
      const e = await kernelDumps("10");
      const other = `${dir}/other.elf`;
      await writeWholeRegionElf(e.elf, e.raw, e.device, other);
      const o = [`${dir}/o1.kdump`, `${dir}/o2.kdump`];
      await makedumpfile(["--split", "-c", "-d", "0", other, ...o]);
      r = await strip([a[0]!, "--split-set", o[1]!, ...pm], out);
      assert.equal(r.error?.code, "split-set");
      assert.match(r.error!.message, /o2\.kdump as a member of the split set: /);
      assert.equal(r.error!.offset, firstDifference(a[0]!, o[1]!));
      assert.equal(r.exists, false);

      // Two runs of makedumpfile over the same dump cut the same files: they make one set.
      ok = await strip([a[0]!, "--split-set", b[1]!, ...pm], out);
      assert.equal(ok.code, 0);
      Deno.removeSync(out);

      // Another plug state: a2 stripped with the plug map, beside the unstripped a1.
      const a2s = `${dir}/a2.stripped`;
      ok = await strip([a[1]!, "--split-set", a[0]!, ...pm], a2s);
      assert.equal(ok.code, 0);
      const fs = rawFacts(a2s);
      let first = -1;
      for (let i = 0; i < fs.mapBytes; i++) {
        if (fs.bytes[fs.firstBitmap + i] !== fa.bytes[fa.firstBitmap + i]) {
          first = i;
          break;
        }
      }
      assert.ok(first >= 0, "the stripped member's 1st bitmap lost the unplugged pfns");
      r = await strip([a[0]!, "--split-set", a2s, ...pm], out);
      assert.equal(r.error?.code, "split-set");
      assert.match(r.error!.message, /a2\.stripped as a member of the split set: its 1st bitmap/);
      assert.equal(r.error!.offset, fs.firstBitmap + first);
      assert.equal(r.exists, false);

      // A set of three with one file missing: the pfns no file holds.
      const c = [`${dir}/c1.kdump`, `${dir}/c2.kdump`, `${dir}/c3.kdump`];
      await makedumpfile(["--split", "-c", "-d", "0", input, ...c]);
      r = await strip([c[0]!, "--split-set", c[2]!, ...pm], out);
      assert.equal(r.error?.code, "split-set");
      assert.match(r.error!.message, /c3\.kdump as a member of the split set: no file of the set/);
      assert.equal(r.error!.offset, rawFacts(c[2]!).B + 80, "kdump_sub_header.start_pfn_64");
      assert.equal(r.exists, false);

      // The complete set strips, each file with the others named.
      ok = await strip([c[1]!, "--split-set", c[0]!, "--split-set", c[2]!, ...pm], out);
      assert.equal(ok.code, 0);
      assert.equal(ok.exists, true);
      // A file that is not split (QEMU's own kdump) takes no set.
      r = await strip([d.kdump["kdump-zlib"]!, "--split-set", c[0]!, ...pm], `${dir}/q.kdump`);
      assert.equal(r.error?.code, "split-set");
      assert.match(r.error!.message, /not a file of a split dump/);
      assert.equal(r.exists, false);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("strip --split-set: a member that cannot be read is named in the error, with the offset; a FIFO member is refused by name", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmem-split-member-" });
  try {
    // QEMU 7.2's tiny kdump made a file of a split dump (split flag 1, pfns 0 to max_mapnr): the
    // members are opened before the set is compared, so each one's own read errors come first.
    const kdump = await tinyFixture("q72-tiny.kdump");
    const v = new DataView(kdump.buffer);
    const B = v.getInt32(428, true); // block_size
    assert.ok(v.getUint32(8, true) >= 6, "header version 6: start_pfn_64/end_pfn_64");
    const maxMapnr = v.getBigUint64(B + 96, true); // kdump_sub_header.max_mapnr_64
    v.setUint32(B + 12, 1, true); // split
    v.setBigUint64(B + 80, 0n, true); // start_pfn_64
    v.setBigUint64(B + 88, maxMapnr, true); // end_pfn_64
    const input = `${dir}/in.kdump`;
    Deno.writeFileSync(input, kdump);
    const pm = ["--plugmap", `${dir}/plug.txt`];
    Deno.writeTextFileSync(`${dir}/plug.txt`, "0x100000000-0x100200000\n");
    const out = `${dir}/out.kdump`;

    // Not a kdump file at all: the magic at offset 0 of the member.
    const elf = `${dir}/member.elf`;
    Deno.writeFileSync(elf, await tinyFixture("q72-tiny.elf"));
    let r = await strip([input, "--split-set", elf, ...pm], out);
    assert.equal(r.code, 1);
    assert.equal(r.error!.code, "bad-magic");
    assert.match(r.error!.message, /^Cannot use .*member\.elf as a member of the split set: /);
    assert.equal(r.error!.offset, 0);
    assert.equal(r.exists, false);

    // A member cut short: its bitmap_blocks (offset 436) puts the bitmaps past its end.
    const short = `${dir}/member.short`;
    Deno.writeFileSync(short, kdump.subarray(0, 3 * B));
    r = await strip([input, "--split-set", short, ...pm], out);
    assert.equal(r.code, 1);
    assert.match(r.error!.message, /^Cannot use .*member\.short as a member of the split set: /);
    assert.equal(r.error!.offset, 436);
    assert.equal(r.exists, false);

    // A FIFO member: refused by name before anything opens it (it cannot be read twice).
    const fifo = `${dir}/member.fifo`;
    assert.equal((await new Deno.Command("mkfifo", { args: [fifo] }).output()).code, 0);
    const f = await runCli(["strip", input, out, "--split-set", fifo, ...pm]);
    assert.equal(f.code, 2, f.err);
    assertOneErrorLine(f.err, /strip --split-set reads .*member\.fifo is a FIFO/);
    assert.throws(() => Deno.statSync(out), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
