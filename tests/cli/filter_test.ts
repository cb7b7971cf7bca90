/** `vmem-dump filter`: real streams, pipes, usage errors (the dropper itself: tests/migration/filter_test.ts). */

import assert from "node:assert/strict";
import { assertReport } from "../_util/report_schema.ts";
import { run as runFilter } from "../../cli/commands/filter.ts";
import { main } from "../../cli/main.ts";
import { CLI_MAIN, memoryIo } from "../_util/cli.ts";
import { realdata, realdataAvailable, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";

const SETS: RealdataSet[] = ["out-small", "out-q10"];

for (const set of SETS) {
  Deno.test({
    name: `vmem-dump filter drops the EVIL-MIG pages of real ${set} s3 and reports them`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      const path = await realdata(set, "s3-malicious.mig");
      const dir = await Deno.makeTempDir({ prefix: "vmem-filter-" });
      try {
        const out = `${dir}/out.mig`;
        const m = memoryIo();
        assert.equal(await runFilter([path, out, "--json"], m.io), 0);
        // deno-lint-ignore no-explicit-any
        const report = assertReport(m.out(), "filter") as any;
        assert.equal(report.droppedRecords, 2);
        assert.deepEqual(
          report.plugState,
          set === "out-q10"
            ? { sources: ["early"], layout: "early", path: null }
            : { sources: ["first-pass"], layout: "late", path: null },
        );
        const evil = realdataFacts(set).manifest.malicious_writes.during_migration.map((
          w: { gpa: number },
        ) => w.gpa);
        assert.deepEqual(
          report.dropped.map((d: { gpa: number }) => d.gpa).sort(),
          [...evil].sort(),
        );
        assert.equal((await Deno.stat(out)).size, report.output.byteLength);
        assert.deepEqual(
          [...Deno.readDirSync(dir)].map((e) => e.name),
          ["out.mig"],
          "no temp files left",
        );
        // Text report on stderr.
        const t = memoryIo();
        assert.equal(await runFilter([path, `${dir}/out2.mig`], t.io), 0);
        assert.match(t.err(), /dropped 2 of [\d,]+ page records/);
        assert.match(t.err(), /gpa 0x104e01000/);
        // The output filters to itself.
        const again = memoryIo();
        assert.equal(await runFilter([out, `${dir}/out3.mig`, "--json"], again.io), 0);
        assert.equal(JSON.parse(again.out()).droppedRecords, 0);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name:
    "vmem-dump filter reads a pipe and writes stdout (early layout), refuses a late-layout pipe",
  ignore: !realdataAvailable("out-q10") || !realdataAvailable("out-small"),
  fn: async () => {
    const runPipe = async (path: string) => {
      const cmd = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", CLI_MAIN, "filter", "-", "-"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      });
      const child = cmd.spawn();
      const file = await Deno.open(path);
      const feeding = file.readable.pipeTo(child.stdin).catch(() => {});
      let outBytes = 0;
      const reading = (async () => {
        for await (const c of child.stdout) outBytes += c.byteLength;
      })();
      const errText = new Response(child.stderr).text();
      const status = await child.status;
      await feeding;
      await reading;
      return { code: status.code, outBytes, err: await errText };
    };
    const q10 = await realdata("out-q10", "s3-malicious.mig");
    const ok = await runPipe(q10);
    assert.equal(ok.code, 0, ok.err);
    assert.equal(ok.outBytes, (await Deno.stat(q10)).size - 8230);
    assert.match(ok.err, /dropped 2 of/);
    const late = await runPipe(await realdata("out-small", "s3-malicious.mig"));
    assert.equal(late.code, 1);
    assert.match(late.err, /plug state is not known at the first RAM page/);
  },
});

Deno.test("vmem-dump filter rejects bad arguments with exit code 2", async () => {
  for (
    // (`filter a a` is refused by file identity, exit 1: tests/cli/output_policy_test.ts.)
    const args of [["filter"], ["filter", "a"], ["filter", "a", "b", "--bogus"]]
  ) {
    const m = memoryIo();
    assert.equal(await main(args, m.io), 2, args.join(" "));
  }
});

Deno.test("vmem-dump filter, like verify, uses a first pass when the early section comes only after RAM pages", async () => {
  // Found by the mutation campaign: with the early section swapped behind the first RAM PART
  // section of a real QEMU 10 stream, verify reported its violations (two passes) while filter
  // refused a seekable file with "plug state not known at the first RAM page (late layout)".
  const stream = await tinyFixture("q10-tiny.mig");
  const records: { kind: string; streamOffset: number; idstr?: string }[] = [];
  for await (const r of decodeMigration(bytesReader(stream))) {
    if (r.kind === "section-full" || r.kind === "section-part" || r.kind === "section-footer") {
      records.push({
        kind: r.kind,
        streamOffset: r.streamOffset,
        ...("idstr" in r ? { idstr: r.idstr } : {}),
      });
    }
  }
  const early = records.findIndex((r) => r.kind === "section-full" && /early$/.test(r.idstr!));
  const part = records.findIndex((r, i) => i > early && r.kind === "section-part");
  const section = (i: number) => {
    const end = records.findIndex((r, j) => j > i && r.kind === "section-footer");
    return stream.subarray(records[i]!.streamOffset, records[end]!.streamOffset + 5);
  };
  const a = section(early);
  const b = section(part);
  assert.equal(records[part]!.streamOffset, records[early]!.streamOffset + a.length);
  const swapped = concatBytes([
    stream.subarray(0, records[early]!.streamOffset),
    b,
    a,
    stream.subarray(records[early]!.streamOffset + a.length + b.length),
  ]);
  const dir = await Deno.makeTempDir({ prefix: "vmem-filter-" });
  try {
    await Deno.writeFile(`${dir}/in.mig`, swapped);
    const v = memoryIo();
    assert.equal(await main(["verify", `${dir}/in.mig`], v.io), 3, v.err());
    const f = memoryIo();
    assert.equal(await runFilter([`${dir}/in.mig`, `${dir}/out.mig`, "--json"], f.io), 0);
    assert.equal(JSON.parse(f.out()).droppedRecords, 1);
    const o = memoryIo();
    assert.equal(await main(["verify", `${dir}/out.mig`], o.io), 0, o.out());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a ram section without pages after device state: verify clean, filter passes it, scan warns of nothing; with a page all three object", async () => {
  // Found by the mutation campaign (seed 2152141986): the RAM START section of a real QEMU 7.2
  // stream repeated among the device sections (its block list again, no page). verify rightly
  // passed it (no RAM is loaded late; a repeated list changes nothing), but filter refused at its
  // header ("no output of this stream can verify clean") and scan warned that verify rejects it.
  const stream = await Deno.readFile(
    new URL("../../testdata/migration/q72-qboot-unplugged.mig", import.meta.url),
  );
  const at: Record<string, number> = {};
  for await (const r of decodeMigration(bytesReader(stream))) {
    const key = r.kind === "section-start" || r.kind === "section-part" ||
        r.kind === "section-full"
      ? `${r.kind} ${r.idstr}`
      : r.kind;
    at[key] ??= r.streamOffset;
  }
  const start = at["section-start ram"]!;
  const part = at["section-part ram"]!; // right after the START section's footer
  const late = at["section-full ioapic"]!; // among the device sections
  const withSection = (section: Uint8Array) =>
    concatBytes([stream.subarray(0, late), section, stream.subarray(late)]);
  const empty = withSection(stream.subarray(start, part));
  const dir = await Deno.makeTempDir({ prefix: "vmem-filter-late-" });
  try {
    await Deno.writeFile(`${dir}/empty.mig`, empty);
    const v = memoryIo();
    assert.equal(await main(["verify", `${dir}/empty.mig`], v.io), 0, v.out());
    const f = memoryIo();
    assert.equal(await main(["filter", `${dir}/empty.mig`, `${dir}/out.mig`], f.io), 0, f.err());
    const o = memoryIo();
    assert.equal(await main(["verify", `${dir}/out.mig`], o.io), 0, o.out());
    const s = memoryIo();
    assert.equal(await main(["scan", `${dir}/empty.mig`], s.io), 0, s.err());
    assert.doesNotMatch(s.out() + s.err(), /after device state/);
    await Deno.remove(`${dir}/out.mig`);

    // A page in a late section: verify reports it, filter refuses (no output), scan warns.
    const records: { kind: string; streamOffset: number }[] = [];
    for await (const r of decodeMigration(bytesReader(stream))) {
      records.push({ kind: r.kind, streamOffset: r.streamOffset });
    }
    const footer = records.find((r) => r.kind === "section-footer" && r.streamOffset > part)!;
    await Deno.writeFile(
      `${dir}/pages.mig`,
      withSection(stream.subarray(part, footer.streamOffset + 5)),
    );
    const v2 = memoryIo();
    assert.equal(await main(["verify", `${dir}/pages.mig`, "--json"], v2.io), 3);
    assert.equal(JSON.parse(v2.out()).violations[0].reason, "ram-after-device-state");
    const f2 = memoryIo();
    assert.equal(await main(["filter", `${dir}/pages.mig`, `${dir}/out.mig`], f2.io), 1);
    assert.match(
      f2.err(),
      /^error: Cannot filter migration stream: a page record \(ram-\S+\) in a "ram" section \(PART\) at 0x[0-9a-f]+, after device state began: .* at offset 0x[0-9a-f]+\n$/,
    );
    const s2 = memoryIo();
    await main(["scan", `${dir}/pages.mig`], s2.io);
    assert.match(s2.out(), /RAM is loaded after device state began \(section "ram" at/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "empty.mig",
      "pages.mig",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
