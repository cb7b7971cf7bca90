import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { checkBlockRuns } from "../../src/vmem/plug_map_json.ts";
import { PlugMap } from "../../src/vmem/plug_map.ts";
import { validateVmemDevice, type VmemDevice } from "../../src/vmem/vmem_device.ts";
import { formatGpaRange, mergeGpaRanges } from "../../src/vmem/ranges.ts";

const MIB = 1 << 20;
const GPA = 0x1_0000_0000;

/** The out-q10 s2 state: 128 blocks of 2 MiB, plugged 0-13 and 64-99. */
function s2Device(over: Partial<VmemDevice> = {}): VmemDevice {
  const bitmap = new Uint8Array(16);
  for (const [a, b] of [[0, 13], [64, 99]] as const) {
    for (let i = a; i <= b; i++) bitmap[i >> 3] = bitmap[i >> 3]! | (1 << (i & 7));
  }
  return {
    path: "0000:00:01.0",
    ramBlock: "0000:00:01.0/vmem0mem",
    gpa: GPA,
    regionSize: 256 * MIB,
    blockSize: 2 * MIB,
    node: 0,
    usableRegionSize: 256 * MIB,
    size: 100 * MIB,
    requestedSize: 100 * MIB,
    bitmap,
    ...over,
  };
}

function assertInvariant(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.equal(e.format, "plugmap");
    assert.equal(e.code, "invariant");
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("PlugMap answers block, gpa and ramOffset queries", () => {
  const map = new PlugMap([s2Device()]);
  const d = map.devices[0]!;
  assert.equal(map.deviceForGpa(GPA), d);
  assert.equal(map.deviceForGpa(GPA + 256 * MIB - 1), d);
  assert.equal(map.deviceForGpa(GPA + 256 * MIB), undefined);
  assert.equal(map.deviceForGpa(GPA - 1), undefined);
  assert.equal(map.deviceForRamBlock("0000:00:01.0/vmem0mem"), d);
  assert.equal(map.deviceForRamBlock("pc.ram"), undefined);
  assert.equal(map.isBlockPlugged(d, 13), true);
  assert.equal(map.isBlockPlugged(d, 14), false);
  assert.equal(map.isBlockPlugged(d, 64), true);
  assert.equal(map.isBlockPlugged(d, 127), false);
  assert.throws(() => map.isBlockPlugged(d, 128), RangeError);
  assert.equal(map.blockIndexForGpa(d, GPA + 14 * 2 * MIB + 5), 14);
  assert.equal(map.blockIndexForRamOffset(d, 0xc001000), 96);
  assert.equal(map.blockIndexForRamOffset(d, 256 * MIB), undefined);
  assert.equal(map.isGpaPlugged(GPA + 0x1c0_0000 - 1), true);
  assert.equal(map.isGpaPlugged(GPA + 0x1c0_0000), false);
  assert.equal(map.isGpaPlugged(0x1000), undefined);
  assert.equal(map.isRamOffsetPlugged("0000:00:01.0/vmem0mem", 0x4e01000), false); // EVIL-MIG block 39
  assert.equal(map.isRamOffsetPlugged("0000:00:01.0/vmem0mem", 0x8000000), true);
  assert.equal(map.isRamOffsetPlugged("pc.ram", 0), undefined);
  assert.equal(map.pluggedBlockCount(d), 50);
});

Deno.test("PlugMap.classifyGpaRange() tells plugged, unplugged, mixed and none apart", () => {
  const map = new PlugMap([s2Device()]);
  assert.equal(map.classifyGpaRange(GPA, 28 * MIB), "plugged");
  assert.equal(map.classifyGpaRange(GPA + 4096, 4096), "plugged");
  assert.equal(map.classifyGpaRange(GPA + 28 * MIB, 100 * MIB), "unplugged");
  assert.equal(map.classifyGpaRange(GPA, 29 * MIB), "mixed");
  assert.equal(map.classifyGpaRange(0, 4096), "none");
  assert.equal(map.classifyGpaRange(GPA - 4096, 8192), "mixed"); // none + plugged
  assert.equal(map.classifyGpaRange(GPA + 255 * MIB, 2 * MIB), "mixed"); // unplugged + none
  assert.equal(map.classifyGpaRange(GPA, 0), "none");
  const d = map.devices[0]!;
  assert.equal(map.classifyRamRange(d, 64 * 2 * MIB, 72 * MIB), "plugged");
  assert.equal(map.classifyRamRange(d, 0, 256 * MIB), "mixed");
  assert.equal(map.classifyRamRange(d, 256 * MIB, 4096), "none");
});

Deno.test("PlugMap lists plugged and unplugged ranges as gpa and as ramOffset", () => {
  const map = new PlugMap([s2Device()]);
  assert.deepEqual(map.pluggedGpaRanges().map(formatGpaRange), [
    "0x100000000-0x101c00000",
    "0x108000000-0x10c800000",
  ]);
  assert.deepEqual(map.unpluggedGpaRanges().map(formatGpaRange), [
    "0x101c00000-0x108000000",
    "0x10c800000-0x110000000",
  ]);
  assert.deepEqual(map.pluggedRamRanges(), [
    { ramBlock: "0000:00:01.0/vmem0mem", ramOffset: 0, byteLength: 28 * MIB },
    { ramBlock: "0000:00:01.0/vmem0mem", ramOffset: 128 * MIB, byteLength: 72 * MIB },
  ]);
  assert.deepEqual(map.unpluggedRamRanges().map((r) => [r.ramOffset, r.byteLength]), [
    [28 * MIB, 100 * MIB],
    [200 * MIB, 56 * MIB],
  ]);
  assert.deepEqual(map.blockRuns(map.devices[0]!), [[0, 14], [64, 36]]);
  assert.deepEqual(map.blockRuns(map.devices[0]!, false), [[14, 50], [100, 28]]);
});

Deno.test("PlugMap merges ranges across adjacent devices and sorts by gpa", () => {
  const a = s2Device({ path: "0000:00:02.0", ramBlock: "0000:00:02.0/m1", gpa: GPA + 256 * MIB });
  const b = s2Device();
  const map = new PlugMap([a, b]);
  assert.equal(map.devices[0]!.path, "0000:00:02.0"); // given order kept
  const unplugged = map.unpluggedGpaRanges().map(formatGpaRange);
  // b's tail 0x10c800000-0x110000000 and a's hole start differ: a starts plugged, so no merge there.
  assert.deepEqual(unplugged, [
    "0x101c00000-0x108000000",
    "0x10c800000-0x110000000",
    "0x111c00000-0x118000000",
    "0x11c800000-0x120000000",
  ]);
  assert.deepEqual(
    mergeGpaRanges([{ gpa: 10, byteLength: 5 }, { gpa: 0, byteLength: 10 }, {
      gpa: 30,
      byteLength: 0,
    }]),
    [
      { gpa: 0, byteLength: 15 },
    ],
  );
});

Deno.test("validateVmemDevice() rejects every broken invariant", () => {
  validateVmemDevice(s2Device());
  assertInvariant(
    () => validateVmemDevice(s2Device({ size: 98 * MIB })),
    /size 0x6200000 is not 50 plugged blocks/,
  );
  assertInvariant(() => validateVmemDevice(s2Device({ blockSize: 3 * MIB })), /not a power of two/);
  assertInvariant(() => validateVmemDevice(s2Device({ blockSize: 512 * 1024 })), /at least 1 MiB/);
  assertInvariant(
    () => validateVmemDevice(s2Device({ gpa: GPA + MIB })),
    /memaddr 0x100100000 is not aligned/,
  );
  assertInvariant(() => validateVmemDevice(s2Device({ regionSize: 255 * MIB })), /region size/);
  assertInvariant(
    () => validateVmemDevice(s2Device({ usableRegionSize: 98 * MIB })),
    /usable region size/,
  );
  assertInvariant(
    () => validateVmemDevice(s2Device({ usableRegionSize: 512 * MIB })),
    /usable region size/,
  );
  assertInvariant(
    () => validateVmemDevice(s2Device({ usableRegionSize: 199 * MIB })),
    /usable region size/,
  );
  // 180 MiB usable: block 90 (plugged) lies beyond it.
  assertInvariant(
    () => validateVmemDevice(s2Device({ usableRegionSize: 180 * MIB, requestedSize: 100 * MIB })),
    /block 90 is plugged beyond usable/,
  );
  assertInvariant(
    () => validateVmemDevice(s2Device({ requestedSize: 101 * MIB })),
    /requested size/,
  );
  assertInvariant(
    () => validateVmemDevice(s2Device({ requestedSize: 258 * MIB, usableRegionSize: undefined })),
    /requested size/,
  );
  assertInvariant(
    () => validateVmemDevice(s2Device({ bitmap: new Uint8Array(15) })),
    /bitmap must have 16 bytes/,
  );
  const stray = s2Device().bitmap.slice();
  const small = s2Device({ regionSize: 254 * MIB, usableRegionSize: 254 * MIB, bitmap: stray });
  stray[15] = stray[15]! | 0x80;
  assertInvariant(() => validateVmemDevice(small), /beyond the last block 126/);
  assertInvariant(() => validateVmemDevice(s2Device({ size: -1 })), /size -1/);
  assertInvariant(() => validateVmemDevice(s2Device({ node: 1.5 })), /node/);
  assertInvariant(
    () => validateVmemDevice(s2Device({ node: 128 })),
    /node 128 is not a NUMA node below 128/,
  );
  // Found by the mutation campaign: a QMP input whose path had a space read fine, but its
  // range-list form could not be read back.
  for (const bad of ["0000:00:01. ", "a#b", "a\nb", "a\tb"]) {
    assertInvariant(
      () => validateVmemDevice(s2Device({ path: bad })),
      /path .* contains whitespace/,
    );
    assertInvariant(
      () => validateVmemDevice(s2Device({ ramBlock: `${bad}/vmem0mem` })),
      /ramBlock .* contains whitespace/,
    );
  }
  // Unknown usable/requested sizes are fine.
  validateVmemDevice(s2Device({ usableRegionSize: undefined, requestedSize: undefined }));
});

Deno.test("PlugMap rejects overlapping regions and duplicate RAMBlocks", () => {
  assertInvariant(
    () => new PlugMap([s2Device(), s2Device({ path: "x", ramBlock: "x/y", gpa: GPA + 128 * MIB })]),
    /overlap/,
  );
  assertInvariant(
    () => new PlugMap([s2Device(), s2Device({ gpa: GPA + 256 * MIB })]),
    /two devices use RAMBlock/,
  );
});

Deno.test("PlugMap copies its devices, so later changes to the input do not leak in", () => {
  const input = s2Device();
  const map = new PlugMap([input]);
  input.bitmap[0] = 0;
  input.size = 0;
  assert.equal(map.devices[0]!.size, 100 * MIB);
  assert.equal(map.isGpaPlugged(GPA), true);
  assert.throws(() => {
    (map.devices[0] as VmemDevice).size = 1;
  }, TypeError);
});

Deno.test("PlugMap.deviceForRamBlock() matches a bare backend id when the path is unknown", () => {
  const map = new PlugMap([s2Device({ path: "", ramBlock: "vmem0mem" })]);
  assert.equal(map.deviceForRamBlock("0000:00:01.0/vmem0mem")?.ramBlock, "vmem0mem");
  assert.equal(map.deviceForRamBlock("0000:00:01.0/other"), undefined);
  assert.equal(map.deviceForRamBlock("vmem0mem"), undefined);
});

Deno.test("PlugMap.toJSON() and PlugMap.fromJSON() round-trip the version 1 format", () => {
  const map = new PlugMap([
    s2Device(),
    s2Device({
      path: "0000:00:02.0",
      ramBlock: "0000:00:02.0/m",
      gpa: 2 * GPA,
      usableRegionSize: undefined,
      requestedSize: undefined,
    }),
  ]);
  const json = JSON.parse(JSON.stringify(map));
  assert.deepEqual(json.devices[0], {
    path: "0000:00:01.0",
    ramblock: "0000:00:01.0/vmem0mem",
    memaddr: 4294967296,
    "region-size": 268435456,
    "block-size": 2097152,
    node: 0,
    "usable-region-size": 268435456,
    size: 104857600,
    "requested-size": 104857600,
    plugged: [[0, 14], [64, 36]],
  });
  assert.equal(json.version, 1);
  assert.equal(json.devices[1]["usable-region-size"], null);
  const back = PlugMap.fromJSON(json);
  assert.deepEqual(back.toJSON(), map.toJSON());
  assert.deepEqual(back.devices[0]!.bitmap, map.devices[0]!.bitmap);
  // Absent optional sizes and touching runs are accepted.
  delete json.devices[1]["usable-region-size"];
  json.devices[1].plugged = [[0, 10], [10, 4], [64, 36]];
  assert.deepEqual(PlugMap.fromJSON(json).toJSON().devices[1]!.plugged, [[0, 14], [64, 36]]);
});

Deno.test("PlugMap.fromJSON() rejects wrong shapes with bad-json and impossible states with invariant", () => {
  const good = () => JSON.parse(JSON.stringify(new PlugMap([s2Device()])));
  const badJson = (j: unknown, re: RegExp) =>
    assert.throws(
      () => PlugMap.fromJSON(j),
      (e: unknown) => e instanceof FormatError && e.code === "bad-json" && re.test(e.message),
    );
  badJson(null, /expected an object/);
  badJson({ ...good(), version: 2 }, /unsupported version 2/);
  badJson({ version: 1 }, /devices must be an array/);
  let j = good();
  j.devices[0].plugged = [[64, 36], [0, 14]];
  badJson(j, /not sorted/);
  j = good();
  j.devices[0].plugged = [[0, 14], [120, 9]];
  badJson(j, /beyond the last block/);
  j = good();
  j.devices[0].plugged = [[0, 0]];
  badJson(j, /blockCount > 0/);
  j = good();
  j.devices[0].memaddr = "4294967296";
  badJson(j, /memaddr must be a non-negative integer/);
  j = good();
  j.devices[0].size = 1.5;
  badJson(j, /size/);
  j = good();
  j.devices[0].size = 98 * MIB;
  assertInvariant(() => PlugMap.fromJSON(j), /size/);
  j = good();
  j.devices[0]["block-size"] = 3 * MIB;
  assertInvariant(() => PlugMap.fromJSON(j), /region size/);
});

Deno.test("checkBlockRuns() merges touching runs and rejects overlaps", () => {
  assert.deepEqual(checkBlockRuns([[0, 2], [2, 3], [10, 1]], 16, "p"), [[0, 5], [10, 1]]);
  assert.throws(() => checkBlockRuns([[0, 3], [2, 3]], 16, "p"), /overlaps/);
  assert.throws(() => checkBlockRuns("x", 16, "p"), /must be an array/);
});
