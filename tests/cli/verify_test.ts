/** `vmem-dump verify`: exit codes and reports on real streams, `--forward`, usage errors (the verifier itself: tests/migration/verify_test.ts). */

import assert from "node:assert/strict";
import { assertReport } from "../_util/report_schema.ts";
import { run as runVerify } from "../../cli/commands/verify.ts";
import { main } from "../../cli/main.ts";
import { memoryIo } from "../_util/cli.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import {
  realdata,
  realdataAvailable,
  realdataFacts,
  type RealdataSet,
  sha256File,
} from "../_util/realdata.ts";

const SETS: RealdataSet[] = ["out-small", "out-q10"];

for (const set of SETS) {
  Deno.test({
    name: `vmem-dump verify exits 0 on real ${set} s0-s2 and 3 with the EVIL gpas on s3`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      for (const name of ["s0-unplugged", "s1-plugged-200M", "s2-holes-100M"]) {
        const m = memoryIo();
        assert.equal(await runVerify([await realdata(set, `${name}.mig`)], m.io), 0, m.err());
        assert.match(m.out(), /clean/);
      }
      const path = await realdata(set, "s3-malicious.mig");
      for (const extra of [[], ["--single-pass"]]) {
        const m = memoryIo();
        assert.equal(await runVerify([path, "--json", ...extra], m.io), 3);
        // deno-lint-ignore no-explicit-any
        const report = assertReport(m.out(), "verify") as any;
        assert.equal(report.verdict, "violations");
        assert.deepEqual(report.violations.map((v: { gpa: number }) => v.gpa), [
          0x104e01000,
          0x106a01000,
        ]);
        // Where the plug state came from, truthfully: no --plugmap was given.
        const sources = set === "out-q10"
          ? ["early"]
          : extra.length === 0
          ? ["device", "first-pass"]
          : ["device"];
        assert.deepEqual(report.plugState.sources, sources);
        for (const v of report.violations) {
          assert.ok(sources.includes(v.detectedBy), v.detectedBy);
          assert.equal(v.path, "0000:00:01.0");
          assert.equal(v.ramblock, "0000:00:01.0/vmem0mem");
        }
      }
      const text = memoryIo();
      assert.equal(await runVerify([path], text.io), 3);
      assert.match(text.out(), /gpa 0x104e01000 .*block 39/);
      assert.match(text.out(), /gpa 0x106a01000 .*block 53/);
    },
  });
}

Deno.test({
  name:
    "vmem-dump verify --forward writes a clean stream byte for byte and nothing for a dirty one",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "vmem-verify-" });
    try {
      const clean = await realdata("out-q10", "s2-holes-100M.mig");
      const m = memoryIo();
      assert.equal(await runVerify([clean, "--forward", `${dir}/ok.mig`], m.io), 0, m.err());
      assert.equal(
        await sha256File(`${dir}/ok.mig`),
        realdataFacts("out-q10").sha256["s2-holes-100M.mig"],
      );
      const d = memoryIo();
      assert.equal(
        await runVerify([
          await realdata("out-q10", "s3-malicious.mig"),
          "--forward",
          `${dir}/bad.mig`,
        ], d.io),
        3,
      );
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ok.mig"]);
      assert.match(d.out(), /not forwarded/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test(
  "vmem-dump verify --forward - reports the bytes standard output got before a violation",
  async () => {
    // Standard output cannot be taken back: the report must not claim it "was not written".
    const path = new URL("../../testdata/migration/q72-s3-malicious.mig.zst", import.meta.url)
      .pathname;
    const launcher = new URL("../../bin/vmem-dump", import.meta.url).pathname;
    for (const json of [true, false]) {
      const r = await new Deno.Command("sh", {
        args: [launcher, "verify", path, "--forward", "-", ...(json ? ["--json"] : [])],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(r.stderr);
      assert.equal(r.code, 3, err);
      assert.ok(r.stdout.byteLength > 0);
      if (json) {
        // deno-lint-ignore no-explicit-any
        const report = assertReport(err, "verify") as any;
        assert.equal(report.output.written, false);
        assert.equal(report.output.byteLength, r.stdout.byteLength);
        // Everything before the first violating record, nothing from it on.
        assert.equal(r.stdout.byteLength, report.violations[0].streamOffset);
      } else {
        assert.doesNotMatch(err, /was not written/);
        assert.match(
          err,
          new RegExp(
            `not forwarded in full: - got the first ${
              r.stdout.byteLength.toLocaleString("en-US")
            } bytes`,
          ),
        );
      }
    }
  },
);

Deno.test("vmem-dump verify rejects bad arguments with exit code 2", async () => {
  for (const args of [["verify"], ["verify", "a", "b"], ["verify", "a", "--max-violations", "x"]]) {
    const m = memoryIo();
    assert.equal(await main(args, m.io), 2, args.join(" "));
  }
});

Deno.test("verify, filter, scan and plugmap all refuse an early section whose size disagrees with its bitmap", async () => {
  // Found by the mutation campaign: one more bit in the early bitmap of a real QEMU 10 stream
  // (51 plugged blocks, size still 50) was taken by verify and filter (their in-band tables
  // skipped the plug-map invariants) while scan and plugmap refused it.
  const stream = await tinyFixture("q10-tiny.mig");
  let earlyAt = -1;
  for await (const r of decodeMigration(bytesReader(stream))) {
    if (r.kind === "virtio-mem-early") earlyAt = r.streamOffset;
  }
  const bad = stream.slice();
  bad[earlyAt + 36 + 7] = bad[earlyAt + 36 + 7]! | 0x02; // block 1 (unplugged) now plugged
  const dir = await Deno.makeTempDir({ prefix: "vmem-verify-" });
  try {
    await Deno.writeFile(`${dir}/in.mig`, bad);
    for (
      const args of [
        ["verify", `${dir}/in.mig`],
        ["verify", "--single-pass", `${dir}/in.mig`],
        ["filter", `${dir}/in.mig`, `${dir}/out.mig`],
        ["scan", `${dir}/in.mig`],
        ["plugmap", `${dir}/in.mig`],
      ]
    ) {
      const m = memoryIo();
      assert.equal(await main(args, m.io), 1, `${args[0]}: ${m.out()}`);
      assert.match(m.err(), /size 0x600000 is not 4 plugged blocks .* at offset 0x[0-9a-f]+\n$/);
      assert.doesNotMatch(m.err(), /at offset 0x[0-9a-f]+ at offset/);
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["in.mig"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify --single-pass keeps the pages it tracks when the stream states its RAM block list again", async () => {
  // Found by the mutation campaign: the ram START section (the block list) of a real QEMU 7.2
  // stream duplicated after the RAM END section; the one-pass verifier forgot the pages it
  // tracked until the late plug state and said clean, while verify, scan and filter saw the
  // page in an unplugged block.
  const stream = await tinyFixture("q72-tiny.mig");
  const marks: { kind: string; streamOffset: number; idstr?: string }[] = [];
  for await (const r of decodeMigration(bytesReader(stream))) {
    if (r.kind === "section-start" || r.kind === "section-end" || r.kind === "section-footer") {
      marks.push({
        kind: r.kind,
        streamOffset: r.streamOffset,
        ...("idstr" in r ? { idstr: r.idstr } : {}),
      });
    }
  }
  const footerAfter = (i: number) =>
    marks.find((m, j) => j > i && m.kind === "section-footer")!.streamOffset + 5;
  const start = marks.findIndex((m) => m.kind === "section-start" && m.idstr === "ram");
  const end = marks.findIndex((m) => m.kind === "section-end" && m.idstr === "ram");
  const startSection = stream.subarray(marks[start]!.streamOffset, footerAfter(start));
  const at = footerAfter(end);
  const twice = concatBytes([stream.subarray(0, at), startSection, stream.subarray(at)]);
  const dir = await Deno.makeTempDir({ prefix: "vmem-verify-" });
  try {
    await Deno.writeFile(`${dir}/in.mig`, twice);
    for (const args of [["verify"], ["verify", "--single-pass"]]) {
      const m = memoryIo();
      assert.equal(await main([...args, "--json", `${dir}/in.mig`], m.io), 3, m.err());
      const report = JSON.parse(m.out());
      assert.equal(
        report.violations.filter((v: { reason: string }) => v.reason === "unplugged-block").length,
        1,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
