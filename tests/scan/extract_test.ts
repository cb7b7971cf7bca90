/**
 * `scan --extract DIR` on real QEMU 7.2 and 10.0 output: every finding's page
 * as a file named by gpa, a manifest that hands the evidence on (gpa,
 * ramOffset, file or stream offset, section, SHA-256, the input's SHA-256,
 * tool version), and the evidence rules for DIR (tests as processes).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { realdata, realdataAvailable, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import { readFileBytes } from "../_util/files.ts";
import { assertOneErrorLine, CLI_MAIN, collectCli, execCli, spawnCli } from "../_util/cli.ts";
import { inSmallTmpfs } from "../_util/tmpfs.ts";
import { inCi } from "../_util/tools.ts";
import type { ExtractedPage } from "../../src/scan/extract.ts";
import { evilPayloadOffsets } from "./_evil.ts";
import type { ScanReportJson } from "./_cli.ts";
import { assertReport } from "../_util/report_schema.ts";
import { TOOL_VERSION } from "../../src/version.ts";

const TESTDATA = new URL("../../testdata/migration/", import.meta.url);
const fixture = (name: string) => decodeURIComponent(new URL(name, TESTDATA).pathname);
const SETS: RealdataSet[] = ["out-small", "out-q10"];

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

interface Manifest {
  kind: string;
  version: number;
  tool: string;
  pages: ExtractedPage[];
  input: { path: string; format: string; sha256: string; byteLength: number | null };
  plugState: { sources: string[] };
  verdict: string;
  findings: number;
  pageFiles: number;
  complete: boolean;
}

function readManifest(dir: string): Manifest {
  return JSON.parse(Deno.readTextFileSync(`${dir}/manifest.json`)) as Manifest;
}

function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

for (const set of SETS) {
  Deno.test({
    name:
      `scan --extract writes the EVIL-MIG pages of real ${set}/s3-malicious.mig with a manifest that matches the stream`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const mig = await realdata(set, "s3-malicious.mig");
      const tmp = await Deno.makeTempDir({ prefix: "vmem-extract-" });
      try {
        const dir = `${tmp}/evidence`;
        const run = await execCli(["scan", mig, "--extract", dir, "--json"]);
        assert.equal(run.code, 3, run.err);
        const report = assertReport(run.out, "scan") as unknown as ScanReportJson;
        assert.match(run.err, /extracted 2 findings to .*evidence/);
        const m = readManifest(dir);
        assert.equal(m.kind, "scan-extract-manifest");
        assert.equal(m.version, 2);
        assert.equal(m.tool, `vmem-dump ${TOOL_VERSION}`);
        // The manifest describes the input and the plug state as the report does.
        assert.deepEqual(m.plugState, report.plugState);
        assert.deepEqual({ ...m.input, sha256: undefined }, { ...report.input, sha256: undefined });
        assert.equal(m.input.sha256, sha256(Deno.readFileSync(mig)));
        assert.equal(m.input.format, "migration");
        assert.equal(m.verdict, "findings");
        assert.equal(m.findings, 2);
        assert.equal(m.complete, true);
        const payloads = evilPayloadOffsets(set);
        assert.deepEqual(
          m.pages.map((p) => p.gpa).sort(),
          [...payloads.keys()].sort(),
        );
        assert.deepEqual(listDir(dir), ["manifest.json", ...m.pages.map((p) => p.file!)].sort());
        const listed = report.devices.flatMap((d) => d.blocks.flatMap((b) => b.pages));
        for (const p of m.pages) {
          assert.match(
            p.file!,
            new RegExp(
              `^gpa-0x${p.gpa.toString(16).padStart(16, "0")}-stream-0x0*${
                p.streamOffset!.toString(16)
              }\\.page$`,
            ),
          );
          const bytes = Deno.readFileSync(`${dir}/${p.file}`);
          // The file is the page the stream carries, byte for byte (independent read of the stream).
          assert.deepEqual(bytes, await readFileBytes(mig, payloads.get(p.gpa)!, 4096));
          assert.equal(new TextDecoder().decode(bytes.subarray(0, 8)), "EVIL-MIG");
          assert.equal(p.sha256, sha256(bytes));
          assert.equal(p.byteLength, 4096);
          assert.equal(p.source, "ram-page");
          assert.equal(p.ramblock, "0000:00:01.0/vmem0mem");
          assert.equal(p.path, "0000:00:01.0");
          assert.equal(p.ramOffset, p.gpa - 0x1_0000_0000);
          assert.equal(p.fileOffset, null);
          // The section the record came in: a ram section before the record.
          assert.equal(p.section!.idstr, "ram");
          assert.ok(p.section!.streamOffset < p.streamOffset!);
          assert.ok(["part", "end"].includes(p.section!.type), p.section!.type);
          // The report lists the same page, same section.
          const same = listed.find((x) => x.streamOffset === p.streamOffset)!;
          assert.equal(same.sha256, p.sha256);
          assert.deepEqual(same.section, p.section);
        }
        // A second run refuses the existing directory, --force replaces it (an earlier extraction).
        const again = await execCli(["scan", mig, "--extract", dir]);
        assert.equal(again.code, 1, again.err);
        assertOneErrorLine(
          again.err,
          /evidence: it exists; refusing to replace it without --force/,
        );
        const forced = await execCli(["scan", mig, "--extract", dir, "--force"]);
        assert.equal(forced.code, 3, forced.err);
        assert.deepEqual(readManifest(dir).pages, m.pages);
        assert.deepEqual(listDir(tmp), ["evidence"], "no temporary directory left");
      } finally {
        await Deno.remove(tmp, { recursive: true });
      }
    },
  });

  Deno.test({
    name:
      `scan --extract of real ${set}/s3-malicious.vmem0.raw writes the 4 EVIL pages with their file offsets`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const raw = await realdata(set, "s3-malicious.vmem0.raw");
      const tmp = await Deno.makeTempDir({ prefix: "vmem-extract-" });
      try {
        const dir = `${tmp}/x`;
        const run = await execCli([
          "scan",
          raw,
          "--base",
          "0x100000000",
          "--plugmap-from",
          await realdata(set, "s3-malicious.mig"),
          "--extract",
          dir,
          "--max-findings",
          "1", // the listing bound does not bound the extraction
        ]);
        assert.equal(run.code, 3, run.err);
        const m = readManifest(dir);
        const w = realdataFacts(set).manifest.malicious_writes;
        const evil = [...w.pre_migration, ...w.during_migration] as Array<{ gpa: number }>;
        assert.deepEqual(m.pages.map((p) => p.gpa).sort(), evil.map((e) => e.gpa).sort());
        assert.equal(m.input.sha256, sha256(Deno.readFileSync(raw)));
        for (const p of m.pages) {
          assert.equal(p.file, `gpa-0x${p.gpa.toString(16).padStart(16, "0")}.page`);
          assert.equal(p.fileOffset, p.gpa - 0x1_0000_0000);
          assert.equal(p.streamOffset, null);
          assert.equal(p.section, null);
          const bytes = Deno.readFileSync(`${dir}/${p.file}`);
          assert.deepEqual(bytes, await readFileBytes(raw, p.fileOffset!, 4096));
          assert.match(new TextDecoder().decode(bytes.subarray(0, 8)), /^EVIL-/);
          assert.equal(p.sha256, sha256(bytes));
        }
      } finally {
        await Deno.remove(tmp, { recursive: true });
      }
    },
  });
}

Deno.test("scan --extract follows the evidence rules for DIR: never over a folder that is no extraction or holds the input; inconclusive scans extract nothing but a manifest", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "vmem-extract-" });
  try {
    const mig = `${tmp}/q10.mig.zst`;
    await Deno.copyFile(fixture("q10-s3-malicious.mig.zst"), mig);
    Deno.chmodSync(mig, 0o640);
    // A folder that is not an earlier extraction is never replaced, even with --force.
    Deno.mkdirSync(`${tmp}/home`);
    Deno.writeTextFileSync(`${tmp}/home/notes.txt`, "mine");
    const refused = await execCli(["scan", mig, "--extract", `${tmp}/home`, "--force"]);
    assert.equal(refused.code, 1, refused.err);
    assertOneErrorLine(refused.err, /does not hold manifest\.json, so it is not an earlier output/);
    assert.deepEqual(listDir(`${tmp}/home`), ["notes.txt"]);
    // An extraction that holds the input is never replaced.
    Deno.mkdirSync(`${tmp}/old`);
    Deno.writeTextFileSync(`${tmp}/old/manifest.json`, "{}");
    Deno.renameSync(mig, `${tmp}/old/in.mig.zst`);
    const inside = await execCli([
      "scan",
      `${tmp}/old/in.mig.zst`,
      "--extract",
      `${tmp}/old`,
      "--force",
    ]);
    assert.equal(inside.code, 1, inside.err);
    assertOneErrorLine(inside.err, /the input .* is inside it/);
    Deno.renameSync(`${tmp}/old/in.mig.zst`, mig);
    // Files get the input's permissions at most (0640 -> 0640, folder 0750).
    const ok = await execCli(["scan", mig, "--extract", `${tmp}/old`, "--force"], { umask: 0o022 });
    assert.equal(ok.code, 3, ok.err);
    assert.equal((Deno.statSync(`${tmp}/old`).mode! & 0o777).toString(8), "750");
    for (const name of listDir(`${tmp}/old`)) {
      assert.equal((Deno.statSync(`${tmp}/old/${name}`).mode! & 0o777).toString(8), "640", name);
    }
    // From a pipe, the same early-layout stream: the input's SHA-256 is that of the bytes read.
    const bytes = Deno.readFileSync(mig);
    const piped = await execCli(["scan", "-", "--extract", `${tmp}/piped`], { stdin: bytes });
    assert.equal(piped.code, 3, piped.err);
    const m = readManifest(`${tmp}/piped`);
    assert.equal(m.input.sha256, sha256(bytes));
    assert.equal(m.input.path, "-");
    assert.equal(m.pages.length, 2);
    // A late-layout stream from a pipe: its pages cannot be known one by one. The report is
    // printed, the extraction fails (exit 1) and nothing is written.
    const late = await execCli(["scan", "-", "--extract", `${tmp}/late`], {
      stdin: Deno.readFileSync(fixture("q72-s3-malicious.mig.zst")),
    });
    assert.equal(late.code, 1, late.err);
    assert.match(late.out, /^verdict: findings: 2 findings/m);
    assertOneErrorLine(
      late.err,
      /Cannot extract the findings to .*late: the stream sent its plug state after its pages.*nothing was written/,
    );
    assert.deepEqual(listDir(tmp), ["home", "old", "piped", "q10.mig.zst"]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test({
  name: "scan --extract into a full file system: one error line, exit 1, no directory left",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "vmem-extract-" });
    try {
      // The real s1 image judged by a map that says every block is unplugged: every page the
      // guest wrote is a finding, far more than 256 KiB of pages.
      const raw = await realdata("out-small", "s1-plugged-200M.vmem0.raw");
      const mnt = `${tmp}/mnt`;
      Deno.mkdirSync(mnt);
      const r = await inSmallTmpfs(
        mnt,
        `"$DENO" run -A "$CLI" scan "$RAW" --base 0x100000000 --plugmap "$MAP" --extract "$MNT/x"; ` +
          `echo "rc=$?"; ls -A "$MNT"`,
        {
          DENO: Deno.execPath(),
          CLI: CLI_MAIN,
          RAW: raw,
          MAP: await allUnpluggedMap(tmp),
        },
      );
      if (r === undefined) {
        if (inCi()) throw new Error("cannot mount a small tmpfs (unshare) for the ENOSPC test");
        console.warn(
          "\n!!! SKIPPING the tmpfs ENOSPC test of scan --extract: no mount namespace\n",
        );
        return;
      }
      assert.equal(r.out.trim(), "rc=1", r.out + r.err);
      assertOneErrorLine(
        r.err,
        /^error: no space left on device writing .*mnt\/x\/\S+ at offset 0x[0-9a-f]+\n$/,
      );
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

/** A plug map of the small sets' device (128 blocks of 2 MiB at 4 GiB) with every block unplugged. */
async function allUnpluggedMap(dir: string): Promise<string> {
  const path = `${dir}/map.json`;
  await Deno.writeTextFile(
    path,
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
        size: 0,
        "requested-size": null,
        plugged: [],
      }],
    }),
  );
  return path;
}

Deno.test({
  name: "a signal while scan --extract writes removes the unfinished directory (exit 143)",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "vmem-extract-" });
    try {
      // The real s1 image judged by an all-unplugged map: thousands of pages to write.
      const raw = await realdata("out-small", "s1-plugged-200M.vmem0.raw");
      const child = spawnCli([
        "scan",
        raw,
        "--base",
        "0x100000000",
        "--plugmap",
        await allUnpluggedMap(tmp),
        "--extract",
        `${tmp}/x`,
      ]);
      // Wait for the temporary directory to hold some pages, then interrupt.
      const until = Date.now() + 120_000;
      let seen = false;
      while (!seen && Date.now() < until) {
        for (const e of Deno.readDirSync(tmp)) {
          if (e.name.startsWith("x.tmp-") && [...Deno.readDirSync(`${tmp}/${e.name}`)].length > 2) {
            seen = true;
          }
        }
        if (!seen) await new Promise((r) => setTimeout(r, 5));
      }
      assert.ok(seen, "the extraction directory never filled");
      child.kill("SIGTERM");
      const result = await collectCli(child, 60_000);
      assert.equal(result.code, 143, result.err);
      assert.deepEqual(listDir(tmp), ["map.json"]);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
