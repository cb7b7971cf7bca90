import assert from "node:assert/strict";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import { encodeMigration } from "../../src/migration/encoder.ts";
import type { MigrationRecord, VmdescRecord } from "../../src/migration/types.ts";
import { realdata, realdataFacts } from "../_util/realdata.ts";
import { listedPages, scanCli } from "../scan/_cli.ts";
import { execCli } from "../_util/cli.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import { tinyPlugMapJson } from "../_util/fuzz/targets/dumps.ts";

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
      [[blob, "--base", "zz"], /--base needs a size or address/],
      [[blob, "--base", "4Q"], /--base needs a size or address/],
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
    for (
      const line of [
        /3 +findings/,
        /0 +clean +no findings, and every unplugged byte/,
        /4 +inconclusive/,
      ]
    ) {
      assert.match(help.out, line);
    }
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
  // … and its vmdesc entry, so that the device state still adds up.
  const v = records.findIndex((r) => r.kind === "vmdesc");
  const vmdesc = records[v] as VmdescRecord;
  const parsed = vmdesc.parsed as { devices: { name: string }[] };
  parsed.devices = parsed.devices.filter((d) => !d.name.endsWith("/virtio-mem"));
  const json = new TextEncoder().encode(JSON.stringify(parsed));
  records[v] = { ...vmdesc, json, parsed };
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
    // The device section and its vmdesc entry are gone: the stream carries no plug state.
    // (With the entry left in, the device state would not add up: unproven, exit 1 too.)
    assert.match(run.err, /no virtio-mem plug state/);
    // From a pipe, read once: the same.
    const piped = await execCli(["scan", "-"], { stdin: await Deno.readFile(path) });
    assert.equal(piped.code, 1, piped.err);
    assert.match(piped.err, /no virtio-mem plug state/);
    // Judged by a plug map without devices: nothing to check, inconclusive (4), never clean.
    await Deno.writeTextFile(`${dir}/none.json`, '{"version":1,"devices":[]}');
    const none = await scanCli([path, "--plugmap", `${dir}/none.json`, "--json"]);
    assert.equal(none.code, 4, none.err);
    assert.equal(none.report!.verdictReason, "no virtio-mem devices: nothing to check");
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
    assert.deepEqual(r.plugState.sources, name.startsWith("q10") ? ["early"] : ["first-pass"]);
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
  assert.match(
    clean.out,
    /^verdict: clean: every unplugged byte \(156 MiB\) was examined: no findings$/m,
  );
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

Deno.test("scan: an empty or blank --plugmap is a bad plug map (exit 1); a plug map without devices is inconclusive (exit 4, nothing to check)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-" });
  try {
    const raw = `${dir}/image.raw`;
    await Deno.writeFile(raw, new Uint8Array(1 << 20));
    const mig = fixture("q72-tiny-unplugged.mig");
    for (const [name, text] of [["empty.json", ""], ["blank.json", " \n\t\n"]] as const) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
      for (const input of [[raw, "--base", "0x100000000"], [mig]]) {
        const run = await scanCli([...input, "--plugmap", `${dir}/${name}`]);
        assert.equal(run.code, 1, `${name}: ${run.err}`);
        assert.match(run.err, /^error: Cannot read plug map: it is empty .* at offset 0x0\n$/);
      }
    }
    await Deno.writeTextFile(`${dir}/none.json`, '{"version":1,"devices":[]}');
    const none = await scanCli([
      raw,
      "--base",
      "0x100000000",
      "--plugmap",
      `${dir}/none.json`,
      "--json",
    ]);
    assert.equal(none.code, 4, none.err);
    assert.equal(none.report!.verdict, "inconclusive");
    assert.equal(none.report!.verdictReason, "no virtio-mem devices: nothing to check");
    const text = await scanCli([raw, "--base", "0x100000000", "--plugmap", `${dir}/none.json`]);
    assert.equal(text.code, 4);
    assert.match(text.out, /^verdict: inconclusive: no virtio-mem devices: nothing to check$/m);
    // The stream's own plug state judges over a map without devices, but the two disagree (the
    // map says there is no device): no finding is then not a proof.
    const stream = await scanCli([mig, "--plugmap", `${dir}/none.json`, "--json"]);
    assert.equal(stream.code, 4, "the stream's own plug state (one device) judges; they disagree");
    assert.equal(stream.report!.devices.length, 1);
    assert.match(stream.report!.verdictReason, /disagree/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan --json: version 3 with tool, verdict and verdictReason; --hexdump-bytes sets the hexdump length", async () => {
  const mig = fixture("q10-s3-malicious.mig.zst");
  const run = await scanCli([mig, "--json", "--hexdump-bytes", "100"]);
  assert.equal(run.code, 3);
  const r = run.report!;
  assert.equal(r.kind, "scan-report");
  assert.equal(r.version, 3);
  assert.match(r.tool, /^vmem-dump \d/);
  assert.equal(r.verdict, "findings");
  assert.equal(r.verdictReason, "2 findings in 2 blocks of 1 device");
  assert.equal(r.hexdumpBytes, 100);
  assert.equal(r.coverage, null);
  for (const p of listedPages(r)) {
    assert.equal(p.hexdump!.hex.length, 200);
    assert.equal(p.hexdump!.gpa, p.gpa); // the EVIL pages start with data
    assert.equal(p.section!.idstr, "ram");
  }
  const none = await scanCli([mig, "--json", "--hexdump-bytes", "0"]);
  assert.ok(listedPages(none.report!).every((p) => p.hexdump!.hex === ""));
  const text = await scanCli([mig, "--hexdump-bytes", "48"]);
  // 48 bytes: three hexdump rows per page.
  assert.equal(text.out.match(/^ {6}[0-9a-f]{9} {2}/gm)!.length, 2 * 3);
  const bad = await scanCli([mig, "--hexdump-bytes", "4097"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--hexdump-bytes takes 0 to 4096/);
});

Deno.test("scan of a late-layout file judged by a wrong plug map reads it again with the stream's own state and lists every page", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-" });
  try {
    const wrong = `${dir}/all-plugged.json`;
    // The q72 demo device: 256 MiB at 4 GiB in 2 MiB blocks; this map says all are plugged.
    await Deno.writeTextFile(
      wrong,
      JSON.stringify({
        version: 1,
        devices: [{
          path: "0000:00:01.0",
          ramblock: "0000:00:01.0/vmem0mem",
          memaddr: 0x1_0000_0000,
          "region-size": 128 * 0x20_0000,
          "block-size": 0x20_0000,
          node: 0,
          "usable-region-size": null,
          size: 128 * 0x20_0000,
          "requested-size": null,
          plugged: [[0, 128]],
        }],
      }),
    );
    const run = await scanCli([fixture("q72-s3-malicious.mig.zst"), "--plugmap", wrong, "--json"]);
    assert.equal(run.code, 3, run.err);
    const r = run.report!;
    assert.equal(r.details, "pages");
    assert.deepEqual(r.plugState.sources, ["device"]);
    assert.deepEqual(listedPages(r).map((p) => p.gpa), EVIL_MIG);
    assert.match(r.warnings.join("\n"), /differs from the stream's own plug state/);
    assert.match(r.warnings.join("\n"), /it was read twice/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan --json and --extract name a flattened kdump's size as stored, not the size its records claim", async () => {
  // Found by the cli-json campaign: input.byteLength was the file the records describe, so one
  // record at a far offset (an untrusted field) made the report claim a 4 PiB input.
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-flat-" });
  try {
    const real = await tinyFixture("q72-tiny.kdump-zlib"); // QEMU 7.2, flattened
    const far = new Uint8Array(real.length + 17);
    far.set(real.subarray(0, real.length - 16));
    const v = new DataView(far.buffer);
    v.setBigInt64(real.length - 16, 1n << 52n, false); // one byte at 4 PiB
    v.setBigInt64(real.length - 8, 1n, false);
    far.set(real.subarray(real.length - 16), real.length + 1); // the end marker
    const pm = `${dir}/plugmap.json`;
    await Deno.writeTextFile(pm, await tinyPlugMapJson());
    for (const [name, bytes] of [["real", real], ["far", far]] as const) {
      const path = `${dir}/${name}.kdump`;
      await Deno.writeFile(path, bytes);
      const run = await scanCli([path, "--plugmap", pm, "--json", "--extract", `${dir}/${name}`]);
      // QEMU left the unplugged memory out: nothing examined, inconclusive.
      assert.equal(run.code, 4, `${name}: ${run.err}`);
      assert.equal(run.report!.input.container, "flattened");
      assert.equal(run.report!.input.byteLength, bytes.length, name);
      const manifest = JSON.parse(await Deno.readTextFile(`${dir}/${name}/manifest.json`));
      assert.equal(manifest.input.byteLength, bytes.length, `${name}: manifest`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("scan judged by the stream's state while the plug map given disagrees is inconclusive, never clean", async (t) => {
  // Review finding: s1's own (late) state has 100 blocks plugged; s0's map has none. Judged by
  // the stream's state s1 has no finding, but that is no proof about the map the user gave
  // (verify, which takes both, finds 51,200 violations).
  for (const set of ["out-small", "out-q10"] as const) {
    await t.step(set, async () => {
      const s1 = await realdata(set, "s1-plugged-200M.mig");
      const run = await scanCli([
        s1,
        "--plugmap-from",
        await realdata(set, "s0-unplugged.mig"),
        "--json",
      ]);
      assert.equal(run.code, 4, run.err);
      assert.equal(run.report!.verdict, "inconclusive");
      assert.match(run.report!.verdictReason, /disagree on .*judged by the stream's state/);
      assert.equal(run.report!.summary.findings, 0);
      // The same stream with its own map: clean.
      const same = await scanCli([s1, "--plugmap-from", s1, "--json"]);
      assert.equal(same.code, 0, same.err);
      assert.equal(same.report!.verdict, "clean");
    });
  }
});

Deno.test("scan of a named pipe reads it once: what told the input's kind is scanned, not lost to a second open", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-fifo-" });
  try {
    // The early layout: a pipe and the file give the same findings (no first pass over a file).
    const file = `${dir}/q10-tiny.mig`;
    const bytes = await tinyFixture("q10-tiny.mig");
    await Deno.writeFile(file, bytes);
    const want = await execCli(["scan", file, "--json"]);
    assert.equal(want.code, 3, want.err);
    const fifo = `${dir}/stream.fifo`;
    assert.ok((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success, "mkfifo");
    const child = execCli(["scan", fifo, "--json"], { timeoutMs: 120_000 });
    // One writer: a second open of the pipe by the scan would wait for another one forever.
    {
      using w = await Deno.open(fifo, { write: true });
      for (let at = 0; at < bytes.byteLength; at += 1 << 16) {
        await w.write(bytes.subarray(at, at + (1 << 16)));
      }
    }
    const got = await child;
    assert.equal(got.code, 3, got.err);
    // The same pages found (stream offsets included) and the same summary.
    const found = (text: string) => {
      const r = JSON.parse(text);
      return JSON.stringify({ verdict: r.verdict, summary: r.summary, devices: r.devices });
    };
    assert.equal(found(got.out), found(want.out));
    assert.ok(JSON.parse(got.out).summary.findings > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
