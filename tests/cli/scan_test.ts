import assert from "node:assert/strict";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import { encodeMigration } from "../../src/migration/encoder.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { realdata, realdataFacts } from "../_util/realdata.ts";
import { listedPages, scanCli } from "../scan/_cli.ts";

const TESTDATA = new URL("../../testdata/migration/", import.meta.url);
const fixture = (name: string) => decodeURIComponent(new URL(name, TESTDATA).pathname);
const CLI = decodeURIComponent(new URL("../../cli/main.ts", import.meta.url).pathname);
const EVIL_MIG = [0x1_04e0_1000, 0x1_06a0_1000];

Deno.test("scan exits 2 on usage errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-" });
  try {
    const blob = `${dir}/blob.bin`;
    await Deno.writeFile(blob, new Uint8Array(8192));
    const mig = fixture("q72-tiny-unplugged.mig");
    const cases: [string[], RegExp][] = [
      [[], /exactly one input/],
      [[blob, mig], /exactly one input/],
      [[mig, "--plugmap", blob, "--plugmap-from", mig], /at most one/],
      [[blob, "--base", "0x100000000"], /needs --plugmap FILE or --plugmap-from STREAM/],
      [[blob, "--base", "0x100000001", "--plugmap-from", mig], /multiple of 4096/],
      [[blob, "--base", "zz"], /--base needs a non-negative integer/],
      [[mig, "--max-findings=-1"], /--max-findings needs a non-negative integer/],
      [[mig, "--max-findings"], /argument missing|ambiguous|--max-findings/],
      [[mig, "--format", "kdump"], /--format must be elf, raw or migration/],
      [["-", "--format", "raw", "--base", "0"], /needs a file/],
      [[mig, "--base", "0", "--format", "migration"], /--base applies to raw images only/],
      [[mig, "--bogus"], /bogus/],
    ];
    for (const [args, message] of cases) {
      const run = await scanCli(args);
      assert.equal(run.code, 2, `${args.join(" ")}: ${run.err}`);
      assert.match(run.err, message);
    }
    const help = await scanCli(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.out, /Exit status: 0 clean, 3 findings, 1 error, 2 usage error/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan exits 1 with offset 0 for an input without a known magic (bad input, not a usage error)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-" });
  try {
    const blob = `${dir}/blob.bin`;
    await Deno.writeFile(blob, new Uint8Array(8192).fill(0x5a));
    const run = await scanCli([blob, "--plugmap-from", fixture("q72-tiny-unplugged.mig")]);
    assert.equal(run.code, 1, run.err);
    assert.match(
      run.err,
      /^error: Cannot scan .*no known magic.*needs --base GPA at offset 0x0\n$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan exits 1 for a missing file and for a stream without plug state", async () => {
  const missing = await scanCli(["/nonexistent/x.mig"]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /^error: /);

  // The tiny real stream without its virtio-mem device section.
  const records: MigrationRecord[] = [];
  for await (
    const r of decodeMigration(bytesReader(await Deno.readFile(fixture("q72-tiny-unplugged.mig"))))
  ) {
    records.push(r);
  }
  const at = records.findIndex((r) => r.kind === "virtio-mem-device");
  assert.ok(at > 0);
  records.splice(at - 1, 3); // section-full, virtio-mem-device, section-footer
  const chunks: Uint8Array[] = [];
  await encodeMigration(
    (async function* () {
      yield* records;
    })(),
    new ByteWriter((c) => {
      chunks.push(c.slice());
    }),
  );
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-" });
  try {
    const path = `${dir}/stateless.mig`;
    await Deno.writeFile(path, concatBytes(chunks));
    const run = await scanCli([path]);
    assert.equal(run.code, 1);
    assert.match(run.err, /no virtio-mem plug state/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan reads zstd-compressed streams through the container layer, early and late layout", async () => {
  for (const name of ["q10-s3-malicious.mig.zst", "q72-s3-malicious.mig.zst"]) {
    const run = await scanCli([fixture(name), "--json"]);
    assert.equal(run.code, 3, run.err);
    const r = run.report!;
    assert.equal(r.input.container, "zstd");
    assert.equal(r.details, "pages");
    assert.equal(r.plugState.source, name.startsWith("q10") ? "stream-early" : "stream-late");
    assert.deepEqual(listedPages(r).map((p) => p.gpa), EVIL_MIG);
    assert.ok(listedPages(r).every((p) => p.source === "ram-page" && p.streamOffset! > 0));
  }
});

Deno.test("scan --max-findings bounds the listed pages and keeps the totals exact", async () => {
  const set = "out-q10";
  const run = await scanCli([
    await realdata(set, "s3-malicious.vmem0.raw"),
    "--base",
    "0x100000000",
    "--plugmap-from",
    await realdata(set, "s3-malicious.mig"),
    "--max-findings",
    "1",
    "--json",
  ]);
  assert.equal(run.code, 3);
  const s = run.report!.summary;
  assert.equal(s.findings, 4);
  assert.equal(s.nonZeroPages, 4);
  assert.equal(s.blocksWithFindings, 4);
  assert.equal(s.listedPages, 1);
  assert.equal(s.truncated, true);
  assert.equal(
    listedPages(run.report!)[0]!.gpa,
    realdataFacts(set).manifest.malicious_writes.pre_migration[0].gpa,
  );
  const zero = await scanCli([await realdata(set, "s3-malicious.mig"), "--max-findings", "0"]);
  assert.equal(zero.code, 3);
  assert.match(zero.out, /2 findings .* 0 listed \(--max-findings 0\)/);
});

Deno.test("vmem-dump scan (spawned) exits 3 with findings, 0 when clean, and scans a late-layout stream from stdin", async () => {
  const set = "out-q10";
  const spawn = async (args: string[], stdinFile?: string) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "scan", ...args],
      stdin: stdinFile ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdinFile) {
      const file = await Deno.open(stdinFile);
      await file.readable.pipeTo(child.stdin);
    }
    const out = await child.output();
    return {
      code: out.code,
      out: new TextDecoder().decode(out.stdout),
      err: new TextDecoder().decode(out.stderr),
    };
  };
  const mig = await realdata(set, "s3-malicious.mig");
  const dirty = await spawn([
    await realdata(set, "s3-malicious.vmem0.raw"),
    "--base",
    "0x100000000",
    "--plugmap-from",
    mig,
  ]);
  assert.equal(dirty.code, 3, dirty.err);
  assert.match(dirty.out, /result: 4 findings/);
  const clean = await spawn([
    await realdata(set, "s2-holes-100M.vmem0.raw"),
    "--base",
    "0x100000000",
    "--plugmap-from",
    await realdata(set, "s2-holes-100M.mig"),
  ]);
  assert.equal(clean.code, 0, clean.err);
  assert.match(clean.out, /result: clean, no findings/);
  // From a pipe the late-layout stream cannot be read twice: per-block totals, no page list.
  const piped = await spawn(["-", "--json"], fixture("q72-s3-malicious.mig.zst"));
  assert.equal(piped.code, 3, piped.err);
  const report = JSON.parse(piped.out);
  assert.equal(report.details, "blocks");
  assert.equal(report.summary.findings, 2);
  assert.deepEqual(
    report.devices[0].blocks.map((b: { firstNonZero: { gpa: number } }) => b.firstNonZero.gpa),
    EVIL_MIG,
  );
});
