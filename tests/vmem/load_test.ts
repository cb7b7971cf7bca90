import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { formatPlugMapJson } from "../../src/vmem/json.ts";
import { extractPlugStateFromStreamFile, loadPlugMap } from "../../src/vmem/load.ts";
import { main } from "../../cli/main.ts";
import type { CliIo } from "../../cli/io.ts";
import { realVirtioMem } from "./_plug_stream.ts";
import { realdataAvailable } from "../_util/realdata.ts";
import { qmpReply, S2_JSON } from "./_fixtures.ts";

async function withTemp<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(path, text);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

function memoryIo(): CliIo & { stdout: string; stderr: string } {
  const io = {
    stdout: "",
    stderr: "",
    stderrIsTerminal: false,
    out(text: string) {
      io.stdout += text;
      return Promise.resolve();
    },
    err(text: string) {
      io.stderr += text;
      return Promise.resolve();
    },
  };
  return io;
}

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
    const map = await withTemp(text, (plugmap) => loadPlugMap({ plugmap }));
    const got = map!.toJSON();
    if (i === 1) got.devices[0]!["usable-region-size"] = 268435456; // QMP does not report it
    assert.equal(JSON.stringify(got), want, `input ${i}`);
  }
  assert.equal(await loadPlugMap({}), undefined);
  await assert.rejects(loadPlugMap({ plugmap: "a", plugmapFrom: "b" }), TypeError);
  await assert.rejects(
    withTemp("0x1-0x2\n", (plugmap) => loadPlugMap({ plugmap })),
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

Deno.test({
  name: "vmem-dump plugmap prints JSON, ranges and range lists",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const r = await realVirtioMem("out-q10", "s2-holes-100M");
    let io = memoryIo();
    assert.equal(await main(["plugmap", "--complete", r.migPath], io), 0);
    assert.equal(
      io.stdout,
      formatPlugMapJson((await loadPlugMap({ plugmapFrom: r.migPath, complete: true }))!),
    );
    assert.deepEqual(JSON.parse(io.stdout), S2_JSON);
    io = memoryIo();
    assert.equal(await main(["plugmap", "--ranges", r.migPath], io), 0);
    assert.match(io.stdout, /unplugged\s+0x101c00000-0x108000000\s+100 MiB\s+14-63/);
    assert.match(io.stdout, /requested unknown, usable unknown/);
    io = memoryIo();
    assert.equal(await main(["plugmap", "--ranges", "--json", r.migPath], io), 0);
    assert.deepEqual(JSON.parse(io.stdout).unplugged, [[0x1_01c0_0000, 100 << 20], [
      0x1_0c80_0000,
      56 << 20,
    ]]);
    io = memoryIo();
    assert.equal(await main(["plugmap", "--range-list", "-v", r.migPath], io), 0);
    assert.match(
      io.stdout,
      /^device memaddr=0x100000000 .*\n0x100000000-0x101c00000\n0x108000000-0x10c800000\n$/,
    );
    assert.match(io.stderr, /layout early, found by early/);
    // Converting a --plugmap input back to JSON.
    const list = io.stdout;
    await withTemp(list, async (plugmap) => {
      const io2 = memoryIo();
      assert.equal(await main(["plugmap", "--plugmap", plugmap], io2), 0);
      assert.equal(JSON.parse(io2.stdout).devices[0].size, 104857600);
    });
    // Usage errors.
    io = memoryIo();
    assert.equal(await main(["plugmap"], io), 2);
    assert.equal(await main(["plugmap", "--json", r.migPath], memoryIo()), 2);
    assert.equal(await main(["plugmap", "--plugmap", "x", r.migPath], memoryIo()), 2);
    assert.equal(await main(["plugmap", "--bogus", r.migPath], memoryIo()), 2);
  },
});

Deno.test({
  name: "vmem-dump plugmap - reads a late-layout stream from a pipe",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s2-holes-100M");
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../cli/main.ts", import.meta.url).pathname,
        "plugmap",
        "-v",
        "-",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const file = await Deno.open(r.migPath);
    await file.readable.pipeTo(child.stdin);
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), S2_JSON);
    assert.match(new TextDecoder().decode(out.stderr), /layout late, found by stream/);
  },
});
