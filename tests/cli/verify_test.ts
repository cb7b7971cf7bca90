/** `vmem-dump verify`: exit codes and reports on real streams, `--forward`, usage errors (the verifier itself: tests/migration/verify_test.ts). */

import assert from "node:assert/strict";
import { assertReport } from "../_util/report_schema.ts";
import { run as runVerify } from "../../cli/commands/verify.ts";
import { main } from "../../cli/main.ts";
import { memoryIo } from "../_util/cli.ts";
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

Deno.test("vmem-dump verify rejects bad arguments with exit code 2", async () => {
  for (const args of [["verify"], ["verify", "a", "b"], ["verify", "a", "--max-violations", "x"]]) {
    const m = memoryIo();
    assert.equal(await main(args, m.io), 2, args.join(" "));
  }
});
