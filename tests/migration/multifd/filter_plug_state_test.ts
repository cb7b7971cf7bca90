/**
 * The multifd channel filter with a plug map more generous than the
 * stream's own plug state: the destination takes the stream's state, so a
 * page of a block the map marks plugged and the stream unplugged must not
 * reach it. Early layout: the pages are dropped (channels wait for the main
 * channel's setup, so the early state is known before any page). Late
 * layout: a page already forwarded when the device section says so is an
 * error. Before, the map alone decided: the pages went through, exit 0.
 *
 * On channel 0 of a real QEMU 10.0 migration (testdata/multifd/, 2
 * channels, no compression), with the capture's own plug map as `--plugmap`
 * and the stream's state made to mark one more block unplugged: one this
 * channel carries pages of.
 *
 * @module
 */

import assert from "node:assert/strict";
import { decodeMultifdBytes } from "../../_util/multifd_codec.ts";
import { MultifdChannelFilter } from "../../../src/migration/multifd/filter.ts";
import type { MultifdRamPacketRecord } from "../../../src/migration/multifd/types.ts";
import type {
  RamMemSizeRecord,
  VirtioMemDeviceRecord,
  VirtioMemEarlyRecord,
} from "../../../src/migration/types.ts";
import { parsePlugMapSource } from "../../../src/vmem/plug_map_source.ts";
import { assertFormatError } from "../../_util/assert.ts";
import { wireBitmap } from "../../proxy/_util.ts";

const TESTDATA = new URL("../../../testdata/multifd/", import.meta.url);

async function capture() {
  const state = JSON.parse(await Deno.readTextFile(new URL("q10-none-state.json", TESTDATA))) as {
    ramBlocks: { idstr: string; usedLength: number }[];
    plugMap: unknown;
  };
  const map = parsePlugMapSource(JSON.stringify(state.plugMap)).map;
  const device = map.devices[0]!;
  const records = await decodeMultifdBytes(
    await Deno.readFile(new URL("q10-none-channel0.bin", TESTDATA)),
  );
  const packets = records.filter((r): r is MultifdRamPacketRecord =>
    r.kind === "multifd-ram-packet" && r.ramBlock.endsWith("/vmem0mem")
  );
  const blocks = device.regionSize / device.blockSize;
  const plugged = Array.from(
    { length: blocks },
    (_, i) => ((device.bitmap[i >> 3]! >> (i & 7)) & 1) === 1,
  );
  // A plugged block this channel carries pages of (with data and zero).
  const pagesIn = (b: number) =>
    packets.reduce(
      (n, p) =>
        n +
        [...p.normalRamOffsets, ...p.zeroRamOffsets].filter((o) =>
          Math.floor(o / device.blockSize) === b
        ).length,
      0,
    );
  const target = plugged.findIndex((p, b) => p && pagesIn(b) > 0);
  assert.ok(target >= 0);
  const streamPlugged = plugged.map((p, b) => p && b !== target);
  const memSize: RamMemSizeRecord = {
    kind: "ram-mem-size",
    streamOffset: 0x20,
    totalBytes: state.ramBlocks.reduce((a, b) => a + b.usedLength, 0),
    blocks: state.ramBlocks,
  };
  const geometry = {
    devicePath: "0000:00:01.0",
    gpa: device.gpa,
    regionSize: device.regionSize,
    blockSize: device.blockSize,
    node: 0,
    size: streamPlugged.filter((p) => p).length * device.blockSize,
    bitmap: wireBitmap(streamPlugged),
  };
  const early: VirtioMemEarlyRecord = {
    kind: "virtio-mem-early",
    streamOffset: 0x400,
    ...geometry,
  };
  const late: VirtioMemDeviceRecord = {
    kind: "virtio-mem-device",
    streamOffset: 0x90000,
    devicePath: geometry.devicePath,
    data: new Uint8Array(0),
    state: {
      layout: "late",
      configSpaceSize: 256,
      msixVectors: 0,
      fieldsOffset: 0,
      usableRegionSize: device.regionSize,
      requestedSize: geometry.size,
      gpa: geometry.gpa,
      regionSize: geometry.regionSize,
      blockSize: geometry.blockSize,
      node: 0,
      size: geometry.size,
      bitmap: geometry.bitmap,
    },
  };
  return { map, packets, target, pages: pagesIn(target), memSize, early, late, device };
}

Deno.test("multifd filter: the stream's own plug state narrows a generous plug map (early: dropped; late: refused once a page was forwarded)", async () => {
  const c = await capture();
  const run = (f: MultifdChannelFilter) => {
    for (const p of c.packets) f.filterPacket(p);
    return f.stats;
  };

  // The map alone: what it marks unplugged goes (the capture's EVIL pages, if on this channel).
  const base = new MultifdChannelFilter({ channel: 0, plugMap: c.map });
  base.control(c.memSize);
  const baseline = run(base).droppedPages;

  // Early layout: the early section marks the target block unplugged before any page.
  const f = new MultifdChannelFilter({ channel: 0, plugMap: c.map });
  f.control(c.memSize);
  f.control(c.early);
  const stats = run(f);
  assert.equal(stats.droppedPages, baseline + c.pages);
  assert.ok(stats.droppedPages <= 1000, "every drop described");
  assert.equal(
    stats.dropped.filter((d) => Math.floor(d.ramOffset / c.device.blockSize) === c.target).length,
    c.pages,
  );
  assert.ok(c.pages > 0);

  // Late layout: the device section comes after this channel forwarded the target's pages.
  const g = new MultifdChannelFilter({ channel: 0, plugMap: c.map });
  g.control(c.memSize);
  run(g);
  await assertFormatError(() => g.control(c.late), {
    code: "invariant",
    offset: c.late.streamOffset,
    message: `marks gpa 0x${
      (c.device.gpa + c.target * c.device.blockSize).toString(16)
    } of 0000:00:01.0 plugged, but the stream marks it unplugged`,
  });

  // A stream state equal to the map changes nothing, early or late.
  const h = new MultifdChannelFilter({ channel: 0, plugMap: c.map });
  h.control(c.memSize);
  run(h);
  const same = {
    ...c.late,
    state: {
      ...c.late.state,
      bitmap: wireBitmap(
        Array.from(
          { length: c.device.regionSize / c.device.blockSize },
          (_, i) => ((c.device.bitmap[i >> 3]! >> (i & 7)) & 1) === 1,
        ),
      ),
      size: c.device.size,
      requestedSize: c.device.size,
    },
  };
  h.control(same);
});

Deno.test("multifd filter: the state of a device the plug map does not describe decides, and is refused after this channel passed pages of it", async () => {
  const c = await capture();
  // A map for other devices only: the capture's virtio-mem device is not in it.
  const other = parsePlugMapSource(JSON.stringify({ version: 1, devices: [] })).map;
  const pages = (s: ReturnType<MultifdChannelFilter["filterPacket"]>[]) =>
    s.reduce((n, p) => n + p.normalRamOffsets.length + p.zeroRamOffsets.length, 0);

  // Late layout: the channel forwarded the device's pages as they came (the map says nothing);
  // a statement that then marks a block of them unplugged cannot be honoured: refused.
  const f = new MultifdChannelFilter({ channel: 0, plugMap: other });
  f.control(c.memSize);
  assert.equal(pages(c.packets.map((p) => f.filterPacket(p))), pages(c.packets));
  await assertFormatError(() => f.control(c.late), {
    name: "UnsupportedFeatureError",
    offset: c.late.streamOffset,
    message:
      /plug state of 0000:00:01\.0 arrives after this channel passed pages of "0000:00:01\.0\/vmem0mem", which the plug map does not describe/,
  });

  // A statement before any page of the device decides for the pages after it (late, too).
  const g = new MultifdChannelFilter({ channel: 0, plugMap: other });
  g.control(c.memSize);
  g.control(c.late);
  const out = c.packets.map((p) => g.filterPacket(p));
  assert.equal(pages(out), pages(c.packets) - c.pages);
  assert.equal(g.stats.droppedPages, c.pages);
});
