/**
 * The return path through `vmem-dump proxy`, between real QEMUs (7.2 and
 * 10.0, tiny guest, TCG):
 *
 * (a) a precopy migration with `return-path` (and `switchover-ack` on 10.0,
 *     with the VM running so the source really waits for the ACK) completes
 *     through the proxy in pass, filter and verify modes; the PONG and SHUT
 *     (and SWITCHOVER_ACK) are relayed; the destination runs with the
 *     source's memory;
 * (b) a veto with the return path: pages written into unplugged blocks
 *     during pause-before-switchover make the proxy exit 3, the destination
 *     never loads, and the source's migration ends `failed` (10.0: with the
 *     destination's own SHUT 1 relayed) and its VM resumes;
 * (c) the same veto without a return path: the source reports `completed`
 *     although the destination never started (what docs/filter-verify-proxy.md
 *     warns about).
 */

import assert from "node:assert/strict";
import { evilPage } from "../_util/guest.ts";
import {
  compareGuestMemory,
  qemuAvailable,
  type QemuGuest,
  type QemuVersion,
  startDestination,
  startGuest,
  tempDir,
} from "../_util/qemu.ts";
import { EVIL_BLOCKS, EVIL_GPAS, holesShape, MiB, startProxy, writePlugMap } from "./_qemu.ts";

/** The capabilities of a return-path migration on this QEMU. */
function returnPathCaps(qemu: QemuVersion, on: boolean) {
  const caps = [{ capability: "return-path", state: on }];
  // switchover-ack needs return-path on both sides (QEMU >= 8.1).
  if (qemu === "10") caps.push({ capability: "switchover-ack", state: on });
  return caps;
}

/** A destination that loads from the proxy with the same capabilities as the source. */
async function destinationFor(
  qemu: QemuVersion,
  proxy: { destination: string },
  returnPath: boolean,
): Promise<QemuGuest> {
  const dst = await startDestination({ qemu, guest: "tiny", incoming: "defer" });
  try {
    await dst.qmp("migrate-set-capabilities", { capabilities: returnPathCaps(qemu, returnPath) });
    await dst.migrateIncoming(proxy.destination);
  } catch (e) {
    await dst.kill();
    throw e;
  }
  return dst;
}

async function writeEvilPages(g: QemuGuest): Promise<void> {
  for (const gpa of EVIL_GPAS) await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
}

interface ProxyJson {
  ok: boolean;
  returnPath?: { opened: boolean; messages: Record<string, number>; shut: number | null };
  verdict: "clean" | "done" | "violations";
  verify: { violationCount: number; violations: { gpa: number; blockIndex: number }[] } | null;
  filter: { droppedRecords: number } | null;
}

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name:
      `vmem-dump proxy relays the return path of a real QEMU ${qemu} migration; a veto fails the source, which resumes`,
    ignore: !qemuAvailable(qemu, "tiny"),
    fn: async (t) => {
      await using tmp = await tempDir("vmem-proxy-rp-");
      const dir = tmp.path;
      await using src = await startGuest({ qemu, guest: "tiny" });
      await holesShape(src);
      if (qemu === "7.2") await writePlugMap(src, `${dir}/plugmap.json`);

      for (const mode of ["pass", "filter", "verify"] as const) {
        await t.step(`(a) ${mode} mode with the return path completes`, async () => {
          const extra = mode === "filter" && qemu === "7.2"
            ? ["--plugmap", `${dir}/plugmap.json`] // the 7.2 bitmap comes after the RAM
            : [];
          const proxy = await startProxy(dir, `a-${mode}`, ["--mode", mode, ...extra]);
          try {
            await using dst = await destinationFor(qemu, proxy, true);
            await src.qmp("migrate-set-capabilities", {
              capabilities: returnPathCaps(qemu, true),
            });
            // A running VM: with switchover-ack the source waits for the destination's ACK.
            const st = await src.runState();
            if (st.status === "postmigrate" || !st.running) await src.resume();
            const info = await src.migrate(proxy.uri, { stopFirst: false });
            assert.equal(info.status, "completed");
            const p = await proxy.done();
            assert.equal(p.code, 0, p.err);
            const json = p.json as unknown as ProxyJson;
            assert.equal(json.returnPath?.opened, true);
            const messages = json.returnPath!.messages;
            assert.equal(messages.PONG, 1, JSON.stringify(messages));
            assert.equal(messages.SHUT, 1);
            assert.equal(json.returnPath!.shut, 0);
            if (qemu === "10") assert.equal(messages.SWITCHOVER_ACK, 1);
            else assert.equal(messages.SWITCHOVER_ACK, undefined);
            assert.equal(json.verdict, mode === "verify" ? "clean" : "done");
            if (mode === "verify") assert.equal(json.verify?.violationCount, 0);
            else assert.equal(json.verify, null);
            if (mode === "filter") assert.equal(json.filter?.droppedRecords, 0);
            else assert.equal(json.filter, null);
            await dst.waitIncoming({ timeoutMs: 60_000 });
            await src.pause(); // the source is in postmigrate; compare with it stopped
            await src.dumpGuestMemory(`${dir}/a-${mode}-src.elf`);
            await dst.dumpGuestMemory(`${dir}/a-${mode}-dst.elf`);
            const cmp = await compareGuestMemory(
              `${dir}/a-${mode}-src.elf`,
              `${dir}/a-${mode}-dst.elf`,
            );
            assert.ok(cmp.equal, JSON.stringify(cmp.differences.slice(0, 4)));
            assert.ok(cmp.comparedBytes >= 128 * MiB + 100 * MiB);
            await dst.resume();
            await dst.guestCmd("ping", { timeoutMs: 30_000 });
          } finally {
            proxy.kill();
          }
        });
      }

      await t.step(
        "(b) a veto with the return path: the source's migration fails and its VM resumes",
        async () => {
          const proxy = await startProxy(dir, "b", ["--mode", "verify"]);
          try {
            await using dst = await destinationFor(qemu, proxy, true);
            await src.qmp("migrate-set-capabilities", {
              capabilities: returnPathCaps(qemu, true),
            });
            const e = await src.migrate(proxy.uri, { onPreSwitchover: writeEvilPages })
              .then(() => undefined, (x: unknown) => x);
            assert.ok(e instanceof Error, "the source's migration must not complete");
            const info = await src.qmp<{ status: string; "error-desc"?: string }>("query-migrate");
            assert.equal(info.status, "failed");
            // 10.0's destination reports its failed load on the return path; the proxy relays it.
            if (qemu === "10") assert.match(info["error-desc"] ?? "", /Sibling indicated error 1/);
            const p = await proxy.done();
            assert.equal(p.code, 3, p.err);
            const json = p.json as unknown as ProxyJson;
            assert.deepEqual(json.verify?.violations.map((v) => v.gpa), EVIL_GPAS);
            assert.deepEqual(json.verify?.violations.map((v) => v.blockIndex), EVIL_BLOCKS);
            await assert.rejects(dst.waitIncoming({ timeoutMs: 60_000 }));
            // The VM stayed on the source, paused: it resumes.
            assert.notEqual((await src.runState()).status, "running");
            await src.resume();
            assert.equal((await src.runState()).running, true);
            await src.guestCmd("ping", { timeoutMs: 30_000 });
          } finally {
            proxy.kill();
          }
        },
      );

      await t.step(
        "(c) the same veto without a return path: the source cannot be told and says completed",
        async () => {
          const proxy = await startProxy(dir, "c", ["--mode", "verify"]);
          try {
            await using dst = await destinationFor(qemu, proxy, false);
            await src.qmp("migrate-set-capabilities", {
              capabilities: returnPathCaps(qemu, false),
            });
            const info = await src.migrate(proxy.uri, { onPreSwitchover: writeEvilPages });
            assert.equal(info.status, "completed");
            const p = await proxy.done();
            assert.equal(p.code, 3, p.err);
            await assert.rejects(dst.waitIncoming({ timeoutMs: 60_000 }));
          } finally {
            proxy.kill();
          }
        },
      );
    },
  });
}
