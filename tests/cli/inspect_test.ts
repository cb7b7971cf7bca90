import assert from "node:assert/strict";
import { CLI_MAIN, runCliProcess as cli } from "../_util/cli.ts";
import { assertReport } from "../_util/report_schema.ts";
import { realdata, realdataFacts, type RealdataSet, realdataSharedDir } from "../_util/realdata.ts";

async function inspectCountsMatch(set: RealdataSet, scenario: string, pluggedBlocks: number) {
  const path = await realdata(set, `${scenario}.mig`);
  const { code, stdout } = await cli(["inspect", "--json", path]);
  assert.equal(code, 0);
  // deno-lint-ignore no-explicit-any
  const report = assertReport(stdout, "inspect") as any;
  const vmem = report.ramBlocks.find((b: { ramblock: string }) => b.ramblock.endsWith("/vmem0mem"));
  // Independent count 1: every plugged 2 MiB block has one record per 4 KiB page (README).
  assert.equal(vmem.zeroPages + vmem.pages, pluggedBlocks * 512);
  // Independent count 2: the producer's own parser (analysis.json).
  const theirs = realdataFacts(set).analysis.scenarios[scenario].migration.ram_records;
  for (const b of report.ramBlocks) {
    const want = theirs[b.ramblock] ?? { page: 0, zero: 0 };
    assert.deepEqual([b.pages, b.zeroPages], [want.page, want.zero], b.ramblock);
  }
  return report;
}

Deno.test("vmem-dump inspect --json counts the RAM records of real out-small/s1 like two independent counts", async () => {
  const report = await inspectCountsMatch("out-small", "s1-plugged-200M", 100);
  assert.equal(report.machineType, "pc-q35-7.2");
  assert.equal(report.eof, true);
  assert.equal(report.tailMatchesVmdesc, true);
  const device = report.sections.find((s: { idstr: string }) =>
    s.idstr === "0000:00:01.0/virtio-mem"
  );
  assert.equal(device.type, "full");
  assert.ok(device.sectionId > 0);
});

Deno.test("vmem-dump inspect --json finds the 76,800 virtio-mem records of the large 7.2 s1 stream", async () => {
  // The large set unpacks to 6.7 GB; stream just this member out of the archive into stdin.
  // (zstd gets SIGPIPE when tar stops after the member; inspect itself rejects a truncated stream.)
  const archive = `${realdataSharedDir("out")}/fixtures.tar.zst`;
  const child = new Deno.Command("bash", {
    args: [
      "-c",
      'zstd -q -d --long=30 -c -- "$1" | tar -xO --occurrence=1 -f - s1-plugged-300M.mig | ' +
      '"$2" run -A "$3" inspect --json -',
      "inspect",
      archive,
      Deno.execPath(),
      CLI_MAIN,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  // deno-lint-ignore no-explicit-any
  const report = assertReport(new TextDecoder().decode(out.stdout), "inspect") as any;
  const vmem = report.ramBlocks.find((b: { ramblock: string }) =>
    b.ramblock === "0000:00:01.0/vmem0mem"
  );
  assert.equal(vmem.zeroPages + vmem.pages, 76_800); // 150 plugged blocks × 512 pages (shared README)
  assert.equal(report.streamByteLength, 233_671_538); // the shared README's file table
  const theirs = realdataFacts("out").analysis.scenarios["s1-plugged-300M"].migration.ram_records;
  for (const b of report.ramBlocks) {
    const want = theirs[b.ramblock] ?? { page: 0, zero: 0 };
    assert.deepEqual([b.pages, b.zeroPages], [want.page, want.zero], b.ramblock);
  }
});

Deno.test("vmem-dump inspect reads a gzip stream from stdin and lists every section with its size", async () => {
  const tiny = await Deno.readFile(
    new URL("../../testdata/migration/q72-tiny-unplugged.mig", import.meta.url),
  );
  const gz = new Uint8Array(
    await new Response(new Blob([tiny]).stream().pipeThrough(new CompressionStream("gzip")))
      .arrayBuffer(),
  );
  const { code, stdout } = await cli(["inspect", "--json", "-"], gz);
  assert.equal(code, 0);
  // deno-lint-ignore no-explicit-any
  const report = assertReport(stdout, "inspect") as any;
  assert.deepEqual(report.input, {
    path: "-",
    format: "migration",
    container: "gzip",
    byteLength: null,
  });
  assert.equal(report.streamByteLength, tiny.byteLength);
  const total = report.sections.reduce(
    (a: number, s: { byteLength: number }) => a + s.byteLength,
    0,
  );
  // Sections + header (8) + configuration (5 + name) + EOF (1) + vmdesc (5 + JSON) = the whole stream.
  assert.equal(
    total + 8 + 5 + report.machineType.length + 1 + 5 + report.vmdescByteLength,
    tiny.byteLength,
  );
  assert.ok(report.sections.every((s: { sectionId: number | null }) => s.sectionId !== null));
});

Deno.test("vmem-dump inspect exits 1 with the offset on a corrupt stream and 2 on a usage error", async () => {
  const tiny = await Deno.readFile(
    new URL("../../testdata/migration/q72-tiny-unplugged.mig", import.meta.url),
  );
  const bad = tiny.slice(0, 200_000);
  const r1 = await cli(["inspect", "-"], bad);
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /^error: .*at offset 0x[0-9a-f]+\n$/);
  const r2 = await cli(["inspect"]);
  assert.equal(r2.code, 2);
  const r3 = await cli(["inspect", "--bogus", "x"]);
  assert.equal(r3.code, 2);
});
