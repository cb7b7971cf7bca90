/**
 * `convert DUMP OUT --to kdump|elf`: a raw image of guest memory (with a
 * virtio-mem region, half of its blocks unplugged) becomes a kdump file
 * and back an ELF; pages, removed ranges, the JSON report and the
 * provenance note are checked against the raw bytes by independent reads
 * (readKdump, readElfCore). Usage mistakes exit 2 and bad input 1, leaving
 * no output.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { findProvenance } from "../../src/dumps/provenance.ts";
import { parseNotes } from "../../src/elf/note.ts";
import { iterateGpaRange, readElfCore } from "../../src/elf/reader.ts";
import { readKdump } from "../../src/kdump/reader.ts";
import { execCli, runCli } from "../_util/cli.ts";
import { seededRandom } from "../_util/chunkings.ts";

const B = 4096;
const BASE = 0x1_0000_0000;
const BLOCK = 0x20_0000;
const BLOCKS = 4;
/** Blocks 0 and 2 plugged, 1 and 3 unplugged. */
const PLUGMAP = {
  version: 1,
  devices: [{
    path: "0000:00:03.0",
    ramblock: "0000:00:03.0/vmem0mem",
    memaddr: BASE,
    "region-size": BLOCKS * BLOCK,
    "block-size": BLOCK,
    node: 0,
    size: 2 * BLOCK,
    plugged: [[0, 1], [2, 1]],
  }],
};
const UNPLUGGED = [
  { gpa: BASE + BLOCK, byteLength: BLOCK },
  { gpa: BASE + 3 * BLOCK, byteLength: BLOCK },
];

/** The raw image: every page zero, text or random, one in five zero. */
function image(): Uint8Array {
  const bytes = new Uint8Array(BLOCKS * BLOCK);
  const rnd = seededRandom(5);
  for (let p = 0; p < bytes.length / B; p++) {
    const r = rnd();
    if (r < 0.2) continue;
    for (let i = 0; i < B; i++) {
      bytes[p * B + i] = r < 0.6 ? 0x20 + ((p + i) % 90) : Math.floor(rnd() * 256);
    }
  }
  return bytes;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function plugged(gpa: number): boolean {
  return !UNPLUGGED.some((r) => gpa >= r.gpa && gpa < r.gpa + r.byteLength);
}

async function withDir(fn: (dir: string, raw: Uint8Array) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "vmem-convert-dump-" });
  try {
    const raw = image();
    await Deno.writeFile(`${dir}/guest.raw`, raw);
    await Deno.writeTextFile(`${dir}/pm.json`, JSON.stringify(PLUGMAP));
    await fn(dir, raw);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("convert raw --base --plugmap --to kdump, then --to elf: plugged pages equal the image, unplugged ones are gone, the note says why", async () => {
  await withDir(async (dir, raw) => {
    for (const codec of ["zlib", "zstd", "none"]) {
      const kdump = `${dir}/guest-${codec}.kdump`;
      const r = await runCli([
        "convert",
        `${dir}/guest.raw`,
        kdump,
        "--to",
        "kdump",
        "--base",
        `0x${BASE.toString(16)}`,
        "--plugmap",
        `${dir}/pm.json`,
        "--codec",
        codec,
        "--workers",
        "1",
        "--json",
      ]);
      assert.equal(r.code, 0, r.err);
      const report = JSON.parse(r.out);
      assert.equal(report.kind, "convert-report");
      assert.equal(report.input.format, "raw");
      assert.equal(report.input.baseGpa, BASE);
      assert.equal(report.output.format, "kdump");
      assert.equal(report.input.sha256, sha256(raw));
      assert.deepEqual(report.removed, UNPLUGGED);
      assert.equal(report.removedByteLength, 2 * BLOCK);
      assert.equal(report.kdump.codec, codec);
      assert.equal(report.kdump.utsnameSource, "derived", "a raw image has no VMCOREINFO");
      assert.equal(report.provenance.steps.length, 1);
      assert.deepEqual(report.provenance.steps[0].removed, UNPLUGGED);
      assert.equal(report.provenance.steps[0].input.sha256, sha256(raw));
      assert.deepEqual(report.provenance.steps[0].plugMap.devices[0].plugged, [[0, 1], [2, 1]]);

      using dump = await readKdump(kdump);
      assert.equal(dump.header.utsname.sysname, "Linux");
      assert.equal(dump.header.utsname.version, "unknown");
      for (let gpa = BASE; gpa < BASE + raw.length; gpa += B) {
        const pfn = gpa / B;
        assert.equal(dump.isPresent(pfn), plugged(gpa), `present ${gpa.toString(16)}`);
        if (!plugged(gpa)) continue;
        assert.deepEqual(
          await dump.readPage(pfn),
          raw.subarray(gpa - BASE, gpa - BASE + B),
          `page at ${gpa.toString(16)}`,
        );
      }
      const note = findProvenance(parseNotes(dump.notes, 0, true));
      assert.deepEqual(note, report.provenance);

      // Back to ELF: one PT_LOAD per plugged run, the bytes of the image.
      const elf = `${dir}/guest-${codec}.elf`;
      const back = await runCli(["convert", kdump, elf, "--to", "elf", "--json"]);
      assert.equal(back.code, 0, back.err);
      const backReport = JSON.parse(back.out);
      assert.equal(backReport.input.format, "kdump");
      assert.equal(backReport.output.format, "elf");
      assert.deepEqual(backReport.removed, []);
      // Nothing more was removed: the note is carried over unchanged.
      assert.deepEqual(backReport.provenance, report.provenance);
      using core = await readElfCore(elf);
      assert.deepEqual(core.loads.map((l) => [l.gpa, l.byteLength]), [
        [BASE, BLOCK],
        [BASE + 2 * BLOCK, BLOCK],
      ]);
      for (const l of core.loads) {
        for await (const c of iterateGpaRange(core, { gpa: l.gpa!, byteLength: l.byteLength })) {
          const want = raw.subarray(c.gpa - BASE, c.gpa - BASE + c.byteLength);
          if (c.kind === "data") assert.deepEqual(c.data, want);
          else assert.ok(want.every((b) => b === 0));
        }
      }
      assert.deepEqual(findProvenance(core.notes), report.provenance);
    }
  });
});

Deno.test("convert --to kdump --exclude-zero --codec zstd --level 5: zero pages leave the 2nd bitmap, dump level 1", async () => {
  await withDir(async (dir, raw) => {
    const out = `${dir}/z.kdump`;
    const r = await runCli([
      "convert",
      `${dir}/guest.raw`,
      out,
      "--to",
      "kdump",
      "--base",
      String(BASE),
      "--codec",
      "zstd",
      "--level",
      "5",
      "--exclude-zero",
      "--workers",
      "0",
    ]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /kdump: zstd level 5, .*all-zero, excluded/);
    using dump = await readKdump(out);
    assert.equal(dump.subHeader.dumpLevel, 1);
    let zero = 0;
    for (let pfn = BASE / B; pfn < (BASE + raw.length) / B; pfn++) {
      const p = raw.subarray(pfn * B - BASE, pfn * B - BASE + B);
      const isZero = p.every((b) => b === 0);
      if (isZero) zero++;
      assert.ok(dump.isPresent(pfn));
      assert.equal(dump.isDumpable(pfn), !isZero);
      if (!isZero) assert.deepEqual(await dump.readPage(pfn), p);
    }
    assert.ok(zero > 0);
    assert.equal(dump.pageCount, raw.length / B - zero);
  });
});

Deno.test("convert --to kdump --flattened to standard output is a flattened kdump file", async () => {
  await withDir(async (dir, raw) => {
    const r = await execCli([
      "convert",
      `${dir}/guest.raw`,
      "-",
      "--to",
      "kdump",
      "--base",
      String(BASE),
      "--flattened",
      "--json",
    ]);
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.err).output.container, "flattened", "the report goes to stderr");
    await Deno.writeFile(`${dir}/flat`, r.stdout);
    using dump = await readKdump(`${dir}/flat`);
    assert.equal(dump.container, "flattened");
    assert.deepEqual(await dump.readPage(BASE / B + 5), raw.subarray(5 * B, 6 * B));
  });
});

Deno.test("convert --to kdump|elf: usage mistakes exit 2, bad input exits 1, nothing is left behind", async () => {
  await withDir(async (dir) => {
    const raw = `${dir}/guest.raw`;
    await Deno.writeFile(`${dir}/junk.bin`, new Uint8Array(8192).fill(7));
    const base = ["--base", String(BASE)];
    const kdump = `${dir}/ok.kdump`;
    assert.equal((await runCli(["convert", raw, kdump, "--to", "kdump", ...base])).code, 0);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    const cases: Array<[string[], number, RegExp]> = [
      [["convert", "-", `${dir}/o`, "--to", "kdump", ...base], 2, /needs a file as input/],
      [["convert", raw, `${dir}/o`, "--to", "kdump", ...base, "--codec", "lz4"], 2, /--codec/],
      [["convert", raw, `${dir}/o`, "--to", "kdump", ...base, "--level", "30"], 2, /--level/],
      [
        ["convert", raw, `${dir}/o`, "--to", "kdump", ...base, "--codec", "none", "--level", "1"],
        2,
        /--level needs --codec zlib or zstd/,
      ],
      [["convert", raw, `${dir}/o`, "--to", "kdump", ...base, "--workers", "99"], 2, /--workers/],
      [["convert", raw, "-", "--to", "kdump", ...base], 2, /random access/],
      [["convert", raw, `${dir}/o`, "--to", "elf", ...base, "--codec", "zstd"], 2, /--to kdump/],
      [["convert", raw, `${dir}/o`, "--to", "elf", ...base, "--flattened"], 2, /--to kdump/],
      [["convert", raw, `${dir}/o`, "--to", "zstd", "--codec", "zstd"], 2, /--to kdump or/],
      [["convert", raw, `${dir}/o`, "--to", "kdump", ...base, "--compression", "1"], 2, /stream/],
      [["convert", kdump, `${dir}/o`, "--to", "kdump"], 2, /is a kdump dump already/],
      [
        ["convert", kdump, `${dir}/o`, "--to", "elf", "--plugmap", `${dir}/pm.json`],
        2,
        /takes no plug map/,
      ],
      [
        ["convert", `${dir}/junk.bin`, `${dir}/o`, "--to", "kdump"],
        1,
        /neither an ELF nor a kdump-compressed dump \(a raw memory image needs --base GPA\) at offset 0x0/,
      ],
      [["convert", raw, kdump, "--to", "kdump", ...base], 1, /it exists/],
      [["convert", raw, raw, "--to", "kdump", ...base, "--force"], 1, /it is the input/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, code, `${args.join(" ")}: ${r.err}`);
      assert.match(r.err, message, args.join(" "));
      assert.equal(r.err.split("\n").filter(Boolean).length, 1, `one line: ${r.err}`);
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), names);
  });
});
