/**
 * Red team (issue 9), proven with real QEMU 7.2 and 10.0: a second `ram`
 * START section with another RAMBlock list (MEM_SIZE). QEMU accepts one at
 * any time (migration/ram.c `ram_load_precopy` re-checks, and may resize,
 * the blocks it names; it needs no block listed) and keeps the plug state
 * and every page it loaded. The verifier used to start afresh at every list:
 * the early plug state (QEMU 10) or the pages it held (QEMU 7.2) were
 * forgotten, so a page in an unplugged block after (or before) the repeated
 * list verified clean. Now a repeated list must repeat the first exactly
 * (the decoder refuses any other) and changes nothing downstream.
 *
 * `repeated-list-no-device-section` shows the page staying in the unplugged
 * block: without the `P/virtio-mem` section QEMU never runs the device's
 * post-load discard (`virtio_mem_restore_unplugged`), which otherwise wipes
 * unplugged blocks after all RAM is in. `filter` passes the streams `verify`
 * reports (a page in an unplugged block) without the page: the destination
 * loads its output and reads zeros there.
 */

import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { bytesReader, StreamByteReader } from "../../src/io/byte_reader.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import { relayMigration } from "../../src/proxy/relay.ts";
import { BYTE_CHUNKINGS, chunkedStream } from "../_util/chunkings.ts";
import { execCli, runCli } from "../_util/cli.ts";
import { qemuAvailable, type QemuVersion, startTinyGuest, tempDir } from "../_util/qemu.ts";
import { ATTACK_BLOCK, ATTACK_PAGE_GPA, baseStream } from "./_device_state_attacks.ts";
import { assertConsumers, assertQemuOutcome, type Expectation } from "./_attack_consumers.ts";
import { MEM_SIZE_ATTACKS, type MemSizeAttackName } from "./_redteam_attacks.ts";
import { tinyStream } from "./_stream_util.ts";

const MiB = 1 << 20;

/** Attacks per QEMU version, with what QEMU and every consumer do. */
function expectations(qemu: QemuVersion): Partial<Record<MemSizeAttackName, Expectation>> {
  const late = qemu === "7.2";
  // Every reader stops at the changed list (a pipe's plugmap too: it comes before any page).
  const refused = { verify: 1, plugmap: 1, plugmapPipe: 1, scan: 1, inspect: 1 } as const;
  return {
    // QEMU loads the page, then the device's post-load discards the unplugged block.
    "repeated-list": {
      qemu: {
        loads: "stream",
        size: 100 * MiB,
        page: { gpa: ATTACK_PAGE_GPA, startsWith: "\0\0\0\0" },
      },
      verify: 3,
      violation: { reason: "unplugged-block", gpa: ATTACK_PAGE_GPA },
      plugmap: 0,
      plugmapPipe: 0,
      scan: 3,
      inspect: 0,
      inspectShows: () => true, // a repeated list is no anomaly of the tail; verify names the page
    },
    // The early layout only: the late layout has no plug state without that section.
    ...(late ? {} : {
      "repeated-list-no-device-section": {
        qemu: {
          loads: "stream",
          size: 100 * MiB,
          page: { gpa: ATTACK_PAGE_GPA, startsWith: "EVIL-MEMSIZE-KEPT" },
        },
        verify: 3,
        violation: { reason: "unplugged-block", gpa: ATTACK_PAGE_GPA },
        plugmap: 1, // an early section without its device section
        plugmapPipe: 0,
        scan: 3,
        inspect: 0,
        inspectShows: () => true,
      } satisfies Expectation,
    }),
    "list-without-vmem-block": { qemu: { loads: "stream", size: 100 * MiB }, ...refused },
    "list-resizes-vmem-block": { qemu: { loads: "refused" }, ...refused },
  };
}

Deno.test("the decoder accepts a repeated block list and refuses a changed one, however the stream is chunked", async (t) => {
  const base = await baseStream(await tinyStream());
  const verdict = async (stream: ReadableStream<Uint8Array>) => {
    try {
      let lists = 0;
      for await (const r of decodeMigration(new StreamByteReader(stream))) {
        if (r.kind === "ram-mem-size") lists++;
      }
      return `${lists} lists`;
    } catch (e) {
      assert.ok(e instanceof FormatError, String(e));
      return `${e.code}@${e.offset}: ${e.message}`;
    }
  };
  const want: Record<MemSizeAttackName, RegExp> = {
    "repeated-list": /^2 lists$/,
    "repeated-list-no-device-section": /^2 lists$/,
    "list-without-vmem-block": /bad-record@\d+: .*second RAMBlock list differs from the first/,
    "list-resizes-vmem-block": /bad-record@\d+: .*second RAMBlock list differs from the first/,
  };
  for (const name of Object.keys(MEM_SIZE_ATTACKS) as MemSizeAttackName[]) {
    await t.step(name, async () => {
      const bytes = MEM_SIZE_ATTACKS[name](base);
      const whole = await verdict(chunkedStream(bytes, BYTE_CHUNKINGS[0]!));
      assert.match(whole, want[name]);
      for (const chunking of BYTE_CHUNKINGS.slice(1)) {
        assert.equal(await verdict(chunkedStream(bytes, chunking)), whole, chunking.name);
      }
    });
  }
});

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name:
      `real QEMU ${qemu} accepts a second RAMBlock list and keeps its plug state; verify no longer forgets it`,
    ignore: !qemuAvailable(qemu, "tiny"),
    sanitizeResources: false,
    fn: async (t) => {
      await using tmp = await tempDir("vmem-redteam-memsize-");
      const basePath = `${tmp.path}/base.mig`;
      {
        await using src = await startTinyGuest({ qemu });
        await src.guest.plugHolesShape();
        assert.equal(src.guest.plugState()[ATTACK_BLOCK], 0);
        await src.migrateToFile(basePath);
      }
      const base = await baseStream(await Deno.readFile(basePath));
      const want = expectations(qemu);
      for (const name of Object.keys(want) as MemSizeAttackName[]) {
        await t.step(name, async () => {
          const e = want[name]!;
          const bytes = MEM_SIZE_ATTACKS[name](base);
          const path = `${tmp.path}/${name}.mig`;
          await Deno.writeFile(path, bytes);
          await assertQemuOutcome(qemu, path, e.qemu, name);
          await assertConsumers(path, bytes, e, name);
          if (e.verify !== 3) return;
          // filter drops the page (verify of its output is clean): the real destination loads
          // the output, and the page reads back as zeros.
          const out = `${path}.without-page`;
          const filtered = await runCli(["filter", path, out]);
          assert.equal(filtered.code, 0, `${name}: filter: ${filtered.err}`);
          assert.equal((await runCli(["verify", out])).code, 0, `${name}: verify of the output`);
          await assertQemuOutcome(qemu, out, {
            loads: "stream",
            size: 100 * MiB,
            page: { gpa: ATTACK_PAGE_GPA, startsWith: "\0".repeat(64) },
          }, `${name}, filtered`);
        });
      }
      if (qemu !== "7.2") return;
      // The late layout without its device section carries no plug state at all: QEMU keeps
      // the page in the block its own command line has unplugged. Nothing may call it clean
      // (verify, filter and the proxy said 0 and passed it on before).
      await t.step("repeated-list-no-device-section (no plug state in the stream)", async () => {
        const name = "repeated-list-no-device-section";
        const bytes = MEM_SIZE_ATTACKS[name](base);
        const path = `${tmp.path}/${name}.mig`;
        await Deno.writeFile(path, bytes);
        // (The device keeps the size its command line gave it: no section told it otherwise.)
        await assertQemuOutcome(qemu, path, {
          loads: "stream",
          page: { gpa: ATTACK_PAGE_GPA, startsWith: "EVIL-MEMSIZE-KEPT" },
        }, name);
        const noState = (r: { code: number; err: string }, what: string) => {
          assert.equal(r.code, 1, `${what}: ${r.err}`);
          assert.match(r.err, /no-plug-state|carries no virtio-mem plug state/, what);
        };
        for (const args of [["verify", path], ["verify", "--single-pass", path], ["scan", path]]) {
          noState(await runCli(args), args.join(" "));
        }
        noState(await execCli(["verify", "-"], { stdinFile: path }), "verify - < file");
        const out = `${path}.filtered`;
        noState(await runCli(["filter", path, out]), "filter");
        await assert.rejects(Deno.stat(out), Deno.errors.NotFound, "no filter output");
        // The proxy's library relay, in both judging modes: no QEMU_VM_EOF goes out.
        const eofAt = bytes.lastIndexOf(0x06) - 1;
        for (const mode of ["verify", "filter"] as const) {
          let sent = 0;
          const relayed = await relayMigration(bytesReader(bytes), (c) => {
            sent += c.byteLength;
            return Promise.resolve();
          }, { mode }).then(() => undefined, (x: unknown) => x);
          // (filter of a late-layout pipe without a plug map is refused at its first page.)
          assert.ok(
            relayed instanceof FormatError && (mode === "filter" || relayed.code === "unproven"),
            `proxy ${mode}: ${relayed}`,
          );
          assert.ok(sent <= eofAt, `proxy ${mode} forwarded ${sent} bytes, EOF at ${eofAt}`);
        }
      });
    },
  });
}
