/**
 * Regenerate the real multifd channels in testdata/multifd/ (the seeds of
 * the mutation campaign's `multifd` target).
 *
 *   deno run -A scripts/make-multifd-channels.ts
 *
 * For each of QEMU 7.2 (zstd) and QEMU 10.0 (no compression): a tiny guest
 * with the s2/s3 plug shape migrates with 2 multifd channels through the
 * capturing relay of tests/_util/multifd.ts (EVIL pages written into
 * unplugged blocks 39 and 53 during pause-before-switchover), and the
 * destination's memory is checked against the source's. Kept: channel 0's
 * bytes up to the last packet boundary within 96 KiB (a prefix of a channel
 * is itself a channel), and, beside it, the main channel's block list and
 * the plug state the harness drove (JSON). Sizes and sha256 are printed for
 * testdata/README.md.
 */

import { captureMultifdMigration } from "../tests/_util/multifd.ts";
import { BLOCK, EVIL_GPAS } from "../tests/proxy/_qemu.ts";
import { type QemuVersion, tempDir, VMEM_GPA } from "../tests/_util/qemu.ts";
import { sha256File } from "../tests/_util/realdata.ts";
import { bytesReader } from "../src/io/byte_reader.ts";
import { decodeMigrationBatches } from "../src/migration/decoder.ts";
import { decodeMultifdChannel } from "../src/migration/multifd/decoder.ts";

const OUT = decodeURIComponent(new URL("../testdata/multifd/", import.meta.url).pathname);
const LIMIT = 96 << 10;

await Deno.mkdir(OUT, { recursive: true });
for (
  const [qemu, compression, name] of [
    ["7.2", "zstd", "q72-zstd"],
    ["10", "none", "q10-none"],
  ] as const
) {
  await using tmp = await tempDir("vmem-multifd-fixture-");
  const capture = await captureMultifdMigration({
    qemu: qemu as QemuVersion,
    channels: 2,
    compression,
    evilGpas: EVIL_GPAS,
    dir: tmp.path,
  });
  let channel0: Uint8Array | undefined;
  for (const path of capture.channels) {
    const bytes = await Deno.readFile(path);
    if (bytes[24] === 0) channel0 = bytes;
  }
  if (channel0 === undefined) throw new Error("no channel 0");
  let cut = 64;
  for await (const batch of decodeMultifdChannel(bytesReader(channel0))) {
    for (const r of batch) {
      if (r.kind === "multifd-init") continue;
      const end = r.streamOffset + r.header.byteLength + r.data.byteLength;
      if (end <= LIMIT) cut = end;
    }
  }
  const main = await Deno.readFile(capture.main);
  let blocks: { idstr: string; usedLength: number }[] = [];
  for await (const batch of decodeMigrationBatches(bytesReader(main))) {
    for (const r of batch) {
      if (r.kind === "ram-mem-size") {
        blocks = r.blocks.map((b) => ({ idstr: b.idstr, usedLength: b.usedLength }));
      }
    }
  }
  const plugged: [number, number][] = [];
  capture.plugged.forEach((v, i) => {
    if (v !== 1) return;
    const last = plugged[plugged.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else plugged.push([i, 1]);
  });
  const state = {
    producer: `QEMU ${qemu}, 2 multifd channels, multifd-compression ${compression}`,
    pageSize: 4096,
    ramBlocks: blocks,
    plugMap: {
      version: 1,
      devices: [{
        path: "",
        ramblock: "vmem0mem",
        memaddr: VMEM_GPA,
        "region-size": capture.plugged.length * BLOCK,
        "block-size": BLOCK,
        node: 0,
        size: capture.plugged.reduce((a, b) => a + b, 0) * BLOCK,
        plugged,
      }],
    },
  };
  const binPath = `${OUT}${name}-channel0.bin`;
  const jsonPath = `${OUT}${name}-state.json`;
  await Deno.writeFile(binPath, channel0.subarray(0, cut));
  await Deno.writeTextFile(jsonPath, JSON.stringify(state, null, 1) + "\n");
  for (const p of [binPath, jsonPath]) {
    console.log(`${p.slice(OUT.length)} ${(await Deno.stat(p)).size} ${await sha256File(p)}`);
  }
}
