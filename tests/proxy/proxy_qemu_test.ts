/**
 * The migration proxy and the filter between real QEMUs (7.2: late
 * virtio-mem layout; 10.0: early layout), under TCG:
 *
 * (a) a virtio-mem guest migrates through `proxy --mode verify`; the
 *     destination resumes and its memory equals the source's;
 * (b) pages written into unplugged blocks during pause-before-switchover make
 *     `proxy --mode verify` report exactly those gpas, and the destination
 *     never completes its load;
 * (c) `proxy --mode filter` completes the same migration without those pages;
 * (d) `vmem-dump filter` output of the real s3 fixtures loads into QEMU and
 *     its memory equals the fixture's dump.
 *
 * The tiny bare-metal guest keeps these tests fast (it boots in about a
 * second and plugs exactly the blocks asked for).
 */

import assert from "node:assert/strict";
import { assertReport } from "../_util/report_schema.ts";
import { evilPage } from "../_util/guest.ts";
import {
  compareGuestMemory,
  qemuAvailable,
  type QemuVersion,
  startDestination,
  startGuest,
  tempDir,
  VMEM_GPA,
} from "../_util/qemu.ts";
import { realdata, realdataAvailable, type RealdataSet } from "../_util/realdata.ts";
import {
  containsBytes,
  EVIL_BLOCKS,
  EVIL_GPAS,
  holesShape,
  MAIN,
  MiB,
  startProxy,
  writePlugMap,
} from "./_qemu.ts";

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name:
      `vmem-dump proxy relays a real QEMU ${qemu} migration: verify passes, vetoes EVIL pages, filter drops them`,
    ignore: !qemuAvailable(qemu, "tiny"),
    fn: async (t) => {
      await using tmp = await tempDir("vmem-proxy-qemu-");
      const dir = tmp.path;
      await using src = await startGuest({ qemu, guest: "tiny" });
      await holesShape(src);

      await t.step(
        "(a) a clean migration through --mode verify; the destination resumes with equal memory",
        async () => {
          const proxy = await startProxy(dir, "a", ["--mode", "verify"]);
          try {
            await using dst = await startDestination({
              qemu,
              guest: "tiny",
              incoming: proxy.destination,
            });
            const info = await src.migrate(proxy.uri);
            assert.equal(info.status, "completed");
            const p = await proxy.done();
            assert.equal(p.code, 0, p.err);
            assert.match(p.err, /verified [\d,]+ page records, clean/);
            await dst.waitIncoming({ timeoutMs: 60_000 });
            await src.dumpGuestMemory(`${dir}/a-src.elf`);
            await dst.dumpGuestMemory(`${dir}/a-dst.elf`);
            const cmp = await compareGuestMemory(`${dir}/a-src.elf`, `${dir}/a-dst.elf`);
            assert.ok(
              cmp.equal,
              JSON.stringify({ d: cmp.differences.slice(0, 4), a: cmp.onlyInA, b: cmp.onlyInB }),
            );
            assert.ok(cmp.comparedBytes >= 128 * MiB + 100 * MiB);
            assert.equal((await dst.vmem()).size, 100 * MiB);
            await dst.resume();
            await dst.guestCmd("ping", { timeoutMs: 30_000 });
            assert.equal((await dst.runState()).running, true);
          } finally {
            proxy.kill();
          }
        },
      );

      await t.step(
        "(b) EVIL pages written during pause-before-switchover: verify reports exactly them",
        async () => {
          const proxy = await startProxy(dir, "b", ["--mode", "verify"]);
          try {
            await using dst = await startDestination({
              qemu,
              guest: "tiny",
              incoming: proxy.destination,
            });
            // The source may see "completed" (it does not wait for the destination) or a failure.
            await src.migrate(proxy.uri, {
              onPreSwitchover: async (g) => {
                for (const gpa of EVIL_GPAS) await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
              },
            }).catch(() => {});
            const p = await proxy.done();
            assert.equal(p.code, 3, p.err);
            const report = assertReport(p.out, "proxy") as {
              verify: {
                violations: { gpa: number; blockIndex: number }[];
                plugState: { layout: string };
              };
            };
            const verify = report.verify;
            assert.deepEqual(verify.violations.map((v) => v.gpa), EVIL_GPAS);
            assert.deepEqual(verify.violations.map((v) => v.blockIndex), EVIL_BLOCKS);
            assert.equal(verify.plugState.layout, qemu === "10" ? "early" : "late");
            assert.match(p.err, /not given QEMU_VM_EOF/);
            // The destination never completes the load (QEMU 7.2 and 10 exit on a failed incoming migration).
            await assert.rejects(dst.waitIncoming({ timeoutMs: 60_000 }));
          } finally {
            proxy.kill();
          }
        },
      );

      await t.step(
        "(c) the same migration through --mode filter completes without the EVIL pages",
        async () => {
          // QEMU 7.2 states the plug bitmap only after the RAM: give it out of band.
          const extra = qemu === "7.2" ? ["--plugmap", `${dir}/plugmap.json`] : [];
          if (qemu === "7.2") await writePlugMap(src, `${dir}/plugmap.json`);
          const proxy = await startProxy(dir, "c", ["--mode", "filter", ...extra]);
          try {
            await using dst = await startDestination({
              qemu,
              guest: "tiny",
              incoming: proxy.destination,
            });
            const info = await src.migrate(proxy.uri, {
              onPreSwitchover: async (g) => {
                for (const gpa of EVIL_GPAS) {
                  await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
                }
              },
            });
            assert.equal(info.status, "completed");
            const p = await proxy.done();
            assert.equal(p.code, 0, p.err);
            const stats = (assertReport(p.out, "proxy") as {
              filter: { dropped: { gpa: number }[]; droppedRecords: number };
            }).filter;
            assert.deepEqual(stats.dropped.map((d) => d.gpa), EVIL_GPAS);
            assert.equal(stats.droppedRecords, 2);
            await dst.waitIncoming({ timeoutMs: 60_000 });
            // The EVIL pages are not in the destination's memory.
            for (const gpa of EVIL_GPAS) {
              const f = `${dir}/c-${gpa.toString(16)}.raw`;
              await dst.pmemsave(gpa, 4096, f);
              assert.ok(
                !(await containsBytes(f, "EVIL-MIG")),
                `EVIL page at 0x${gpa.toString(16)} reached the destination`,
              );
            }
            await src.dumpGuestMemory(`${dir}/c-src.elf`);
            await dst.dumpGuestMemory(`${dir}/c-dst.elf`);
            const cmp = await compareGuestMemory(`${dir}/c-src.elf`, `${dir}/c-dst.elf`);
            assert.ok(cmp.equal, JSON.stringify(cmp.differences.slice(0, 4)));
            await dst.resume();
            await dst.guestCmd("ping", { timeoutMs: 30_000 });
          } finally {
            proxy.kill();
          }
        },
      );
    },
  });
}

const FIXTURE_QEMU: Record<Exclude<RealdataSet, "out">, QemuVersion> = {
  "out-small": "7.2",
  "out-q10": "10",
};

for (const set of ["out-small", "out-q10"] as const) {
  const qemu = FIXTURE_QEMU[set];
  Deno.test({
    name:
      `vmem-dump filter output of the real ${set} s3 stream loads into QEMU ${qemu} with the fixture's memory`,
    ignore: !qemuAvailable(qemu) || !realdataAvailable(set),
    fn: async () => {
      await using tmp = await tempDir("vmem-filter-qemu-");
      const mig = await realdata(set, "s3-malicious.mig");
      const out = `${tmp.path}/filtered.mig`;
      const f = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", MAIN, "filter", mig, out, "--json"],
      }).output();
      const report = assertReport(new TextDecoder().decode(f.stdout), "filter");
      assert.equal(f.code, 0, new TextDecoder().decode(f.stderr));
      assert.equal(report.droppedRecords, 2);
      // Same device configuration as the fixture (manifest.json qemu_cmdline).
      await using dst = await startDestination({
        qemu,
        incoming: `exec:cat ${out}`,
        vmcoreinfo: set === "out-small",
      });
      await dst.waitIncoming({ timeoutMs: 120_000 });
      await dst.dumpGuestMemory(`${tmp.path}/dst.elf`);
      const cmp = await compareGuestMemory(
        await realdata(set, "s3-malicious.elf"),
        `${tmp.path}/dst.elf`,
      );
      assert.ok(
        cmp.equal,
        JSON.stringify({ d: cmp.differences.slice(0, 4), a: cmp.onlyInA, b: cmp.onlyInB }),
      );
      assert.ok(cmp.comparedBytes >= 128 * MiB + 100 * MiB);
      for (const gpa of [0x104e01000, 0x106a01000]) {
        const raw = `${tmp.path}/evil-${gpa.toString(16)}.raw`;
        await dst.pmemsave(gpa, 4096, raw);
        assert.ok(!(await containsBytes(raw, "EVIL-MIG")));
      }
    },
  });
}

Deno.test({
  name:
    "vmem-dump proxy --mode verify relays a Linux guest with data in virtio-mem memory (QEMU 7.2, late layout)",
  ignore: !qemuAvailable("7.2"),
  fn: async () => {
    await using tmp = await tempDir("vmem-proxy-linux-");
    await using src = await startGuest({ qemu: "7.2" });
    await src.plugTo(200 * MiB);
    await src.fill(24); // pattern data, mostly in the hot-plugged (movable) memory
    await src.offlineBlock(0);
    await src.plugTo(100 * MiB); // leaves holes: the plug bitmap is not a prefix
    const proxy = await startProxy(tmp.path, "linux", ["--mode", "verify"]);
    try {
      await using dst = await startDestination({ qemu: "7.2", incoming: proxy.destination });
      assert.equal((await src.migrate(proxy.uri)).status, "completed");
      const p = await proxy.done();
      assert.equal(p.code, 0, p.err);
      await dst.waitIncoming({ timeoutMs: 120_000 });
      await src.dumpGuestMemory(`${tmp.path}/src.elf`);
      await dst.dumpGuestMemory(`${tmp.path}/dst.elf`);
      const cmp = await compareGuestMemory(`${tmp.path}/src.elf`, `${tmp.path}/dst.elf`);
      assert.ok(
        cmp.equal,
        JSON.stringify({ d: cmp.differences.slice(0, 4), a: cmp.onlyInA, b: cmp.onlyInB }),
      );
      assert.ok(
        cmp.loadsA.some((l) => l.gpa >= VMEM_GPA),
        "plugged virtio-mem memory was compared",
      );
      await dst.resume();
      await dst.guestCmd("ping", { timeoutMs: 30_000 });
    } finally {
      proxy.kill();
    }
  },
});
