import assert from "node:assert/strict";
import { buildReport, deviceJson, gpaRangesJson, REPORT_VERSIONS } from "../../cli/_report.ts";
import { count, duration, exactSize, grouped, rate } from "../../cli/_format.ts";
import { progressLine } from "../../cli/_progress.ts";
import { errorObject } from "../../cli/main.ts";
import { CommandError, UsageError } from "../../cli/io.ts";
import { FormatError, OutputError } from "../../src/errors.ts";
import { TOOL_VERSION } from "../../src/version.ts";
import { runCli } from "../_util/cli.ts";

const input = { path: "x.mig", format: "migration", container: "raw", byteLength: 10 } as const;

Deno.test("buildReport() puts the envelope first, then output, then the body", () => {
  const r = buildReport("filter", {
    input,
    verdict: "done",
    output: { path: "y.mig", format: "migration", container: "raw", byteLength: 8 },
  }, { streamByteLength: 10 });
  assert.deepEqual(Object.keys(r), [
    "kind",
    "version",
    "tool",
    "input",
    "verdict",
    "output",
    "streamByteLength",
  ]);
  assert.equal(r.kind, "filter-report");
  assert.equal(r.version, REPORT_VERSIONS.filter);
  assert.equal(r.tool, `vmem-dump ${TOOL_VERSION}`);
});

Deno.test("buildReport() refuses a body that repeats an envelope key", () => {
  assert.throws(
    () => buildReport("inspect", { input, verdict: "done" }, { version: 3 }),
    /repeats the key version/,
  );
});

Deno.test("deviceJson() writes the plug-map keys in their order; gpaRangesJson() drops extras", () => {
  const d = deviceJson({
    path: "0000:00:01.0",
    ramblock: "0000:00:01.0/vmem0mem",
    memaddr: 2 ** 32,
    regionSize: 2 ** 28,
    blockSize: 2 ** 21,
    usableRegionSize: null,
    plugged: [[0, 2]],
  });
  assert.deepEqual(Object.keys(d), [
    "path",
    "ramblock",
    "memaddr",
    "region-size",
    "block-size",
    "usable-region-size",
    "plugged",
  ]);
  assert.deepEqual(gpaRangesJson([{ gpa: 1, byteLength: 2, x: 3 } as never]), [{
    gpa: 1,
    byteLength: 2,
  }]);
});

Deno.test("errorObject() gives every error class a code, a message and an offset", () => {
  const cases: Array<[unknown, string, number | null]> = [
    [new UsageError("bad flag"), "usage", null],
    [
      new FormatError("Cannot decode: bad magic", {
        format: "migration",
        code: "bad-magic",
        offset: 4,
      }),
      "bad-magic",
      4,
    ],
    [new OutputError("exists", { code: "output-exists", path: "o" }), "output-exists", null],
    [new OutputError("full", { code: "io", path: "o", offset: 7 }), "io", 7],
    [new CommandError("no-plug-state", "no plug state"), "no-plug-state", null],
    [
      new Deno.errors.NotFound("No such file or directory (os error 2): open 'x'"),
      "not-found",
      null,
    ],
    [new Deno.errors.NotCapable("Requires read access"), "permission-denied", null],
    [new SyntaxError("x"), "internal", null],
  ];
  for (const [e, code, offset] of cases) {
    const o = errorObject(e);
    assert.equal(o.code, code);
    assert.equal(o.offset, offset);
    assert.doesNotMatch(o.message, /\n/);
  }
});

Deno.test("with --json, an error is one JSON object on stderr and nothing on stdout", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bad = `${dir}/bad.mig`;
    await Deno.writeFile(bad, new Uint8Array(64).fill(0x41));
    const r = await runCli(["inspect", "--json", bad]);
    assert.equal(r.code, 1);
    assert.equal(r.out, "");
    const e = JSON.parse(r.err) as { error: { code: string; message: string; offset: number } };
    assert.deepEqual(Object.keys(e), ["error"]);
    assert.equal(e.error.code, "bad-magic");
    assert.equal(e.error.offset, 0);
    assert.match(r.err, /^\{"error":\{[^\n]*\}\}\n$/);

    const usage = await runCli(["verify", "--json", "--max-violations", "x", bad]);
    assert.equal(usage.code, 2);
    assert.equal(JSON.parse(usage.err).error.code, "usage");

    const missing = await runCli(["inspect", "--json", `${dir}/nothing.mig`]);
    assert.equal(missing.code, 1);
    assert.equal(JSON.parse(missing.err).error.code, "not-found");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("no arguments: usage on stderr, exit 2; --help: usage on stdout, exit 0", async () => {
  const none = await runCli([]);
  assert.equal(none.code, 2);
  assert.equal(none.out, "");
  assert.match(none.err, /^usage: vmem-dump COMMAND/);
  const help = await runCli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out, /^usage: vmem-dump COMMAND/);
});

Deno.test("a mistyped command gets 'did you mean', exit 2", async () => {
  for (
    const [typed, meant] of [["inspcet", "inspect"], ["verfy", "verify"], ["plugmpa", "plugmap"], [
      "scna",
      "scan",
    ], ["conv", "convert"]]
  ) {
    const r = await runCli([typed!]);
    assert.equal(r.code, 2);
    assert.match(
      r.err,
      new RegExp(`^error: unknown command '${typed}'; did you mean '${meant}'\\?\\n`),
    );
  }
  const far = await runCli(["frobnicate"]);
  assert.equal(far.code, 2);
  assert.match(far.err, /^error: unknown command 'frobnicate'\nusage:/);
});

Deno.test("a mistyped option gets 'did you mean' too, exit 2", async () => {
  const stream = new URL("../../testdata/migration/q72-qboot-unplugged.mig", import.meta.url)
    .pathname;
  for (
    const [args, typed, meant] of [
      [["verify", "--jsn", stream], "--jsn", "--json"],
      [["scan", "--max-finding", "3", stream], "--max-finding", "--max-findings"],
      [["plugmap", "--rnages", stream], "--rnages", "--ranges"],
      [["filter", "--plugmap-frm", stream, stream, "/tmp/x"], "--plugmap-frm", "--plugmap-from"],
    ] as const
  ) {
    const r = await runCli([...args]);
    assert.equal(r.code, 2, r.err);
    assert.match(
      r.err,
      new RegExp(`^error: Unknown option '${typed}'; did you mean '${meant}'\\?\\n`),
    );
  }
  const far = await runCli(["verify", "--frobnicate", stream]);
  assert.equal(far.code, 2);
  assert.match(far.err, /^error: Unknown option '--frobnicate'\n/);
});

Deno.test("the formatter: plurals, groups, sizes, rates, durations, progress lines", () => {
  assert.equal(count(1, "section"), "1 section");
  assert.equal(count(0, "section"), "0 sections");
  assert.equal(count(1234, "entry", "entries"), "1,234 entries");
  assert.equal(grouped(-1234567), "-1,234,567");
  assert.equal(exactSize(2 ** 21), "2 MiB");
  assert.equal(exactSize(3 * 2 ** 30), "3 GiB");
  assert.equal(exactSize(4097), "4,097 bytes");
  assert.equal(exactSize(1), "1 byte");
  assert.equal(rate(2 ** 30, 2), "512 MiB/s");
  assert.equal(rate(1, 0), "-");
  assert.equal(duration(0.5), "0.50 s");
  assert.equal(duration(185), "3 min 05 s");
  assert.equal(duration(3720), "1 h 02 min");
  assert.equal(
    progressLine("verify", 2 ** 30, 4 * 2 ** 30, 2),
    "verify: 1.00 GiB of 4.00 GiB (25%), 512 MiB/s, 6.00 s left",
  );
  assert.equal(progressLine("scan", 1024, undefined, 0.1), "scan: 1.00 KiB");
});

Deno.test("parseSize() takes decimal, hex and binary suffixes as QEMU does; refuses the rest", async () => {
  const { parseSize } = await import("../../cli/_args.ts");
  const cases: Array<[string, number]> = [
    ["4096", 4096],
    ["0x100000000", 2 ** 32],
    ["4G", 2 ** 32],
    ["4g", 2 ** 32],
    ["2M", 2 ** 21],
    ["2MiB", 2 ** 21],
    ["2MB", 2 ** 21],
    ["512K", 2 ** 19],
    ["1T", 2 ** 40],
    ["0x10M", 16 * 2 ** 20],
    ["7B", 7],
  ];
  for (const [text, want] of cases) assert.equal(parseSize(text, "--base"), want, text);
  for (const bad of ["", "4Q", "-1", "1.5G", "G", "0x", "99999999999P"]) {
    assert.throws(() => parseSize(bad, "--base"), UsageError, bad);
  }
});

Deno.test("a terminal's progress line is drawn at the first update, however soon after the process started", async () => {
  // A fresh process: performance.now() counts from its start, so it is below the redraw interval.
  const progress = new URL("../../cli/_progress.ts", import.meta.url).href;
  const script = `
    import { terminalProgress } from ${JSON.stringify(progress)};
    let text = "";
    const io = { stderrIsTerminal: true, err: async (t) => { text += t; } };
    const p = terminalProgress(io, "inspect", 100);
    p.update(10);
    await p.end();
    console.log(JSON.stringify({ now: performance.now(), text }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=js", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const { now, text } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.ok(now < 250, `the process was not fresh enough to test this: ${now} ms`);
  assert.match(text, /^\rinspect: 10 B of 100 B \(10%\)/);
});
