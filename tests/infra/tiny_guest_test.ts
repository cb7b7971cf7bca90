/**
 * The bare-metal tiny guest (testdata/tinyguest/vmemtiny.elf): boots in about
 * a second, plugs exactly the device blocks the test asks for, and migrates
 * like any guest. The fast template for migration tests that need real QEMU
 * streams with holes but no Linux.
 */

import assert from "node:assert/strict";
import { countBytes } from "../_util/assert.ts";
import { evilPage } from "../_util/guest.ts";
import {
  compareGuestMemory,
  customGuestSpec,
  qemuAvailable,
  type QemuVersion,
  startDestination,
  startGuest,
  startTinyGuest,
  startVm,
  tempDir,
  TINY_GUEST_ELF,
  TinyGuest,
  VMEM_GPA,
} from "../_util/qemu.ts";

const MiB = 1 << 20;
const BLOCK = 2 * MiB;

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name: `startTinyGuest() plugs chosen blocks and migrates them (QEMU ${qemu})`,
    ignore: !qemuAvailable(qemu, "tiny"),
    fn: async () => {
      await using tmp = await tempDir();
      const mig = `${tmp.path}/tiny.mig`;
      await using src = await startTinyGuest({ qemu });
      // the s2/s3 shape of shared/realdata: plugged 0-13 and 64-99
      await src.guest.plugHolesShape();
      assert.equal((await src.vmem()).size, 100 * MiB);
      const state = src.guest.plugState();
      assert.equal(state.reduce((a, b) => a + b, 0), 50);
      assert.equal(state[13], 1);
      assert.equal(state[14], 0);
      assert.equal(state[64], 1);

      const evilGpa = VMEM_GPA + 39 * BLOCK + 0x1000;
      await src.migrateToFile(mig, {
        onPreSwitchover: (g) => g.gdbWritePhys(evilGpa, evilPage("EVIL-MIG", evilGpa)),
      });
      const bytes = await Deno.readFile(mig);
      assert.ok(bytes.length < 4 * MiB, `tiny stream is ${bytes.length} bytes`);
      // one 64-line marker page per plugged block (+1: the format string in the guest image)
      assert.equal(Math.floor(countBytes(bytes, "DATA block=") / 64), 50);
      assert.equal(Math.floor(countBytes(bytes, "EVIL-MIG") / 64), 1);

      await src.dumpGuestMemory(`${tmp.path}/src.elf`);
      await using dst = await startDestination({
        qemu,
        guest: "tiny",
        incoming: `exec:cat ${mig}`,
      });
      await dst.waitIncoming({ timeoutMs: 30_000 });
      await dst.dumpGuestMemory(`${tmp.path}/dst.elf`);
      const cmp = await compareGuestMemory(`${tmp.path}/src.elf`, `${tmp.path}/dst.elf`);
      assert.ok(cmp.equal, JSON.stringify(cmp.differences.slice(0, 4)));
      await dst.resume();
      const info = await dst.guest.command("info");
      assert.match(info.lines.join(" "), /plugged-size 0x6400000/);
    },
  });
}

Deno.test({
  name:
    "the one-class interface (startGuest, deprecated guest methods) still drives the tiny guest",
  ignore: !qemuAvailable("7.2", "tiny"),
  fn: async () => {
    await using vm = await startGuest({ qemu: "7.2", guest: "tiny" });
    assert.equal(vm.kind, "tiny");
    await vm.plugHolesShape();
    assert.equal((await vm.vmem()).size, 100 * MiB);
    assert.ok(vm.guest instanceof TinyGuest);
    assert.deepEqual(vm.tinyPlugState(), vm.guest.plugState());
    await vm.plugTo(102 * MiB); // plugs the lowest unplugged block, 14
    assert.equal(vm.tinyPlugState()[14], 1);
    await assert.rejects(() => vm.fill(1), /needs the Linux guest/);
    assert.match((await vm.guestCmd("info")).lines.join(" "), /plugged-size 0x6600000/);

    // a custom image that speaks the protocol, with the generic driver
    await using custom = await startVm(customGuestSpec({ kernel: TINY_GUEST_ELF, append: "" }), {
      qemu: "7.2",
    });
    assert.equal(custom.kind, "custom");
    assert.throws(() => custom.tinyPlugState(), /needs the tiny guest/);
    assert.equal((await custom.guest.command("ping")).rc, 0);
  },
});
