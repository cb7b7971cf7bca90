/**
 * Inputs that are FIFOs (`mkfifo`, `<(…)` in bash): every command reads one
 * once. A stream is scanned, inspected and extracted from as it comes (the
 * extraction manifest's hash is of the bytes read); a dump, read at random
 * offsets, is refused with exit 2 before the FIFO is opened (inspect, which
 * tells a dump by reading the FIFO, refuses it with exit 2 then). Before these
 * fixes, scan --extract, scan/strip/convert of a dump hung on a second open
 * of the FIFO, and inspect sometimes saw an empty stream.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { assertOneErrorLine, execCli } from "../_util/cli.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";

/** A FIFO fed with `bytes` by a `cat` child, killed once the command has ended. */
async function withFifo(
  dir: string,
  bytes: Uint8Array,
  run: (fifo: string) => Promise<void>,
): Promise<void> {
  const file = `${dir}/source.bin`;
  await Deno.writeFile(file, bytes);
  const fifo = `${dir}/input.fifo`;
  await Deno.remove(fifo).catch(() => {});
  const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.equal(mk.code, 0);
  const writer = new Deno.Command("sh", {
    args: ["-c", 'exec cat "$1" > "$2"', "sh", file, fifo],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await run(fifo);
  } finally {
    try {
      writer.kill("SIGKILL");
    } catch { /* it ended */ }
    await writer.status;
  }
}

Deno.test("FIFO inputs: streams are read once, dumps are refused before the FIFO is opened", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-fifo-" });
  try {
    const stream = await tinyFixture("q10-tiny.mig");
    const plugmap = `${dir}/plug.json`;
    await Deno.writeFile(`${dir}/stream.mig`, stream);
    const pm = await execCli(["plugmap", `${dir}/stream.mig`]);
    assert.equal(pm.code, 0, pm.err);
    await Deno.writeTextFile(plugmap, pm.out);
    const timeoutMs = 60_000;

    await t.step(
      "scan --extract of a stream FIFO: the manifest's hash is the stream's",
      async () => {
        await withFifo(dir, stream, async (fifo) => {
          const r = await execCli(["scan", fifo, "--extract", `${dir}/pages`], { timeoutMs });
          assert.equal(r.code, 3, r.err);
          const manifest = JSON.parse(await Deno.readTextFile(`${dir}/pages/manifest.json`));
          assert.equal(manifest.input.sha256, createHash("sha256").update(stream).digest("hex"));
          assert.equal(manifest.input.byteLength, null);
          assert.equal(manifest.pages.length, 1);
        });
      },
    );

    await t.step("inspect of a stream FIFO sees the whole stream every time", async () => {
      for (let i = 0; i < 4; i++) {
        await withFifo(dir, stream, async (fifo) => {
          const r = await execCli(["inspect", fifo], { timeoutMs });
          assert.equal(r.code, 0, r.err);
          assert.match(r.err, /713,584 bytes .*device state accounted for/);
        });
      }
    });

    await t.step("plugmap of a stream FIFO stops at the early section and says why", async () => {
      await withFifo(dir, stream, async (fifo) => {
        const r = await execCli(["plugmap", fifo], { timeoutMs });
        assert.equal(r.code, 0, r.err);
        assert.equal(JSON.parse(r.out).devices[0]["usable-region-size"], null);
        assert.match(r.err, /early section only \(a pipe cannot be read twice\)/);
      });
    });

    const elf = await tinyFixture("q10-tiny.elf");
    const kdump = await tinyFixture("q10-tiny.kdump-zlib");
    const cases: [string, Uint8Array, (fifo: string) => string[], RegExp][] = [
      ["scan of an ELF dump", elf, (f) => ["scan", f, "--plugmap", plugmap], /^scanning a dump/],
      [
        "scan --format raw",
        elf,
        (f) => ["scan", f, "--format", "raw", "--base", "4G", "--plugmap", plugmap],
        /^scanning a dump/,
      ],
      ["strip", elf, (f) => ["strip", f, `${dir}/out.elf`, "--plugmap", plugmap], /^strip/],
      [
        "convert --to elf",
        kdump,
        (f) => ["convert", f, `${dir}/out.elf`, "--to", "elf"],
        /^convert --to elf/,
      ],
    ];
    // inspect describes dumps too, but from a file: a dump FIFO is a usage error that says so
    // (it was exit 1, "it is an ELF dump (scan, strip and convert read dumps)").
    for (
      const [name, bytes, args, pattern] of [
        [
          "inspect of an ELF dump FIFO",
          elf,
          (f: string) => ["inspect", f],
          /inspect reads an ELF dump at random offsets: .* is not a regular file/,
        ],
        [
          "inspect of a kdump FIFO",
          kdump,
          (f: string) => ["inspect", f],
          /inspect reads a kdump dump at random offsets: .* is not a regular file/,
        ],
        [
          "inspect --base of a FIFO",
          elf,
          (f: string) => ["inspect", f, "--base", "4G"],
          /inspect --base reads its input at random offsets: .* is a FIFO, not a regular file/,
        ],
      ] as const
    ) {
      await t.step(`${name}: exit 2, one line`, async () => {
        await withFifo(dir, bytes, async (fifo) => {
          const r = await execCli(args(fifo), { timeoutMs });
          assert.equal(r.code, 2, r.err);
          assertOneErrorLine(r.err, pattern);
        });
      });
    }
    for (const [name, bytes, args, command] of cases) {
      await t.step(`${name} from a FIFO: exit 2, nothing written`, async () => {
        await withFifo(dir, bytes, async (fifo) => {
          const r = await execCli(args(fifo), { timeoutMs });
          assert.equal(r.code, 2, r.err);
          assertOneErrorLine(
            r.err,
            new RegExp(
              `${
                command.source.slice(1)
              } reads its input at random offsets: .* is a FIFO, not a regular file`,
            ),
          );
          await assert.rejects(Deno.lstat(`${dir}/out.elf`), Deno.errors.NotFound);
        });
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
