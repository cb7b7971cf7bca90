/**
 * Red team (issue 9), proven with real QEMU 7.2 and 10.0: section idstrs
 * that QEMU's loader reads differently from their bytes
 * (`tests/migration/_redteam_attacks.ts`, `src/migration/_section_identity.ts`).
 *
 * - `ram\0x` is `ram` to QEMU (C-string compare): a FULL section of that
 *   name after `P/virtio-mem` loads a page into an unplugged block. Before
 *   the fix `verify`, `scan`, `filter` and `plugmap` all called it clean.
 * - `<path>/virtio-mem\0`, `<path>/virtio-mem-device-early\0` and the bare
 *   vmstate names `virtio-mem` / `virtio-mem-device-early` (compat entries)
 *   restate the plug state: QEMU ends with block 64 unplugged while every
 *   tool reported it plugged; with QEMU 10 the block's data even stays in
 *   memory (the early section's post-load does not discard).
 * - the same two hidden inside a body the vmdesc enlarges (the swallow):
 *   the ambiguity search did not see them as RAM or plug state.
 * - an instance id of 0xffffffff matches every device's alias id, so a
 *   restatement under it is the same device to QEMU, and to us.
 *
 * Each stream is loaded by a real destination QEMU of the same version (the
 * page or the final plug state is read back over the gdbstub and QMP), then
 * every consumer must refuse it.
 */

import assert from "node:assert/strict";
import { decodeMigration } from "../../src/migration/decoder.ts";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { BYTE_CHUNKINGS, chunkedStream } from "../_util/chunkings.ts";
import { qemuAvailable, type QemuVersion, startTinyGuest, tempDir } from "../_util/qemu.ts";
import {
  ATTACK_BLOCK,
  ATTACK_BLOCK_SIZE,
  ATTACK_UNPLUGGED_BLOCK,
  ATTACK_VMEM_GPA,
  baseStream,
  encodeRecords,
} from "./_device_state_attacks.ts";
import {
  assertConsumers,
  assertQemuOutcome,
  decoderVerdict,
  type Expectation,
} from "./_attack_consumers.ts";
import { IDSTR_ATTACKS, type IdstrAttackName } from "./_redteam_attacks.ts";
import { tinyStream } from "./_stream_util.ts";

const MiB = 1 << 20;
/** The marker page the tiny guest wrote into block 64, which the attacks unplug. */
const BLOCK_64_GPA = ATTACK_VMEM_GPA + ATTACK_UNPLUGGED_BLOCK * ATTACK_BLOCK_SIZE;

function expectations(qemu: QemuVersion): Record<IdstrAttackName, Expectation> {
  const late = qemu === "7.2";
  const refused = {
    verify: 1,
    plugmap: 1,
    plugmapPipe: late ? 1 : 0,
    scan: 1,
    inspect: 0,
  } as const;
  // QEMU ends with block 64 unplugged; 7.2's device post-load discards its data, 10.0's
  // early-section post-load does not: the marker page stays in an unplugged block.
  const unplugs64 = {
    loads: "stream",
    size: 98 * MiB,
    page: { gpa: BLOCK_64_GPA, startsWith: late ? "\0\0\0\0" : "DATA block=064" },
  } as const;
  return {
    "nul-ram-in-tail": { qemu: { loads: "page", tag: "EVIL-NUL" }, ...refused },
    "nul-plug-state-in-tail": { qemu: unplugs64, ...refused },
    "compat-plug-state-in-tail": { qemu: unplugs64, ...refused },
    "swallow-nul-ram": { qemu: { loads: "page", tag: "EVIL-SWALLOW-NUL" }, ...refused },
    "swallow-compat-plug-state": { qemu: unplugs64, ...refused },
    "alias-instance-plug-state": {
      qemu: unplugs64,
      verify: 3,
      violation: { reason: "plug-state-replaced", gpa: BLOCK_64_GPA },
      plugmap: 1,
      plugmapPipe: late ? 1 : 0,
      scan: 3,
      inspect: 0,
      inspectShows: (r) =>
        r.virtioMem.filter((v) => v.section === (late ? "device" : "early")).length > 1,
    },
    "nul-subsection-name": { qemu: { loads: "stream", size: 100 * MiB }, ...refused },
  };
}

Deno.test("the decoder refuses every idstr attack on the bundled 7.2 stream, however it is chunked", async (t) => {
  const base = await baseStream(await tinyStream());
  const want: Record<IdstrAttackName, RegExp> = {
    "nul-ram-in-tail": /idstr "ram\\u0000x" contains a NUL byte.*as "ram"/,
    "nul-plug-state-in-tail": /idstr ".*\/virtio-mem\\u0000" contains a NUL byte/,
    "compat-plug-state-in-tail":
      /idstr "virtio-mem" is a virtio-mem vmstate name without a device path/,
    "swallow-nul-ram": /followed by a FULL section "ram\\u0000x"/,
    "swallow-compat-plug-state": /followed by a FULL section "virtio-mem"/,
    "alias-instance-plug-state": /^clean$/, // decoded as what it is; verify flags it (below)
    "nul-subsection-name":
      /bad-virtio-mem@\d+: .*subsection name "virtio\/64bit_features\\u0000" contains a NUL byte/,
  };
  for (const name of Object.keys(IDSTR_ATTACKS) as IdstrAttackName[]) {
    await t.step(name, async () => {
      const bytes = IDSTR_ATTACKS[name](base);
      const whole = await decoderVerdict(chunkedStream(bytes, BYTE_CHUNKINGS[0]!));
      assert.match(whole, want[name]);
      for (const chunking of BYTE_CHUNKINGS.slice(1)) {
        assert.equal(await decoderVerdict(chunkedStream(bytes, chunking)), whole, chunking.name);
      }
    });
  }
  await t.step("a RAMBlock idstr with a NUL byte (QEMU reads the block before it)", async () => {
    const records = base.records.map((r) =>
      r.kind === "ram-mem-size"
        ? { ...r, blocks: r.blocks.map((b, i) => i === 0 ? { ...b, idstr: `${b.idstr}\0` } : b) }
        : r
    );
    assert.match(
      await decoderVerdict(chunkedStream(encodeRecords(records), BYTE_CHUNKINGS[0]!)),
      /^bad-record@\d+: .*RAMBlock idstr ".*\\u0000" contains a NUL byte/,
    );
  });
  await t.step("the honest stream is still proven", async () => {
    for await (const _ of decodeMigration(bytesReader(base.bytes))) { /* decode */ }
  });
});

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name:
      `real QEMU ${qemu} loads sections whose idstr it reads differently from its bytes; every consumer now refuses them`,
    ignore: !qemuAvailable(qemu, "tiny"),
    sanitizeResources: false,
    fn: async (t) => {
      await using tmp = await tempDir("vmem-redteam-idstr-");
      const basePath = `${tmp.path}/base.mig`;
      {
        await using src = await startTinyGuest({ qemu });
        await src.guest.plugHolesShape();
        assert.equal(src.guest.plugState()[ATTACK_BLOCK], 0);
        assert.equal(src.guest.plugState()[ATTACK_UNPLUGGED_BLOCK], 1);
        await src.migrateToFile(basePath);
      }
      const base = await baseStream(await Deno.readFile(basePath));
      const want = expectations(qemu);
      for (const name of Object.keys(IDSTR_ATTACKS) as IdstrAttackName[]) {
        await t.step(name, async () => {
          const e = want[name];
          const bytes = IDSTR_ATTACKS[name](base);
          const path = `${tmp.path}/${name}.mig`;
          await Deno.writeFile(path, bytes);
          await assertQemuOutcome(qemu, path, e.qemu, name);
          await assertConsumers(path, bytes, e, name);
        });
      }
    },
  });
}
