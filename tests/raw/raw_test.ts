import assert from "node:assert/strict";
import { elfFromRawImage, iterateGpaRange, readElfCore } from "../../src/elf/mod.ts";
import { bytesPositional } from "../../src/io/positional.ts";
import { zeroRawImage } from "../../src/raw/mod.ts";
import { realdata, realdataAvailable, sha256File } from "../_util/realdata.ts";
import {
  haveTool,
  listDir,
  memorySink,
  parseReadelfLoads,
  prng,
  readFileBytes,
  runTool,
} from "../elf/_helpers.ts";
import {
  assertSameFileBytes,
  assertZeroFileBytes,
  countMarker,
  pluggedRanges,
  REGION,
  unpluggedRanges,
} from "../elf/_realdata.ts";

Deno.test("zeroRawImage() zeroes exactly the excluded ranges, clipped to the image", async () => {
  const r = prng(3);
  const image = Uint8Array.from({ length: 0x9000 }, () => 1 + Math.floor(r() * 255));
  const out = memorySink();
  const report = await zeroRawImage(bytesPositional(image), out.sink, {
    baseGpa: 0x10000,
    exclude: [{ gpa: 0x8000, byteLength: 0x9000 }, { gpa: 0x13000, byteLength: 0x1000 }, {
      gpa: 0x18000,
      byteLength: 0x8000,
    }],
    countNonZero: true,
    chunkSize: 0x1800,
  });
  assert.deepEqual(report.zeroed, [
    { gpa: 0x10000, byteLength: 0x1000, nonZeroPages: 1 },
    { gpa: 0x13000, byteLength: 0x1000, nonZeroPages: 1 },
    { gpa: 0x18000, byteLength: 0x1000, nonZeroPages: 1 },
  ]);
  const bytes = out.bytes();
  assert.equal(bytes.byteLength, image.byteLength);
  for (let i = 0; i < image.byteLength; i++) {
    const zeroed = i < 0x1000 || (i >= 0x3000 && i < 0x4000) || i >= 0x8000;
    assert.equal(bytes[i], zeroed ? 0 : image[i], `byte 0x${i.toString(16)}`);
  }
});

Deno.test("elfFromRawImage() writes one identity-mapped PT_LOAD per kept run", async () => {
  const image = Uint8Array.from({ length: 0x8000 }, (_, i) => (i * 7) & 0xff);
  const out = memorySink();
  const report = await elfFromRawImage(bytesPositional(image), out.sink, {
    baseGpa: 0x1_0000_0000,
    exclude: [{ gpa: 0x1_0000_2000, byteLength: 0x3000 }],
  });
  assert.deepEqual(report.removed, [{ gpa: 0x1_0000_2000, byteLength: 0x3000 }]);
  using core = await readElfCore(bytesPositional(out.bytes()));
  assert.equal(core.phdrs[0]!.type, 4);
  assert.deepEqual(core.loads.map((s) => [s.gpa, s.byteLength, Number(s.phdr.vaddr)]), [
    [0x1_0000_0000, 0x2000, 0x1_0000_0000],
    [0x1_0000_5000, 0x3000, 0x1_0000_5000],
  ]);
  for (const s of core.loads) {
    for await (const c of iterateGpaRange(core, { gpa: s.gpa!, byteLength: s.byteLength })) {
      assert.equal(c.kind, "data");
      if (c.kind === "data") {
        assert.deepEqual(
          c.data,
          image.subarray(c.gpa - 0x1_0000_0000, c.gpa - 0x1_0000_0000 + c.byteLength),
        );
      }
    }
  }
});

Deno.test("zeroRawImage() leaves no output when the input cannot be read", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmem-raw-" });
  try {
    await assert.rejects(
      zeroRawImage(`${dir}/missing.raw`, `${dir}/out.raw`, { baseGpa: 0, exclude: [] }),
    );
    assert.deepEqual(listDir(dir), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "zeroRawImage() and elfFromRawImage() on a real pmemsave image (out-q10 s3) drop the EVIL pages",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const scenario = "s3-malicious";
    const raw = await realdata("out-q10", `${scenario}.vmem0.raw`);
    const realElf = await realdata("out-q10", `${scenario}.elf`);
    const exclude = unpluggedRanges(scenario);
    const dir = Deno.makeTempDirSync({ prefix: "vmem-raw-real-" });
    try {
      // --format raw: same size, unplugged blocks zero, plugged blocks untouched.
      const zeroed = `${dir}/zeroed.raw`;
      const z = await zeroRawImage(raw, zeroed, {
        baseGpa: REGION.gpa,
        exclude,
        countNonZero: true,
      });
      assert.equal(z.zeroed.reduce((n, r) => n + (r.nonZeroPages ?? 0), 0), 4, "the 4 EVIL pages");
      assert.equal((await Deno.stat(zeroed)).size, REGION.byteLength);
      for (const u of exclude) {
        await assertZeroFileBytes(zeroed, u.gpa - REGION.gpa, u.byteLength, "unplugged");
      }
      for (const p of pluggedRanges(scenario)) {
        const at = { path: raw, fileOffset: p.gpa - REGION.gpa };
        await assertSameFileBytes(
          at,
          { path: zeroed, fileOffset: p.gpa - REGION.gpa },
          p.byteLength,
          "plugged",
        );
      }
      assert.ok(await countMarker(raw, "EVIL-") > 0);
      assert.equal(await countMarker(zeroed, "EVIL-"), 0);
      Deno.removeSync(zeroed);

      // ELF output: the plugged runs, byte-identical to QEMU's own PT_LOADs of the region.
      const elf = `${dir}/region.elf`;
      const report = await elfFromRawImage(raw, elf, { baseGpa: REGION.gpa, exclude });
      assert.deepEqual(
        report.kept.map((k) => ({ gpa: k.gpa, byteLength: k.byteLength })),
        pluggedRanges(scenario),
      );
      assert.equal(await countMarker(elf, "EVIL-"), 0);
      if (haveTool("readelf")) {
        const ours = parseReadelfLoads((await runTool("readelf", ["-lW", elf])).stdout);
        const qemu = parseReadelfLoads((await runTool("readelf", ["-lW", realElf])).stdout);
        assert.equal(ours.notes, 1);
        for (const l of ours.loads) {
          const q = qemu.loads.find((x) => x.paddr === l.paddr);
          assert.ok(q, `QEMU has a PT_LOAD at 0x${l.paddr.toString(16)}`);
          assert.equal(q.byteLength, l.byteLength);
          await assertSameFileBytes(
            { path: elf, fileOffset: l.fileOffset },
            { path: realElf, fileOffset: q.fileOffset },
            l.byteLength,
            "region",
          );
        }
      }
      if (haveTool("gdb")) {
        const p = pluggedRanges(scenario)[1]!;
        const r = await runTool("gdb", [
          "-nx",
          "-batch",
          "-ex",
          `core-file ${elf}`,
          "-ex",
          `x/8xb 0x${p.gpa.toString(16)}`,
          "-ex",
          `x/8xb 0x${exclude[0]!.gpa.toString(16)}`,
        ]);
        const want = [...(await readFileBytes(raw, p.gpa - REGION.gpa, 8))]
          .map((b) => `0x${b.toString(16).padStart(2, "0")}`).join("\t");
        assert.ok(
          r.stdout.includes(`0x${p.gpa.toString(16)}:\t${want}`),
          `gdb:\n${r.stdout}\n${r.stderr}`,
        );
        assert.match(r.stdout + r.stderr, /Cannot access memory/);
      }
      // Converting twice gives the same bytes.
      const again = `${dir}/again.elf`;
      await elfFromRawImage(raw, again, { baseGpa: REGION.gpa, exclude });
      assert.equal(await sha256File(again), await sha256File(elf));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
