import assert from "node:assert/strict";
import { assertReport } from "../_util/report_schema.ts";
import { run } from "../../cli/commands/strip.ts";
import { main } from "../../cli/main.ts";
import { encodeNote, readElfCore } from "../../src/elf/mod.ts";
import { buildElf } from "../_util/elf_builder.ts";
import { realdata, realdataAvailable, sha256File } from "../_util/realdata.ts";
import { memoryIo } from "../_util/cli.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import { tinyPlugMapJson } from "../_util/fuzz/targets/dumps.ts";
import { listDir } from "../elf/_helpers.ts";
import { findProvenance } from "../../src/dumps/provenance.ts";
import { countMarker, plugMapJson, REGION, unpluggedRanges } from "../elf/_realdata.ts";

/** A small dump of the s2 layout: pc.ram stand-in plus the whole 256 MiB region described, 4 MiB of it in the file. */
function smallDump(): Uint8Array {
  const notes = encodeNote({ name: "CORE", type: 1, desc: new Uint8Array(336) }, true);
  const region = new Uint8Array(64 * 0x20_0000 / 32); // 4 MiB of region bytes: blocks 0..1 in the file
  region.fill(0xaa);
  return buildElf({
    layout: "qemu-7.2",
    notes,
    loads: [
      { paddr: 0n, data: new Uint8Array(0x10000).fill(1) },
      { paddr: BigInt(REGION.gpa), data: region, memByteLength: 30 * 0x20_0000 }, // blocks 0..29, tail after 2
    ],
  });
}

Deno.test("strip run() rewrites an ELF dump and reports the removed ranges per device", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-cli-" });
  try {
    Deno.writeFileSync(`${dir}/in.elf`, smallDump());
    Deno.writeTextFileSync(`${dir}/pm.json`, plugMapJson("s2-holes-100M"));
    const io = memoryIo();
    const code = await run(
      [`${dir}/in.elf`, `${dir}/out.elf`, "--plugmap", `${dir}/pm.json`],
      io.io,
    );
    assert.equal(code, 0, io.err());
    assert.match(io.out(), /QEMU >= 7\.2 layout/);
    assert.match(
      io.out(),
      /device 0000:00:01\.0 \(0000:00:01\.0\/vmem0mem, 0x100000000-0x110000000, block 0x200000\): removed 33,554,432 bytes/,
    );
    assert.match(
      io.out(),
      /0x101c00000-0x103c00000 {2}blocks 14-29 {2}33,554,432 bytes \(file data 0\)/,
    );
    using core = await readElfCore(`${dir}/out.elf`);
    assert.deepEqual(core.loads.map((s) => [s.gpa, s.byteLength, s.fileByteLength]), [[
      0,
      0x10000,
      0x10000,
    ], [REGION.gpa, 14 * 0x20_0000, 0x40_0000]]);

    const j = memoryIo();
    assert.equal(
      await run(
        [`${dir}/in.elf`, `${dir}/out2.elf`, "--plugmap", `${dir}/pm.json`, "--json"],
        j.io,
      ),
      0,
    );
    // deno-lint-ignore no-explicit-any
    const report = assertReport(j.out(), "strip") as any;
    assert.equal(report.devices[0].removedByteLength, 16 * 0x20_0000);
    assert.deepEqual(
      report.devices[0].ranges.map((
        r: { firstBlockIndex: number; lastBlockIndex: number },
      ) => [r.firstBlockIndex, r.lastBlockIndex]),
      [[14, 29]],
    );
    assert.equal(report.elf.kept[1].vaddr, "0x100000000");
    assert.deepEqual(Deno.readFileSync(`${dir}/out2.elf`), Deno.readFileSync(`${dir}/out.elf`));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("strip run() reports usage errors with exit code 2 and bad input (magic, PT_LOAD) with 1, leaving no output", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-cli-" });
  try {
    Deno.writeTextFileSync(`${dir}/pm.json`, plugMapJson("s2-holes-100M"));
    Deno.writeFileSync(`${dir}/raw.bin`, new Uint8Array(4096));
    const bad = smallDump();
    new DataView(bad.buffer).setBigUint64(64 * 3 + 56 + 8, 1n << 40n, true); // PT_LOAD 1 p_offset past EOF
    Deno.writeFileSync(`${dir}/bad.elf`, bad);
    const cases: Array<[string[], number, RegExp]> = [
      [["strip", `${dir}/bad.elf`], 2, /an input and an output/],
      [["strip", `${dir}/bad.elf`, `${dir}/o`], 2, /exactly one of --plugmap/],
      [["strip", "-", `${dir}/o`, "--plugmap", `${dir}/pm.json`], 2, /seekable input/],
      [
        // A bad magic is a bad input (exit 1, with the offset), not a usage error.
        ["strip", `${dir}/raw.bin`, `${dir}/o`, "--plugmap", `${dir}/pm.json`],
        1,
        /neither an ELF nor a kdump-compressed dump \(a raw memory image needs --base GPA\) at offset 0x0\n$/,
      ],
      [
        ["strip", `${dir}/bad.elf`, `${dir}/o`, "--plugmap", `${dir}/pm.json`, "--format", "raw"],
        2,
        /--format applies to raw images/,
      ],
      [
        ["strip", `${dir}/raw.bin`, `${dir}/o`, "--plugmap", `${dir}/pm.json`, "--base", "zz"],
        2,
        /--base needs/,
      ],
      [
        ["strip", `${dir}/bad.elf`, `${dir}/o`, "--plugmap", `${dir}/pm.json`, "--bogus"],
        2,
        /bogus/,
      ],
      [
        ["strip", `${dir}/bad.elf`, `${dir}/o`, "--plugmap", `${dir}/pm.json`],
        1,
        /error: Cannot read PT_LOAD 1: file bytes .* run past the end of the file .* at offset 0x100\n$/,
      ],
    ];
    for (const [args, want, message] of cases) {
      const io = memoryIo();
      assert.equal(await main(args, io.io), want, `${args.join(" ")}: ${io.err()}`);
      assert.match(io.err(), message);
    }
    assert.deepEqual(listDir(dir), ["bad.elf", "pm.json", "raw.bin"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("strip run() converts a raw image to ELF or zeroes it with --format raw", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-cli-" });
  try {
    // A 32 MiB image of the start of the region: blocks 0..15, block 14 and 15 unplugged.
    const image = new Uint8Array(16 * 0x20_0000).fill(0x5a);
    Deno.writeFileSync(`${dir}/img.raw`, image);
    Deno.writeTextFileSync(`${dir}/pm.json`, plugMapJson("s2-holes-100M"));
    const io = memoryIo();
    assert.equal(
      await run([
        `${dir}/img.raw`,
        `${dir}/img.elf`,
        "--plugmap",
        `${dir}/pm.json`,
        "--base",
        "0x100000000",
      ], io.io),
      0,
      io.err(),
    );
    assert.match(io.out(), /raw image at 0x100000000/);
    using core = await readElfCore(`${dir}/img.elf`);
    assert.deepEqual(core.loads.map((s) => [s.gpa, s.byteLength]), [[REGION.gpa, 14 * 0x20_0000]]);
    // The ELF records what went, and from which image (hashed independently here).
    const note = findProvenance(core.notes);
    assert.ok(note, "the ELF of a raw image carries the provenance note");
    assert.deepEqual(note.steps[0]!.removed, [{
      gpa: REGION.gpa + 14 * 0x20_0000,
      byteLength: 2 * 0x20_0000,
    }]);
    assert.equal(note.steps[0]!.input.sha256, await sha256File(`${dir}/img.raw`));
    assert.equal(note.steps[0]!.input.byteLength, image.byteLength);

    const io2 = memoryIo();
    assert.equal(
      await run([
        `${dir}/img.raw`,
        `${dir}/img.zero`,
        "--plugmap",
        `${dir}/pm.json`,
        "--base",
        "4294967296",
        "--format",
        "raw",
        "--json",
      ], io2.io),
      0,
    );
    assert.equal(assertReport(io2.out(), "strip").removedByteLength, 2 * 0x20_0000);
    const z = Deno.readFileSync(`${dir}/img.zero`);
    assert.equal(z[14 * 0x20_0000 - 1], 0x5a);
    assert.equal(z[14 * 0x20_0000], 0);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "vmem-dump strip takes the plug map from a real migration stream (--plugmap-from, out-q10 s3)",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const raw = await realdata("out-q10", "s3-malicious.vmem0.raw");
    const mig = await realdata("out-q10", "s3-malicious.mig");
    const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-cli-" });
    try {
      // The real CLI as a process: raw image -> ELF with only the plugged blocks, data on stdout.
      const child = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../cli/main.ts", import.meta.url).pathname,
          "strip",
          raw,
          "-",
          "--plugmap-from",
          mig,
          "--base",
          "0x100000000",
          "--json",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(child.code, 0, new TextDecoder().decode(child.stderr));
      Deno.writeFileSync(`${dir}/out.elf`, child.stdout);
      // deno-lint-ignore no-explicit-any
      const report = assertReport(new TextDecoder().decode(child.stderr), "strip") as any;
      assert.deepEqual(report.removed, unpluggedRanges("s3-malicious"));
      assert.deepEqual(
        report.devices[0].ranges.map((
          r: { firstBlockIndex: number; lastBlockIndex: number },
        ) => [r.firstBlockIndex, r.lastBlockIndex]),
        [[14, 63], [100, 127]],
      );
      assert.equal(await countMarker(`${dir}/out.elf`, "EVIL-"), 0);
      using core = await readElfCore(`${dir}/out.elf`);
      assert.equal(core.loads.length, 2);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("strip --json names a kept PT_LOAD without a physical address with gpa null, as its schema says", async () => {
  // Found by the cli-json campaign: an all-ones p_paddr (no physical address) left gpa out of the
  // kept segment, so the report broke its own schema.
  const dir = await Deno.makeTempDir({ prefix: "vmem-strip-paddr-" });
  try {
    const elf = await tinyFixture("q10-tiny.elf");
    const v = new DataView(elf.buffer);
    const phoff = Number(v.getBigUint64(32, true));
    const phdr = phoff + 2 * 56; // PT_LOAD at 0xfffc0000 (the firmware)
    assert.equal(v.getUint32(phdr, true), 1);
    v.setBigUint64(phdr + 24, 0xffff_ffff_ffff_ffffn, true); // p_paddr
    await Deno.writeFile(`${dir}/in.elf`, elf);
    await Deno.writeTextFile(`${dir}/plugmap.json`, await tinyPlugMapJson());
    const m = memoryIo();
    const code = await main(
      ["strip", `${dir}/in.elf`, `${dir}/out.elf`, "--plugmap", `${dir}/plugmap.json`, "--json"],
      m.io,
    );
    assert.equal(code, 0, m.err());
    const report = assertReport(m.out(), "strip") as {
      elf: { kept: { gpa: number | null; inputSegmentIndex: number }[] };
    };
    const kept = report.elf.kept.find((k) => k.inputSegmentIndex === 2);
    assert.equal(kept?.gpa, null);
    assert.equal(report.elf.kept.filter((k) => k.gpa !== null).length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
