import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { extractPlugStateFromStreamFile, loadPlugMap } from "../../src/vmem/load.ts";
import { realVirtioMem } from "./_plug_stream.ts";
import { withTempFile } from "../_util/files.ts";
import { realdataAvailable } from "../_util/realdata.ts";
import { qmpReply, S2_JSON } from "./_fixtures.ts";

Deno.test("loadPlugMap() reads every --plugmap format to the same map", async () => {
  const want = JSON.stringify(S2_JSON);
  const inputs = [
    JSON.stringify(S2_JSON),
    JSON.stringify({
      qmp: { return: qmpReply() },
      plugged: [[0, 14], [64, 36]],
      path: "0000:00:01.0",
    }),
    "device memaddr=0x100000000 region-size=0x10000000 block-size=0x200000 path=0000:00:01.0 " +
    "ramblock=0000:00:01.0/vmem0mem usable-region-size=0x10000000 requested-size=0x6400000\n" +
    "0x100000000-0x101c00000\n0x108000000-0x10c800000\n",
  ];
  for (const [i, text] of inputs.entries()) {
    const map = await withTempFile(text, (plugmap) => loadPlugMap({ plugmap }));
    const got = map!.toJSON();
    if (i === 1) got.devices[0]!["usable-region-size"] = 268435456; // QMP does not report it
    assert.equal(JSON.stringify(got), want, `input ${i}`);
  }
  assert.equal(await loadPlugMap({}), undefined);
  await assert.rejects(loadPlugMap({ plugmap: "a", plugmapFrom: "b" }), TypeError);
  await assert.rejects(
    withTempFile("0x1-0x2\n", (plugmap) => loadPlugMap({ plugmap })),
    (e: unknown) => e instanceof FormatError && e.format === "plugmap",
  );
  await assert.rejects(loadPlugMap({ plugmap: "/nonexistent/plugmap.json" }), Deno.errors.NotFound);
});

Deno.test({
  name: "loadPlugMap() extracts --plugmap-from a real stream of each layout",
  ignore: !realdataAvailable("out-small") || !realdataAvailable("out-q10"),
  fn: async () => {
    const late = await realVirtioMem("out-small", "s2-holes-100M");
    assert.equal(
      JSON.stringify(await loadPlugMap({ plugmapFrom: late.migPath })),
      JSON.stringify(S2_JSON),
    );
    const early = await realVirtioMem("out-q10", "s2-holes-100M");
    const quick = await extractPlugStateFromStreamFile(early.migPath);
    assert.equal(quick.method, "early");
    assert.equal(quick.plugMap.devices[0]!.requestedSize, undefined);
    const full = await loadPlugMap({ plugmapFrom: early.migPath, complete: true });
    assert.equal(JSON.stringify(full), JSON.stringify(S2_JSON));
  },
});

Deno.test({
  name: "loadPlugMap() extracts --plugmap-from zstd-compressed streams of each layout",
  ignore: !realdataAvailable("out-small") || !realdataAvailable("out-q10"),
  fn: async () => {
    const late = await realVirtioMem("out-small", "s0-unplugged");
    const early = await realVirtioMem("out-q10", "s2-holes-100M");
    const zst = await Deno.makeTempFile({ suffix: ".mig.zst" });
    try {
      let z = await new Deno.Command("zstd", { args: ["-q", "-1", "-f", "-o", zst, late.migPath] })
        .output();
      if (!z.success) throw new Error("zstd failed");
      const r = await extractPlugStateFromStreamFile(zst);
      assert.equal(r.method, "stream");
      assert.equal(r.plugMap.devices[0]!.size, 0);
      assert.equal(r.plugMap.devices[0]!.usableRegionSize, 0);
      z = await new Deno.Command("zstd", { args: ["-q", "-1", "-f", "-o", zst, early.migPath] })
        .output();
      if (!z.success) throw new Error("zstd failed");
      const e = await extractPlugStateFromStreamFile(zst);
      assert.equal(e.method, "early");
      assert.equal(e.plugMap.devices[0]!.size, 100 << 20);
    } finally {
      await Deno.remove(zst);
    }
  },
});
