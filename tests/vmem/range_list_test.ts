import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { formatPlugMapJson } from "../../src/vmem/plug_map_json.ts";
import { parsePlugMapSource } from "../../src/vmem/plug_map_source.ts";
import { formatRangeList, plugMapFromRangeList } from "../../src/vmem/range_list.ts";
import { formatGpaRange } from "../../src/vmem/ranges.ts";
import { VIRTIO_MEM_MAX_BLOCKS } from "../../src/vmem/vmem_device.ts";

const MIB = 1 << 20;

function assertListError(fn: () => unknown, re: RegExp): void {
  assert.throws(
    fn,
    (e: unknown) => e instanceof FormatError && e.format === "plugmap" && re.test(e.message),
  );
}

Deno.test("plugMapFromRangeList() uses device lines for geometry and plugs the listed ranges", () => {
  const map = plugMapFromRangeList(`
# out-q10 s2
device memaddr=0x100000000 region-size=268435456 block-size=0x200000 node=0 path=0000:00:01.0 ramblock=0000:00:01.0/vmem0mem
0x100000000-0x101c00000
0x108000000-0x10c800000   # second run
`);
  const d = map.devices[0]!;
  assert.equal(d.size, 100 * MIB);
  assert.equal(d.regionSize, 256 * MIB);
  assert.deepEqual(map.blockRuns(d), [[0, 14], [64, 36]]);
  assert.equal(map.deviceForRamBlock("0000:00:01.0/vmem0mem"), d);
  assert.deepEqual(map.unpluggedGpaRanges().map(formatGpaRange), [
    "0x101c00000-0x108000000",
    "0x10c800000-0x110000000",
  ]);
});

Deno.test("plugMapFromRangeList() accepts /proc/iomem style inclusive ends and bare hex", () => {
  const map = plugMapFromRangeList(
    `device memaddr=0x100000000 region-size=0x10000000 block-size=0x200000
  100000000-101bfffff : System RAM (virtio_mem)
  108000000-10c7fffff : System RAM (virtio_mem)
`,
  );
  assert.deepEqual(map.blockRuns(map.devices[0]!), [[0, 14], [64, 36]]);
});

Deno.test("plugMapFromRangeList() infers one device spanning the plugged ranges without device lines", () => {
  const map = plugMapFromRangeList("0x100000000-0x101c00000\n0x108000000-0x10c800000\n");
  const d = map.devices[0]!;
  assert.equal(d.gpa, 0x1_0000_0000);
  assert.equal(d.regionSize, 200 * MIB);
  assert.equal(d.blockSize, 4 * MIB); // largest alignment of all boundaries
  assert.equal(d.ramBlock, "");
  assert.equal(map.isGpaPlugged(0x1_0000_0000), true);
  assert.equal(map.isGpaPlugged(0x1_0400_0000), false);
  assert.equal(map.isGpaPlugged(0x1_0c80_0000), undefined); // beyond the span: not known as virtio-mem
  // The JSON form gives the same map.
  const fromJson = plugMapFromRangeList([[0x1_0000_0000, 28 * MIB], [0x1_0800_0000, 72 * MIB]]);
  assert.deepEqual(fromJson.toJSON(), map.toJSON());
  // Empty list: no devices.
  assert.equal(plugMapFromRangeList("# nothing\n").devices.length, 0);
  assert.equal(plugMapFromRangeList([]).devices.length, 0);
});

Deno.test("plugMapFromRangeList() rejects malformed and misaligned lists", () => {
  assertListError(() => plugMapFromRangeList("0x100000000-0x100000800\n"), /neither 1 MiB aligned/);
  assertListError(
    () => plugMapFromRangeList("0x100080000-0x100100000\n"),
    /not aligned to 1 MiB blocks/,
  );
  assertListError(() => plugMapFromRangeList("hello\n"), /line 1: expected START-END/);
  assertListError(() => plugMapFromRangeList("0x200000-0x100000\n"), /empty or reversed/);
  const dev = "device memaddr=0x100000000 region-size=0x10000000 block-size=0x200000\n";
  assertListError(
    () => plugMapFromRangeList(dev + "0x200000000-0x200200000\n"),
    /outside every device/,
  );
  assertListError(
    () => plugMapFromRangeList(dev + "0x10fe00000-0x110200000\n"),
    /runs past the end/,
  );
  assertListError(
    () => plugMapFromRangeList(dev + "0x100100000-0x100300000\n"),
    /not aligned to block size/,
  );
  assertListError(
    () => plugMapFromRangeList("device memaddr=1 region-size=2\n"),
    /needs block-size/,
  );
  assertListError(
    () =>
      plugMapFromRangeList(
        "device memaddr=0 region-size=0x200000 block-size=0x100000 colour=red\n",
      ),
    /unknown device key/,
  );
  assertListError(() => plugMapFromRangeList([[1, 0]]), /byteLength > 0/);
  assertListError(() => plugMapFromRangeList({}), /JSON array/);
});

Deno.test("formatRangeList() writes what plugMapFromRangeList() reads", () => {
  const text =
    `device memaddr=0x100000000 region-size=0x10000000 block-size=0x200000 node=1 path=0000:00:01.0 ramblock=0000:00:01.0/vmem0mem usable-region-size=0x10000000 requested-size=0x6400000
0x100000000-0x101c00000
0x108000000-0x10c800000
`;
  const map = plugMapFromRangeList(text);
  assert.equal(formatRangeList(map), text);
});

Deno.test("parsePlugMapSource() recognises JSON v1, QMP and both range-list forms", () => {
  const list = "0x100000000-0x101c00000\n";
  const a = parsePlugMapSource(list);
  assert.equal(a.format, "range-list");
  const v1 = parsePlugMapSource(formatPlugMapJson(a.map));
  assert.equal(v1.format, "json-v1");
  assert.deepEqual(v1.map.toJSON(), a.map.toJSON());
  assert.equal(parsePlugMapSource("[[4294967296, 29360128]]").format, "range-list");
  const qmp = parsePlugMapSource(JSON.stringify({
    return: [{
      type: "virtio-mem",
      data: {
        "block-size": 2097152,
        "max-size": 268435456,
        memaddr: 4294967296,
        node: 0,
        size: 0,
        "requested-size": 0,
        memdev: "/objects/m",
      },
    }],
  }));
  assert.equal(qmp.format, "qmp");
  assert.throws(
    () => parsePlugMapSource("{ nope"),
    (e: unknown) => e instanceof FormatError && e.code === "bad-json",
  );
  assert.throws(() => parsePlugMapSource('{"x": 1}'), /expected the version 1 format/);
  assert.equal(formatPlugMapJson(plugMapFromRangeList("")), '{"version":1,"devices":[]}\n');
});

Deno.test("every plug-map format shares one block cap, so a map one format reads, the others read back", () => {
  const cap = VIRTIO_MEM_MAX_BLOCKS;
  // Two 1 MiB ranges spanning cap + 1 blocks: the inferred device is too large in every format.
  const over = `0x0-0x100000\n0x${(cap * MIB).toString(16)}-0x${((cap + 1) * MIB).toString(16)}\n`;
  assert.throws(() => parsePlugMapSource(over), /blocks are too many/);
  assert.throws(
    () =>
      parsePlugMapSource(JSON.stringify({
        return: [{
          type: "virtio-mem",
          data: {
            "block-size": MIB,
            "max-size": (cap + 1) * MIB,
            memaddr: 0,
            node: 0,
            size: 0,
            "requested-size": 0,
            memdev: "/objects/m",
          },
        }],
      })),
    /blocks are too many/,
  );
  // At the cap: the range list, the QMP form and JSON v1 all read it, and agree.
  const at = `0x0-0x100000\n0x${((cap - 1) * MIB).toString(16)}-0x${(cap * MIB).toString(16)}\n`;
  const map = parsePlugMapSource(at).map;
  assert.equal(map.devices[0]!.regionSize / map.devices[0]!.blockSize, cap);
  const json = formatPlugMapJson(map);
  assert.equal(formatPlugMapJson(parsePlugMapSource(json).map), json);
});

Deno.test("formatRangeList() of a map without devices reads back as no devices, not as an empty file", () => {
  const none = plugMapFromRangeList("");
  const text = formatRangeList(none);
  assert.equal(text, "# no virtio-mem devices\n");
  assert.equal(parsePlugMapSource(text).map.devices.length, 0);
});

Deno.test("parsePlugMapSource() reports bad JSON on one line, with the byte offset V8 names", () => {
  for (
    const [text, offset] of [[' \n{"a":[\n 0,\n ],\n "b": 1}', 0], ['\n{"é": [1,2', 12]] as const
  ) {
    assert.throws(
      () => parsePlugMapSource(text),
      (e: unknown) =>
        e instanceof FormatError && e.code === "bad-json" && !e.message.includes("\n") &&
        e.offset === offset,
    );
  }
});
