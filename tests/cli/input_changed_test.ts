/**
 * An input that changes while a command reads it gives no verdict and no
 * output (exit 1, code `input-changed`). The commands open a regular input
 * more than once: verify and filter read a late-layout stream's plug state
 * in a first pass and the stream in a full pass, plugmap reads the sections
 * and then the device state at the end, scan hashes the file for
 * `--extract` after the scan, strip and convert tell the dump's kind by one
 * open and read it by others. Before the pin, each of them gave its verdict
 * (exit 0 or 3) or wrote its output from what two files held.
 *
 * The attacker is played in-process: right after the command's first open
 * of IN, the test replaces the file (rename, as `mv` does), writes into it
 * in place (keeping its size), or points the link IN at another file; after
 * the second open it may put the first file back. (An in-place write that
 * sets the modification time back within the second is not seen: Deno
 * gives the status-change time to the second; docs/security.md.)
 *
 * @module
 */

import assert from "node:assert/strict";
import { runCli } from "../_util/cli.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";

type Move = (path: string) => Promise<void>;

/**
 * Run the CLI in-process; `moves[i]` runs right after the command's
 * (i+1)-th open of `path` (the attacker's move between two reads).
 */
async function runWithMoves(args: string[], path: string, moves: Move[]) {
  const open = Deno.open;
  let opens = 0;
  Deno.open = async (p: string | URL, options?: Deno.OpenOptions) => {
    const file = await open(p, options);
    if (String(p) === path) await moves[opens++]?.(path);
    return file;
  };
  try {
    return await runCli([...args, "--json"]);
  } finally {
    Deno.open = open;
  }
}

function assertInputChanged(r: { code: number; out: string; err: string }, path: string) {
  assert.equal(r.code, 1, r.out + r.err);
  const e = JSON.parse(r.err).error;
  assert.equal(e.code, "input-changed");
  assert.ok(e.message.startsWith(`${path} changed while it was read (`), e.message);
  assert.equal(r.out, "", "no report");
}

Deno.test("an input that changes between two reads gives no verdict and no output (exit 1, input-changed)", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-changed-" });
  try {
    const late = await tinyFixture("q72-tiny.mig"); // QEMU 7.2: late layout, read in two passes
    const other = await tinyFixture("q10-tiny.mig");
    const elf = await tinyFixture("q72-tiny.elf");
    const plugmap = `${dir}/plug.txt`;
    await Deno.writeTextFile(plugmap, "0x100000000-0x100200000\n");
    const input = `${dir}/in`;
    const spare = `${dir}/spare`;
    const out = `${dir}/out`;
    // Moves: replace IN by another file; put the first one back; write into IN in place.
    const replaceBy = (bytes: Uint8Array): Move => async (p) => {
      await Deno.link(p, `${dir}/first`); // keep the first file to put it back
      await Deno.writeFile(spare, bytes);
      await Deno.rename(spare, p);
    };
    const putBack: Move = (p) => Deno.rename(`${dir}/first`, p);
    // A writer that has the file open (QEMU still writing it, a copy onto it): same size, same
    // first byte, only the modification time tells.
    const writeInPlace: Move = async (p) => {
      using f = await Deno.open(p, { write: true });
      await f.write(new Uint8Array([0x51]));
    };
    const reset = async (bytes: Uint8Array) => {
      for (const p of [input, out, `${dir}/first`, spare]) {
        await Deno.remove(p, { recursive: true }).catch(() => {});
      }
      await Deno.writeFile(input, bytes);
      await Deno.utime(input, 1.6e9, 1.6e9); // written some time ago
    };

    const cases: Array<[string, Uint8Array, string[], Move[]]> = [
      ["verify, replaced after the first open", late, ["verify", input], [replaceBy(other)]],
      [
        "verify, replaced and put back",
        late,
        ["verify", input],
        [replaceBy(other), putBack],
      ],
      [
        "filter, replaced and put back",
        late,
        ["filter", input, out],
        [replaceBy(other), putBack],
      ],
      ["plugmap, written in place", late, ["plugmap", input], [writeInPlace]],
      ["scan --extract, written in place", late, ["scan", input, "--extract", out], [
        writeInPlace,
      ]],
      ["strip, replaced", elf, ["strip", input, out, "--plugmap", plugmap], [replaceBy(other)]],
      [
        "convert --to kdump, replaced and put back",
        elf,
        ["convert", input, out, "--to", "kdump"],
        [replaceBy(other), putBack],
      ],
    ];
    for (const [name, bytes, args, moves] of cases) {
      await t.step(name, async () => {
        await reset(bytes);
        const r = await runWithMoves(args, input, moves);
        assertInputChanged(r, input);
        await assert.rejects(Deno.lstat(out), Deno.errors.NotFound, "no output");
      });
    }

    await t.step("verify through a link pointed at another file and back", async () => {
      await reset(late);
      const link = `${dir}/link`;
      await Deno.remove(link).catch(() => {});
      await Deno.writeFile(spare, other);
      await Deno.symlink(input, link);
      const point = (target: string): Move => async (p) => {
        await Deno.symlink(target, `${p}.new`);
        await Deno.rename(`${p}.new`, p);
      };
      const r = await runWithMoves(["verify", link], link, [point(spare), point(input)]);
      assertInputChanged(r, link);
    });

    await t.step("an input left alone still verifies (two passes, no move)", async () => {
      await reset(late);
      const r = await runWithMoves(["verify", input], input, []);
      assert.equal(r.code, 3, r.err); // the tiny stream's page in an unplugged block
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify --forward FIFO: QEMU_VM_EOF is withheld when IN changed while it was read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-changed-eof-" });
  try {
    // QEMU 7.2's tiny stream with every block unplugged and no page in them: clean, late layout.
    const clean = new URL("../../testdata/migration/q72-tiny-unplugged.mig", import.meta.url);
    const bytes = await Deno.readFile(clean);
    const input = `${dir}/in.mig`;
    await Deno.writeFile(input, bytes);
    await Deno.utime(input, 1.6e9, 1.6e9);
    const fifo = `${dir}/out.fifo`;
    assert.equal((await new Deno.Command("mkfifo", { args: [fifo] }).output()).code, 0);
    const reader = new Deno.Command("sh", {
      args: ["-c", 'exec cat "$1" > "$2"', "sh", fifo, `${dir}/got`],
      stdin: "null",
    }).spawn();
    // A writer that has IN open writes into it while verify reads it: same size, new mtime.
    const r = await runWithMoves(["verify", input, "--forward", fifo], input, [async (p) => {
      using f = await Deno.open(p, { write: true });
      await f.write(new Uint8Array([0x51]));
    }]);
    await reader.status;
    assertInputChanged(r, input);
    const got = await Deno.readFile(`${dir}/got`);
    // Everything before QEMU_VM_EOF went out as it was checked; the EOF and vmdesc did not.
    assert.ok(got.byteLength < bytes.byteLength, `${got.byteLength} of ${bytes.byteLength}`);
    assert.ok(got.every((b, i) => b === bytes[i]));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
