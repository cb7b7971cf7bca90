/**
 * Every long command, run as a user at a terminal runs it, on what QEMU 10.0
 * wrote for the tiny VM (stream, ELF dump, kdump dump, raw region;
 * testdata/tiny/): a progress line on stderr while it works, one summary
 * line at the end whose byte count is the input file's size (what the
 * command read), and counts with the right plural ("1 PT_LOAD", never
 * "1 PT_LOADs" or "violation(s)"). Mapped-ram files (read at offsets, quick)
 * are summed up too, and an error at a terminal starts its line again.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli/main.ts";
import { memoryIo } from "../_util/cli.ts";
import { formatByteCount } from "../../cli/_format.ts";
import { TINY_REGION, tinyFixture } from "../_util/tiny_fixtures.ts";

/** A count of one with a plural noun, or a "(s)" plural: what `count()` exists to prevent. */
const BAD_PLURAL =
  /(?<![\d,.])\b1 (bytes|pages|records|sections|ranges|PT_LOADs|notes|blocks|violations|findings|devices|page records)\b|\w\(s\)/;

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** The lines a terminal shows for `text` (a carriage return starts the line again). */
function screen(text: string): string[] {
  return text.trimEnd().split("\n").map((l) => l.split("\r").at(-1)!.replaceAll("\x1b[K", ""));
}

async function runAtTerminal(args: string[]) {
  const m = memoryIo();
  const code = await main(args, { ...m.io, stderrIsTerminal: true });
  return { code, out: m.out(), err: m.err() };
}

Deno.test("each long command shows progress, ends with a summary of its input's size, and counts in good English", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-human-" });
  try {
    const stream = `${dir}/q10-tiny.mig`;
    const elf = `${dir}/q10-tiny.elf`;
    const kdump = `${dir}/q10-tiny.kdump`;
    const raw = `${dir}/q72-tiny.vmem0.raw`;
    const stream72 = `${dir}/q72-tiny.mig`;
    // QEMU 7.2's kdump names its machine (x86_64); QEMU 10's of the tiny guest says "Unknown" and
    // has no NT_PRSTATUS to tell it by, so convert --to elf refuses it (docs/dumps.md).
    const kdump72 = `${dir}/q72-tiny.kdump`;
    await Deno.writeFile(stream, await tinyFixture("q10-tiny.mig"));
    await Deno.writeFile(elf, await tinyFixture("q10-tiny.elf"));
    await Deno.writeFile(kdump, await tinyFixture("q10-tiny.kdump-zlib"));
    await Deno.writeFile(raw, await tinyFixture("q72-tiny.vmem0.raw"));
    await Deno.writeFile(stream72, await tinyFixture("q72-tiny.mig"));
    await Deno.writeFile(kdump72, await tinyFixture("q72-tiny.kdump"));
    const mapped = `${dir}/q10-tiny.mapped-ram`;
    await Deno.writeFile(mapped, await tinyFixture("q10-tiny.mapped-ram"));
    const map = ["--plugmap-from", stream];
    const map72 = ["--plugmap-from", stream72]; // the raw region is QEMU 7.2's
    const base = ["--base", `${TINY_REGION.gpa / 2 ** 30}G`];
    const cases: Array<
      [label: string, input: string, args: string[], exit: number, progress?: boolean]
    > = [
      ["inspect", stream, ["inspect", stream], 0],
      ["verify", stream, ["verify", stream], 3],
      ["filter", stream, ["filter", stream, `${dir}/f.mig`], 0],
      ["scan", stream, ["scan", stream], 3],
      ["convert", stream, ["convert", stream, `${dir}/c.mig.zst`], 0],
      ["strip", elf, ["strip", elf, `${dir}/s.elf`, ...map], 0],
      ["strip", kdump, ["strip", kdump, `${dir}/s.kdump`, ...map], 0],
      ["strip", raw, ["strip", raw, `${dir}/r.elf`, ...base, ...map72], 0],
      ["strip", raw, ["strip", raw, `${dir}/r.raw`, ...base, "--format", "raw", ...map72], 0],
      ["convert", elf, ["convert", elf, `${dir}/e.kdump`, "--to", "kdump", ...map], 0],
      ["convert", kdump72, ["convert", kdump72, `${dir}/k.elf`, "--to", "elf"], 0],
      // QEMU 10 leaves unplugged memory out of its dumps: nothing to read, no progress to show.
      ["scan", elf, ["scan", elf, ...map], 4, false],
      ["scan", kdump, ["scan", kdump, ...map], 4, false],
      ["scan", raw, ["scan", raw, ...base, ...map72], 3],
      // A mapped-ram file is read at offsets (stream parts, bitmaps): quick, but summed up too.
      ["inspect", mapped, ["inspect", mapped], 0, false],
      ["verify", mapped, ["verify", mapped], 3, false],
      ["filter", mapped, ["filter", mapped, `${dir}/m.mig`], 0],
      ["scan", mapped, ["scan", mapped], 3, false],
    ];
    let onePlural = 0;
    for (const [label, input, args, exit, progress = true] of cases) {
      const what = args.join(" ").replaceAll(`${dir}/`, "");
      const r = await runAtTerminal(args);
      assert.equal(r.code, exit, `${what}\n${r.err}`);
      // The progress line (redrawn in place) appears at least once while the command works.
      if (progress) assert.match(r.err, new RegExp(`\\r${label}: `), `${what}: no progress line`);
      // The last line is the summary, of the input file's bytes.
      const last = screen(r.err).at(-1)!;
      const m = new RegExp(
        `^${label}: ${
          escape(input)
        }(?: \\(\\w+\\))?(?: -> \\S+(?: \\(\\w+\\))?)?: ([\\d,]+) bytes? in [\\d.]+ s \\(`,
      )
        .exec(last);
      assert.ok(m, `${what}: summary line: ${JSON.stringify(last)}`);
      const size = (await Deno.stat(input)).size;
      assert.equal(Number(m[1]!.replaceAll(",", "")), size, `${what}: ${last}`);
      assert.ok(size > 0);
      const text = r.out + r.err;
      assert.doesNotMatch(text, BAD_PLURAL, what);
      if (/\b1 [A-Za-z_]+\b/.test(text)) onePlural++;
    }
    // The oracle saw counts of one (a device, a PT_LOAD, …), so it could have failed.
    assert.ok(onePlural >= 3, `only ${onePlural} outputs with a count of one`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plugmap of a stream and filter of a mapped-ram file show progress against the file's size, only at a terminal", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-human-" });
  try {
    const stream72 = `${dir}/q72-tiny.mig`;
    const mapped = `${dir}/q10-tiny.mapped-ram`;
    await Deno.writeFile(stream72, await tinyFixture("q72-tiny.mig"));
    await Deno.writeFile(mapped, await tinyFixture("q10-tiny.mapped-ram"));
    const demo = "testdata/migration/q10-s3-malicious.mig.zst";
    const cases: Array<[label: string, input: string, args: string[]]> = [
      ["plugmap", stream72, ["plugmap", stream72]], // through the vmdesc
      ["plugmap", demo, ["plugmap", demo]], // zstd, read to its end
      ["plugmap", mapped, ["plugmap", mapped]],
      ["filter", mapped, ["filter", mapped, `${dir}/m.mig`]], // the copy, not the detection read
    ];
    for (const [label, input, args] of cases) {
      const what = args.join(" ").replaceAll(`${dir}/`, "");
      const size = (await Deno.stat(input)).size;
      const r = await runAtTerminal(args);
      assert.equal(r.code, 0, `${what}\n${r.err}`);
      // A line with the file's size as the total; gone from the screen before the summary.
      assert.match(
        r.err,
        new RegExp(`\\r${label}: [^\\r\\n]+ of ${escape(formatByteCount(size))} \\(\\d+%\\)`),
        `${what}: no progress against the file's size: ${JSON.stringify(r.err)}`,
      );
      assert.match(screen(r.err).at(-1)!, new RegExp(`^${label}: ${escape(input)}`), what);
      await Deno.remove(`${dir}/m.mig`).catch(() => {});
      // Not a terminal: no progress line, the summary only.
      const m = memoryIo();
      assert.equal(await main(args, m.io), 0, what);
      assert.doesNotMatch(m.err(), /\r/, what);
      assert.match(m.err(), new RegExp(`^${label}: ${escape(input)}.* in [\\d.]+ s `, "m"), what);
      await Deno.remove(`${dir}/m.mig`).catch(() => {});
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("at a terminal, an error after a progress line starts the line again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-human-" });
  try {
    const elf = `${dir}/q10-tiny.elf`;
    await Deno.writeFile(elf, await tinyFixture("q10-tiny.elf"));
    const r = await runAtTerminal(["verify", elf]);
    assert.equal(r.code, 1);
    assert.match(r.err, /\rverify: /, "the detection read drew a progress line");
    assert.match(screen(r.err).at(-1)!, /^error: Cannot read \S+ with verify: it is an ELF dump/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the plural oracle catches what it is for", () => {
  for (const bad of ["(1 sections)", "1 PT_LOADs,", "3 violation(s)", "in 1 ranges"]) {
    assert.match(bad, BAD_PLURAL, bad);
  }
  for (const good of ["(1 section)", "11 PT_LOADs", "0x1 pages", "2,001 bytes", "1.5 bytes"]) {
    assert.doesNotMatch(good, BAD_PLURAL, good);
  }
});
