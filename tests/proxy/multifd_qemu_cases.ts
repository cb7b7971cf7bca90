/**
 * Live multifd migrations between real QEMUs through `vmem-dump proxy`
 * (tiny guest, s2/s3 plug shape, TCG), registered per QEMU build by
 * multifd_qemu_q72_test.ts and multifd_qemu_q10_test.ts:
 *
 * - 2 and 4 channels, each mode: pass and verify complete and the
 *   destination's memory equals the source's; filter completes without the
 *   EVIL pages written into unplugged blocks during pause-before-switchover
 *   (removed from the multifd packets that carry them);
 * - verify catches those EVIL pages in a multifd channel: exit 3, exactly
 *   their gpas, and the destination never loads;
 * - multifd with zstd compression in verify mode: clean migration passes,
 *   EVIL pages are vetoed (verify reads the offsets in the packet headers).
 *
 * @module
 */

import assert from "node:assert/strict";
import { evilPage } from "../_util/guest.ts";
import { enableMultifd, type MultifdCompressionParameter } from "../_util/multifd.ts";
import {
  compareGuestMemory,
  qemuAvailable,
  type QemuGuest,
  type QemuVersion,
  startDestination,
  startGuest,
  tempDir,
} from "../_util/qemu.ts";
import {
  containsBytes,
  EVIL_BLOCKS,
  EVIL_GPAS,
  holesShape,
  MiB,
  startProxy,
  writePlugMap,
} from "./_qemu.ts";

interface ChannelSummaryJson {
  label: string;
  channel: number | null;
  packets: number;
  pages: number;
  zeroPages: number;
  syncPackets: number;
  droppedPages: number;
  dropped: { gpa: number; path: string; streamOffset: number }[];
}

/** The parts of the `proxy-report` these tests read (startProxy checks it against its schema). */
interface ProxyJson {
  verdict: "done" | "clean" | "violations";
  channels?: ChannelSummaryJson[];
  verify: {
    plugState: { layout: string | null };
    violations: { gpa: number; blockIndex: number; channel?: number; path: string }[];
  } | null;
}

const writeEvil = async (g: QemuGuest) => {
  for (const gpa of EVIL_GPAS) await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
};

/** One migration through the proxy into a fresh destination. */
async function migrateThroughProxy(
  src: QemuGuest,
  options: {
    qemu: QemuVersion;
    dir: string;
    name: string;
    channels: number;
    compression: MultifdCompressionParameter;
    proxyArgs: string[];
    evil: boolean;
  },
) {
  const { qemu, dir, name, channels, compression } = options;
  const proxy = await startProxy(dir, name, options.proxyArgs);
  const dst = await startDestination({ qemu, guest: "tiny", incoming: "defer" });
  try {
    await enableMultifd(dst, channels, compression);
    await dst.migrateIncoming(proxy.destination);
    let migrateError: unknown;
    await src.migrate(proxy.uri, options.evil ? { onPreSwitchover: writeEvil } : {}).catch((e) => {
      migrateError = e;
    });
    const p = await proxy.done();
    // The proxy's stderr and both QEMUs' logs, for a failed assertion on the outcome.
    const why = `${p.err}\n--- source QEMU ---\n${src.qemuLog().slice(-2000)}\n` +
      `--- destination QEMU ---\n${dst.qemuLog().slice(-2000)}`;
    return { p, why, json: p.json as ProxyJson | undefined, dst, migrateError };
  } catch (e) {
    proxy.kill();
    await dst.kill();
    throw e;
  }
}

/** The destination's memory equals the source's (the source's dump leaves unplugged memory out). */
async function assertSameMemory(src: QemuGuest, dst: QemuGuest, dir: string, name: string) {
  await src.dumpGuestMemory(`${dir}/${name}-src.elf`);
  await dst.dumpGuestMemory(`${dir}/${name}-dst.elf`);
  const cmp = await compareGuestMemory(`${dir}/${name}-src.elf`, `${dir}/${name}-dst.elf`);
  assert.ok(
    cmp.equal,
    JSON.stringify({ d: cmp.differences.slice(0, 4), a: cmp.onlyInA, b: cmp.onlyInB }),
  );
  assert.ok(cmp.comparedBytes >= 128 * MiB + 100 * MiB);
  await Deno.remove(`${dir}/${name}-src.elf`);
  await Deno.remove(`${dir}/${name}-dst.elf`);
}

function assertChannels(json: ProxyJson | undefined, channels: number): ChannelSummaryJson[] {
  const list = json?.channels ?? [];
  assert.deepEqual(list.map((c) => c.channel).toSorted(), [...Array(channels).keys()]);
  for (const c of list) assert.ok(c.packets > 0 && c.syncPackets >= 2, JSON.stringify(c));
  return list;
}

/**
 * The veto: exit 3, exactly the EVIL pages, each found in a multifd channel,
 * no EOF for the destination, which never loads.
 */
async function assertVetoed(
  r: { p: { code: number; err: string }; why: string; json: ProxyJson | undefined },
  dst: QemuGuest,
  channels: number,
): Promise<void> {
  assert.equal(r.p.code, 3, r.why);
  assert.equal(r.json?.verdict, "violations");
  const v = r.json!.verify!;
  assert.deepEqual(v.violations.map((x) => x.gpa), EVIL_GPAS);
  assert.deepEqual(v.violations.map((x) => x.blockIndex), EVIL_BLOCKS);
  for (const x of v.violations) {
    assert.ok(typeof x.channel === "number" && x.channel < channels, JSON.stringify(x));
  }
  assert.match(r.p.err, /at multifd channel \d+ offset 0x/);
  assert.match(r.p.err, /not given QEMU_VM_EOF/);
  await assert.rejects(dst.waitIncoming({ timeoutMs: 60_000 }));
}

/** Register the tests for one QEMU build. */
export function multifdProxyTests(qemu: QemuVersion): void {
  for (const channels of [2, 4]) {
    Deno.test({
      name:
        `vmem-dump proxy relays a real QEMU ${qemu} multifd migration (${channels} channels): pass, verify, filter, veto`,
      ignore: !qemuAvailable(qemu, "tiny"),
      fn: async (t) => {
        await using tmp = await tempDir("vmem-proxy-multifd-");
        const dir = tmp.path;
        await using src = await startGuest({ qemu, guest: "tiny" });
        await holesShape(src);
        await enableMultifd(src, channels);
        const common = { qemu, dir, channels, compression: "none" as const };

        for (const mode of ["pass", "verify"]) {
          await t.step(`--mode ${mode}: the migration completes with equal memory`, async () => {
            const r = await migrateThroughProxy(src, {
              ...common,
              name: mode,
              proxyArgs: ["--mode", mode],
              evil: false,
            });
            await using dst = r.dst;
            assert.equal(r.migrateError, undefined);
            assert.equal(r.p.code, 0, r.why);
            const list = assertChannels(r.json, channels);
            assert.ok(
              list.reduce((a, c) => a + c.pages, 0) >= 100,
              "the marker pages went through channels",
            );
            if (mode === "verify") {
              assert.equal(r.json?.verdict, "clean");
              assert.equal(r.json?.verify?.plugState.layout, qemu === "10" ? "early" : "late");
            }
            await dst.waitIncoming({ timeoutMs: 60_000 });
            await assertSameMemory(src, dst, dir, mode);
            await dst.resume();
            await dst.guestCmd("ping", { timeoutMs: 30_000 });
          });
        }

        await t.step(
          "--mode filter removes the EVIL pages from the multifd packets that carry them",
          async () => {
            // QEMU 7.2 states the plug bitmap only after the RAM: give it out of band.
            const extra = qemu === "7.2" ? ["--plugmap", `${dir}/plugmap.json`] : [];
            if (qemu === "7.2") await writePlugMap(src, `${dir}/plugmap.json`);
            const r = await migrateThroughProxy(src, {
              ...common,
              name: "filter",
              proxyArgs: ["--mode", "filter", ...extra],
              evil: true,
            });
            await using dst = r.dst;
            assert.equal(r.migrateError, undefined);
            assert.equal(r.p.code, 0, r.why);
            const list = assertChannels(r.json, channels);
            const dropped = list.flatMap((c) => c.dropped);
            assert.deepEqual(dropped.map((d) => d.gpa).toSorted((a, b) => a - b), EVIL_GPAS);
            for (const d of dropped) assert.notEqual(d.path, "", JSON.stringify(d));
            assert.equal(list.reduce((a, c) => a + c.droppedPages, 0), EVIL_GPAS.length);
            await dst.waitIncoming({ timeoutMs: 60_000 });
            for (const gpa of EVIL_GPAS) {
              const f = `${dir}/filter-${gpa.toString(16)}.raw`;
              await dst.pmemsave(gpa, 4096, f);
              assert.ok(
                !(await containsBytes(f, "EVIL-MIG")),
                `EVIL page at 0x${gpa.toString(16)}`,
              );
            }
            await assertSameMemory(src, dst, dir, "filter");
            await dst.resume();
            await dst.guestCmd("ping", { timeoutMs: 30_000 });
          },
        );

        await t.step(
          "--mode verify: EVIL pages in a multifd channel exit 3, the destination never loads",
          async () => {
            const r = await migrateThroughProxy(src, {
              ...common,
              name: "veto",
              proxyArgs: ["--mode", "verify"],
              evil: true,
            });
            await using dst = r.dst;
            await assertVetoed(r, dst, channels);
          },
        );
      },
    });
  }

  Deno.test({
    name: `vmem-dump proxy --mode verify checks a real QEMU ${qemu} multifd+zstd migration`,
    ignore: !qemuAvailable(qemu, "tiny"),
    fn: async (t) => {
      await using tmp = await tempDir("vmem-proxy-multifd-zstd-");
      const dir = tmp.path;
      const channels = 4;
      await using src = await startGuest({ qemu, guest: "tiny" });
      await holesShape(src);
      await enableMultifd(src, channels, "zstd");
      const common = { qemu, dir, channels, compression: "zstd" as const };
      await t.step("a clean migration completes with equal memory", async () => {
        const r = await migrateThroughProxy(src, {
          ...common,
          name: "clean",
          proxyArgs: ["--mode", "verify"],
          evil: false,
        });
        await using dst = r.dst;
        assert.equal(r.p.code, 0, r.why);
        assertChannels(r.json, channels);
        await dst.waitIncoming({ timeoutMs: 60_000 });
        await assertSameMemory(src, dst, dir, "clean");
      });
      await t.step("EVIL pages in compressed packets are vetoed from their headers", async () => {
        const r = await migrateThroughProxy(src, {
          ...common,
          name: "veto",
          proxyArgs: ["--mode", "verify"],
          evil: true,
        });
        await using dst = r.dst;
        // Caught in the channels that carried them, from the compressed packets' offsets.
        await assertVetoed(r, dst, channels);
      });
    },
  });
}
