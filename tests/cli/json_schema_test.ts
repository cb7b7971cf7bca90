/**
 * Every command's `--json` report against its schema in `schemas/` and the
 * glossary, on real QEMU streams from testdata/ and dumps made from a real
 * guest's memory: inspect, plugmap, verify, filter, scan, strip, convert
 * (the stream and the dump variants); inspect of dumps also on the Linux
 * guest's dumps of QEMU 7.2 and 10.0 (tests/_util/kernel_dumps.ts). The
 * mapped-ram variants are checked in tests/cli/mapped_ram_cli_test.ts (they
 * need QEMU 10), proxy's in
 * tests/proxy/proxy_test.ts. The validator is tested here too, so that a
 * report that breaks its schema fails.
 *
 * @module
 */

import assert from "node:assert/strict";
import { runCli } from "../_util/cli.ts";
import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { QEMU_VERSIONS } from "../_util/qemu.ts";
import { schemaFolderLoader, validate } from "../_util/json_schema.ts";
import { assertJsonError, assertReport, glossaryProblems } from "../_util/report_schema.ts";

const T = decodeURIComponent(new URL("../../testdata/migration/", import.meta.url).pathname);
const Q10_S3 = `${T}q10-s3-malicious.mig.zst`;
const Q72_S3 = `${T}q72-s3-malicious.mig.zst`;
const Q72_TINY = `${T}q72-tiny-unplugged.mig`;
const Q72_QBOOT = `${T}q72-qboot-unplugged.mig`;
const load = schemaFolderLoader(new URL("../../schemas/", import.meta.url));

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmem-schema-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Run a command with `--json` and check its report; returns it. */
async function report(
  command: string,
  args: string[],
  exit = 0,
): Promise<Record<string, unknown>> {
  const r = await runCli([command, "--json", ...args]);
  assert.equal(r.code, exit, r.err);
  return assertReport(r.out || r.err, command);
}

Deno.test("the schema validator rejects what a schema does not allow", () => {
  const good = JSON.parse(JSON.stringify({
    kind: "plugmap-report",
    version: 2,
    tool: "vmem-dump 0.2.0",
    input: { path: "m.json", format: "plugmap", container: null, byteLength: 10 },
    verdict: "done",
    plugState: { sources: ["plugmap"], layout: null, path: "m.json" },
    devices: [],
    ranges: { plugged: [], unplugged: [{ gpa: 4096, byteLength: 4096 }] },
    warnings: [],
  }));
  assert.deepEqual(validate(good, "plugmap-report.schema.json", load), []);
  const bad: Array<[string, (r: Record<string, unknown>) => void, RegExp]> = [
    ["missing key", (r) => delete r.warnings, /missing warnings/],
    ["extra key", (r) => (r.bytesIn = 1), /bytesIn: not allowed/],
    ["wrong const", (r) => (r.version = 1), /expected 2/],
    ["wrong type", (r) => (r.verdict = 0), /is not one of/],
    [
      "nested extra key",
      (r) => ((r.ranges as { plugged: unknown[] }).plugged = [{ gpa: 0, len: 1 }]),
      /plugged\[0\]: missing byteLength/,
    ],
    [
      "a fraction",
      (r) => ((r.input as { byteLength: number }).byteLength = 1.5),
      /number, expected/,
    ],
    ["a negative size", (r) => ((r.input as { byteLength: number }).byteLength = -1), /below 0/],
    ["a bad source", (r) => ((r.plugState as { sources: string[] }).sources = ["x"]), /not one of/],
  ];
  for (const [what, mutate, want] of bad) {
    const r = structuredClone(good);
    mutate(r);
    const errors = validate(r, "plugmap-report.schema.json", load);
    assert.ok(errors.some((e) => want.test(e)), `${what}: ${JSON.stringify(errors)}`);
  }
  assert.throws(
    () => validate(1, "x.schema.json", () => ({ type: "integer", multipleOf: 2 })),
    /unsupported keyword multipleOf/,
  );
  assert.deepEqual(glossaryProblems({ a: { ramBlock: "", "block-size": 1, snake_key: 2 } }), [
    "$.a: ramBlock (a retired name)",
    "$.a: snake_key (not camelCase)",
  ]);
});

Deno.test("inspect --json matches its schema (raw and zstd, early and late layout)", async () => {
  for (const path of [Q10_S3, Q72_S3, Q72_TINY, Q72_QBOOT]) {
    const r = await report("inspect", [path]);
    assert.equal((r.input as { path: string }).path, path);
    assert.equal(r.streamVersion, 3);
  }
});

Deno.test({
  name:
    "inspect --json of dumps matches its schema: QEMU 7.2 and 10.0 ELF and kdump dumps (plain, flattened), a stripped dump's provenance, a raw image; the variants do not mix",
  ignore: !QEMU_VERSIONS.every(kernelDumpsAvailable),
  fn: () =>
    withDir(async (dir) => {
      for (const qemu of QEMU_VERSIONS) {
        const d = await kernelDumps(qemu);
        const elf = await report("inspect", [d.elf, "--plugmap", d.plugmap]);
        assert.deepEqual(elf.input, {
          path: d.elf,
          format: "elf",
          container: null,
          byteLength: (await Deno.stat(d.elf)).size,
        });
        const info = elf.vmcoreinfo as { release: string; buildId: string; pageSize: number };
        assert.equal(info.release, d.vmcoreinfo.osrelease);
        assert.equal(info.buildId, d.vmcoreinfo.buildId);
        assert.equal(info.pageSize, d.vmcoreinfo.pageSize);
        const overlay = elf.memoryByPlugState as { pluggedByteLength: number };
        assert.equal(overlay.pluggedByteLength, d.device.pluggedBytes);
        for (const [format, path] of Object.entries(d.kdump)) {
          const k = await report("inspect", [path]);
          assert.equal((k.input as { format: string }).format, "kdump");
          assert.equal(
            (k.input as { container: string }).container,
            format === "kdump-zlib" ? "flattened" : "raw",
            format,
          );
          assert.equal(k.compression, "zlib");
          assert.equal((k.vmcoreinfo as { release: string }).release, d.vmcoreinfo.osrelease);
          // The schema's variants do not mix: a kdump report with an ELF field, or no
          // container, or an ELF report without its VMCOREINFO, fails.
          const mixed = [
            (r: Record<string, unknown>) => (r.elfClass = 64),
            (r: Record<string, unknown>) => ((r.input as { container: unknown }).container = null),
            (r: Record<string, unknown>) => delete r.present,
          ];
          for (const mutate of mixed) {
            const bad = structuredClone(k);
            mutate(bad);
            assert.notDeepEqual(validate(bad, "inspect-report.schema.json", load), []);
          }
        }
        const bad = structuredClone(elf);
        delete bad.vmcoreinfo;
        assert.notDeepEqual(validate(bad, "inspect-report.schema.json", load), []);
      }
      // A stripped dump carries its provenance; a raw image with --base in QEMU's size syntax.
      const d = await kernelDumps("10");
      const raw = await report("inspect", [
        d.raw,
        "--base",
        String(d.device.gpa),
        "--plugmap",
        d.plugmap,
      ]);
      assert.equal((raw.input as { baseGpa: number }).baseGpa, d.device.gpa);
      const sized = await report("inspect", [d.raw, "--base", `${d.device.gpa / 2 ** 30}G`]);
      assert.deepEqual(sized.memory, raw.memory);
      const stripped = `${dir}/s.kdump`;
      await report("strip", [
        d.raw,
        `${dir}/s.elf`,
        "--base",
        String(d.device.gpa),
        "--plugmap",
        d.plugmap,
      ]);
      await report("convert", [`${dir}/s.elf`, stripped, "--to", "kdump"]);
      const s = await report("inspect", [stripped]);
      const p = s.provenance as {
        steps: Array<{ command: string; removed: unknown[]; input: { name: string } }>;
      };
      // The conversion removed nothing more, so the note keeps the one step that did.
      assert.deepEqual(p.steps.map((x) => x.command), ["strip"]);
      assert.deepEqual(p.steps[0]!.removed, d.unpluggedRanges);
      assert.equal(p.steps[0]!.input.name, d.raw);
      const noNote = structuredClone(raw);
      noNote.provenance = null;
      assert.notDeepEqual(validate(noNote, "inspect-report.schema.json", load), []);
    }),
});

Deno.test("plugmap --json matches its schema (stream, early with the device section, plug-map file)", () =>
  withDir(async (dir) => {
    const early = await report("plugmap", [Q10_S3]);
    assert.deepEqual(early.plugState, {
      sources: ["early", "device"],
      layout: "early",
      path: null,
    });
    assert.equal(early.complete, true);
    const late = await report("plugmap", [Q72_TINY]);
    assert.deepEqual((late.plugState as { sources: string[] }).sources, ["device"]);
    const map = `${dir}/m.json`;
    const text = await runCli(["plugmap", Q10_S3]);
    await Deno.writeTextFile(map, text.out);
    const file = await report("plugmap", ["--plugmap", map]);
    assert.deepEqual((file.input as { format: string }).format, "plugmap");
    // The report's devices are the plug map's devices, key for key, plus report fields.
    const devices = JSON.parse(text.out).devices as Record<string, unknown>[];
    for (const [i, d] of (file.devices as Record<string, unknown>[]).entries()) {
      for (const [k, v] of Object.entries(devices[i]!)) assert.deepEqual(d[k], v, k);
    }
  }));

Deno.test("verify --json matches its schema and names the plug-state source truthfully", () =>
  withDir(async (dir) => {
    const bad = await report("verify", [Q10_S3], 3);
    assert.equal(bad.verdict, "violations");
    assert.deepEqual((bad.plugState as { sources: string[] }).sources, ["early"]);
    // A late-layout file is read twice: its own device section, read first, is no "plugmap".
    const late = await report("verify", [Q72_TINY, "--forward", `${dir}/fw.mig`]);
    assert.equal(late.verdict, "clean");
    const sources = (late.plugState as { sources: string[] }).sources;
    assert.ok(sources.includes("first-pass") && !sources.includes("plugmap"), String(sources));
    assert.equal((late.output as { written: boolean }).written, true);
    const map = `${dir}/m.json`;
    await Deno.writeTextFile(map, (await runCli(["plugmap", Q72_S3])).out);
    const given = await report("verify", [Q72_S3, "--plugmap", map, "--single-pass"], 3);
    assert.equal((given.plugState as { path: string }).path, map);
    for (const v of given.violations as { detectedBy: string }[]) {
      assert.ok(["plugmap", "device"].includes(v.detectedBy), v.detectedBy);
    }
  }));

Deno.test("filter --json matches its schema", () =>
  withDir(async (dir) => {
    const r = await report("filter", [Q10_S3, `${dir}/o.mig`]);
    assert.equal(r.droppedRecords, 2);
    assert.equal(
      (r.output as { byteLength: number }).byteLength,
      (await Deno.stat(`${dir}/o.mig`)).size,
    );
    await report("filter", [Q72_TINY, `${dir}/o2.mig`]);
  }));

Deno.test("scan --json matches its schema (streams; raw, ELF and kdump dumps)", () =>
  withDir(async (dir) => {
    const s = await report("scan", [Q10_S3], 3);
    assert.equal(s.verdict, "findings");
    await report("scan", [Q72_TINY]);
    // A raw image of the tiny guest's virtio-mem region (all unplugged): one page with data.
    const map = `${dir}/m.json`;
    await Deno.writeTextFile(map, (await runCli(["plugmap", Q72_TINY])).out);
    const image = new Uint8Array(4 << 20);
    image.fill(0x5a, 3 << 20, (3 << 20) + 4096);
    await Deno.writeFile(`${dir}/img.raw`, image);
    const raw = await report("scan", [`${dir}/img.raw`, "--base", "4G", "--plugmap", map], 3);
    assert.equal((raw.input as { baseGpa: number }).baseGpa, 2 ** 32);
    // The same memory as a kdump dump and as an ELF dump.
    await report("convert", [
      `${dir}/img.raw`,
      `${dir}/img.kdump`,
      "--to",
      "kdump",
      "--base",
      "4G",
    ]);
    const kdump = await report("scan", [`${dir}/img.kdump`, "--plugmap", map], 3);
    assert.equal((kdump.input as { format: string }).format, "kdump");
    await report("convert", [`${dir}/img.kdump`, `${dir}/img.elf`, "--to", "elf"]);
    const elf = await report("scan", [`${dir}/img.elf`, "--plugmap", map], 3);
    assert.equal((elf.input as { format: string }).format, "elf");
  }));

Deno.test("strip and convert --json match their schemas (raw, ELF, kdump)", () =>
  withDir(async (dir) => {
    const map = `${dir}/m.json`;
    await Deno.writeTextFile(map, (await runCli(["plugmap", Q10_S3])).out);
    const image = new Uint8Array(8 << 20).fill(1);
    await Deno.writeFile(`${dir}/img.raw`, image);
    const base = ["--base", "0x100000000", "--plugmap", map];
    const toElf = await report("strip", [`${dir}/img.raw`, `${dir}/s.elf`, ...base]);
    assert.equal((toElf.output as { format: string }).format, "elf");
    const toRaw = await report("strip", [
      `${dir}/img.raw`,
      `${dir}/s.raw`,
      ...base,
      "--format",
      "raw",
    ]);
    assert.equal((toRaw.output as { format: string }).format, "raw");
    // The whole image as ELF, then strip the ELF, convert it to kdump and strip that.
    const whole = await report("convert", [
      `${dir}/img.raw`,
      `${dir}/w.elf`,
      "--to",
      "kdump",
      "--base",
      "0x100000000",
    ]);
    assert.equal((whole.output as { format: string }).format, "kdump");
    const elf = await report("strip", [`${dir}/s.elf`, `${dir}/s2.elf`, "--plugmap", map]);
    assert.equal((elf.input as { format: string }).format, "elf");
    const kd = await report("convert", [
      `${dir}/s.elf`,
      `${dir}/s.kdump`,
      "--to",
      "kdump",
      "--flattened",
    ]);
    assert.equal((kd.output as { container: string }).container, "flattened");
    const sk = await report("strip", [`${dir}/s.kdump`, `${dir}/s2.kdump`, "--plugmap", map]);
    assert.equal((sk.input as { container: string }).container, "flattened");
    const back = await report("convert", [`${dir}/s.kdump`, `${dir}/b.elf`, "--to", "elf"]);
    assert.equal((back.input as { format: string }).format, "kdump");
    const stream = await report("convert", [Q72_TINY, `${dir}/t.mig.gz`]);
    assert.equal((stream.output as { container: string }).container, "gzip");
    assert.equal(stream.streamByteLength, (await Deno.stat(Q72_TINY)).size);
  }));

Deno.test("with --json every command's error is one object that matches error.schema.json", () =>
  withDir(async (dir) => {
    await Deno.writeFile(`${dir}/junk`, new Uint8Array(100).fill(7));
    const cases: Array<[string[], number, string]> = [
      [["inspect", "--json", `${dir}/junk`], 1, "bad-magic"],
      [["verify", "--json", `${dir}/missing.mig`], 1, "not-found"],
      [["filter", "--json", Q72_TINY], 2, "usage"],
      [["scan", "--json", `${dir}/junk`], 1, "bad-magic"],
      [["plugmap", "--json", "--plugmap", `${dir}/junk`], 1, "bad-json"],
      [["strip", "--json", Q72_TINY, `${dir}/o`], 2, "usage"],
      [["convert", "--json", Q72_TINY, Q72_TINY], 1, "output-is-input"],
    ];
    for (const [args, exit, code] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, exit, `${args.join(" ")}: ${r.err}`);
      assert.equal(r.out, "");
      assert.equal(assertJsonError(r.err).code, code, args.join(" "));
    }
  }));
