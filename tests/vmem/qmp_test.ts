import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { isQmpPlugMapInput, plugMapFromQmp } from "../../src/vmem/qmp.ts";
import { REALDATA_SCENARIOS, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import { qmpReply as reply } from "./_fixtures.ts";

function assertPlugmapError(fn: () => unknown, code: string, re: RegExp): void {
  assert.throws(
    fn,
    (e: unknown) =>
      e instanceof FormatError && e.format === "plugmap" && e.code === code && re.test(e.message),
  );
}

Deno.test("plugMapFromQmp() combines a reply with runs given beside it", () => {
  for (const qmp of [reply(), { return: reply() }, { "query-memory-devices": reply() }]) {
    const map = plugMapFromQmp({ qmp, plugged: [[0, 14], [64, 36]] });
    const d = map.devices[0]!;
    assert.equal(d.path, "");
    assert.equal(d.ramBlock, "vmem0mem");
    assert.equal(d.gpa, 0x1_0000_0000);
    assert.equal(d.usableRegionSize, undefined);
    assert.equal(d.requestedSize, 104857600);
    assert.deepEqual(map.blockRuns(d), [[0, 14], [64, 36]]);
    assert.equal(map.deviceForRamBlock("0000:00:01.0/vmem0mem"), d);
  }
});

Deno.test("plugMapFromQmp() reads runs, path and ramblock added to each entry's data", () => {
  const entries = [
    { type: "dimm", data: { id: "d0", addr: 0, size: 1 << 30 } },
    ...reply({ plugged: [[0, 14], [64, 36]], path: "0000:00:01.0" }),
    ...reply({
      id: "vmem1",
      memaddr: 0x2_0000_0000,
      memdev: "/objects/m1",
      size: 0,
      "requested-size": 0,
      ramblock: "0000:00:02.0/m1",
    }),
  ];
  const map = plugMapFromQmp({ return: entries });
  assert.equal(map.devices.length, 2);
  assert.equal(map.devices[0]!.ramBlock, "0000:00:01.0/vmem0mem");
  assert.equal(map.devices[1]!.ramBlock, "0000:00:02.0/m1");
  assert.deepEqual(map.blockRuns(map.devices[1]!), []);
  // Runs keyed by id when there are several devices.
  const keyed = plugMapFromQmp({
    qmp: reply().concat(
      reply({ id: "vmem1", memaddr: 0x2_0000_0000, memdev: "/objects/m1", size: 2097152 }),
    ),
    plugged: { vmem0: [[0, 14], [64, 36]], vmem1: [[5, 1]] },
    path: { vmem0: "0000:00:01.0", vmem1: "0000:00:02.0" },
  });
  assert.equal(keyed.devices[1]!.ramBlock, "0000:00:02.0/m1");
  assert.deepEqual(keyed.blockRuns(keyed.devices[1]!), [[5, 1]]);
});

Deno.test("plugMapFromQmp() rejects runs that disagree with the reported size", () => {
  assertPlugmapError(
    () => plugMapFromQmp({ qmp: reply(), plugged: [[0, 14]] }),
    "invariant",
    /size 0x6400000 is not 14 plugged blocks/,
  );
  assertPlugmapError(() => plugMapFromQmp({ qmp: reply() }), "bad-json", /no "plugged" block runs/);
  assertPlugmapError(
    () => plugMapFromQmp({ qmp: reply(), plugged: [[0, 200]] }),
    "bad-json",
    /beyond the last block/,
  );
  assertPlugmapError(
    () => plugMapFromQmp({ qmp: { nope: 1 } }),
    "bad-json",
    /expected a query-memory-devices reply/,
  );
  assertPlugmapError(
    () => plugMapFromQmp({ qmp: reply({ memaddr: -1 }), plugged: [] }),
    "bad-json",
    /memaddr/,
  );
  assertPlugmapError(
    () =>
      plugMapFromQmp({
        qmp: reply().concat(reply({ id: "vmem1", memaddr: 0x2_0000_0000 })),
        plugged: [[0, 50]],
      }),
    "bad-json",
    /keyed by device id/,
  );
  assert.equal(isQmpPlugMapInput([[0, 1]]), false);
  assert.equal(isQmpPlugMapInput(reply()), true);
});

for (const set of ["out-small", "out-q10"] as RealdataSet[]) {
  Deno.test(`plugMapFromQmp() reads the real ${set} QMP records with the recorded bitmaps`, () => {
    const facts = realdataFacts(set);
    for (const scenario of REALDATA_SCENARIOS[set]) {
      const record = facts.qmp[scenario];
      const truth = facts.analysis.scenarios[scenario].bitmap;
      const plugged = (truth.ranges as [number, number, string][])
        .filter((r) => r[2] === "plugged")
        .map(([a, b]) => [a, b - a + 1]);
      // The *.qmp.json record itself holds the reply under "query-memory-devices".
      const map = plugMapFromQmp({ qmp: record, plugged, path: "0000:00:01.0" });
      const d = map.devices[0]!;
      assert.equal(d.size, record["query-memory-devices"][0].data.size, scenario);
      assert.equal(d.size, truth.size, scenario);
      assert.equal(d.ramBlock, "0000:00:01.0/vmem0mem");
    }
  });
}
