/**
 * The in-test kernel dumps (tests/_util/kernel_dumps.ts) hold what their
 * documentation promises, for QEMU 7.2 and 10.0: the installed kernel's
 * VMCOREINFO, a plug map with holes that agrees with what `vmem-dump plugmap`
 * extracts from the migration stream of the same state, the EVIL pages in the
 * stream and the raw image but in no dump, and every kdump format the build
 * writes.
 */

import assert from "node:assert/strict";
import { countBytes } from "../_util/assert.ts";
import { runCli } from "../_util/cli.ts";
import { readFileBytes } from "../_util/files.ts";
import { evilPage } from "../_util/guest.ts";
import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { QEMU_VERSIONS } from "../_util/qemu.ts";
import { installedGuestKernel } from "../_util/vmlinux.ts";

for (const qemu of QEMU_VERSIONS) {
  Deno.test({
    name:
      `kernelDumps("${qemu}") hands out real dumps of the installed kernel with unplugged memory`,
    ignore: !kernelDumpsAvailable(qemu),
    fn: async () => {
      const d = await kernelDumps(qemu);
      const kernel = installedGuestKernel();
      assert.deepEqual(d.kernel, kernel);
      assert.equal(d.vmcoreinfo.osrelease, kernel.abi);
      assert.equal(d.vmcoreinfo.pageSize, 4096);
      assert.match(d.vmcoreinfo.buildId, /^[0-9a-f]{40}$/);
      assert.match(d.qemuVersion, qemu === "7.2" ? /^7\.2\./ : /^10\./);
      assert.match(d.machine, qemu === "7.2" ? /^pc-q35-7\.2$/ : /^pc-q35-10\./);

      // The plug state has holes, and our extraction from the stream agrees with QEMU's dump.
      assert.equal(d.device.gpa, 0x1_0000_0000);
      assert.equal(d.device.pluggedBytes, 100 << 20);
      assert.ok(d.unpluggedRanges.some((u) => u.gpa < d.pluggedRanges.at(-1)!.gpa), "a hole");
      const fromStream = await runCli(["plugmap", "--complete", d.migration]);
      assert.equal(fromStream.code, 0, fromStream.err);
      const mine = JSON.parse(Deno.readTextFileSync(d.plugmap)).devices[0];
      const theirs = JSON.parse(fromStream.out).devices[0];
      for (const k of ["path", "ramblock", "memaddr", "region-size", "block-size", "size"]) {
        assert.deepEqual(mine[k], theirs[k], k);
      }
      assert.deepEqual(mine.plugged, theirs.plugged);

      // EVIL pages: in unplugged blocks, in the raw image, EVIL-MIG ones in the stream.
      assert.equal(d.evil.filter((w) => w.marker === "EVIL-PRE").length, 2);
      assert.ok(d.evil.filter((w) => w.marker === "EVIL-MIG").length >= 1);
      const stream = await Deno.readFile(d.migration);
      for (const w of d.evil) {
        assert.equal(d.plugged[w.block], 0, `block ${w.block} is unplugged`);
        const page = evilPage(w.marker, w.gpa);
        assert.deepEqual(await readFileBytes(d.raw, w.gpa - d.device.gpa, 4096), page);
        if (w.marker === "EVIL-MIG") assert.equal(countBytes(stream, page.subarray(0, 64)), 1);
      }

      // Every kdump format of the build, each with its signature.
      assert.deepEqual(
        Object.keys(d.kdump).sort(),
        qemu === "7.2" ? ["kdump-zlib"] : ["kdump-raw-zlib", "kdump-zlib"],
      );
      for (const [format, path] of Object.entries(d.kdump)) {
        const head = new TextDecoder().decode(await readFileBytes(path, 0, 8));
        assert.equal(head, format.startsWith("kdump-raw-") ? "KDUMP   " : "makedump");
      }
      // Shared between tests: nobody may write into them.
      for (const f of [d.elf, d.raw, d.migration, d.plugmap, ...Object.values(d.kdump)]) {
        assert.equal(Deno.statSync(f).mode! & 0o222, 0, `${f} is read-only`);
      }
    },
  });
}
