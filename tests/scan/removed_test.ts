/**
 * scan of a dump vmem-dump rewrote: the unplugged memory that `strip` or
 * `convert --plugmap` removed is reported as absent with the reason
 * `removed-unplugged` (who removed it, from which input) taken from the
 * dump's provenance note, not as lost; it was never examined here, so the
 * verdict stays inconclusive (exit 4). The input is the real out-small s3
 * dump as a QEMU < 6.2 holds it (the whole virtio-mem region, EVIL pages in
 * unplugged blocks): scanned as it is, it has findings (exit 3).
 */
import assert from "node:assert/strict";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { realdata, realdataAvailable } from "../_util/realdata.ts";
import { plugMapJson, REGION, unpluggedRanges } from "../elf/_realdata.ts";
import { scanCli } from "./_cli.ts";
import { runCli } from "../_util/cli.ts";

const SCENARIO = "s3-malicious";

Deno.test({
  name:
    "scan of our strip and kdump conversion of a real whole-region dump: the removed memory is absent as removed-unplugged, verdict inconclusive",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const elf = await realdata("out-small", `${SCENARIO}.elf`);
    const raw = await realdata("out-small", `${SCENARIO}.vmem0.raw`);
    const dir = await Deno.makeTempDir({ prefix: "vmem-scan-removed-" });
    try {
      const pm = `${dir}/pm.json`;
      await Deno.writeTextFile(pm, plugMapJson(SCENARIO));
      const whole = `${dir}/whole.elf`;
      await writeWholeRegionElf(elf, raw, REGION, whole);
      const unplugged = unpluggedRanges(SCENARIO).reduce((n, r) => n + r.byteLength, 0);

      const before = await scanCli([whole, "--plugmap", pm, "--json"]);
      assert.equal(before.code, 3, "the EVIL pages are findings in the input");

      const stripped = `${dir}/stripped.elf`;
      const kdump = `${dir}/converted.kdump`;
      assert.equal((await runCli(["strip", whole, stripped, "--plugmap", pm])).code, 0);
      assert.equal(
        (await runCli(["convert", whole, kdump, "--to", "kdump", "--plugmap", pm])).code,
        0,
      );
      for (
        const [name, path, command] of [["strip", stripped, "strip"], ["kdump", kdump, "convert"]]
      ) {
        const r = await scanCli([path!, "--plugmap", pm, "--json"]);
        assert.equal(r.code, 4, `${name}: ${r.err}`);
        const report = r.report!;
        assert.equal(report.verdict, "inconclusive");
        assert.equal(report.summary.findings, 0);
        const absent = report.coverage!.absent;
        assert.deepEqual(absent.map((a) => [a.reason, a.byteLength]), [[
          "removed-unplugged",
          unplugged,
        ]]);
        assert.match(absent[0]!.detail, new RegExp(`vmem-dump [0-9.]+ ${command} of ${whole}`));
      }
      // A plain QEMU dump keeps its own reason: nothing says vmem-dump removed anything.
      const own = await scanCli([elf, "--plugmap", pm, "--json"]);
      assert.equal(own.code, 4);
      assert.deepEqual(own.report!.coverage!.absent.map((a) => a.reason), ["not-in-dump"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
