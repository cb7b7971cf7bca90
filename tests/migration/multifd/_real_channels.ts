/**
 * Tests of the multifd library on channels captured from real QEMU
 * migrations (tests/_util/multifd.ts): a tiny guest with the s2/s3 plug
 * shape, EVIL pages written into two unplugged blocks during
 * pause-before-switchover: 2 channels uncompressed, 4 with zlib, 4 with zstd.
 *
 * Oracles independent of the decoder: the set of pages the stream carries
 * (main channel plus channels) is exactly every page of every RAMBlock
 * except the unplugged virtio-mem blocks, plus the EVIL pages; the page
 * bytes (decompressed with node:zlib for zlib and zstd) equal the source's
 * memory dump; each channel has as many SYNC packets as the main channel has
 * sync points; a filtered migration replayed into a fresh real destination
 * gives the source's memory without the EVIL pages.
 *
 * @module
 */

import assert from "node:assert/strict";
import zlib from "node:zlib";
import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../../../src/errors.ts";
import { bytesReader } from "../../../src/io/byte_reader.ts";
import { decodeMigrationBatches } from "../../../src/migration/decoder.ts";
import { UnpluggedPageDropper } from "../../../src/migration/filter.ts";
import {
  decodeMultifdChannel,
  isMultifdControlRecord,
  MultifdChannelFilter,
  MultifdChannelVerifier,
  type MultifdControlRecord,
  type MultifdRamPacketRecord,
  type MultifdRecord,
} from "../../../src/migration/multifd/mod.ts";
import type { MigrationRecord } from "../../../src/migration/types.ts";
import { PlugStateVerifier } from "../../../src/migration/verify.ts";
import { PlugMap } from "../../../src/vmem/plug_map.ts";
import { assertBytesEqual } from "../../_util/assert.ts";
import { evilPage } from "../../_util/guest.ts";
import { decodeMultifdBytes, encodeMultifdBytes } from "../../_util/multifd_codec.ts";
import { concatBytes, ODD_4095, ONE_BYTE, randomChunking } from "../../_util/chunkings.ts";
import {
  captureMultifdMigration,
  elfMemoryReader,
  enableMultifd,
  type MultifdCapture,
  type MultifdCompressionParameter,
  replayMultifdMigration,
} from "../../_util/multifd.ts";
import { BLOCK, EVIL_GPAS } from "../../proxy/_qemu.ts";
import { encodeRecords } from "../../proxy/_util.ts";
import {
  compareGuestMemory,
  qemuAvailable,
  type QemuVersion,
  startDestination,
  tempDir,
  VMEM_GPA,
} from "../../_util/qemu.ts";

const PAGE = 4096;
const VMEM_RAMBLOCK_SUFFIX = "/vmem0mem";

async function decodeMain(bytes: Uint8Array): Promise<MigrationRecord[]> {
  const out: MigrationRecord[] = [];
  for await (const batch of decodeMigrationBatches(bytesReader(bytes))) {
    for (const r of batch) {
      out.push("data" in r ? { ...r, data: r.data.slice() } as MigrationRecord : r);
    }
  }
  return out;
}

const packetsOf = (records: readonly MultifdRecord[]) =>
  records.filter((r): r is MultifdRamPacketRecord => r.kind === "multifd-ram-packet");

/** The tiny guest's plug state as a plug map (the harness drove it, so it is ground truth). */
function plugMapOf(capture: MultifdCapture): PlugMap {
  const blocks = capture.plugged.length;
  const bitmap = new Uint8Array(Math.ceil(blocks / 8));
  capture.plugged.forEach((v, i) => {
    if (v === 1) bitmap[i >> 3]! |= 1 << (i & 7);
  });
  return new PlugMap([{
    path: "",
    ramBlock: "vmem0mem",
    gpa: VMEM_GPA,
    regionSize: blocks * BLOCK,
    blockSize: BLOCK,
    node: 0,
    usableRegionSize: undefined,
    size: capture.plugged.reduce((a, b) => a + b, 0) * BLOCK,
    requestedSize: undefined,
    bitmap,
  }]);
}

/** Main-channel sync points: MULTIFD_FLUSH records when there are any (QEMU >= 8.1 machine types), else RAM EOS. */
function syncPoints(main: readonly MigrationRecord[]): number {
  const flushes = main.filter((r) => r.kind === "ram-multifd-flush").length;
  return flushes > 0 ? flushes : main.filter((r) => r.kind === "ram-eos").length;
}

/** gpa of a page of the tiny guest, or undefined for blocks the ELF dump does not hold. */
function gpaOf(ramBlock: string, ramOffset: number): number | undefined {
  if (ramBlock.endsWith(VMEM_RAMBLOCK_SUFFIX)) return VMEM_GPA + ramOffset;
  if (ramBlock === "pc.ram") return ramOffset;
  return undefined;
}

/** Register the tests for one QEMU build. */
export function realChannelTests(qemu: QemuVersion): void {
  // Each channel count and each compression once (a capture is a whole TCG
  // migration, ~30 s on a loaded machine): the channel count changes how
  // pages spread, not how a packet is compressed. The proxy tests run
  // 2 and 4 channels uncompressed and 4 with zstd again, live.
  const combos: [number, MultifdCompressionParameter][] = [
    [2, "none"],
    [4, "zlib"],
    [4, "zstd"],
  ];
  for (const [channels, compression] of combos) {
    Deno.test({
      name:
        `multifd channels of a real QEMU ${qemu} migration (${channels} channels, compression ${compression}): ` +
        "decode, encode, verify, filter",
      ignore: !qemuAvailable(qemu, "tiny"),
      fn: async (t) => {
        await using tmp = await tempDir("vmem-multifd-");
        const capture = await captureMultifdMigration({
          qemu,
          channels,
          compression,
          evilGpas: EVIL_GPAS,
          dir: tmp.path,
        });
        const mainBytes = await Deno.readFile(capture.main);
        const main = await decodeMain(mainBytes);
        const channelBytes = await Promise.all(capture.channels.map((p) => Deno.readFile(p)));
        const decoded = await Promise.all(channelBytes.map((b) => decodeMultifdBytes(b)));
        const controls = main.filter(isMultifdControlRecord);
        const memSize = main.find((r) => r.kind === "ram-mem-size")!;
        assert.ok(memSize.kind === "ram-mem-size");
        const vmemBlock = memSize.blocks.find((b) => b.idstr.endsWith(VMEM_RAMBLOCK_SUFFIX))!;

        await t.step("every channel opens with its own id and is framed to its last byte", () => {
          const ids = decoded.map((records) => {
            const init = records[0]!;
            assert.equal(init.kind, "multifd-init");
            assert.ok(init.kind === "multifd-init");
            assert.equal(init.version, 1);
            assert.deepEqual([...init.uuid], new Array(16).fill(0));
            assert.ok(records.slice(1).every((r) => r.kind === "multifd-ram-packet"));
            return init.channelId;
          });
          assert.deepEqual(ids.toSorted((a, b) => a - b), [...Array(channels).keys()]);
          const methods = new Set(decoded.flatMap((r) => packetsOf(r).map((p) => p.compression)));
          // Packets without page data carry no compression bits.
          assert.deepEqual(
            [...methods].filter((m) => m !== "none"),
            compression === "none" ? [] : [compression],
          );
        });

        await t.step(
          "re-encoding every channel gives its bytes, under every chunking",
          async () => {
            for (const [i, bytes] of channelBytes.entries()) {
              assertBytesEqual(await encodeMultifdBytes(decoded[i]!), bytes, `channel ${i}`);
              for (
                const chunking of [ODD_4095, randomChunking(2, 1 << 12), randomChunking(3, 1 << 17)]
              ) {
                assertBytesEqual(
                  await encodeMultifdBytes(await decodeMultifdBytes(bytes, chunking)),
                  bytes,
                  `channel ${i}, ${chunking.name}`,
                );
              }
              // 1-byte chunks over the first 16 packets.
              const prefix = bytes.subarray(
                0,
                decoded[i]![Math.min(16, decoded[i]!.length - 1)]!.streamOffset,
              );
              assertBytesEqual(
                await encodeMultifdBytes(await decodeMultifdBytes(prefix, ONE_BYTE)),
                prefix,
              );
            }
          },
        );

        await t.step("the pages carried are exactly the plugged memory plus the EVIL pages", () => {
          const seen = new Map<string, number>();
          const add = (block: string, ramOffset: number) => {
            const key = `${block}@${ramOffset}`;
            seen.set(key, (seen.get(key) ?? 0) + 1);
          };
          for (const r of main) {
            if (r.kind === "ram-page" || r.kind === "ram-zero-page") add(r.ramBlock, r.ramOffset);
          }
          for (const p of decoded.flatMap(packetsOf)) {
            for (const o of p.normalRamOffsets) add(p.ramBlock, o);
            for (const o of p.zeroRamOffsets) add(p.ramBlock, o);
          }
          const expected = new Set<string>();
          for (const b of memSize.blocks) {
            for (let o = 0; o < b.usedLength; o += PAGE) {
              if (b === vmemBlock && capture.plugged[Math.floor(o / BLOCK)] !== 1) {
                continue;
              }
              expected.add(`${b.idstr}@${o}`);
            }
          }
          for (const gpa of capture.evilGpas) expected.add(`${vmemBlock.idstr}@${gpa - VMEM_GPA}`);
          const missing = [...expected].filter((k) => !seen.has(k));
          const extra = [...seen.keys()].filter((k) => !expected.has(k));
          assert.deepEqual(missing.slice(0, 8), []);
          assert.deepEqual(extra.slice(0, 8), []);
          // A stopped guest: every page travels once, the EVIL pages in the final pass.
          assert.deepEqual([...seen.entries()].filter(([, n]) => n !== 1).slice(0, 8), []);
        });

        await t.step(
          "page bytes equal the source's memory (decompressed for zlib and zstd)",
          async () => {
            const mem = await elfMemoryReader(capture.sourceElf);
            try {
              let compared = 0;
              let evil = 0;
              for (const records of decoded) {
                const packets = packetsOf(records);
                const payload = concatBytes(packets.map((p) => p.data));
                const expectedBytes = packets.reduce(
                  (a, p) => a + p.normalRamOffsets.length * PAGE,
                  0,
                );
                const pages = compression === "none"
                  ? payload
                  : compression === "zlib"
                  ? zlib.inflateSync(payload, { finishFlush: zlib.constants.Z_SYNC_FLUSH })
                  : zlib.zstdDecompressSync(payload);
                assert.equal(pages.byteLength, expectedBytes);
                let at = 0;
                for (const p of packets) {
                  for (const o of p.normalRamOffsets) {
                    const gpa = gpaOf(p.ramBlock, o);
                    if (gpa !== undefined && capture.evilGpas.includes(gpa)) {
                      // The dump leaves unplugged memory out: compare with what was written.
                      assert.ok(!mem.covers(gpa, PAGE));
                      assertBytesEqual(pages.subarray(at, at + PAGE), evilPage("EVIL-MIG", gpa));
                      evil++;
                    } else if (gpa !== undefined) {
                      assertBytesEqual(
                        pages.subarray(at, at + PAGE),
                        mem.read(gpa, PAGE),
                        `${p.ramBlock}+0x${o.toString(16)}`,
                      );
                      compared++;
                    }
                    at += PAGE;
                  }
                  for (const o of p.zeroRamOffsets) {
                    const gpa = gpaOf(p.ramBlock, o);
                    if (gpa !== undefined) assert.ok(mem.read(gpa, PAGE).every((b) => b === 0));
                  }
                }
              }
              assert.ok(compared >= 50, `only ${compared} pages compared`);
              assert.equal(evil, capture.evilGpas.length);
            } finally {
              mem.close();
            }
          },
        );

        await t.step("each channel has one SYNC packet per main-channel sync point", () => {
          const points = syncPoints(main);
          assert.ok(points >= 2);
          for (const records of decoded) {
            assert.equal(packetsOf(records).filter((p) => p.sync).length, points);
          }
        });

        await t.step("verify finds exactly the EVIL pages, in the channels that carry them", () => {
          const mainVerifier = new PlugStateVerifier({ mode: "report" });
          mainVerifier.process(main);
          mainVerifier.end();
          assert.equal(mainVerifier.result.violationCount, 0);
          const violations = decoded.flatMap((records) => {
            const init = records[0]!;
            assert.ok(init.kind === "multifd-init");
            const v = new MultifdChannelVerifier({ channel: init.channelId });
            // Block list and early state come before any page; a late device section after all.
            const late = controls.filter((c) => c.kind === "virtio-mem-device");
            for (const c of controls) if (c.kind !== "virtio-mem-device") v.control(c);
            for (const p of packetsOf(records)) v.checkPacket(p);
            for (const c of late) v.control(c);
            return v.violations;
          });
          assert.deepEqual(
            violations.map((v) => v.gpa ?? -1).toSorted((a, b) => a - b),
            capture.evilGpas,
          );
          for (const v of violations) {
            assert.equal(v.detectedBy, qemu === "10" ? "early" : "device");
            assert.equal(v.recordKind, "ram-page");
            const p = packetsOf(
              decoded.find((r) => r[0]!.kind === "multifd-init" && r[0]!.channelId === v.channel)!,
            )
              .find((p) =>
                p.streamOffset <= v.streamOffset &&
                v.streamOffset < p.streamOffset + p.header.byteLength
              );
            assert.ok(p !== undefined, "the violation points into a packet header of its channel");
          }
        });

        await t.step(
          compression === "none"
            ? "filtered channels load into a fresh destination: the source's memory without the EVIL pages"
            : "filter refuses to remove a page with data from a compressed packet, at its offset slot",
          async () => {
            const plugMap = qemu === "7.2" ? plugMapOf(capture) : undefined;
            const dropper = new UnpluggedPageDropper(plugMap ? { plugMap } : {});
            const mainOut = dropper.process(main);
            assert.equal(dropper.droppedRecords, 0);
            const filters = decoded.map((records) => {
              const init = records[0]!;
              assert.ok(init.kind === "multifd-init");
              const f = new MultifdChannelFilter({
                channel: init.channelId,
                ...(plugMap ? { plugMap } : {}),
              });
              for (const c of controls) f.control(c as MultifdControlRecord);
              return f;
            });
            if (compression !== "none") {
              let refused = 0;
              for (const [i, records] of decoded.entries()) {
                for (const p of packetsOf(records)) {
                  try {
                    filters[i]!.filterPacket(p);
                  } catch (e) {
                    assert.ok(e instanceof UnsupportedFeatureError, String(e));
                    const slot = (e.offset - p.streamOffset - 320) / 8;
                    assert.ok(Number.isInteger(slot) && slot < p.normalRamOffsets.length);
                    assert.ok(capture.evilGpas.includes(VMEM_GPA + p.normalRamOffsets[slot]!));
                    refused++;
                    break;
                  }
                }
              }
              assert.ok(refused >= 1);
              return;
            }
            const filtered = await Promise.all(
              decoded.map((records, i) =>
                encodeMultifdBytes(records.map((r) => {
                  if (r.kind !== "multifd-ram-packet") return r;
                  const out = filters[i]!.filterPacket(r);
                  if (out !== r) assert.ok(out.normalRamOffsets.length < r.normalRamOffsets.length);
                  return out;
                }))
              ),
            );
            const stats = filters.map((f) => f.stats);
            assert.deepEqual(
              stats.flatMap((s) => s.dropped.map((d) => d.gpa)).toSorted((a, b) => a - b),
              capture.evilGpas,
            );
            const rewritten = stats.reduce((a, s) => a + s.rewrittenPackets, 0);
            assert.ok(rewritten >= 1 && rewritten <= capture.evilGpas.length);
            // Each channel shrank by exactly the dropped pages' data (headers keep their size).
            for (const [i, s] of stats.entries()) {
              assert.equal(channelBytes[i]!.byteLength - filtered[i]!.byteLength, s.droppedBytes);
            }
            assert.equal(
              stats.reduce((a, s) => a + s.droppedBytes, 0),
              capture.evilGpas.length * PAGE,
            );
            await using dst = await startDestination({ qemu, guest: "tiny", incoming: "defer" });
            await enableMultifd(dst, channels, compression);
            const sock = `${tmp.path}/replay.sock`;
            await dst.migrateIncoming(`unix:${sock}`);
            for (
              let i = 0;
              i < 200 && !(await Deno.lstat(sock).then(() => true, () => false));
              i++
            ) {
              await new Promise((r) => setTimeout(r, 25));
            }
            await replayMultifdMigration(sock, await encodeRecords(mainOut), filtered);
            await dst.waitIncoming({ timeoutMs: 60_000 });
            await dst.dumpGuestMemory(`${tmp.path}/replayed.elf`);
            const cmp = await compareGuestMemory(capture.sourceElf, `${tmp.path}/replayed.elf`, {
              ignoreGpaRanges: capture.evilGpas.map((gpa) => ({ gpa, byteLength: PAGE })),
            });
            assert.ok(cmp.equal, JSON.stringify(cmp.differences.slice(0, 4)));
            const mem = await elfMemoryReader(`${tmp.path}/replayed.elf`);
            try {
              for (const gpa of capture.evilGpas) {
                assert.ok(mem.read(gpa, PAGE).every((b) => b === 0));
              }
            } finally {
              mem.close();
            }
          },
        );

        if (channels === 2) {
          await t.step(
            "a channel cut anywhere fails with UnexpectedEofError at the cut, or ends cleanly at a packet boundary",
            async () => {
              const records = decoded[0]!;
              const end = records[Math.min(6, records.length - 1)]!.streamOffset;
              const bytes = channelBytes[0]!.subarray(0, end);
              const boundaries = new Set(records.slice(1).map((r) => r.streamOffset));
              // Every byte of the headers; payloads at their edges and every 251st byte.
              const cuts = new Set<number>();
              for (const r of records.slice(0, 7)) {
                const head = r.kind === "multifd-init" ? 64 : r.header.byteLength;
                const data = r.kind === "multifd-init" ? 0 : r.data.byteLength;
                for (let i = 0; i <= head; i++) cuts.add(r.streamOffset + i);
                for (let i = 0; i < data; i += i < 64 || data - i < 64 ? 1 : 251) {
                  cuts.add(r.streamOffset + head + i);
                }
              }
              for (const cut of [...cuts].filter((c) => c < end)) {
                try {
                  for await (
                    const _ of decodeMultifdChannel(bytesReader(bytes.subarray(0, cut)))
                  ) { /* drain */ }
                  assert.ok(boundaries.has(cut), `cut ${cut} decoded cleanly`);
                } catch (e) {
                  assert.ok(e instanceof UnexpectedEofError, `cut ${cut}: ${e}`);
                  assert.equal(e.offset, cut);
                }
              }
            },
          );

          await t.step(
            "a flipped header byte gives success or a FormatError in that packet, never a crash",
            async () => {
              const records = decoded[0]!;
              const packets = packetsOf(records).slice(0, 3);
              const end = packets[2]!.streamOffset + packets[2]!.header.byteLength +
                packets[2]!.data.byteLength;
              const base = channelBytes[0]!.slice(0, end);
              const headers: [number, number][] = [
                [0, 64],
                ...packets.map((
                  p,
                ): [number, number] => [p.streamOffset, p.streamOffset + p.header.byteLength]),
              ];
              let errors = 0;
              for (const [from, to] of headers) {
                for (let at = from; at < to; at++) {
                  const bytes = base.slice();
                  bytes[at]! ^= 0x41;
                  try {
                    for await (const _ of decodeMultifdChannel(bytesReader(bytes))) { /* drain */ }
                  } catch (e) {
                    assert.ok(e instanceof FormatError, `flip at ${at}: ${e}`);
                    if (!(e instanceof UnexpectedEofError)) {
                      assert.ok(
                        e.offset >= from,
                        `flip at ${at}: error at ${e.offset}, before its packet`,
                      );
                    }
                    errors++;
                  }
                }
              }
              assert.ok(errors > 0);
            },
          );
        }
      },
    });
  }
}
