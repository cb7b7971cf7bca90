import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { loadPlugState } from "../../src/input/load_plug_state.ts";
import { realVirtioMem } from "../vmem/_plug_stream.ts";
import { withTempFile } from "../_util/files.ts";
import { realdataAvailable } from "../_util/realdata.ts";
import { qmpReply, S2_JSON } from "../vmem/_fixtures.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";

Deno.test("loadPlugState() reads every plug-map file format to the same map", async () => {
  const want = JSON.stringify(S2_JSON);
  const inputs = [
    { format: "json-v1", text: JSON.stringify(S2_JSON) },
    {
      format: "qmp",
      text: JSON.stringify({
        qmp: { return: qmpReply() },
        plugged: [[0, 14], [64, 36]],
        path: "0000:00:01.0",
      }),
    },
    {
      format: "range-list",
      text: "device memaddr=0x100000000 region-size=0x10000000 block-size=0x200000 " +
        "path=0000:00:01.0 ramblock=0000:00:01.0/vmem0mem usable-region-size=0x10000000 " +
        "requested-size=0x6400000\n0x100000000-0x101c00000\n0x108000000-0x10c800000\n",
    },
  ];
  for (const [i, { format, text }] of inputs.entries()) {
    const state = await withTempFile(text, (plugMapFile) => loadPlugState({ plugMapFile }));
    assert.equal(state.source, "plug-map-file");
    assert.equal(state.format, format);
    const got = state.plugMap.toJSON();
    if (i === 1) got.devices[0]!["usable-region-size"] = 268435456; // QMP does not report it
    assert.equal(JSON.stringify(got), want, `input ${i}`);
  }
  await assert.rejects(
    withTempFile("0x1-0x2\n", (plugMapFile) => loadPlugState({ plugMapFile })),
    (e: unknown) => e instanceof FormatError && e.format === "plugmap",
  );
  await assert.rejects(
    loadPlugState({ plugMapFile: "/nonexistent/plugmap.json" }),
    Deno.errors.NotFound,
  );
});

Deno.test("loadPlugState() refuses a plug-map file that is not UTF-8 or over 64 MiB", async () => {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]));
    await assert.rejects(
      loadPlugState({ plugMapFile: path }),
      (e: unknown) => e instanceof FormatError && e.code === "bad-json" && /UTF-8/.test(e.message),
    );
    await Deno.truncate(path, (64 << 20) + 1);
    await assert.rejects(
      loadPlugState({ plugMapFile: path }),
      (e: unknown) => e instanceof FormatError && e.code === "too-large",
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("loadPlugState() reads the bundled zstd demo stream's early plug state", async () => {
  const state = await loadPlugState({ stream: "testdata/migration/q10-s3-malicious.mig.zst" });
  assert.equal(state.source, "stream");
  assert.equal(state.container, "zstd");
  assert.equal(state.mappedRam, false);
  assert.equal(state.layout, "early");
  assert.equal(state.method, "early");
  assert.equal(state.plugMap.devices.length, 1);
  // The early layout stops before usable and requested size; `complete` reads on for them.
  assert.equal(state.plugMap.devices[0]!.requestedSize, undefined);
  const complete = await loadPlugState({
    stream: "testdata/migration/q10-s3-malicious.mig.zst",
    complete: true,
  });
  assert.equal(complete.method, "stream");
  assert.notEqual(complete.plugMap.devices[0]!.requestedSize, undefined);
  assert.deepEqual(complete.plugMap.pluggedGpaRanges(), state.plugMap.pluggedGpaRanges());
});

Deno.test({
  name: "loadPlugState() extracts the plug state of a real stream of each layout",
  ignore: !realdataAvailable("out-small") || !realdataAvailable("out-q10"),
  fn: async () => {
    const late = await realVirtioMem("out-small", "s2-holes-100M");
    const lateState = await loadPlugState({ stream: late.migPath });
    assert.equal(lateState.method, "vmdesc");
    assert.equal(JSON.stringify(lateState.plugMap), JSON.stringify(S2_JSON));
    const early = await realVirtioMem("out-q10", "s2-holes-100M");
    const quick = await loadPlugState({ stream: early.migPath });
    assert.equal(quick.method, "early");
    assert.equal(quick.plugMap.devices[0]!.requestedSize, undefined);
    const full = await loadPlugState({ stream: early.migPath, complete: true });
    assert.equal(JSON.stringify(full.plugMap), JSON.stringify(S2_JSON));
  },
});

Deno.test({
  name: "loadPlugState() extracts the plug state of zstd-compressed streams of each layout",
  ignore: !realdataAvailable("out-small") || !realdataAvailable("out-q10"),
  fn: async () => {
    const late = await realVirtioMem("out-small", "s0-unplugged");
    const early = await realVirtioMem("out-q10", "s2-holes-100M");
    const zst = await Deno.makeTempFile({ suffix: ".mig.zst" });
    try {
      let z = await new Deno.Command("zstd", { args: ["-q", "-1", "-f", "-o", zst, late.migPath] })
        .output();
      if (!z.success) throw new Error("zstd failed");
      const r = await loadPlugState({ stream: zst });
      assert.equal(r.container, "zstd");
      assert.equal(r.method, "stream");
      assert.equal(r.plugMap.devices[0]!.size, 0);
      assert.equal(r.plugMap.devices[0]!.usableRegionSize, 0);
      z = await new Deno.Command("zstd", { args: ["-q", "-1", "-f", "-o", zst, early.migPath] })
        .output();
      if (!z.success) throw new Error("zstd failed");
      const e = await loadPlugState({ stream: zst });
      assert.equal(e.method, "early");
      assert.equal(e.plugMap.devices[0]!.size, 100 << 20);
    } finally {
      await Deno.remove(zst);
    }
  },
});

Deno.test("loadPlugState() tells how far into the file it has read: never backwards, never past the size, to the end when it reads the end", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-plug-progress-" });
  try {
    const tiny72 = `${dir}/q72-tiny.mig`;
    const mapped = `${dir}/q10-tiny.mapped-ram`;
    await Deno.writeFile(tiny72, await tinyFixture("q72-tiny.mig"));
    await Deno.writeFile(mapped, await tinyFixture("q10-tiny.mapped-ram"));
    const demo = "testdata/migration/q10-s3-malicious.mig.zst";
    // toEnd: whether the reads reach the end (undefined: a small file's detection read may).
    const cases: Array<[path: string, complete: boolean, method: string, toEnd?: boolean]> = [
      // Late layout, uncompressed: the vmdesc probe reads the end of the file.
      [tiny72, false, "vmdesc", true],
      // zstd, read to its end for the device section; then only up to the early section.
      [demo, true, "stream", true],
      [demo, false, "early"],
      // A mapped-ram file: its sections are read in place, the RAM areas jumped over (they sit
      // in the ram section, before the early section), up to the device state at its end.
      [mapped, true, "stream", true],
    ];
    for (const [path, complete, method, toEnd] of cases) {
      const size = (await Deno.stat(path)).size;
      const told: number[] = [];
      const r = await loadPlugState({ stream: path, complete, onProgress: (n) => told.push(n) });
      const quiet = await loadPlugState({ stream: path, complete });
      const what = `${path} complete=${complete}`;
      assert.equal(r.method, method, what);
      // The hook only watches: the same state either way.
      assert.equal(JSON.stringify(r.plugMap), JSON.stringify(quiet.plugMap), what);
      assert.ok(told.length > 0, `${what}: no progress`);
      for (let i = 1; i < told.length; i++) assert.ok(told[i]! > told[i - 1]!, `${what}: ${told}`);
      assert.ok(told.at(-1)! <= size, `${what}: ${told.at(-1)} > ${size}`);
      if (toEnd) assert.equal(told.at(-1), size, what);
      else if (toEnd === false) assert.ok(told.at(-1)! < size, `${what}: read all ${size} bytes`);
    }

    // A pipe (a FIFO: no size) is read in order: the bytes read, up to the whole stream.
    const fifo = `${dir}/fifo`;
    const fifoMade = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(fifoMade.success, "mkfifo");
    const bytes = await Deno.readFile(tiny72);
    const writer = (async () => {
      using f = await Deno.open(fifo, { write: true });
      for (let at = 0; at < bytes.byteLength; at += 1 << 16) {
        await f.write(bytes.subarray(at, at + (1 << 16)));
      }
    })();
    const told: number[] = [];
    const r = await loadPlugState({
      stream: fifo,
      complete: true,
      onProgress: (n) => told.push(n),
    });
    await writer;
    assert.equal(r.method, "stream");
    assert.equal(told.at(-1), bytes.byteLength);
    for (let i = 1; i < told.length; i++) assert.ok(told[i]! > told[i - 1]!, `fifo: ${told}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
