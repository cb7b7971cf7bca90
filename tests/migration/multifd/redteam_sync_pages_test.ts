/**
 * Red team, with real QEMU: a hostile source puts a page into a SYNC packet.
 * QEMU 7.2 loads the pages of every packet whatever its flags; QEMU 10.0
 * loads them too (upstream b93d897ea2, "Fix compat with QEMU < 9.0": its
 * receive thread sets `has_data = normal_num || zero_num` for SYNC packets,
 * because sources before 9.0 send pages with SYNC). So the verifier must
 * check SYNC packets like any other (docs/security.md, "multifd").
 *
 * A real migration is captured, the last SYNC packet of channel 0 gets one
 * more page, and the result is replayed into a fresh real destination:
 * with the page in a plugged block the destination has the page's bytes
 * (QEMU loaded it); with the page in an unplugged block the channel
 * verifier reports exactly that page.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bytesReader } from "../../../src/io/byte_reader.ts";
import { decodeMigrationBatches } from "../../../src/migration/decoder.ts";
import {
  isMultifdControlRecord,
  MultifdChannelVerifier,
  type MultifdRamPacketRecord,
  type MultifdRecord,
  writeMultifdRamPacketHeader,
} from "../../../src/migration/multifd/mod.ts";
import type { MigrationRecord } from "../../../src/migration/types.ts";
import { concatBytes } from "../../_util/chunkings.ts";
import { evilPage } from "../../_util/guest.ts";
import {
  captureMultifdMigration,
  elfMemoryReader,
  enableMultifd,
  replayMultifdMigration,
} from "../../_util/multifd.ts";
import { decodeMultifdBytes, encodeMultifdBytes } from "../../_util/multifd_codec.ts";
import { BLOCK } from "../../proxy/_qemu.ts";
import {
  qemuAvailable,
  type QemuVersion,
  startDestination,
  tempDir,
  VMEM_GPA,
} from "../../_util/qemu.ts";

const PAGE = 4096;

async function decodeMain(bytes: Uint8Array): Promise<MigrationRecord[]> {
  const out: MigrationRecord[] = [];
  for await (const batch of decodeMigrationBatches(bytesReader(bytes))) out.push(...batch);
  return out;
}

/** Channel records with one more page in the last SYNC packet. */
function withPageInLastSync(
  records: readonly MultifdRecord[],
  ramBlock: string,
  ramOffset: number,
  data: Uint8Array,
): MultifdRecord[] {
  const i = records.findLastIndex((r) => r.kind === "multifd-ram-packet" && r.sync);
  assert.ok(i > 0, "the channel has a SYNC packet");
  const p = records[i] as MultifdRamPacketRecord;
  // 10.0's SYNC packets are empty; 7.2's may carry pages: kept when they are of the same block.
  const keep = p.normalRamOffsets.length > 0 && p.ramBlock === ramBlock;
  const normal = keep ? [...p.normalRamOffsets, ramOffset] : [ramOffset];
  const zero = keep ? p.zeroRamOffsets : [];
  assert.ok(normal.length + zero.length <= 128);
  const header = writeMultifdRamPacketHeader({
    flags: p.flags,
    pagesAlloc: 128,
    normalRamOffsets: normal,
    zeroRamOffsets: zero,
    packetNum: p.packetNum,
    ramBlock,
  }, PAGE);
  const out = [...records];
  out[i] = {
    ...p,
    normalRamOffsets: normal,
    zeroRamOffsets: [...zero],
    pagesAlloc: 128,
    nextPacketSize: normal.length * PAGE,
    ramBlock,
    header,
    data: keep ? concatBytes([p.data, data]) : data,
  };
  return out;
}

for (const qemu of ["7.2", "10"] as QemuVersion[]) {
  Deno.test({
    name: `red team: QEMU ${qemu} loads a page carried by a SYNC packet; the verifier checks it`,
    ignore: !qemuAvailable(qemu, "tiny"),
    fn: async () => {
      await using tmp = await tempDir("vmem-multifd-sync-");
      const capture = await captureMultifdMigration({ qemu, channels: 2, dir: tmp.path });
      const mainBytes = await Deno.readFile(capture.main);
      const main = await decodeMain(mainBytes);
      const memSize = main.find((r) => r.kind === "ram-mem-size");
      assert.ok(memSize?.kind === "ram-mem-size");
      const vmem = memSize.blocks.find((b) => b.idstr.endsWith("/vmem0mem"))!;
      const channels = await Promise.all(
        capture.channels.map(async (p) => decodeMultifdBytes(await Deno.readFile(p))),
      );

      // Block 1 is plugged, block 20 is not (the s2/s3 shape: 0-13 and 64-99 plugged).
      assert.equal(capture.plugged[1], 1);
      assert.equal(capture.plugged[20], 0);
      const plugged = 1 * BLOCK + 7 * PAGE;
      const unplugged = 20 * BLOCK + 7 * PAGE;

      // The verdict: the page in the unplugged block is found, in the SYNC packet's slot.
      const verify = (ramOffset: number) => {
        const v = new MultifdChannelVerifier({ channel: 0 });
        for (const r of main) if (isMultifdControlRecord(r)) v.control(r);
        const crafted = withPageInLastSync(
          channels[0]!,
          vmem.idstr,
          ramOffset,
          evilPage("SYNC-PG", VMEM_GPA + ramOffset),
        );
        for (const r of crafted) if (r.kind === "multifd-ram-packet") v.checkPacket(r);
        return { crafted, violations: v.violations };
      };
      assert.deepEqual(verify(plugged).violations, []);
      assert.deepEqual(
        verify(unplugged).violations.map((x) => [x.gpa, x.channel, x.reason]),
        [[VMEM_GPA + unplugged, 0, "unplugged-block"]],
      );

      // QEMU loads it: replay the migration with the page in the plugged block.
      const crafted = verify(plugged).crafted;
      const bytes = [
        await encodeMultifdBytes(crafted),
        ...(await Promise.all(capture.channels.slice(1).map((p) => Deno.readFile(p)))),
      ];
      await using dst = await startDestination({ qemu, guest: "tiny", incoming: "defer" });
      await enableMultifd(dst, 2, "none");
      const sock = `${tmp.path}/replay.sock`;
      await dst.migrateIncoming(`unix:${sock}`);
      for (let i = 0; i < 200 && !(await Deno.lstat(sock).then(() => true, () => false)); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      await replayMultifdMigration(sock, mainBytes, bytes);
      await dst.waitIncoming({ timeoutMs: 120_000 });
      await dst.dumpGuestMemory(`${tmp.path}/replayed.elf`);
      const mem = await elfMemoryReader(`${tmp.path}/replayed.elf`);
      try {
        const gpa = VMEM_GPA + plugged;
        assert.ok(mem.covers(gpa, PAGE));
        assert.deepEqual(mem.read(gpa, PAGE), evilPage("SYNC-PG", gpa), "QEMU loaded the page");
      } finally {
        mem.close();
      }
    },
  });
}
