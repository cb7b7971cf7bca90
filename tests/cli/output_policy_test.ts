/**
 * Evidence is never destroyed (issue 9 §4), tested on the real CLI as a
 * process for every command that writes a file: filter, verify --forward,
 * strip, convert (streams and dumps; scan --extract: tests/scan/extract_test.ts).
 *
 * - no command writes over one of its inputs, however the output names it
 *   (`./IN`, a symlink, a hard link, `< IN` on stdin, `>> IN` on stdout);
 * - an existing output is replaced only with --force;
 * - outputs never get wider permissions than their input (stdin: 0600);
 * - SIGINT/SIGTERM/SIGHUP mid-write remove the temporary output, exit
 *   130/143/129, and leave the destination as it was;
 * - ENOSPC (a full tmpfs, /dev/full) gives one `error: … writing OUT at
 *   offset 0x…` line, exit 1, no temporary file left.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { assertOneErrorLine, CLI_MAIN, collectCli, execCli, spawnCli } from "../_util/cli.ts";
import { realdata, realdataAvailable } from "../_util/realdata.ts";
import { inCi } from "../_util/tools.ts";
import { inSmallTmpfs } from "../_util/tmpfs.ts";

const TESTDATA = new URL("../../testdata/migration/", import.meta.url);
const fixture = (name: string) => decodeURIComponent(new URL(name, TESTDATA).pathname);
/** A real QEMU 7.2 stream (late layout, 168 KB); its 32 virtio-mem blocks are all unplugged. */
const STREAM = fixture("q72-qboot-unplugged.mig");

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

function modeOf(path: string): number {
  return Deno.statSync(path).mode! & 0o777;
}

/** A folder with `ev.mig` (the real stream, mode 0600) and `raw.img` (1 MiB of guest memory at gpa 0). */
async function evidenceDir(): Promise<{ dir: string; ev: string; raw: string; cleanup(): void }> {
  const dir = await Deno.makeTempDir({ prefix: "vmem-evidence-" });
  const ev = `${dir}/ev.mig`;
  await Deno.copyFile(STREAM, ev);
  Deno.chmodSync(ev, 0o600);
  const raw = `${dir}/raw.img`;
  const bytes = new Uint8Array(1 << 20);
  for (let i = 0; i < bytes.length; i += 4096) bytes[i] = (i >> 12) & 0xff;
  await Deno.writeFile(raw, bytes, { mode: 0o600 });
  Deno.chmodSync(raw, 0o600);
  return { dir, ev, raw, cleanup: () => Deno.removeSync(dir, { recursive: true }) };
}

/** The writing commands, as argument lists for input IN and output OUT. */
function writers(
  dir: string,
): Array<{ name: string; rawInput?: boolean; args: (input: string, out: string) => string[] }> {
  return [
    { name: "filter", args: (i, o) => ["filter", i, o] },
    { name: "verify --forward", args: (i, o) => ["verify", i, "--forward", o] },
    { name: "convert", args: (i, o) => ["convert", i, o, "--to", "zstd"] },
    {
      name: "strip",
      rawInput: true,
      // strip reads a raw image; IN is the stream only to reuse its plug map.
      args: (i, o) => ["strip", i, o, "--base", "0", "--plugmap-from", `${dir}/ev.mig`],
    },
    {
      name: "convert --to kdump",
      rawInput: true,
      // A plain kdump file needs a regular file (it is written out of order):
      // into a device it goes flattened.
      args: (i, o) => [
        "convert",
        i,
        o,
        "--to",
        "kdump",
        "--base",
        "0",
        "--workers",
        "0",
        ...(o.startsWith("/dev/") ? ["--flattened"] : []),
      ],
    },
    {
      name: "convert --to elf",
      rawInput: true,
      args: (i, o) => ["convert", i, o, "--to", "elf", "--base", "0"],
    },
  ];
}

Deno.test("no writing command replaces its input, whatever name the output gives it (./IN, symlink, hard link, < IN, >> IN), even with --force", async (t) => {
  const { dir, ev, raw, cleanup } = await evidenceDir();
  try {
    Deno.symlinkSync(ev, `${dir}/sym.mig`);
    Deno.linkSync(ev, `${dir}/hard.mig`);
    Deno.symlinkSync(raw, `${dir}/sym.img`);
    Deno.linkSync(raw, `${dir}/hard.img`);
    const before = { ev: sha256(Deno.readFileSync(ev)), raw: sha256(Deno.readFileSync(raw)) };
    const names = listDir(dir);
    for (const w of writers(dir)) {
      const input = w.rawInput ? raw : ev;
      const aliases = w.rawInput
        ? [`${dir}/./raw.img`, `${dir}/sym.img`, `${dir}/hard.img`]
        : [`${dir}/./ev.mig`, `${dir}/sym.mig`, `${dir}/hard.mig`];
      for (const alias of aliases) {
        for (const force of [false, true]) {
          await t.step(
            `${w.name} ${alias.slice(dir.length + 1)}${force ? " --force" : ""}`,
            async () => {
              const run = await execCli([...w.args(input, alias), ...(force ? ["--force"] : [])]);
              assert.equal(run.code, 1, run.err);
              assertOneErrorLine(run.err, /it is the input .*refusing to write over evidence/);
            },
          );
        }
      }
      if (!w.rawInput) {
        await t.step(`${w.name} - ev.mig --force < ev.mig`, async () => {
          const run = await execCli([...w.args("-", ev), "--force"], { stdinFile: ev });
          assert.equal(run.code, 1, run.err);
          assertOneErrorLine(
            run.err,
            /Cannot write .*ev\.mig: it is the input \(the file on standard input/,
          );
        });
        await t.step(`${w.name} ev.mig - >> ev.mig`, async () => {
          const run = await execCli(w.args(ev, "-"), { stdoutAppend: ev });
          assert.equal(run.code, 1, run.err);
          assertOneErrorLine(run.err, /Cannot write standard output: it is the input/);
        });
      }
    }
    // A plug-map source is evidence too.
    await t.step("filter ev.mig x --plugmap-from ev.mig onto the plug-map source", async () => {
      await Deno.copyFile(ev, `${dir}/other.mig`);
      const run = await execCli([
        "filter",
        `${dir}/other.mig`,
        ev,
        "--plugmap-from",
        ev,
        "--force",
      ]);
      assert.equal(run.code, 1, run.err);
      assertOneErrorLine(run.err, /it is the input/);
      Deno.removeSync(`${dir}/other.mig`);
    });
    assert.equal(sha256(Deno.readFileSync(ev)), before.ev);
    assert.equal(sha256(Deno.readFileSync(raw)), before.raw);
    assert.deepEqual(listDir(dir), names, "no temporary file left behind");
  } finally {
    cleanup();
  }
});

Deno.test("an existing output is replaced only with --force (filter, verify --forward, convert, strip)", async (t) => {
  const { dir, ev, raw, cleanup } = await evidenceDir();
  try {
    for (const w of writers(dir)) {
      await t.step(w.name, async () => {
        const input = w.rawInput ? raw : ev;
        const out = `${dir}/out-${w.name.replace(/\W+/g, "-")}`;
        Deno.writeTextFileSync(out, "OLD");
        const names = listDir(dir);
        const refused = await execCli(w.args(input, out));
        assert.equal(refused.code, 1, refused.err);
        assertOneErrorLine(refused.err, /it exists; refusing to replace it without --force/);
        assert.equal(Deno.readTextFileSync(out), "OLD");
        assert.deepEqual(listDir(dir), names);
        const forced = await execCli([...w.args(input, out), "--force"]);
        assert.equal(forced.code, 0, forced.err);
        assert.notEqual(Deno.readTextFileSync(out), "OLD");
        // -f is the short form.
        const short = await execCli([...w.args(input, out), "-f"]);
        assert.equal(short.code, 0, short.err);
        assert.deepEqual(listDir(dir), names);
      });
    }
  } finally {
    cleanup();
  }
});

Deno.test("outputs never get wider permissions than their input; stdin input gives 0600", async (t) => {
  const { dir, ev, raw, cleanup } = await evidenceDir();
  try {
    const cases: Array<[string, number, number, number]> = [
      // [label, input mode, umask, expected output mode]
      ["0600 input", 0o600, 0o022, 0o600],
      ["0640 input", 0o640, 0o022, 0o640],
      ["0644 input", 0o644, 0o022, 0o644],
      ["0644 input under umask 077", 0o644, 0o077, 0o600],
      ["0666 input under umask 022", 0o666, 0o022, 0o644],
      ["0400 input", 0o400, 0o022, 0o400],
    ];
    let n = 0;
    for (const w of writers(dir)) {
      const input = w.rawInput ? raw : ev;
      for (const [label, inMode, umask, want] of cases) {
        await t.step(`${w.name}: ${label}`, async () => {
          Deno.chmodSync(input, inMode);
          const out = `${dir}/mode-${n++}`;
          const run = await execCli(w.args(input, out), { umask });
          assert.equal(run.code, 0, run.err);
          assert.equal(modeOf(out).toString(8), want.toString(8));
        });
      }
      Deno.chmodSync(input, 0o600);
    }
    await t.step("filter from a pipe: 0600 even with a permissive umask", async () => {
      Deno.chmodSync(ev, 0o644);
      const out = `${dir}/from-pipe.mig`;
      const run = await execCli(
        ["filter", "-", out, "--plugmap-from", ev],
        { stdin: Deno.readFileSync(ev), umask: 0o000 },
      );
      assert.equal(run.code, 0, run.err);
      assert.equal(modeOf(out).toString(8), "600");
    });
    await t.step(
      "filter from stdin redirected from a 0640 file takes the file's mode",
      async () => {
        Deno.chmodSync(ev, 0o640);
        const out = `${dir}/from-file-stdin.mig`;
        const run = await execCli(["filter", "-", out, "--plugmap-from", STREAM], {
          stdinFile: ev,
          umask: 0o022,
        });
        assert.equal(run.code, 0, run.err);
        assert.equal(modeOf(out).toString(8), "640");
      },
    );
  } finally {
    cleanup();
  }
});

/** Wait until `dir` holds a temporary output of at least `minBytes`; its name. */
async function waitForTemporary(dir: string, prefix: string, minBytes: number, ms = 120_000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    for (const e of Deno.readDirSync(dir)) {
      if (e.name.startsWith(`${prefix}.tmp-`)) {
        try {
          if (Deno.statSync(`${dir}/${e.name}`).size >= minBytes) return e.name;
        } catch { /* renamed or removed meanwhile */ }
      }
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`no temporary output ${prefix}.tmp-* of ${minBytes} bytes appeared in ${dir}`);
}

const SIGNALS: Array<[Deno.Signal, number]> = [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]];

Deno.test({
  name:
    "a signal mid-write (large real stream through a slow pipe) removes the temporary output, exits 130/143/129 and leaves the destination untouched",
  ignore: !realdataAvailable("out-q10"),
  fn: async (t) => {
    // 110 MB of real QEMU 10.0 stream (early layout: filterable from a pipe).
    const big = Deno.readFileSync(await realdata("out-q10", "s3-malicious.mig"));
    const { dir, cleanup } = await evidenceDir();
    try {
      const commands: Array<[string, (out: string) => string[]]> = [
        ["filter", (o) => ["filter", "-", o, "--force"]],
        ["verify --forward", (o) => ["verify", "-", "--forward", o, "--force"]],
        ["convert", (o) => ["convert", "-", o, "--to", "raw", "--force"]],
      ];
      for (const [name, args] of commands) {
        for (const [signal, code] of SIGNALS) {
          await t.step(`${name}, ${signal}`, async () => {
            const out = `${dir}/dest.mig`;
            Deno.writeTextFileSync(out, "OLD");
            const names = listDir(dir);
            const child = spawnCli(args(out), { stdin: new Uint8Array(0) });
            const w = child.stdin.getWriter();
            // The first 24 MiB, then the pipe stalls (the writer waits): a signal arrives mid-write.
            await w.write(big.subarray(0, 24 << 20));
            await waitForTemporary(dir, "dest.mig", 1 << 20);
            child.kill(signal);
            const result = await collectCli(child, 60_000);
            await w.close().catch(() => {});
            assert.equal(result.code, code, `${result.err} (signal ${result.signal})`);
            assert.equal(Deno.readTextFileSync(out), "OLD", "the destination is untouched");
            assert.deepEqual(listDir(dir), names, "the temporary output is gone");
          });
        }
      }
    } finally {
      cleanup();
    }
  },
});

Deno.test({
  name:
    "a signal while strip writes a real 344 MB ELF dump removes the temporary output and exits 143",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const elf = await realdata("out-q10", "s1-plugged-200M.elf");
    const mig = await realdata("out-q10", "s1-plugged-200M.mig");
    const dir = await Deno.makeTempDir({ prefix: "vmem-evidence-" });
    try {
      const child = spawnCli(["strip", elf, `${dir}/out.elf`, "--plugmap-from", mig]);
      await waitForTemporary(dir, "out.elf", 1);
      child.kill("SIGTERM");
      const result = await collectCli(child, 60_000);
      assert.equal(result.code, 143, result.err);
      assert.deepEqual(listDir(dir), []);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("writing to /dev/full: one error line with the offset, exit 1 (filter, verify --forward, convert, strip)", async (t) => {
  const { dir, ev, raw, cleanup } = await evidenceDir();
  try {
    for (const w of writers(dir)) {
      await t.step(w.name, async () => {
        const run = await execCli(w.args(w.rawInput ? raw : ev, "/dev/full"));
        assert.equal(run.code, 1, run.err);
        assertOneErrorLine(
          run.err,
          /^error: no space left on device writing \/dev\/full at offset 0x[0-9a-f]+\n$/,
        );
      });
    }
  } finally {
    cleanup();
  }
});

Deno.test("ENOSPC on a real file system (a 256 KiB tmpfs): one error line with the offset, exit 1, no temporary file, destination untouched", async (t) => {
  const { dir, ev, raw, cleanup } = await evidenceDir();
  try {
    // Inputs bigger than the tmpfs: the real 1.4 MB QEMU 10.0 stream and a 1 MiB raw image.
    const q10 = `${dir}/q10.mig.zst`;
    await Deno.copyFile(fixture("q10-s3-malicious.mig.zst"), q10);
    const mnt = `${dir}/mnt`;
    Deno.mkdirSync(mnt);
    const cases: Array<[string, string[]]> = [
      ["filter", ["filter", q10, "$MNT/out.mig"]],
      ["verify --forward", ["verify", q10, "--forward", "$MNT/out.mig"]],
      ["convert", ["convert", q10, "$MNT/out.mig", "--to", "raw"]],
      ["strip", [
        "strip",
        raw,
        "$MNT/out.mig",
        "--base",
        "0",
        "--plugmap-from",
        ev,
        "--format",
        "raw",
      ]],
    ];
    for (const [name, args] of cases) {
      await t.step(name, async () => {
        // An old destination that --force would replace: it must survive the failed write.
        const quoted = args.map((a) => (a.startsWith("$MNT") ? `"${a}"` : `'${a}'`)).join(" ");
        const script = `printf OLD > "$MNT/out.mig" && ` +
          `"$DENO" run -A "$CLI" ${quoted} --force; rc=$?; ` +
          `echo "rc=$rc"; ls -A "$MNT"; cat "$MNT/out.mig"`;
        const r = await inSmallTmpfs(mnt, script, { DENO: Deno.execPath(), CLI: CLI_MAIN });
        if (r === undefined) {
          if (inCi()) throw new Error("cannot mount a small tmpfs (unshare) for the ENOSPC test");
          console.warn("\n!!! SKIPPING the tmpfs ENOSPC test: no mount namespace here\n");
          return;
        }
        const lines = r.out.trim().split("\n");
        assert.deepEqual(lines, ["rc=1", "out.mig", "OLD"], r.out + r.err);
        assertOneErrorLine(
          r.err,
          new RegExp(
            `^error: no space left on device writing ${mnt}/out\\.mig at offset 0x[0-9a-f]+\\n$`,
          ),
        );
      });
    }
  } finally {
    cleanup();
  }
});

Deno.test("errors of every kind are one line without a stack trace", async (t) => {
  const { dir, ev, cleanup } = await evidenceDir();
  try {
    const cases: Array<[string, string[], RegExp]> = [
      ["a directory as input", ["inspect", dir], /^error: .*directory/i],
      [
        "a missing input",
        ["verify", `${dir}/missing.mig`],
        /^error: .*missing\.mig.*no such file/i,
      ],
      ["a directory as output", ["filter", ev, dir], /is a directory/],
      [
        "an output in a missing folder",
        ["filter", ev, `${dir}/no/such/out.mig`],
        /no such file or directory creating/,
      ],
      ["a bad plug map", ["filter", ev, `${dir}/o.mig`, "--plugmap", ev], /plug map/i],
    ];
    for (const [label, args, pattern] of cases) {
      await t.step(label, async () => {
        const run = await execCli(args);
        assert.equal(run.code, 1, run.err);
        assertOneErrorLine(run.err, pattern);
      });
    }
    assert.deepEqual(listDir(dir), ["ev.mig", "raw.img"]);
  } finally {
    cleanup();
  }
});
