/**
 * readKdump() and scanKdump() on real makedumpfile 1.7.2 output: the
 * out-small s3-malicious QEMU 7.2 dump rewritten as a QEMU < 6.2 would have
 * written it (whole virtio-mem region, EVIL pages in unplugged blocks; spec
 * §11: makedumpfile needs the classic layout), then `makedumpfile -c -d 0`
 * (zlib), `-F` (flattened, checked against `makedumpfile -R`) and `-l`
 * (LZO, liblzo2's encoder: every page decodes by our LZO1X decoder to the
 * zlib file's page, and the scan's findings are the zlib file's).
 */

import assert from "node:assert/strict";
import { isAllZero } from "../../src/io/zero.ts";
import { readElfCore } from "../../src/elf/reader.ts";
import { scanElfCore } from "../../src/scan/scan_elf.ts";
import { openPositional, readAt } from "../../src/io/positional.ts";
import { decompressKdumpPage, type PageDesc, readKdump } from "../../src/kdump/mod.ts";
import { FormatError } from "../../src/errors.ts";
import { scanKdump } from "../../src/scan/scan_kdump.ts";
import { loadPlugState } from "../../src/input/load_plug_state.ts";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { realdata, realdataAvailable } from "../_util/realdata.ts";
import { requireTool, runTool, toolAvailable } from "../_util/tools.ts";
import { listedPages, scanCli } from "../scan/_cli.ts";
import { plugMapJson, REGION } from "../elf/_realdata.ts";

const B = 4096;
const SCENARIO = "s3-malicious";

async function makedumpfile(args: string[]): Promise<void> {
  const r = await runTool("makedumpfile", args, { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `makedumpfile ${args.join(" ")}: ${r.stdout}\n${r.stderr}`);
}

/** makedumpfile -F writes to stdout: run it through sh into a file. */
async function makedumpfileTo(args: string[], outPath: string, stdinPath?: string) {
  const mdf = requireTool("makedumpfile");
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const cmd = `${quote(mdf)} ${args.map(quote).join(" ")} > ${quote(outPath)}` +
    (stdinPath ? ` < ${quote(stdinPath)}` : "");
  const out = await new Deno.Command("sh", { args: ["-c", cmd], stdout: "null", stderr: "piped" })
    .output();
  assert.equal(out.code, 0, `${cmd}: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test({
  name:
    "readKdump() and scanKdump() agree with the raw image and the ELF scan on makedumpfile -c/-F/-l output (LZO decoded)",
  ignore: !realdataAvailable("out-small") || !toolAvailable("makedumpfile"),
  fn: async () => {
    requireTool("makedumpfile");
    const realElf = await realdata("out-small", `${SCENARIO}.elf`);
    const raw = await realdata("out-small", `${SCENARIO}.vmem0.raw`);
    const dir = await Deno.makeTempDir({ prefix: "vmem-kdump-mdf-" });
    try {
      const whole = `${dir}/whole.elf`;
      await writeWholeRegionElf(realElf, raw, REGION, whole, { layout: "qemu-classic" });
      const zlib = `${dir}/c.kdump`;
      const flat = `${dir}/c.flat`;
      const lzo = `${dir}/l.kdump`;
      await makedumpfile(["-c", "-d", "0", whole, zlib]);
      await makedumpfileTo(["-c", "-d", "0", "-F", whole], flat);
      await makedumpfile(["-l", "-d", "0", whole, lzo]);
      const plugmap = `${dir}/plugmap.json`;
      await Deno.writeTextFile(plugmap, plugMapJson(SCENARIO));
      const { plugMap } = await loadPlugState({ plugMapFile: plugmap });

      using dump = await readKdump(zlib);
      assert.equal(dump.container, "raw");
      assert.equal(dump.header.headerVersion, 6);
      assert.equal(dump.header.littleEndian, true);
      assert.equal(dump.blockSize, B);
      assert.equal(dump.subHeader.dumpLevel, 0);
      assert.match(dump.vmcoreinfo ?? "", /^OSRELEASE=6\.1\./m);
      assert.ok(dump.notes.length > dump.subHeader.sizeVmcoreinfo);

      // (a) pages of the virtio-mem region equal the pmemsave image, pfn by pfn
      using image = await openPositional(raw);
      const firstPfn = REGION.gpa / B;
      let compared = 0;
      let nonZero = 0;
      for await (const batch of dump.iteratePages(firstPfn, firstPfn + REGION.byteLength / B)) {
        for (const p of batch) {
          if (p.pfn % 7 !== 0 && isAllZero(p.data)) continue; // all non-zero + a sample
          const want = await readAt(image, { fileOffset: p.pfn * B - REGION.gpa, byteLength: B });
          assert.deepEqual(p.data, want, `pfn 0x${p.pfn.toString(16)}`);
          compared++;
          if (want.some((b) => b !== 0)) nonZero++;
        }
      }
      assert.ok(compared > 1000 && nonZero > 50, `compared ${compared}, non-zero ${nonZero}`);
      // below 4 GiB: a sample of pages equals the ELF dump
      using core = await readElfCore(whole);
      for (const pfn of [0x9f, 0x100, 0x1000, 0x2345, 0x7000, 0x7fdf]) {
        const page = await dump.readPage(pfn);
        if (page === undefined) continue;
        const load = core.loads.find((l) =>
          l.gpa !== undefined && l.gpa <= pfn * B && pfn * B + B <= l.gpa + l.fileByteLength
        )!;
        const want = await readAt(core.reader, {
          fileOffset: load.fileOffset! + pfn * B - load.gpa!,
          byteLength: B,
        });
        assert.deepEqual(page, want, `low pfn 0x${pfn.toString(16)}`);
      }

      // (b) findings: the ELF scan's findings on pages the kdump keeps, and nothing else
      const elfReport = await scanElfCore(core, { plugMap, maxFindings: 1000 });
      const kdumpReport = await scanKdump(dump, { plugMap, maxFindings: 1000 });
      const elfPages = listedPages(elfReport);
      const kdumpPages = listedPages(kdumpReport);
      assert.ok(kdumpPages.length >= 1, "makedumpfile keeps EVIL pages it cannot classify");
      assert.deepEqual(
        kdumpPages.map((p) => [p.gpa, p.sha256]),
        elfPages.filter((p) => dump.isDumpable(p.gpa / B)).map((p) => [p.gpa, p.sha256]),
      );
      for (const p of kdumpPages) {
        const hex = p.hexdump!.hex;
        const text = String.fromCharCode(
          ...Array.from(
            { length: hex.length / 2 },
            (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16),
          ),
        );
        assert.match(text, /^EVIL-/, `finding at 0x${p.gpa.toString(16)}`);
      }
      assert.equal(
        kdumpReport.coverage!.examinedBytes + kdumpReport.coverage!.absentBytes,
        kdumpReport.summary.unpluggedBytes,
      );

      // the CLI: same findings, exit 3, same JSON shape as for the ELF dump
      const cli = await scanCli([zlib, "--plugmap", plugmap, "--json", "--max-findings", "1000"]);
      assert.equal(cli.code, 3, cli.err);
      assert.deepEqual(listedPages(cli.report!).map((p) => p.gpa), kdumpPages.map((p) => p.gpa));
      const elfCli = await scanCli([whole, "--plugmap", plugmap, "--json"]);
      assert.deepEqual(Object.keys(cli.report!).sort(), Object.keys(elfCli.report!).sort());
      assert.deepEqual(
        Object.keys(cli.report!.summary).sort(),
        Object.keys(elfCli.report!.summary).sort(),
      );

      // flattened: our index reads the same file makedumpfile -R reassembles
      const reassembled = `${dir}/r.kdump`;
      await makedumpfileTo(["-R", reassembled], "/dev/null", flat);
      using flatDump = await readKdump(flat);
      assert.equal(flatDump.container, "flattened");
      const expect = await Deno.readFile(reassembled);
      assert.equal(flatDump.byteLength, expect.length);
      const got = await readAt(flatDump.reader, { fileOffset: 0, byteLength: expect.length });
      assert.ok(got.every((b, i) => b === expect[i]), "flattened view equals makedumpfile -R");
      const flatReport = await scanKdump(flatDump, { plugMap, maxFindings: 1000 });
      assert.deepEqual(
        listedPages(flatReport).map((p) => p.sha256),
        kdumpPages.map((p) => p.sha256),
      );

      // LZO: every page (liblzo2's lzo1x_1 output) decodes to the zlib file's page; same findings.
      using lzoDump = await readKdump(lzo);
      assert.equal(lzoDump.pageCount, dump.pageCount);
      let lzoPages = 0;
      let firstLzo: PageDesc | undefined;
      const zlibPages = dump.iteratePages(0, dump.maxMapnr);
      let zlibBatch: { pfn: number; data: Uint8Array }[] = [];
      let zi = 0;
      for await (const batch of lzoDump.iteratePages(0, lzoDump.maxMapnr)) {
        for (const p of batch) {
          if (zi === zlibBatch.length) {
            zlibBatch = (await zlibPages.next()).value ?? [];
            zi = 0;
          }
          const z = zlibBatch[zi++]!;
          assert.equal(p.pfn, z.pfn);
          assert.deepEqual(p.data, z.data, `LZO page of pfn 0x${p.pfn.toString(16)}`);
          if (p.desc.flags === 2 && lzoPages++ === 100) firstLzo = p.desc;
        }
      }
      assert.ok(lzoPages > 1000, `${lzoPages} LZO pages`);
      // A real LZO page cut short anywhere is a FormatError at an offset inside its data.
      const stored = await readAt(lzoDump.reader, {
        fileOffset: firstLzo!.fileOffset,
        byteLength: firstLzo!.byteLength,
      });
      for (let n = 0; n < stored.byteLength; n++) {
        assert.throws(
          () => decompressKdumpPage(stored.subarray(0, n), 2, B, firstLzo!.fileOffset),
          (e) =>
            e instanceof FormatError && e.code === "bad-record" &&
            e.offset! >= firstLzo!.fileOffset && e.offset! <= firstLzo!.fileOffset + n,
          `cut to ${n} bytes`,
        );
      }
      const lzoReport = await scanKdump(lzoDump, { plugMap, maxFindings: 1000 });
      assert.deepEqual(
        listedPages(lzoReport).map((p) => [p.gpa, p.sha256]),
        kdumpPages.map((p) => [p.gpa, p.sha256]),
      );
      const lzoCli = await scanCli([lzo, "--plugmap", plugmap, "--json", "--max-findings", "1000"]);
      assert.equal(lzoCli.code, 3, lzoCli.err);
      assert.deepEqual(listedPages(lzoCli.report!).map((p) => p.gpa), kdumpPages.map((p) => p.gpa));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
