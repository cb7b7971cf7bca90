/**
 * Red team (issue 9), proven with real QEMU 7.2 and 10.0: the swallow
 * (a vmdesc that enlarges a device's body to hide a section in it) with a
 * link in the chain. The ambiguity search looked for a footer of a section
 * id the stream uses, followed by RAM or plug state. QEMU reads on over
 * anything it accepts, so the hidden `ram` section can follow
 *
 * - a harmless FULL section under a fresh section id (QEMU only checks that
 *   its footer repeats the id): its footer's id was never used elsewhere;
 * - a command (no footer at all): POSTCOPY_ADVISE without payload, which a
 *   destination without postcopy accepts and ignores.
 *
 * Before the fix `verify`, `scan`, `filter` and `plugmap` called both clean
 * while QEMU loaded the page into an unplugged block. Now a footer of any id,
 * and any run of commands after it, leads to the check; `filter` of a
 * late-layout file says so too (its first pass found it).
 */

import assert from "node:assert/strict";
import { BYTE_CHUNKINGS, chunkedStream } from "../_util/chunkings.ts";
import { qemuAvailable, type QemuVersion, startTinyGuest, tempDir } from "../_util/qemu.ts";
import { ATTACK_BLOCK, baseStream } from "./_device_state_attacks.ts";
import {
  assertConsumers,
  assertQemuOutcome,
  decoderVerdict,
  type Expectation,
  HONEST,
} from "./_attack_consumers.ts";
import { SWALLOW_CHAIN_ATTACKS, type SwallowChainAttackName } from "./_redteam_attacks.ts";
import { tinyStream } from "./_stream_util.ts";
import { runCli } from "../_util/cli.ts";

function expectations(qemu: QemuVersion): Record<SwallowChainAttackName, Expectation> {
  const refused = {
    verify: 1,
    plugmap: 1,
    plugmapPipe: qemu === "7.2" ? 1 : 0, // a pipe in the early layout stops before the tail
    scan: 1,
    inspect: 0,
  } as const;
  return {
    "swallow-via-fresh-id": { qemu: { loads: "page", tag: "EVIL-SWALLOW-ID" }, ...refused },
    "swallow-via-command": { qemu: { loads: "page", tag: "EVIL-SWALLOW-CMD" }, ...refused },
  };
}

Deno.test("the decoder finds a swallowed section behind a fresh section id or a command, however the stream is chunked", async (t) => {
  const base = await baseStream(await tinyStream());
  const want: Record<SwallowChainAttackName, RegExp> = {
    "swallow-via-fresh-id":
      /^unproven@\d+: .*footer of section 30583 followed by a FULL section "ram"/,
    "swallow-via-command": /^unproven@\d+: .*followed by 1 command, then a FULL section "ram"/,
  };
  for (const name of Object.keys(SWALLOW_CHAIN_ATTACKS) as SwallowChainAttackName[]) {
    await t.step(name, async () => {
      const bytes = SWALLOW_CHAIN_ATTACKS[name](base);
      const whole = await decoderVerdict(chunkedStream(bytes, BYTE_CHUNKINGS[0]!));
      assert.match(whole, want[name]);
      for (const chunking of BYTE_CHUNKINGS.slice(1)) {
        assert.equal(await decoderVerdict(chunkedStream(bytes, chunking)), whole, chunking.name);
      }
    });
  }
});

Deno.test("filter names the hidden section of a late-layout stream, not a missing plug state", async () => {
  // The first pass (for the plug state of a 7.2 stream) cannot prove the device state; the
  // in-band pass that follows would only have said the plug state was unknown at the first page.
  const base = await baseStream(await tinyStream());
  await using tmp = await tempDir("vmem-redteam-swallow-filter-");
  for (const name of Object.keys(SWALLOW_CHAIN_ATTACKS) as SwallowChainAttackName[]) {
    const path = `${tmp.path}/${name}.mig`;
    await Deno.writeFile(path, SWALLOW_CHAIN_ATTACKS[name](base));
    const r = await runCli(["filter", path, `${path}.out`]);
    assert.equal(r.code, 1, `${name}: ${r.err}`);
    assert.match(r.err, /cannot be proven: the bytes at offset 0x[0-9a-f]+ read as the footer/);
    await assert.rejects(Deno.stat(`${path}.out`), Deno.errors.NotFound);
  }
});

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name:
      `real QEMU ${qemu} loads RAM hidden behind a fresh section id or a command; every consumer now refuses it`,
    ignore: !qemuAvailable(qemu, "tiny"),
    sanitizeResources: false,
    fn: async (t) => {
      await using tmp = await tempDir("vmem-redteam-swallow-");
      const basePath = `${tmp.path}/base.mig`;
      {
        await using src = await startTinyGuest({ qemu });
        await src.guest.plugHolesShape();
        assert.equal(src.guest.plugState()[ATTACK_BLOCK], 0);
        await src.migrateToFile(basePath);
      }
      const honest = await Deno.readFile(basePath);
      const base = await baseStream(honest);
      const want = expectations(qemu);
      await t.step("the honest stream verifies clean", async () => {
        await assertConsumers(basePath, honest, HONEST, "honest");
      });
      for (const name of Object.keys(want) as SwallowChainAttackName[]) {
        await t.step(name, async () => {
          const bytes = SWALLOW_CHAIN_ATTACKS[name](base);
          const path = `${tmp.path}/${name}.mig`;
          await Deno.writeFile(path, bytes);
          await assertQemuOutcome(qemu, path, want[name].qemu, name);
          await assertConsumers(path, bytes, want[name], name);
        });
      }
    },
  });
}
