import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { extractPlugMap } from "../../src/migration/plug_state.ts";
import type {
  MigrationRecord,
  RamBlockInfo,
  VirtioMemDeviceState,
  VirtioMemEarlyRecord,
} from "../../src/migration/types.ts";
import {
  findVirtioMemRamBlock,
  parseVirtioMemDeviceBody,
  type VirtioMemDeviceContext,
} from "../../src/migration/virtio_mem_device.ts";
import type { PlugMap } from "../../src/vmem/plug_map.ts";
import { concat, type RealVirtioMem, realVirtioMem } from "../vmem/_plug_stream.ts";
import { REALDATA_SCENARIOS, realdataAvailable, type RealdataSet } from "../_util/realdata.ts";

const SETS: RealdataSet[] = ["out-small", "out-q10"];

function ctxOf(
  r: RealVirtioMem,
  over: Partial<VirtioMemDeviceContext> = {},
): VirtioMemDeviceContext {
  return {
    devicePath: "0000:00:01.0",
    ramBlocks: r.ramBlocks,
    early: r.earlyRecord,
    bodyStreamOffset: r.device.bodyOffset,
    sectionId: r.device.sectionId,
    ...over,
  };
}

/** The body plus its footer plus a few bytes of what follows, as the decoder's window would hold. */
function windowOf(r: RealVirtioMem, body: Uint8Array = r.device.body): Uint8Array {
  return concat([body, r.device.footer, new Uint8Array([0x04, 0, 0, 0, 41])]);
}

/** Build the plug map the state gives, through the same assembly the stream extraction uses. */
function assemble(
  ramBlocks: RamBlockInfo[],
  early: VirtioMemEarlyRecord | undefined,
  state: VirtioMemDeviceState,
): Promise<PlugMap> {
  async function* records(): AsyncGenerator<MigrationRecord> {
    yield { kind: "ram-mem-size", streamOffset: 24, totalBytes: 0, blocks: ramBlocks };
    if (early) yield early;
    yield {
      kind: "virtio-mem-device",
      streamOffset: 1000,
      devicePath: "0000:00:01.0",
      data: new Uint8Array(0),
      state,
    };
  }
  return extractPlugMap(records(), { complete: true });
}

function truthRuns(r: RealVirtioMem): [number, number][] {
  return (r.truth.ranges as [number, number, string][]).filter((x) => x[2] === "plugged").map((
    [a, b],
  ) => [a, b - a + 1]);
}

for (const set of SETS) {
  Deno.test({
    name: `parseVirtioMemDeviceBody() parses every real ${set} device section structurally`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      for (const scenario of REALDATA_SCENARIOS[set]) {
        const r = await realVirtioMem(set, scenario);
        const parsed = parseVirtioMemDeviceBody(windowOf(r), ctxOf(r));
        assert.ok(parsed, `${scenario}: not recognised`);
        assert.equal(parsed.bodyLength, r.device.body.byteLength, scenario);
        const s = parsed.state;
        assert.equal(s.fieldsOffset, r.fieldsOffset, scenario);
        assert.equal(s.configSpaceSize, 256);
        if (set === "out-q10") {
          assert.equal(s.layout, "early");
          assert.equal(s.msixVectors, 2);
          assert.equal(s.fieldsOffset, 399);
          assert.equal(s.bitmap, undefined);
        } else {
          assert.equal(s.layout, "late");
          assert.equal(s.msixVectors, 0);
          assert.equal(s.fieldsOffset, 362);
          assert.equal(s.size, r.truth.size, scenario);
          assert.equal(s.node, r.truth.node);
          assert.equal(s.usableRegionSize, r.truth.usable_region_size, scenario);
          assert.equal(s.requestedSize, r.truth.requested_size, scenario);
          assert.equal(s.gpa, 0x1_0000_0000);
          assert.equal(s.regionSize, 0x1000_0000);
          assert.equal(s.blockSize, 0x20_0000);
        }
        const map = await assemble(r.ramBlocks, r.earlyRecord, s);
        const d = map.devices[0]!;
        assert.deepEqual(map.blockRuns(d), truthRuns(r), scenario);
        assert.equal(d.size, r.qmp["query-memory-devices"][0].data.size, scenario);
        assert.equal(
          d.requestedSize,
          r.qmp["query-memory-devices"][0].data["requested-size"],
          scenario,
        );
        // Without a section id and with the exact body as window, the length is the same.
        const exact = parseVirtioMemDeviceBody(r.device.body, ctxOf(r, { sectionId: undefined }));
        assert.equal(exact?.bodyLength, r.device.body.byteLength);
      }
    },
  });
}

Deno.test({
  name:
    "parseVirtioMemDeviceBody() rejects a wrong footer and returns undefined for foreign or short bytes",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s2-holes-100M");
    assert.throws(
      () => parseVirtioMemDeviceBody(windowOf(r), ctxOf(r, { sectionId: 41 })),
      (e: unknown) =>
        e instanceof FormatError && e.code === "bad-virtio-mem" && /footer/.test(e.message),
    );
    assert.equal(parseVirtioMemDeviceBody(r.device.body.subarray(0, 300), ctxOf(r)), undefined);
    assert.equal(parseVirtioMemDeviceBody(r.device.body.subarray(0, 20_000), ctxOf(r)), undefined);
    assert.equal(parseVirtioMemDeviceBody(new Uint8Array(50_000), ctxOf(r)), undefined);
    assert.equal(parseVirtioMemDeviceBody(new Uint8Array(0), ctxOf(r)), undefined);
    // Another device path: no RAMBlock anchors the region size.
    assert.equal(
      parseVirtioMemDeviceBody(windowOf(r), ctxOf(r, { devicePath: "0000:00:02.0" })),
      undefined,
    );
    // Early layout context on a late body: the bytes after the 16 field bytes are no subsection.
    const q = await realVirtioMem("out-q10", "s2-holes-100M");
    assert.equal(
      parseVirtioMemDeviceBody(windowOf(r), ctxOf(r, { early: q.earlyRecord })),
      undefined,
    );
  },
});

Deno.test({
  name: "parseVirtioMemDeviceBody() follows a PCI Express capability to a 4096-byte config space",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s1-plugged-200M");
    const body = r.device.body;
    const config = body.slice(4, 4 + 256);
    assert.equal(config[0xe0], 0); // free space in the saved config
    config[0xe0] = 0x10; // PCI Express capability
    config[0xe1] = config[0x34]!; // chained before the old list
    config[0x34] = 0xe0;
    const pcie = concat([
      body.subarray(0, 4),
      config,
      new Uint8Array(4096 - 256),
      body.subarray(4 + 256),
    ]);
    const parsed = parseVirtioMemDeviceBody(windowOf(r, pcie), ctxOf(r));
    assert.ok(parsed);
    assert.equal(parsed.state.configSpaceSize, 4096);
    assert.equal(parsed.state.fieldsOffset, 362 + 3840);
    assert.equal(parsed.bodyLength, pcie.byteLength);
    assert.equal(parsed.state.size, 200 << 20);
  },
});

Deno.test({
  name:
    "parseVirtioMemDeviceBody() ends an unknown subsection at the footer only when it knows the section id",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const r = await realVirtioMem("out-q10", "s1-plugged-200M");
    const body = r.device.body.slice();
    const name = new TextEncoder().encode("virtio/started");
    const at = body.findIndex((_, i) => name.every((b, k) => body[i + k] === b));
    assert.ok(at > 0);
    body[at + name.byteLength - 1] = 0x78; // "virtio/startex": unknown
    const parsed = parseVirtioMemDeviceBody(windowOf(r, body), ctxOf(r));
    assert.equal(parsed?.bodyLength, body.byteLength);
    assert.throws(
      () => parseVirtioMemDeviceBody(windowOf(r, body), ctxOf(r, { sectionId: undefined })),
      (e: unknown) => e instanceof FormatError && /unknown virtio subsection/.test(e.message),
    );
  },
});

Deno.test({
  name: "parseVirtioMemDeviceBody() cross-checks the late fields with the config space copy",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s2-holes-100M");
    const body = r.device.body.slice();
    body[362 + 3] = body[362 + 3]! ^ 0x01; // addr 0x1_0000_0000 -> 0x1_0100_0000_0000: still aligned, RAMBlock still fits
    assert.throws(
      () => parseVirtioMemDeviceBody(windowOf(r, body), ctxOf(r)),
      (e: unknown) =>
        e instanceof FormatError && /config space copy/.test(e.message) &&
        e.offset === r.device.bodyOffset + 362,
    );
  },
});

Deno.test("findVirtioMemRamBlock() matches by device path prefix and region size", () => {
  const blocks = [
    { idstr: "0000:00:01.0/vmem0mem", usedLength: 0x1000_0000 },
    { idstr: "0000:00:01.0/rom", usedLength: 0x4_0000 },
    { idstr: "0000:00:01.00/other", usedLength: 0x1000_0000 },
  ];
  assert.equal(
    findVirtioMemRamBlock("0000:00:01.0", 0x1000_0000, blocks)?.idstr,
    "0000:00:01.0/vmem0mem",
  );
  assert.equal(findVirtioMemRamBlock("0000:00:01.0", 0x2000_0000, blocks), undefined);
  assert.throws(
    () =>
      findVirtioMemRamBlock("0000:00:01.0", 0x1000_0000, [...blocks, {
        idstr: "0000:00:01.0/b",
        usedLength: 0x1000_0000,
      }]),
    /all match device/,
  );
});

/** Offsets to corrupt: the transport part, the device fields (and bitmap), and every subsection header byte. */
function corruptionOffsets(r: RealVirtioMem): number[] {
  const body = r.device.body;
  const fieldsEnd = r.fieldsOffset + (r.earlyRecord ? 16 : 52 + r.truth.bitmap_bytes);
  const offsets = new Set<number>();
  for (let i = 0; i < fieldsEnd + 8; i++) offsets.add(i);
  // Subsection headers: 0x05, length, name, version.
  let p = fieldsEnd;
  const known = new Map([
    ["virtio/64bit_features", 8],
    ["virtio/virtqueues", 16384],
    ["virtio/extra_state", 0],
    ["virtio_pci/modern_state", 16 + 1024 * 28],
    ["virtio/started", 1],
  ]);
  while (p < body.byteLength && body[p] === 0x05) {
    const len = body[p + 1]!;
    const name = new TextDecoder().decode(body.subarray(p + 2, p + 2 + len));
    for (let i = p; i < p + 2 + len + 4; i++) offsets.add(i);
    p += 2 + len + 4 + known.get(name)!;
    offsets.add(p - 1); // last body byte of the subsection
  }
  assert.equal(p, body.byteLength, "test walker reached the end");
  return [...offsets].sort((a, b) => a - b);
}

for (const set of SETS) {
  Deno.test({
    name:
      `parseVirtioMemDeviceBody() never yields an invalid map from a corrupted real ${set} device section`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const r = await realVirtioMem(set, "s2-holes-100M");
      const counts = {
        recognisedError: 0,
        notRecognised: 0,
        valid: 0,
        validSame: 0,
        validDifferent: 0,
      };
      const original = await assemble(
        r.ramBlocks,
        r.earlyRecord,
        parseVirtioMemDeviceBody(windowOf(r), ctxOf(r))!.state,
      );
      for (const offset of corruptionOffsets(r)) {
        for (const mask of [0xff, 0x01, 0x80]) {
          const body = r.device.body.slice();
          body[offset] = body[offset]! ^ mask;
          let parsed;
          try {
            parsed = parseVirtioMemDeviceBody(windowOf(r, body), ctxOf(r));
          } catch (e) {
            assert.ok(e instanceof FormatError, `offset ${offset}: ${e}`);
            assert.equal(e.code, "bad-virtio-mem");
            assert.ok(
              e.offset >= r.device.bodyOffset && e.offset <= r.device.bodyOffset + body.byteLength,
            );
            counts.recognisedError++;
            continue;
          }
          if (parsed === undefined) {
            counts.notRecognised++;
            continue;
          }
          assert.equal(parsed.bodyLength, body.byteLength, `offset ${offset}: body length`);
          let map: PlugMap;
          try {
            map = await assemble(r.ramBlocks, r.earlyRecord, parsed.state);
          } catch (e) {
            assert.ok(e instanceof FormatError, `offset ${offset}: ${e}`);
            counts.recognisedError++;
            continue;
          }
          // The map passed every invariant (PlugMap validates); it must also match the RAMBlock list.
          const d = map.devices[0]!;
          assert.ok(
            r.ramBlocks.some((b) => b.idstr === d.ramBlock && b.usedLength === d.regionSize),
          );
          counts.valid++;
          if (JSON.stringify(map) === JSON.stringify(original)) counts.validSame++;
          else {
            // Only what nothing in the stream can cross-check may differ: usable and requested
            // size (within their invariants) and which blocks are plugged, at the same popcount.
            counts.valid--;
            counts.validDifferent++;
            const a = map.toJSON().devices[0]!;
            const b = original.toJSON().devices[0]!;
            const blank = { "usable-region-size": 0, "requested-size": 0, plugged: [] };
            assert.deepEqual(
              { ...a, ...blank },
              { ...b, ...blank },
              `offset ${offset} mask ${mask}`,
            );
            assert.equal(
              map.pluggedBlockCount(map.devices[0]!),
              original.pluggedBlockCount(original.devices[0]!),
            );
          }
        }
      }
      assert.ok(
        counts.recognisedError > 0 && counts.notRecognised > 0 && counts.validSame > 0,
        JSON.stringify(counts),
      );
      console.log(`${set}: ${JSON.stringify(counts)}`);
    },
  });
}
