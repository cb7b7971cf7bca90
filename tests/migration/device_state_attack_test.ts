/**
 * Issue 9 §1/§2 with real QEMU: a stream is crafted from real QEMU 7.2 and
 * 10.0 output for each way to make QEMU load more than the device-state tail
 * shows (RAM after device state, a section swallowed by an enlarged vmdesc
 * size, junk, no or renamed vmdesc, a restated plug state). Each attack is
 * loaded by a real destination QEMU of the same version, which shows whether
 * it works (the injected page is read back from the unplugged block over the
 * gdbstub) or refuses it; then every consumer must reject the stream
 * (`verify` single- and two-pass, from a file and from a pipe; `filter`;
 * the proxy's verify mode, which must not forward QEMU_VM_EOF; `scan` of the
 * stream) while `inspect` describes it and `plugmap` still finds the plug
 * state the sections hold. The honest stream they were made from passes all.
 */

import assert from "node:assert/strict";
import { runCli } from "../_util/cli.ts";
import {
  qemuAvailable,
  type QemuVersion,
  startTinyGuest,
  tempDir,
  VMEM_GPA,
} from "../_util/qemu.ts";
import {
  ATTACK_BLOCK,
  ATTACK_PAGE_GPA,
  ATTACK_UNPLUGGED_BLOCK,
  type AttackName,
  attackPage,
  ATTACKS,
  baseStream,
} from "./_device_state_attacks.ts";
import {
  assertConsumers,
  assertQemuOutcome,
  type Expectation,
  HONEST,
} from "./_attack_consumers.ts";

const MiB = 1 << 20;

function expectations(qemu: QemuVersion): Record<AttackName, Expectation> {
  const late = qemu === "7.2";
  return {
    "ram-part-after-device": {
      qemu: { loads: "page", tag: "EVIL-PART" },
      verify: 3,
      violation: { reason: "ram-after-device-state", gpa: ATTACK_PAGE_GPA },
      plugmap: 0,
      plugmapPipe: 0,
      scan: 3,
      inspect: 0,
    },
    "ram-full-in-tail": {
      qemu: { loads: "page", tag: "EVIL-FULL" },
      verify: 3,
      violation: { reason: "ram-after-device-state", gpa: ATTACK_PAGE_GPA },
      plugmap: 0,
      plugmapPipe: 0,
      scan: 3,
      inspect: 0,
    },
    // QEMU_VM_EOF inside PACKAGED ends QEMU's nested load; the decoder cannot account for it.
    "packaged-in-tail": {
      qemu: { loads: "page", tag: "EVIL-PACKAGED" },
      verify: 1,
      plugmap: 1,
      plugmapPipe: late ? 1 : 0,
      scan: 1,
      inspect: 0,
    },
    "swallow-by-vmdesc": {
      qemu: { loads: "page", tag: "EVIL-SWALLOW" },
      verify: 1,
      plugmap: 1,
      plugmapPipe: late ? 1 : 0,
      scan: 1,
      inspect: 0,
    },
    // QEMU stops at the junk's first byte (QEMU_VM_EOF) and skips the devices after it.
    "junk-in-tail": {
      qemu: { loads: "stream" },
      verify: 1,
      plugmap: 1,
      plugmapPipe: late ? 1 : 0,
      scan: 1,
      inspect: 1,
    },
    "vmdesc-renamed": {
      qemu: { loads: "stream", size: 100 * MiB },
      verify: 1,
      plugmap: 0,
      plugmapPipe: 0,
      scan: 1,
      inspect: 0,
    },
    "no-vmdesc": {
      qemu: { loads: "stream", size: 100 * MiB },
      verify: 1,
      plugmap: 1,
      plugmapPipe: late ? 1 : 0,
      scan: 1,
      inspect: 0,
    },
    // QEMU 7.2 has no early sections; QEMU 10 ends with the second section's state.
    "two-early-sections": late
      ? { qemu: { loads: "refused" }, verify: 1, plugmap: 1, plugmapPipe: 1, scan: 1, inspect: 0 }
      : {
        qemu: { loads: "stream", size: 98 * MiB },
        verify: 3,
        violation: { reason: "plug-state-replaced" },
        plugmap: 1,
        plugmapPipe: 1,
        scan: 3,
        inspect: 0,
      },
  };
}

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name:
      `real QEMU ${qemu} loads the device-state attacks that every consumer now rejects; the honest stream stays clean`,
    ignore: !qemuAvailable(qemu, "tiny"),
    sanitizeResources: false,
    fn: async (t) => {
      await using tmp = await tempDir("vmem-attack-");
      const basePath = `${tmp.path}/base.mig`;
      const image = `${tmp.path}/vmem0.raw`;
      {
        await using src = await startTinyGuest({ qemu });
        // Blocks 0-13 and 64-99 plugged, a marker page in each; block 39 stays unplugged.
        await src.guest.plugHolesShape();
        assert.equal(src.guest.plugState()[ATTACK_BLOCK], 0);
        assert.equal(src.guest.plugState()[ATTACK_UNPLUGGED_BLOCK], 1);
        await src.migrateToFile(basePath);
        // For `scan --plugmap-from`: the region with data written into the unplugged block.
        await src.gdbWritePhys(ATTACK_PAGE_GPA, attackPage("EVIL-IMAGE"));
        await src.pmemsave(VMEM_GPA, 256 * MiB, image);
      }
      const baseBytes = await Deno.readFile(basePath);
      const base = await baseStream(baseBytes);

      await t.step("the honest stream verifies clean everywhere", async () => {
        await assertConsumers(basePath, baseBytes, HONEST, "honest");
        const inspect = JSON.parse((await runCli(["inspect", "--json", basePath])).out);
        assert.equal(inspect.tailMatchesVmdesc, true);
        assert.deepEqual(inspect.tailProblems, []);
      });

      const want = expectations(qemu);
      for (const name of Object.keys(ATTACKS) as AttackName[]) {
        await t.step(name, async () => {
          const e = want[name];
          const bytes = ATTACKS[name](base);
          const path = `${tmp.path}/${name}.mig`;
          await Deno.writeFile(path, bytes);

          await assertQemuOutcome(qemu, path, e.qemu, name);
          await assertConsumers(path, bytes, e, name);

          if (name === "vmdesc-renamed") {
            // The plug state is found by the section, not by its vmdesc name.
            const scan = await runCli([
              "scan",
              image,
              "--base",
              String(VMEM_GPA),
              "--plugmap-from",
              path,
              "--json",
            ]);
            assert.equal(scan.code, 3, scan.err);
            assert.match(scan.out, new RegExp(`"gpa": ${ATTACK_PAGE_GPA}\\b`));
          }
        });
      }
    },
  });
}
