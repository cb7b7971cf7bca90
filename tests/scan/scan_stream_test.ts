import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import { FormatError } from "../../src/errors.ts";
import type { MigrationRecord, VirtioMemDeviceState } from "../../src/migration/types.ts";
import { MigrationScanner, scanMigration } from "../../src/scan/scan_stream.ts";
import { StreamPlugState } from "../../src/migration/stream_plug_state.ts";
import { BLOCK, GPA, testMap } from "./_fixtures.ts";

const VMEM = "0000:00:01.0/vmem0mem";
const PATH = "0000:00:01.0";

/** Wire bitmap (one be64 word) with the given blocks plugged. */
function wire(plugged: number[]): Uint8Array {
  const w = new Uint8Array(8);
  for (const b of plugged) w[7 - (b >> 3)]! |= 1 << (b & 7);
  return w;
}

let offset = 0;
const at = () => (offset += 100);

function memSize(): MigrationRecord {
  return {
    kind: "ram-mem-size",
    streamOffset: at(),
    totalBytes: 4 * BLOCK + 0x100000,
    blocks: [{ idstr: VMEM, usedLength: 4 * BLOCK }, { idstr: "pc.ram", usedLength: 0x100000 }],
  };
}

function early(plugged: number[]): MigrationRecord {
  return {
    kind: "virtio-mem-early",
    streamOffset: at(),
    devicePath: PATH,
    gpa: GPA,
    regionSize: 4 * BLOCK,
    blockSize: BLOCK,
    node: 0,
    size: plugged.length * BLOCK,
    bitmap: wire(plugged),
  };
}

function late(plugged: number[]): MigrationRecord {
  const state: VirtioMemDeviceState = {
    layout: "late",
    configSpaceSize: 256,
    msixVectors: 0,
    fieldsOffset: 0,
    usableRegionSize: 4 * BLOCK,
    requestedSize: plugged.length * BLOCK,
    gpa: GPA,
    regionSize: 4 * BLOCK,
    blockSize: BLOCK,
    node: 0,
    size: plugged.length * BLOCK,
    bitmap: wire(plugged),
  };
  return {
    kind: "virtio-mem-device",
    streamOffset: at(),
    devicePath: PATH,
    data: new Uint8Array(0),
    state,
  };
}

function page(ramOffset: number, fillAt = -1, ramBlock = VMEM): MigrationRecord {
  const data = new Uint8Array(4096);
  if (fillAt >= 0) data[fillAt] = 0xee;
  return { kind: "ram-page", streamOffset: at(), ramBlock, ramOffset, continued: false, data };
}

function zero(ramOffset: number): MigrationRecord {
  return {
    kind: "ram-zero-page",
    streamOffset: at(),
    ramBlock: VMEM,
    ramOffset,
    continued: true,
    fill: 0,
  };
}

async function* from(records: MigrationRecord[]): AsyncGenerator<MigrationRecord[]> {
  yield records;
}

Deno.test("scanMigration() with an early section reports every record of an unplugged block, zero or not", async () => {
  const records = [
    memSize(),
    early([0, 2]),
    page(0, 5), // plugged
    page(BLOCK + 0x3000, 0x123), // block 1: unplugged, non-zero
    zero(BLOCK + 0x4000), // block 1: unplugged, zero
    page(2 * BLOCK), // plugged
    page(3 * BLOCK + 0x1000), // block 3: unplugged, all-zero PAGE record
    page(0x5000, 7, "pc.ram"), // not virtio-mem
  ];
  const { report, plugMap } = await scanMigration(from(records), { path: "x.mig" });
  assert.equal(plugMap?.devices.length, 1);
  assert.equal(report.plugState.source, "stream-early");
  assert.equal(report.details, "pages");
  assert.equal(report.summary.findings, 3);
  assert.equal(report.summary.nonZeroPages, 1);
  assert.equal(report.summary.pageRecords, 6);
  const [b1, b3] = report.devices[0]!.blocks;
  assert.equal(b1!.findings, 2);
  assert.deepEqual(b1!.firstNonZero, { blockOffset: 0x3123, gpa: GPA + BLOCK + 0x3123 });
  assert.deepEqual(b1!.pages.map((p) => [p.source, p.streamOffset, p.ramOffset]), [
    ["ram-page", records[3]!.streamOffset, BLOCK + 0x3000],
    ["ram-zero-page", records[4]!.streamOffset, BLOCK + 0x4000],
  ]);
  assert.equal(b3!.findings, 1);
  assert.equal(b3!.nonZeroPages, 0);
  assert.equal(b3!.firstNonZero, null);
});

Deno.test("scanMigration() uses the given plug map for a stream without plug state", async () => {
  const { report } = await scanMigration(from([memSize(), page(BLOCK, 0)]), {
    plugMap: testMap([0]),
  });
  assert.equal(report.plugState.source, "plugmap");
  assert.equal(report.summary.findings, 1);
  assert.equal(report.details, "pages");
});

Deno.test("scanMigration() without any plug state checks nothing and says so", async () => {
  const { report, plugMap } = await scanMigration(from([memSize(), page(BLOCK, 0)]));
  assert.equal(plugMap, undefined);
  assert.equal(report.plugState.source, "none");
  assert.equal(report.summary.findings, 0);
  assert.match(report.warnings.join("\n"), /no virtio-mem plug state/);
});

Deno.test("scanMigration() decides late-layout streams at the end, per block when the state came too late", async () => {
  const records = [
    memSize(),
    page(0, 1),
    page(BLOCK + 0x2000, 0x10),
    zero(BLOCK + 0x1000),
    page(3 * BLOCK, 9),
    late([0, 3]),
  ];
  const { report, plugMap } = await scanMigration(from(records));
  assert.equal(report.plugState.source, "stream-late");
  assert.equal(report.details, "blocks");
  assert.equal(report.summary.findings, 2);
  const block = report.devices[0]!.blocks[0]!;
  assert.equal(block.blockIndex, 1);
  assert.equal(block.findings, 2);
  assert.equal(block.nonZeroPages, 1);
  assert.equal(block.nonZeroBytes, 1);
  assert.deepEqual(block.firstNonZero, { blockOffset: 0x2010, gpa: GPA + BLOCK + 0x2010 });
  assert.equal(block.pages.length, 0);
  // A second pass that knows the state lists the pages.
  const again = await scanMigration(from(records), { plugMap: plugMap! });
  assert.equal(again.report.details, "pages");
  assert.equal(again.report.plugState.source, "stream-late");
  assert.deepEqual(again.report.devices[0]!.blocks[0]!.pages.map((p) => p.streamOffset), [
    records[2]!.streamOffset,
    records[3]!.streamOffset,
  ]);
  assert.deepEqual(again.report.warnings, []);
});

Deno.test("scanMigration() prefers the stream's own state over a different given map and warns", async () => {
  const records = [memSize(), page(BLOCK, 0), page(2 * BLOCK, 0), late([0, 1])];
  const { report } = await scanMigration(from(records), { plugMap: testMap([0, 2]) });
  assert.equal(report.details, "blocks");
  assert.deepEqual(report.devices[0]!.blocks.map((b) => b.blockIndex), [2]);
  assert.match(report.warnings.join("\n"), /differs from the stream's own plug state/);
});

Deno.test("scanMigration() inflates compressed pages and marks XBZRLE content unknown", async () => {
  const content = new Uint8Array(4096);
  content[0x40] = 0x77;
  const records: MigrationRecord[] = [
    memSize(),
    early([0]),
    {
      kind: "ram-compressed-page",
      streamOffset: at(),
      ramBlock: VMEM,
      ramOffset: BLOCK,
      continued: false,
      data: deflateSync(content),
    },
    {
      kind: "ram-xbzrle-page",
      streamOffset: at(),
      ramBlock: VMEM,
      ramOffset: BLOCK + 4096,
      continued: true,
      encoding: 1,
      data: new Uint8Array(8),
    },
  ];
  const { report } = await scanMigration(from(records));
  const block = report.devices[0]!.blocks[0]!;
  assert.equal(block.findings, 2);
  assert.equal(block.unknownContent, 1);
  assert.equal(block.pages[0]!.firstNonZeroOffset, 0x40);
  assert.equal(block.pages[1]!.sha256, null);
  assert.match(report.warnings.join("\n"), /1 XBZRLE records/);
});

Deno.test("MigrationScanner.push() rejects an early section whose size contradicts its bitmap", () => {
  const scanner = new MigrationScanner();
  scanner.push(memSize());
  const bad = early([0]);
  (bad as { size: number }).size = 3 * BLOCK;
  assert.throws(
    () => scanner.push(bad),
    (e) => e instanceof FormatError && e.code === "bad-virtio-mem",
  );
});

Deno.test("StreamPlugState gives the stream's own map with the RAMBlock from MEM_SIZE", () => {
  const state = new StreamPlugState();
  for (const r of [memSize(), early([0, 2]), late([0, 2])]) state.observe(r);
  assert.equal(state.source, "stream-early+late");
  const map = state.finalMap()!;
  const d = map.devices[0]!;
  assert.equal(d.ramBlock, VMEM);
  assert.equal(d.usableRegionSize, 4 * BLOCK);
  assert.deepEqual(map.blockRuns(d), [[0, 1], [2, 1]]);
  const none = new StreamPlugState();
  none.observe(memSize());
  assert.equal(none.finalMap(), undefined);
  assert.equal(none.source, undefined);
});

Deno.test("scanMigration() with rereadable keeps no per-MiB counts and asks for a second pass only when the late state differs", async () => {
  const records = [memSize(), page(BLOCK, 0), page(2 * BLOCK, 0), late([0, 1])];
  // The map given agrees with the stream's late state: one pass suffices, pages listed.
  const same = await scanMigration(from(records), { plugMap: testMap([0, 1]), rereadable: true });
  assert.equal(same.rescan, false);
  assert.equal(same.report.details, "pages");
  assert.deepEqual(same.report.devices[0]!.blocks.map((b) => b.blockIndex), [2]);
  // It differs: no counts were kept, so the result asks for a second pass with the stream's map.
  const differs = await scanMigration(from(records), {
    plugMap: testMap([0, 2]),
    rereadable: true,
  });
  assert.equal(differs.rescan, true);
  assert.equal(differs.provisionalDiscarded, true);
  assert.match(differs.report.warnings.join("\n"), /scan the stream again/);
  const again = await scanMigration(from(records), {
    plugMap: differs.plugMap!,
    rereadable: true,
  });
  assert.equal(again.rescan, false);
  assert.deepEqual(again.report.devices[0]!.blocks.map((b) => b.blockIndex), [2]);
  assert.equal(
    again.report.devices[0]!.blocks[0]!.pages[0]!.streamOffset,
    records[2]!.streamOffset,
  );
  // Early layout: every record is judged for good, nothing to read again.
  const earlyRecords = [memSize(), early([0, 2]), page(BLOCK, 0)];
  const e = await scanMigration(from(earlyRecords), { rereadable: true });
  assert.equal(e.rescan, false);
  assert.equal(e.report.summary.findings, 1);
});
