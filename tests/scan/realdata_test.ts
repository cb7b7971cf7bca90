/**
 * Acceptance on real QEMU data (shared/realdata: out-small = QEMU 7.2 with the
 * late virtio-mem layout, out-q10 = QEMU 10.0 with the early layout). The
 * expected EVIL pages come from the producer's manifest and analysis.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { realdata, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { readFileBytes as readRange } from "../_util/files.ts";
import { listedPages, scanCli, type ScanReportJson } from "./_cli.ts";
import { evilPayloadOffsets } from "./_evil.ts";

const SETS: RealdataSet[] = ["out-small", "out-q10"];
const REGION = { gpa: 0x1_0000_0000, byteLength: 0x1000_0000 };
const BASE = "0x100000000";

interface EvilWrite {
  gpa: number;
  device_block: number;
  region_offset: number;
  marker: string;
  len: number;
}

function evil(set: RealdataSet): { pre: EvilWrite[]; mig: EvilWrite[] } {
  const w = realdataFacts(set).manifest.malicious_writes;
  return { pre: w.pre_migration, mig: w.during_migration };
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Checks that hold for every finding of a dump: page-aligned EVIL page, marker at its start. */
function assertEvilDumpFindings(report: ScanReportJson, expected: EvilWrite[]) {
  const device = report.devices[0]!;
  assert.deepEqual(
    device.blocks.map((b) => b.blockIndex),
    expected.map((e) => e.device_block).sort((a, b) => a - b),
  );
  assert.deepEqual(
    listedPages(report).map((p) => p.gpa).sort((a, b) => a - b),
    expected.map((e) => e.gpa).sort((a, b) => a - b),
  );
  for (const b of device.blocks) {
    const e = expected.find((x) => x.device_block === b.blockIndex)!;
    assert.equal(b.findings, 1);
    assert.equal(b.nonZeroPages, 1);
    assert.equal(b.gpa, REGION.gpa + b.blockIndex * device["block-size"]);
    assert.equal(b.ramOffset, b.blockIndex * device["block-size"]);
    // The EVIL pages start at the page start: the first non-zero byte is the page's first byte.
    assert.deepEqual(b.firstNonZero, { blockOffset: e.gpa - b.gpa, gpa: e.gpa });
    const p = b.pages[0]!;
    assert.equal(p.ramOffset, e.region_offset);
    assert.equal(p.firstNonZeroOffset, 0);
    assert.equal(p.nonZeroBytes, b.nonZeroBytes);
    const marker = new TextDecoder().decode(
      Uint8Array.from(p.hexdump!.hex.match(/../g)!.map((h) => Number.parseInt(h, 16))),
    );
    assert.ok(marker.startsWith(e.marker), marker);
  }
  assert.equal(report.summary.findings, expected.length);
}

for (const set of SETS) {
  const facts = realdataFacts(set);
  const [s0, s1, s2, s3] = facts.scenarios as [string, string, string, string];

  Deno.test(`scan reports exactly the EVIL-MIG records of real ${set}/${s3}.mig with their stream offsets`, async () => {
    const mig = await realdata(set, `${s3}.mig`);
    const run = await scanCli([mig, "--json"]);
    assert.equal(run.code, 3, run.err);
    const report = run.report!;
    assert.equal(report.details, "pages");
    assert.deepEqual(report.plugState.sources, set === "out-q10" ? ["early"] : ["first-pass"]);
    const expected = evil(set).mig;
    const payloads = evilPayloadOffsets(set);
    assert.equal(payloads.size, 2);
    assert.equal(report.summary.findings, expected.length);
    const pages = listedPages(report);
    assert.deepEqual(
      pages.map((p) => p.gpa).sort((a, b) => a - b),
      expected.map((e) => e.gpa).sort((a, b) => a - b),
    );
    for (const p of pages) {
      const e = expected.find((x) => x.gpa === p.gpa)!;
      assert.equal(p.source, "ram-page");
      assert.equal(p.ramOffset, e.region_offset);
      const payload = payloads.get(p.gpa)!;
      // The record header (be64 offset|flags, then maybe the idstr) sits right before the payload.
      assert.ok(
        p.streamOffset! + 8 <= payload && payload <= p.streamOffset! + 8 + 1 + 255,
        `${p.streamOffset} vs ${payload}`,
      );
      const bytes = await readRange(mig, payload, 4096);
      assert.equal(p.sha256, sha256(bytes));
      assert.equal(new TextDecoder().decode(bytes.subarray(0, 8)), "EVIL-MIG");
    }
    // The human form names the same pages.
    const text = await scanCli([mig]);
    assert.equal(text.code, 3);
    for (const e of expected) {
      assert.match(text.out, new RegExp(`page gpa 0x${e.gpa.toString(16)} `));
    }
  });

  Deno.test(`scan reports exactly the 4 EVIL pages of real ${set}/${s3}.vmem0.raw`, async () => {
    const raw = await realdata(set, `${s3}.vmem0.raw`);
    const run = await scanCli([
      raw,
      "--base",
      BASE,
      "--plugmap-from",
      await realdata(set, `${s3}.mig`),
      "--json",
    ]);
    assert.equal(run.code, 3, run.err);
    const report = run.report!;
    assert.equal(report.input.format, "raw");
    assert.equal(report.input.baseGpa, REGION.gpa);
    const { pre, mig } = evil(set);
    assertEvilDumpFindings(report, [...pre, ...mig]);
    assert.equal(report.verdict, "findings");
    assert.equal(report.coverage!.absentByteLength, 0);
    assert.equal(report.coverage!.examinedByteLength, report.summary.unpluggedByteLength);
    for (const p of listedPages(report)) {
      assert.equal(p.fileOffset, p.gpa - REGION.gpa);
      assert.equal(p.sha256, sha256(await readRange(raw, p.fileOffset!, 4096)));
    }
  });

  Deno.test(`scan of real ${set}/${s3}.elf is inconclusive (QEMU leaves unplugged memory out: exit 4, never clean) but finds all 4 pages in a whole-region ELF`, async () => {
    const elf = await realdata(set, `${s3}.elf`);
    const raw = await realdata(set, `${s3}.vmem0.raw`);
    const plugFrom = await realdata(set, `${s3}.mig`);
    const real = await scanCli([elf, "--plugmap-from", plugFrom, "--json"]);
    assert.equal(real.code, 4, real.err);
    const r = real.report!;
    assert.equal(r.verdict, "inconclusive");
    assert.equal(r.summary.findings, 0);
    // Every unplugged byte (78 blocks of 2 MiB) is absent, and the report says why.
    assert.equal(r.summary.unpluggedByteLength, 78 * 0x20_0000);
    assert.deepEqual(r.coverage, {
      unpluggedByteLength: 78 * 0x20_0000,
      examinedByteLength: 0,
      absentByteLength: 78 * 0x20_0000,
      absent: [{
        reason: "not-in-dump",
        byteLength: 78 * 0x20_0000,
        detail: r.coverage!.absent[0]!.detail,
      }],
    });
    assert.match(
      r.coverage!.absent[0]!.detail,
      /QEMU >= 6\.2 leaves unplugged virtio-mem memory out/,
    );
    assert.deepEqual(r.devices[0]!.coverage, r.coverage);
    assert.match(r.verdictReason, /156 MiB of 156 MiB unplugged memory was not in the input/);
    const text = await scanCli([elf, "--plugmap-from", plugFrom]);
    assert.equal(text.code, 4);
    assert.match(
      text.out,
      /examined 0 B of 156 MiB unplugged memory; absent from the input: 156 MiB left out of the dump/,
    );
    assert.match(text.out, /^verdict: inconclusive: no findings, but 156 MiB/m);

    const dir = await Deno.makeTempDir({ prefix: "vmem-scan-" });
    try {
      const whole = `${dir}/whole-region.elf`;
      await writeWholeRegionElf(elf, raw, REGION, whole);
      const run = await scanCli([whole, "--plugmap-from", plugFrom, "--json"]);
      assert.equal(run.code, 3, run.err);
      const { pre, mig } = evil(set);
      assertEvilDumpFindings(run.report!, [...pre, ...mig]);
      assert.equal(run.report!.coverage!.absentByteLength, 0);
      assert.equal(run.report!.coverage!.examinedByteLength, 78 * 0x20_0000);
      // Same bytes as in the raw image.
      const fromRaw = await scanCli([raw, "--base", BASE, "--plugmap-from", plugFrom, "--json"]);
      assert.deepEqual(
        listedPages(run.report!).map((p) => [p.gpa, p.sha256]),
        listedPages(fromRaw.report!).map((p) => [p.gpa, p.sha256]),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`scan verdicts on the clean real ${set} inputs (s0, s1, s2): stream and raw image clean (0), ELF dump inconclusive (4), raw image at a wrong --base inconclusive (4)`, async (t) => {
    for (const s of [s0, s1, s2]) {
      const mig = await realdata(set, `${s}.mig`);
      const raw = await realdata(set, `${s}.vmem0.raw`);
      const inputs: [string, string[], "clean" | "inconclusive", string | undefined][] = [
        [`${s}.mig`, [mig], "clean", undefined],
        [
          `${s}.elf`,
          [await realdata(set, `${s}.elf`), "--plugmap-from", mig],
          "inconclusive",
          "not-in-dump",
        ],
        [`${s}.vmem0.raw`, [raw, "--base", BASE, "--plugmap-from", mig], "clean", undefined],
        // 256 MiB too high: the image holds none of the region.
        [
          `${s}.vmem0.raw --base 0x110000000`,
          [raw, "--base", "0x110000000", "--plugmap-from", mig],
          "inconclusive",
          "outside-image",
        ],
      ];
      for (const [name, args, verdict, reason] of inputs) {
        await t.step(name, async () => {
          const run = await scanCli([...args, "--json"]);
          assert.equal(run.code, verdict === "clean" ? 0 : 4, run.err);
          const r = run.report!;
          assert.equal(r.verdict, verdict);
          assert.equal(r.summary.findings, 0);
          assert.equal(r.details, "pages");
          assert.deepEqual(r.warnings, []);
          assert.equal(r.devices.length, 1);
          // The plug map is the state of that scenario (s0 nothing, s1 0-99, s2 0-13 and 64-99).
          const plugged = { [s0]: 0, [s1]: 100, [s2]: 50 }[s]!;
          assert.equal(r.devices[0]!.pluggedBlocks, plugged);
          assert.equal(r.summary.unpluggedByteLength, (128 - plugged) * 0x20_0000);
          if (name.endsWith(".mig")) {
            assert.equal(r.coverage, null);
            assert.equal(r.verdictReason, "no page record for an unplugged block");
          } else if (verdict === "clean") {
            assert.equal(r.coverage!.examinedByteLength, r.summary.unpluggedByteLength);
            assert.deepEqual(r.coverage!.absent, []);
          } else {
            assert.equal(r.coverage!.examinedByteLength, 0);
            assert.deepEqual(r.coverage!.absent.map((a) => [a.reason, a.byteLength]), [
              [reason, r.summary.unpluggedByteLength],
            ]);
          }
        });
      }
    }
  });

  Deno.test(`scan gives the exact first non-zero byte of a mid-page write into a copy of real ${set}/${s2}.vmem0.raw`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "vmem-scan-" });
    try {
      const copy = `${dir}/poked.raw`;
      await Deno.copyFile(await realdata(set, `${s2}.vmem0.raw`), copy);
      // Block 20 is unplugged in s2 (unplugged: 14-63, 100-127).
      const blockOffset = 0x3000 + 0x5a7;
      {
        using f = await Deno.open(copy, { write: true });
        await f.seek(20 * 0x20_0000 + blockOffset, Deno.SeekMode.Start);
        await f.write(new TextEncoder().encode("planted"));
        await f.seek(20 * 0x20_0000 + 0x3000 + 0xff0, Deno.SeekMode.Start);
        await f.write(new Uint8Array([0xff]));
      }
      const run = await scanCli([
        copy,
        "--base",
        BASE,
        "--plugmap-from",
        await realdata(set, `${s2}.mig`),
        "--json",
      ]);
      assert.equal(run.code, 3, run.err);
      const r = run.report!;
      assert.equal(r.summary.findings, 1);
      const block = r.devices[0]!.blocks[0]!;
      assert.equal(block.blockIndex, 20);
      const gpa = REGION.gpa + 20 * 0x20_0000 + blockOffset;
      assert.deepEqual(block.firstNonZero, { blockOffset, gpa });
      assert.equal(block.nonZeroBytes, 8);
      const p = block.pages[0]!;
      assert.equal(p.gpa, REGION.gpa + 20 * 0x20_0000 + 0x3000);
      assert.equal(p.firstNonZeroOffset, 0x5a7);
      assert.equal(p.hexdump!.gpa, p.gpa + 0x5a0);
      assert.match(
        await scanCli([copy, "--base", BASE, "--plugmap-from", await realdata(set, `${s2}.mig`)])
          .then((x) => x.out),
        /first non-zero byte at block offset 0x35a7/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
