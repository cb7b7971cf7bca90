import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { openFileReader } from "../../src/io/file.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import {
  extractPlugMap,
  extractPlugStateFromFile,
  fileRangeReader,
} from "../../src/migration/plug_state.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import type { PlugMap } from "../../src/vmem/plug_map.ts";
import {
  buildStream,
  concat,
  earlyBody,
  footer,
  longHeader,
  type RealVirtioMem,
  realVirtioMem,
  streamAround,
} from "../vmem/_plug_stream.ts";
import {
  REALDATA_SCENARIOS,
  realdataAvailable,
  realdataFacts,
  type RealdataSet,
} from "../_util/realdata.ts";

const MIB = 1 << 20;

function truthRuns(r: RealVirtioMem): [number, number][] {
  return (r.truth.ranges as [number, number, string][]).filter((x) => x[2] === "plugged").map((
    [a, b],
  ) => [a, b - a + 1]);
}

/** The late-section truth of a scenario (usable/requested), from analysis.json. */
function lateTruth(set: RealdataSet, scenario: string): { usable: number; requested: number } {
  const dev = realdataFacts(set).analysis.scenarios[scenario].migration.virtio_mem_device_section
    .virtio_mem_device;
  return { usable: dev.usable_region_size, requested: dev.requested_size };
}

function assertTruth(map: PlugMap, r: RealVirtioMem, complete: boolean): void {
  assert.equal(map.devices.length, 1);
  const d = map.devices[0]!;
  const qmp = r.qmp["query-memory-devices"][0].data;
  assert.equal(d.path, "0000:00:01.0");
  assert.equal(d.ramBlock, "0000:00:01.0/vmem0mem");
  assert.equal(d.gpa, qmp.memaddr);
  assert.equal(d.regionSize, qmp["max-size"]);
  assert.equal(d.blockSize, qmp["block-size"]);
  assert.equal(d.node, r.truth.node);
  assert.equal(d.size, r.truth.size);
  assert.equal(d.size, qmp.size, "size equals the QMP size");
  assert.deepEqual(map.blockRuns(d), truthRuns(r));
  if (complete) {
    const late = lateTruth(r.set, r.scenario);
    assert.equal(d.usableRegionSize, late.usable);
    assert.equal(d.requestedSize, late.requested);
    assert.equal(d.requestedSize, qmp["requested-size"]);
  } else {
    assert.equal(d.usableRegionSize, undefined);
    assert.equal(d.requestedSize, undefined);
  }
}

for (const set of ["out-small", "out-q10"] as RealdataSet[]) {
  Deno.test({
    name: `extractPlugStateFromFile() finds the recorded plug state in every real ${set} stream`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      for (const scenario of REALDATA_SCENARIOS[set]) {
        const r = await realVirtioMem(set, scenario);
        const quick = await extractPlugStateFromFile(r.migPath);
        if (set === "out-q10") {
          assert.equal(quick.layout, "early");
          assert.equal(quick.method, "early");
          // Stopped at the first RAM page: header, ram START, early section, first PART header.
          assert.ok(quick.streamBytes <= 400, `read ${quick.streamBytes} bytes`);
          assertTruth(quick.plugMap, r, false);
          const full = await extractPlugStateFromFile(r.migPath, { complete: true });
          assert.equal(full.method, "vmdesc");
          assertTruth(full.plugMap, r, true);
        } else {
          assert.equal(quick.layout, "late");
          assert.equal(quick.method, "vmdesc");
          assert.ok(
            quick.streamBytes + quick.extraBytes < 1 << 20,
            "read far less than the stream",
          );
          assertTruth(quick.plugMap, r, true);
        }
      }
    },
  });
}

Deno.test({
  name: "extractPlugMap() streams a whole late-layout stream once to its device section",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s3-malicious");
    const input = await openFileReader(r.migPath);
    try {
      assertTruth(await extractPlugMap(decodeMigration(input.reader)), r, true);
    } finally {
      input.close();
    }
  },
});

Deno.test({
  name: "extractPlugMap() reads an early-layout stream to the end only with complete",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const r = await realVirtioMem("out-q10", "s2-holes-100M");
    const input = await openFileReader(r.migPath);
    try {
      assertTruth(await extractPlugMap(decodeMigration(input.reader), { complete: true }), r, true);
    } finally {
      input.close();
    }
    // Without complete, nothing after the first RAM page is pulled.
    let pulled = 0;
    const reader = fileRangeReader(r.migPath);
    async function* counted(): AsyncGenerator<MigrationRecord> {
      for await (const rec of decodeMigration(reader)) {
        pulled++;
        if (rec.kind === "ram-page" || rec.kind === "ram-zero-page") {
          yield rec;
          throw new Error("read past the first RAM page");
        }
        yield rec;
      }
    }
    assertTruth(await extractPlugMap(counted()), r, false);
    assert.ok(pulled < 20, `${pulled} records`);
    assert.ok(reader.offset < 400, `${reader.offset} bytes`);
  },
});

Deno.test("extractPlugMap() gives an empty device list for a stream without virtio-mem", async () => {
  const bytes = buildStream({
    ramBlocks: [{ idstr: "pc.ram", usedLength: 128 * MIB }, {
      idstr: "0000:00:03.0/mem1",
      usedLength: 256 * MIB,
    }],
    pageBlock: "pc.ram",
    vmdesc: [],
  });
  const map = await extractPlugMap(decodeMigration(bytesReader(bytes)));
  assert.equal(map.devices.length, 0);
  assert.equal(JSON.stringify(map), '{"version":1,"devices":[]}');
});

Deno.test("extractPlugMap() associates several early-layout devices with their RAMBlocks", async () => {
  const ramBlocks = [
    { idstr: "0000:00:03.0/mem0", usedLength: 1024 * MIB },
    { idstr: "0000:00:02.0/mem1", usedLength: 256 * MIB },
    { idstr: "0000:00:02.0/rom", usedLength: 256 * 1024 },
    { idstr: "pc.ram", usedLength: 128 * MIB },
  ];
  const wire0 = new Uint8Array(64);
  wire0.fill(0xff, 0, 16); // blocks 0-127 of 512
  const wire1 = new Uint8Array(16);
  wire1[7] = 0x03; // blocks 0-1 of 128
  const early = [
    concat([
      longHeader(51, "0000:00:03.0/virtio-mem-device-early"),
      earlyBody({
        gpa: 0x1_4000_0000,
        regionSize: 1024 * MIB,
        blockSize: 2 * MIB,
        node: 0,
        size: 256 * MIB,
        wire: wire0,
      }),
      footer(51),
    ]),
    concat([
      longHeader(53, "0000:00:02.0/virtio-mem-device-early"),
      earlyBody({
        gpa: 0x1_0000_0000,
        regionSize: 256 * MIB,
        blockSize: 2 * MIB,
        node: 1,
        size: 4 * MIB,
        wire: wire1,
      }),
      footer(53),
    ]),
  ];
  const bytes = buildStream({ ramBlocks, early, pageBlock: "pc.ram" });
  const map = await extractPlugMap(decodeMigration(bytesReader(bytes)));
  assert.deepEqual(map.devices.map((d) => [d.path, d.ramBlock, d.node, d.size]), [
    ["0000:00:03.0", "0000:00:03.0/mem0", 0, 256 * MIB],
    ["0000:00:02.0", "0000:00:02.0/mem1", 1, 4 * MIB],
  ]);
  assert.equal(map.isRamOffsetPlugged("0000:00:03.0/mem0", 0x1020_1000), false); // block 129
  assert.equal(map.isRamOffsetPlugged("0000:00:03.0/mem0", 0x0fe0_1000), true); // block 127
  assert.equal(map.isGpaPlugged(0x1_4000_0000 + 255 * MIB), true);
  // A device whose region size matches no RAMBlock of its path is an error.
  const orphan = buildStream({ ramBlocks: ramBlocks.slice(1), early, pageBlock: "pc.ram" });
  await assert.rejects(
    extractPlugMap(decodeMigration(bytesReader(orphan))),
    (e: unknown) =>
      e instanceof FormatError && e.code === "bad-virtio-mem" &&
      /no RAMBlock "0000:00:03.0\/…"/.test(e.message),
  );
});

Deno.test({
  name: "extractPlugMap() associates several late-layout devices with their RAMBlocks",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s2-holes-100M");
    // A second device at 00:02.0, 4 GiB higher: patch the sanity addr (be64) and the config copy addr (LE u64).
    const body2 = r.device.body.slice();
    const view = new DataView(body2.buffer);
    view.setUint32(362, 2); // addr 0x2_0000_0000
    view.setUint32(4 + 256 + 16 + 8 + 4 + 16 + 4, 2, true);
    const ramBlocks = [...r.ramBlocks, {
      idstr: "0000:00:02.0/vmem1",
      usedLength: r.ramBlocks[0]!.usedLength,
    }];
    const bytes = buildStream({
      ramBlocks,
      pageBlock: "pc.ram",
      devices: [
        concat([r.device.header, r.device.body, r.device.footer]),
        concat([longHeader(41, "0000:00:02.0/virtio-mem"), body2, footer(41)]),
      ],
      vmdesc: [{ name: r.device.idstr, bodyLength: r.device.body.byteLength }, {
        name: "0000:00:02.0/virtio-mem",
        bodyLength: body2.byteLength,
      }],
    });
    const map = await extractPlugMap(decodeMigration(bytesReader(bytes)));
    assert.deepEqual(map.devices.map((d) => [d.path, d.ramBlock, d.gpa]), [
      ["0000:00:01.0", "0000:00:01.0/vmem0mem", 0x1_0000_0000],
      ["0000:00:02.0", "0000:00:02.0/vmem1", 0x2_0000_0000],
    ]);
    // The same through the vmdesc shortcut on a file.
    const tmp = await Deno.makeTempFile({ suffix: ".mig" });
    try {
      await Deno.writeFile(tmp, bytes);
      const viaFile = await extractPlugStateFromFile(tmp);
      assert.equal(viaFile.method, "vmdesc");
      assert.deepEqual(viaFile.plugMap.toJSON(), map.toJSON());
    } finally {
      await Deno.remove(tmp);
    }
  },
});

Deno.test({
  name: "extractPlugStateFromFile() falls back to streaming when the vmdesc sizes do not fit",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s1-plugged-200M");
    const good = streamAround(r);
    const bytes = buildStream({
      ramBlocks: r.ramBlocks,
      pageBlock: "pc.ram",
      devices: [concat([r.device.header, r.device.body, r.device.footer])],
      vmdesc: [{ name: r.device.idstr, bodyLength: r.device.body.byteLength + 1 }],
    });
    const tmp = await Deno.makeTempFile({ suffix: ".mig" });
    try {
      await Deno.writeFile(tmp, bytes);
      const res = await extractPlugStateFromFile(tmp);
      assert.equal(res.method, "stream");
      assert.deepEqual(
        res.plugMap.toJSON(),
        await extractPlugMap(decodeMigration(bytesReader(good))).then((m) => m.toJSON()),
      );
    } finally {
      await Deno.remove(tmp);
    }
  },
});

/** Extract from bytes: a map, or the FormatError it failed with. */
async function outcome(bytes: Uint8Array, complete: boolean): Promise<PlugMap | FormatError> {
  try {
    return await extractPlugMap(decodeMigration(bytesReader(bytes)), { complete });
  } catch (e) {
    if (e instanceof FormatError) return e;
    throw e;
  }
}

function assertValidOrError(
  result: PlugMap | FormatError,
  r: RealVirtioMem,
  what: string,
): "error" | "same" | "different" {
  if (result instanceof FormatError) return "error";
  assert.equal(result.devices.length, 1, `${what}: a corrupted device must not vanish silently`);
  const d = result.devices[0]!;
  // PlugMap construction checked every invariant; the RAMBlock list must match as well.
  assert.ok(r.ramBlocks.some((b) => b.idstr === d.ramBlock && b.usedLength === d.regionSize), what);
  const same = d.size === r.truth.size && d.node === r.truth.node && d.gpa === 0x1_0000_0000 &&
    JSON.stringify(result.blockRuns(d)) === JSON.stringify(truthRuns(r));
  return same ? "same" : "different";
}

for (const set of ["out-small", "out-q10"] as RealdataSet[]) {
  Deno.test({
    name:
      `extractPlugMap() gives an error or a valid map for every corrupted byte of a real ${set} device section`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const r = await realVirtioMem(set, "s2-holes-100M");
      const complete = set === "out-q10";
      const base = await outcome(streamAround(r), complete);
      assert.ok(!(base instanceof FormatError), String(base));
      assertTruth(base, r, true);
      const fieldsEnd = r.fieldsOffset + (r.earlyRecord ? 16 : 52 + r.truth.bitmap_bytes);
      const counts = { error: 0, same: 0, different: 0 };
      for (let offset = 0; offset < fieldsEnd + 40; offset++) {
        for (const mask of [0xff, 0x01]) {
          const body = r.device.body.slice();
          body[offset] = body[offset]! ^ mask;
          counts[
            assertValidOrError(
              await outcome(streamAround(r, body), complete),
              r,
              `offset ${offset}`,
            )
          ]++;
        }
      }
      console.log(`${set} device section: ${JSON.stringify(counts)}`);
      assert.ok(counts.error > 0 && counts.same > 0);
    },
  });
}

Deno.test({
  name:
    "extractPlugMap() gives an error or a valid map for every corrupted byte of a real early section",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    for (const scenario of ["s1-plugged-200M", "s2-holes-100M"]) {
      const r = await realVirtioMem("out-q10", scenario);
      const counts = { error: 0, same: 0, different: 0 };
      for (let offset = 0; offset < r.early!.body.byteLength; offset++) {
        for (const mask of [0xff, 0x01, 0x80]) {
          const early = r.early!.body.slice();
          early[offset] = early[offset]! ^ mask;
          // Early extraction (stops at the first page) and complete extraction (cross-checks the late section).
          for (const complete of [false, true]) {
            const result = await outcome(streamAround(r, r.device.body, early), complete);
            const kind = assertValidOrError(
              result,
              r,
              `${scenario} early offset ${offset} complete ${complete}`,
            );
            counts[kind]++;
            if (kind === "different") {
              // Undetectable without the late section: small node ids and block-aligned addr bits; at any
              // time: which blocks are plugged at the same popcount. With the late section, the config
              // space copy pins addr and node.
              const d = (result as PlugMap).devices[0]!;
              assert.equal(d.size, r.truth.size);
              if (complete) {
                assert.deepEqual([d.gpa, d.node], [0x1_0000_0000, 0], `offset ${offset}`);
              } else assert.ok(d.node < 128);
            }
          }
        }
      }
      console.log(`${scenario} early section: ${JSON.stringify(counts)}`);
      assert.ok(counts.error > 0);
    }
  },
});

Deno.test({
  name:
    "extractPlugMap() refuses a P/virtio-mem section whose body does not parse as a virtio-mem device",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s2-holes-100M");
    const body = r.device.body.slice();
    body[4] = 0x00; // PCI vendor id: no longer a virtio device
    await assert.rejects(
      extractPlugMap(decodeMigration(bytesReader(streamAround(r, body)))),
      (e: unknown) =>
        e instanceof FormatError && e.code === "bad-virtio-mem" &&
        /is not a virtio-mem device state this decoder recognises/.test(e.message),
    );
  },
});

Deno.test("extractPlugStateFromFile() probes at most a vmdesc's worth of a big file's tail when no vmdesc ends it", async () => {
  // Found by the campaign on the shared 110 MB streams (seed 31337): with the vmdesc moved away
  // from the end, the tail probe grew x4 to the file's size and allocated all of it (110 MB
  // here, any size for a bigger stream) before checking the vmdesc cap.
  const { installAllocationGuard, setAllocationCap, takeRefusedAllocations } = await import(
    "../_util/fuzz/allocation_guard.ts"
  );
  const dir = await Deno.makeTempDir({ prefix: "vmem-plugstate-tail-" });
  try {
    const path = `${dir}/big.mig`;
    await Deno.writeFile(path, await tinyFixture("q72-tiny.mig")); // late layout
    {
      using f = await Deno.open(path, { write: true });
      await f.truncate(100 << 20); // zeros after the vmdesc (a hole)
    }
    installAllocationGuard(65 << 20);
    takeRefusedAllocations();
    try {
      await extractPlugStateFromFile(path).catch((e) => {
        if (!(e instanceof FormatError)) throw e; // the whole stream decides: trailing zeros
      });
    } finally {
      setAllocationCap(Infinity);
    }
    assert.deepEqual(takeRefusedAllocations().map((r) => r.byteLength), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
