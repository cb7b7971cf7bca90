/** `vmem-dump plugmap`: JSON, ranges, range lists, pipes, usage errors (plug-map loading itself: tests/input/load_plug_state_test.ts). */

import assert from "node:assert/strict";
import { main } from "../../cli/main.ts";
import { formatPlugMapJson } from "../../src/vmem/plug_map_json.ts";
import { loadPlugState } from "../../src/input/load_plug_state.ts";
import { CLI_MAIN, memoryIo } from "../_util/cli.ts";
import { assertReport } from "../_util/report_schema.ts";
import { withTempFile } from "../_util/files.ts";
import { realdataAvailable } from "../_util/realdata.ts";
import { S2_JSON } from "../vmem/_fixtures.ts";
import { realVirtioMem } from "../vmem/_plug_stream.ts";

Deno.test({
  name: "vmem-dump plugmap prints JSON, ranges and range lists",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const r = await realVirtioMem("out-q10", "s2-holes-100M");
    // A regular file gives the complete state by default (the device section is cheap to reach).
    let io = memoryIo();
    assert.equal(await main(["plugmap", r.migPath], io.io), 0);
    assert.equal(
      io.out(),
      formatPlugMapJson((await loadPlugState({ stream: r.migPath, complete: true })).plugMap),
    );
    assert.deepEqual(JSON.parse(io.out()), S2_JSON);
    // One summary line on stderr: what was read of the file (the late section via the vmdesc).
    assert.match(
      io.err(),
      /^plugmap: \S+s2-holes-100M\.mig: [\d.,]+ \S+ in [\d.]+ \S+ \([^)]*\); 1 device, early layout, found by \S+; the input has [\d.,]+ \S+\n$/,
    );
    io = memoryIo();
    assert.equal(await main(["plugmap", "--ranges", r.migPath], io.io), 0);
    assert.match(io.out(), /unplugged\s+0x101c00000-0x108000000\s+100 MiB\s+14-63/);
    assert.match(io.out(), /requested 100 MiB, usable 256 MiB/);
    io = memoryIo();
    assert.equal(await main(["plugmap", "--ranges", "--early", r.migPath], io.io), 0);
    assert.match(io.out(), /requested unknown, usable unknown/);
    io = memoryIo();
    assert.equal(await main(["plugmap", "--json", r.migPath], io.io), 0);
    const report = assertReport(io.out(), "plugmap") as {
      ranges: { unplugged: unknown };
      plugState: unknown;
    };
    assert.deepEqual(report.ranges.unplugged, [
      { gpa: 0x1_01c0_0000, byteLength: 100 << 20 },
      { gpa: 0x1_0c80_0000, byteLength: 56 << 20 },
    ]);
    assert.deepEqual(report.plugState, {
      sources: ["early", "device"],
      layout: "early",
      path: null,
    });
    io = memoryIo();
    assert.equal(await main(["plugmap", "--range-list", "--early", "-v", r.migPath], io.io), 0);
    assert.match(
      io.out(),
      /^device memaddr=0x100000000 .*\n0x100000000-0x101c00000\n0x108000000-0x10c800000\n$/,
    );
    assert.match(io.err(), /layout early, found by early/);
    // Converting a --plugmap input back to JSON.
    const list = io.out();
    await withTempFile(list, async (plugmap) => {
      const io2 = memoryIo();
      assert.equal(await main(["plugmap", "--plugmap", plugmap], io2.io), 0);
      assert.equal(JSON.parse(io2.out()).devices[0].size, 104857600);
    });
    // Usage errors.
    io = memoryIo();
    assert.equal(await main(["plugmap"], io.io), 2);
    assert.equal(await main(["plugmap", "--json", "--range-list", r.migPath], memoryIo().io), 2);
    assert.equal(await main(["plugmap", "--early", "--complete", r.migPath], memoryIo().io), 2);
    assert.equal(await main(["plugmap", "--plugmap", "x", r.migPath], memoryIo().io), 2);
    assert.equal(await main(["plugmap", "--bogus", r.migPath], memoryIo().io), 2);
  },
});

Deno.test({
  name: "vmem-dump plugmap - reads a late-layout stream from a pipe",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const r = await realVirtioMem("out-small", "s2-holes-100M");
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI_MAIN, "plugmap", "-v", "-"],
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

Deno.test({
  name: "vmem-dump plugmap - stops after the early section of a pipe, and says so",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const r = await realVirtioMem("out-q10", "s2-holes-100M");
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI_MAIN, "plugmap", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const file = await Deno.open(r.migPath);
    await file.readable.pipeTo(child.stdin).catch(() => {}); // plugmap stops reading early
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const map = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(map.devices[0]["usable-region-size"], null);
    assert.match(
      new TextDecoder().decode(out.stderr),
      /^plugmap: warning: read up to the early section only \(standard input cannot be read twice\)/,
    );
  },
});
