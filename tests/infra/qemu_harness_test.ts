/**
 * The real-QEMU harness itself with the Linux guest: boot under TCG, plug and
 * unplug virtio-mem memory, migrate to a file, load the file into a
 * destination started with `-incoming defer`, and check that the
 * destination's guest memory equals the source's. Also the template for
 * migration tests: copy the shape of these steps.
 */

import assert from "node:assert/strict";
import { countBytes } from "../_util/assert.ts";
import { evilPage } from "../_util/guest.ts";
import {
  compareGuestMemory,
  qemuAvailable,
  type QemuVersion,
  startDestination,
  startLinuxGuest,
  tempDir,
  VMEM_GPA,
} from "../_util/qemu.ts";

const MiB = 1 << 20;
const BLOCK = 2 * MiB;

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name:
      `startLinuxGuest() and startDestination() migrate a virtio-mem guest through a file (QEMU ${qemu})`,
    ignore: !qemuAvailable(qemu),
    sanitizeOps: true,
    sanitizeResources: true,
    fn: async (t) => {
      const t0 = performance.now();
      const times: string[] = [];
      const mark = (what: string) =>
        times.push(`${what} ${((performance.now() - t0) / 1000).toFixed(1)}s`);
      await using tmp = await tempDir();
      const mig = `${tmp.path}/holes.mig`;
      const srcElf = `${tmp.path}/src.elf`;
      const dstElf = `${tmp.path}/dst.elf`;
      await using src = await startLinuxGuest({ qemu });
      mark("boot");

      await t.step("plugTo(), fill(), offlineBlock() leave holes in the device", async () => {
        await src.guest.plugTo(200 * MiB);
        await src.guest.fill(8);
        await src.guest.offlineBlock(0);
        await src.guest.plugTo(100 * MiB);
        const vmem = await src.vmem();
        assert.equal(vmem.memaddr, VMEM_GPA);
        assert.equal(vmem.size, 100 * MiB);
        assert.equal(vmem["block-size"], BLOCK);
        mark("plug/fill/offline/unplug");
      });

      await t.step("migrateToFile() writes a complete stream", async () => {
        const info = await src.migrateToFile(mig);
        assert.equal(info.status, "completed");
        const head = new Uint8Array(8);
        using f = await Deno.open(mig);
        await f.read(head);
        assert.deepEqual([...head], [0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]); // "QEVM", version 3
        assert.ok(Deno.statSync(mig).size > 50 * MiB);
        await src.dumpGuestMemory(srcElf);
        mark("migrate + source dump");
      });

      await t.step("a destination loads the stream; its memory equals the source's", async () => {
        const size = (await src.vmem()).size;
        {
          await using dst = await startDestination({ qemu, incoming: `exec:cat ${mig}` });
          await dst.waitIncoming({ timeoutMs: 60_000 });
          assert.equal((await dst.vmem()).size, size);
          await dst.dumpGuestMemory(dstElf);
          const cmp = await compareGuestMemory(srcElf, dstElf);
          assert.ok(
            cmp.equal,
            `differences: ${JSON.stringify(cmp.differences.slice(0, 8))} ` +
              `onlyInA ${JSON.stringify(cmp.onlyInA)} onlyInB ${JSON.stringify(cmp.onlyInB)}`,
          );
          // boot RAM plus the 100 MiB of plugged device memory were compared
          assert.ok(cmp.comparedBytes >= 128 * MiB + 100 * MiB, `${cmp.comparedBytes}`);
          assert.ok(cmp.loadsA.some((l) => l.gpa >= VMEM_GPA));
          // and the guest keeps running on the destination
          await dst.resume();
          await dst.guest.command("ping", { timeoutMs: 30_000 });
        }
        mark("destination load + dump + compare");
      });

      await t.step(
        "gdbWritePhys() puts a page into an unplugged block during migration",
        async () => {
          // block 120 is unplugged after the shrink to 100M (Linux unplugs from the end)
          const gpa = VMEM_GPA + 120 * BLOCK + 0x1000;
          const page = evilPage("EVIL-MIG", gpa);
          const evilMig = `${tmp.path}/evil.mig`;
          await src.migrateToFile(evilMig, {
            onPreSwitchover: async (vm) => {
              assert.equal((await vm.runState()).running, false);
              await vm.gdbWritePhys(gpa, page);
            },
          });
          const bytes = await Deno.readFile(evilMig);
          // the page travels in the final RAM pass, near the end of the stream
          const tailStart = Math.max(0, bytes.length - 4 * MiB);
          assert.equal(countBytes(bytes.subarray(tailStart), page.subarray(0, 64)), 1);
          mark("evil migration");
        },
      );

      console.log(`QEMU ${qemu} harness timings: ${times.join(", ")}`);
    },
  });
}
