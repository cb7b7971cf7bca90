/**
 * The CLI on a real QEMU 10 mapped-ram file (run as processes, as users do):
 * `inspect`, `plugmap`, `verify`, `scan` and `filter` recognise it without a
 * flag and keep the exit-code contract; a mapped-ram file on standard input
 * or compressed is a one-line error, exit 1.
 *
 * @module
 */

import assert from "node:assert/strict";
import { assertReport } from "../_util/report_schema.ts";
import { assertOneErrorLine, execCli } from "../_util/cli.ts";
import { readFileBytes } from "../_util/files.ts";
import { qemuAvailable, tempDir } from "../_util/qemu.ts";
import {
  duKiB,
  EVIL_GPAS,
  makeMappedRamFile,
  readMappedRamIndependently,
} from "../_util/mapped_ram.ts";

/** Run the real CLI as a process (standard input from `stdinFile` when given). */
async function cli(args: string[], stdinFile?: string) {
  return await execCli(args, stdinFile === undefined ? {} : { stdinFile });
}

Deno.test({
  name: "vmem-dump inspect, plugmap, verify, scan and filter on a real QEMU 10 mapped-ram file",
  ignore: !qemuAvailable("10", "tiny"),
  fn: async (t) => {
    await using tmp = await tempDir("vmem-mapped-ram-cli-");
    const mig = `${tmp.path}/vm.mig`;
    const { src, ram } = await makeMappedRamFile(mig, { multifd: true });
    await src.kill();

    await t.step("inspect --json: per-block pages present", async () => {
      const r = await cli(["inspect", "--json", mig]);
      assert.equal(r.code, 0, r.err);
      const report = assertReport(r.out, "inspect") as {
        mappedRam: { blocks: { pagesPresent: number }[]; pagesPresent: number };
        capabilities: string[];
        input: { format: string };
      };
      assert.equal(report.input.format, "mapped-ram");
      const independent = await readMappedRamIndependently(mig);
      assert.deepEqual(
        report.mappedRam.blocks.map((b: { pagesPresent: number }) => b.pagesPresent),
        independent.map((b) => b.setBits),
      );
      assert.equal(report.mappedRam.pagesPresent, ram.normal);
      assert.deepEqual(report.capabilities, ["mapped-ram"]);
    });

    await t.step("plugmap", async () => {
      const r = await cli(["plugmap", mig]);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(JSON.parse(r.out).devices[0].plugged, [[0, 14], [64, 36]]);
      const j = await cli(["plugmap", "--json", mig]);
      assert.equal(j.code, 0, j.err);
      assert.equal(
        (assertReport(j.out, "plugmap").input as { format: string }).format,
        "mapped-ram",
      );
    });

    await t.step("verify: exit 3 and exactly the written pages", async () => {
      const r = await cli(["verify", "--json", mig]);
      assert.equal(r.code, 3, r.err);
      // deno-lint-ignore no-explicit-any
      const v = assertReport(r.out, "verify") as any;
      assert.equal(v.input.format, "mapped-ram");
      assert.equal(v.verdict, "violations");
      assert.deepEqual(v.violations.map((x: { gpa: number }) => x.gpa), EVIL_GPAS);
      const text = await cli(["verify", mig]);
      assert.equal(text.code, 3);
      assert.match(text.out, /2 pages of unplugged blocks present/);
      const forward = await cli(["verify", mig, "--forward", `${tmp.path}/x`]);
      assert.equal(forward.code, 2);
    });

    await t.step("scan: exit 3, the pages with their file offsets", async () => {
      const r = await cli(["scan", "--json", mig]);
      assert.equal(r.code, 3, r.err);
      // deno-lint-ignore no-explicit-any
      const report = assertReport(r.out, "scan") as any;
      assert.equal(report.input.format, "mapped-ram");
      const pages = report.devices.flatMap((d: { blocks: { pages: unknown[] }[] }) =>
        d.blocks.flatMap((b) => b.pages)
      ) as { gpa: number; fileOffset: number; source: string }[];
      assert.deepEqual(pages.map((p) => p.gpa), EVIL_GPAS);
      const vmem = (await readMappedRamIndependently(mig))[0]!;
      for (const p of pages) {
        assert.equal(p.source, "mapped-ram-page");
        assert.equal(p.fileOffset, vmem.pagesOffset + (p.gpa - 0x1_0000_0000));
      }
      assert.equal(report.verdict, "findings");
      // --extract writes the pages as evidence, each equal to the file's bytes at its offset.
      const dir = `${tmp.path}/evidence`;
      const x = await cli(["scan", mig, "--extract", dir]);
      assert.equal(x.code, 3, x.err);
      const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assert.deepEqual(files, [
        ...EVIL_GPAS.map((g) => `gpa-0x${g.toString(16).padStart(16, "0")}.page`),
        "manifest.json",
      ]);
      for (const p of pages) {
        const page = await Deno.readFile(
          `${dir}/gpa-0x${p.gpa.toString(16).padStart(16, "0")}.page`,
        );
        assert.deepEqual(page, await readFileBytes(mig, p.fileOffset, 4096));
      }
    });

    await t.step(
      "scan --extract: the two pages as files, byte for byte at their file offsets",
      async () => {
        const dir = `${tmp.path}/evidence-hexdump`;
        const r = await cli(["scan", mig, "--extract", dir, "--hexdump-bytes", "64"]);
        assert.equal(r.code, 3, r.err);
        const m = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
        assert.equal(m.verdict, "findings");
        assert.equal(m.complete, true);
        assert.deepEqual(m.pages.map((p: { gpa: number }) => p.gpa), EVIL_GPAS);
        for (const p of m.pages as { file: string; fileOffset: number; byteLength: number }[]) {
          assert.deepEqual(
            await Deno.readFile(`${dir}/${p.file}`),
            await readFileBytes(mig, p.fileOffset, p.byteLength),
          );
        }
      },
    );

    await t.step("filter: a sparse output that verifies clean and is smaller on disk", async () => {
      const out = `${tmp.path}/filtered.mig`;
      const r = await cli(["filter", "--json", mig, out]);
      assert.equal(r.code, 0, r.err);
      // deno-lint-ignore no-explicit-any
      const f = assertReport(r.out, "filter") as any;
      assert.equal(f.droppedPages, 2);
      assert.equal(f.output.format, "mapped-ram");
      assert.deepEqual(f.dropped.map((d: { gpa: number }) => d.gpa), EVIL_GPAS);
      assert.ok((await duKiB(out)) < (await duKiB(mig)));
      const v = await cli(["verify", out]);
      assert.equal(v.code, 0, v.out + v.err);
      const s = await cli(["scan", out]);
      assert.equal(s.code, 0, s.out + s.err);
      // The output policy holds: an existing OUT only with --force, never IN itself.
      const again = await cli(["filter", mig, out]);
      assert.equal(again.code, 1, again.err);
      assert.equal((await cli(["filter", "--force", mig, out])).code, 0);
      const onto = await cli(["filter", "--force", mig, mig]);
      assert.equal(onto.code, 1);
      assert.match(onto.err, /it is the input/);
      assert.equal((await cli(["verify", mig])).code, 3, "the input is untouched");
    });

    await t.step("standard input, compressed or convert: a one-line error, exit 1", async () => {
      const piped = await cli(["verify", "-"], mig);
      assert.equal(piped.code, 1);
      assertOneErrorLine(piped.err, /mapped-ram file.*regular file/);
      const zst = `${tmp.path}/vm.mig.zst`;
      const z = await new Deno.Command("zstd", { args: ["-q", "-1", mig, "-o", zst] }).output();
      assert.ok(z.success);
      const convert = await cli(["convert", mig, `${tmp.path}/c.zst`, "--to", "zstd"]);
      assert.equal(convert.code, 1);
      assertOneErrorLine(convert.err, /Cannot convert a mapped-ram file/);
      const compressed = await cli(["inspect", zst]);
      assert.equal(compressed.code, 1);
      assertOneErrorLine(compressed.err, /mapped-ram file/);
    });
  },
});
