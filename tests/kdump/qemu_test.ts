/**
 * readKdump() on real QEMU 7.2 `dump-guest-memory` kdump-zlib output (the
 * flattened container) of the tiny guest in the s2/s3 plug shape, with EVIL
 * pages written into unplugged blocks: every page read from the kdump equals
 * the same gpa in an ELF dump of the same state; QEMU >= 6.2 leaves unplugged
 * memory out of both, so the scan finds nothing and counts it as absent.
 */

import assert from "node:assert/strict";
import { isAllZero } from "../../src/io/zero.ts";
import { iterateGpaRange, readElfCore } from "../../src/elf/reader.ts";
import { readKdump } from "../../src/kdump/mod.ts";
import { evilPage } from "../_util/guest.ts";
import { qemuAvailable, startGuest, tempDir, VMEM_GPA } from "../_util/qemu.ts";
import { scanCli } from "../scan/_cli.ts";

const B = 4096;
const BLOCK = 2 << 20;
const MiB = 1 << 20;

Deno.test({
  name: "readKdump() reads QEMU 7.2 kdump-zlib pages equal to the ELF dump of the same state",
  ignore: !qemuAvailable("7.2", "tiny"),
  fn: async () => {
    await using tmp = await tempDir("vmem-kdump-qemu-");
    await using guest = await startGuest({ qemu: "7.2", guest: "tiny" });
    await guest.plugHolesShape(); // plugged blocks 0-13 and 64-99, a marker page in each
    await guest.pause();
    const evil = [20, 39, 63].map((block) => VMEM_GPA + block * BLOCK + 0x3000);
    for (const gpa of evil) await guest.gdbWritePhys(gpa, evilPage("EVIL-KDUMP", gpa));
    const kdumpPath = `${tmp.path}/guest.kdump-zlib`;
    const elfPath = `${tmp.path}/guest.elf`;
    await guest.dumpGuestMemory(kdumpPath, { format: "kdump-zlib" });
    await guest.dumpGuestMemory(elfPath);
    const plugged = guest.tinyPlugState();

    using dump = await readKdump(kdumpPath);
    assert.equal(dump.container, "flattened");
    assert.equal(dump.header.headerVersion, 6);
    assert.equal(dump.header.utsname.machine, "x86_64");
    assert.equal(dump.header.nrCpus, 1);
    assert.equal(dump.subHeader.dumpLevel, 1);
    assert.ok(dump.notes.length > 0, "QEMU writes CPU notes");
    // QEMU writes identical bitmaps; unplugged blocks are holes (QEMU >= 6.2)
    assert.equal(dump.present.count, dump.dumpable.count);
    for (let block = 0; block < 128; block++) {
      const pfn = (VMEM_GPA + block * BLOCK) / B + 5;
      assert.equal(dump.isPresent(pfn), plugged[block] === 1, `block ${block}`);
    }
    // boot RAM, the plugged blocks and the BIOS: the pages of the ELF dump's PT_LOADs
    using core = await readElfCore(elfPath);
    const elfBytes = core.loads.reduce((n, l) => n + l.fileByteLength, 0);
    assert.equal(dump.pageCount * B, elfBytes);
    assert.ok(dump.pageCount >= (128 * MiB + 50 * BLOCK) / B);

    // Every page that is not zero, plus every 53rd page, equals the ELF dump's bytes.
    let compared = 0;
    let markers = 0;
    for await (const batch of dump.iteratePages(0, dump.maxMapnr)) {
      for (const p of batch) {
        if (p.pfn % 53 !== 0 && isAllZero(p.data)) continue;
        const want = new Uint8Array(B);
        let covered = 0;
        for await (const c of iterateGpaRange(core, { gpa: p.pfn * B, byteLength: B })) {
          if (c.kind === "data") want.set(c.data, c.gpa - p.pfn * B);
          if (c.kind !== "absent") covered += c.byteLength;
        }
        assert.equal(covered, B, `pfn 0x${p.pfn.toString(16)} is in the ELF dump`);
        assert.deepEqual(p.data, want, `pfn 0x${p.pfn.toString(16)}`);
        if (new TextDecoder().decode(p.data.subarray(0, 10)) === "DATA block") markers++;
        compared++;
      }
    }
    assert.equal(markers, 50, "one marker page per plugged block");
    assert.ok(compared > 1000, `compared ${compared} pages`);
    const one = await dump.readPage(VMEM_GPA / B);
    assert.match(new TextDecoder().decode(one!.subarray(0, 16)), /^DATA block=/);
    for (const gpa of evil) assert.equal(await dump.readPage(gpa / B), undefined);

    // The scan: no findings, all unplugged memory absent.
    const runs: [number, number][] = [];
    for (let i = 0; i < plugged.length; i++) {
      if (plugged[i] !== 1) continue;
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === i) last[1]++;
      else runs.push([i, 1]);
    }
    const plugmap = `${tmp.path}/plugmap.json`;
    await Deno.writeTextFile(
      plugmap,
      JSON.stringify({
        version: 1,
        devices: [{
          path: "0000:00:01.0",
          ramblock: "0000:00:01.0/vmem0mem",
          memaddr: VMEM_GPA,
          "region-size": 256 * MiB,
          "block-size": BLOCK,
          node: 0,
          "usable-region-size": null,
          size: 50 * BLOCK,
          "requested-size": 50 * BLOCK,
          plugged: runs,
        }],
      }),
    );
    // Nothing unplugged was in the dump: inconclusive (exit 4), never clean.
    const cli = await scanCli([kdumpPath, "--plugmap", plugmap, "--json"]);
    assert.equal(cli.code, 4, cli.err + cli.out);
    assert.equal(cli.report!.verdict, "inconclusive");
    assert.equal(cli.report!.summary.findings, 0);
    assert.equal(cli.report!.coverage!.absentByteLength, 78 * BLOCK);
    assert.deepEqual(cli.report!.coverage!.absent.map((a) => a.reason), ["not-in-dump"]);
    assert.equal(cli.report!.coverage!.examinedByteLength, 0);
    assert.equal(cli.report!.input.container, "flattened");
  },
});
