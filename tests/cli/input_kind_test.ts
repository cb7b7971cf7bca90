/**
 * Every command tells what its input is in one place, the library's
 * `openInput`, and names it alike when it is the wrong kind: a dump given
 * to a stream command or as a plug-state source, a stream given to a dump
 * command, a dump inside zstd (dumps are read at random offsets), a dump
 * given `--base`. On what QEMU 10.0 wrote for the tiny VM (testdata/tiny/:
 * the ELF dump as committed, zstd-compressed, and unpacked).
 *
 * @module
 */

import assert from "node:assert/strict";
import { runCli } from "../_util/cli.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";

const TINY = decodeURIComponent(new URL("../../testdata/tiny/", import.meta.url).pathname);
const ELF_ZST = `${TINY}q10-tiny.elf.zst`;

Deno.test("each command names a wrong kind of input the same way, in one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-kind-" });
  try {
    const stream = `${dir}/q10-tiny.mig`;
    const elf = `${dir}/q10-tiny.elf`;
    await Deno.writeFile(stream, await tinyFixture("q10-tiny.mig"));
    await Deno.writeFile(elf, await tinyFixture("q10-tiny.elf"));
    const out = (name: string) => `${dir}/${name}`;
    const cases: Array<[args: string[], exit: number, message: RegExp, code?: string]> = [
      // A dump inside zstd: the dump commands cannot read it in place.
      ...[
        ["strip", ELF_ZST, out("a.elf"), "--plugmap-from", stream],
        ["convert", ELF_ZST, out("a.kdump"), "--to", "kdump"],
        ["scan", ELF_ZST, "--plugmap-from", stream],
      ].map((args): [string[], number, RegExp, string] => [
        args,
        1,
        /: it is an ELF dump inside a zstd container; dumps are read at random offsets: unpack it first/,
        "unsupported",
      ]),
      // A stream given to a dump command.
      ...[
        ["strip", stream, out("b.elf"), "--plugmap-from", stream],
        ["convert", stream, out("b.kdump"), "--to", "kdump"],
      ].map((args): [string[], number, RegExp, string] => [
        args,
        1,
        /: it is a migration stream, not a dump/,
        "bad-magic",
      ]),
      // A dump where a stream is read: as the input, or as the plug-state source.
      // (inspect describes a dump: issue 11.)
      ...[
        ["verify", elf],
        ["filter", elf, out("c.mig")],
        ["plugmap", elf],
        ["verify", "--plugmap-from", elf, stream],
        ["filter", "--plugmap-from", elf, stream, out("d.mig")],
        ["scan", stream, "--plugmap-from", elf],
        ["strip", elf, out("e.elf"), "--plugmap-from", elf],
      ].map((args): [string[], number, RegExp, string] => [
        args,
        1,
        /it is an ELF dump\b.*not a migration stream/,
        "bad-magic",
      ]),
      // --base says "a raw image"; the bytes say otherwise.
      [
        ["scan", elf, "--base", "4G", "--plugmap-from", stream],
        2,
        /--base is for raw memory images; \S+ is an ELF dump \(--format raw/,
      ],
    ];
    for (const [args, exit, message, code] of cases) {
      const what = args.join(" ").replaceAll(`${dir}/`, "").replaceAll(TINY, "");
      const r = await runCli(args);
      assert.equal(r.code, exit, `${what}\n${r.err}`);
      assert.equal(r.out, "", what);
      assert.match(r.err, /^error: [^\n]*\n$/, `${what}: one line`);
      assert.match(r.err, message, what);
      if (code !== undefined) {
        const j = await runCli([args[0]!, "--json", ...args.slice(1)]);
        assert.equal(j.code, exit, what);
        assert.equal(JSON.parse(j.err).error.code, code, `${what}: ${j.err}`);
      }
    }
    // Nothing was written for any of them.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "q10-tiny.elf",
      "q10-tiny.mig",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
