/**
 * The installed command as users run it: `npm install -g .` puts
 * `vmem-dump` on PATH (package.json "bin" → bin/vmem-dump), relative paths are
 * the caller's (also through `deno task vmem-dump` from a subfolder), each
 * command gets the permissions it needs and no more (the launcher's table is
 * cli/main.ts's), a missing permission is one clear line.
 *
 * @module
 */

import assert from "node:assert/strict";
import { COMMAND_PERMISSIONS } from "../../cli/main.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");
const STREAM = `${ROOT}/testdata/migration/q72-qboot-unplugged.mig`;
const decoder = new TextDecoder();

async function run(
  program: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; clearEnv?: boolean } = {},
) {
  const out = await new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...options,
  }).output();
  return { code: out.code, out: decoder.decode(out.stdout), err: decoder.decode(out.stderr) };
}

/**
 * The environment of a user typing `deno task` in a shell. `deno task` says
 * where it was started in INIT_CWD only when INIT_CWD is not set already (npm's
 * rule), and a test run under `npx deno test` inherits npx's INIT_CWD (the
 * checkout), so the test drops it as a shell would not have it.
 */
function shellEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.INIT_CWD;
  return env;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmem-install-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bin/vmem-dump grants each command exactly the permissions cli/main.ts lists", async () => {
  const script = await Deno.readTextFile(`${ROOT}/bin/vmem-dump`);
  const granted = new Map<string, string[]>();
  for (const m of script.matchAll(/^\s+([a-z| ]+)\) allow="([^"]*)" ;;/gm)) {
    const flags = m[2]!.split(/\s+/).filter((f) => f !== "").map((f) => f.replace("--allow-", ""));
    for (const name of m[1]!.split("|").map((n) => n.trim())) granted.set(name, flags);
  }
  for (const [name, permissions] of Object.entries(COMMAND_PERMISSIONS)) {
    assert.deepEqual(granted.get(name), [...permissions], name);
  }
  assert.deepEqual([...granted.keys()].sort(), Object.keys(COMMAND_PERMISSIONS).sort());
  // Never more than a command needs: no env (except the debug switch), run, ffi or all.
  assert.doesNotMatch(script, /--allow-(run|ffi|all)|\s-A\s/);
});

Deno.test("npm install -g . puts vmem-dump on PATH; it resolves paths against the caller's directory", () =>
  withDir(async (dir) => {
    const prefix = `${dir}/prefix`;
    const npm = await run("npm", [
      "install",
      "-g",
      ".",
      "--prefix",
      prefix,
      "--offline",
      "--no-audit",
      "--no-fund",
    ], { cwd: ROOT });
    assert.equal(npm.code, 0, npm.err);
    const sub = `${dir}/work/sub`;
    await Deno.mkdir(sub, { recursive: true });
    await Deno.copyFile(STREAM, `${dir}/work/x.mig`);
    const env = { PATH: `${prefix}/bin:/usr/bin:/bin`, HOME: Deno.env.get("HOME") ?? dir };
    const onPath = (args: string[]) => run("vmem-dump", args, { cwd: sub, env, clearEnv: true });

    const inspect = await onPath(["inspect", "../x.mig"]);
    assert.equal(inspect.code, 0, inspect.err);
    assert.match(inspect.out, /^stream: {3}\.\.\/x\.mig \(168,453 bytes/);
    // A write lands where the caller means, relative to its directory.
    const filter = await onPath(["filter", "--json", "../x.mig", "out/y.mig"]).catch((e) => e);
    assert.equal(filter.code, 1, "no out/ folder: an error, not a file elsewhere");
    await Deno.mkdir(`${sub}/out`);
    const filtered = await onPath(["filter", "../x.mig", "out/y.mig"]);
    assert.equal(filtered.code, 0, filtered.err);
    assert.equal((await Deno.stat(`${sub}/out/y.mig`)).size, (await Deno.stat(STREAM)).size);

    const none = await onPath([]);
    assert.equal(none.code, 2);
    assert.equal(none.out, "");
    assert.match(none.err, /^usage: vmem-dump COMMAND/);
    const typo = await onPath(["inpsect", "../x.mig"]);
    assert.equal(typo.code, 2);
    assert.match(typo.err, /^error: unknown command 'inpsect'; did you mean 'inspect'\?/);
    const version = await onPath(["--version"]);
    assert.match(version.out, /^vmem-dump \d+\.\d+\.\d+\n$/);
  }));

Deno.test("deno task vmem-dump from a subfolder resolves relative paths against that subfolder", () =>
  withDir(async (dir) => {
    await Deno.copyFile(STREAM, `${dir}/x.mig`);
    await Deno.mkdir(`${dir}/sub`);
    const r = await run(Deno.execPath(), [
      "task",
      "-q",
      "--config",
      `${ROOT}/deno.json`,
      "vmem-dump",
      "plugmap",
      "../x.mig",
    ], { cwd: `${dir}/sub`, env: shellEnv(), clearEnv: true });
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).devices.length, 1);
  }));

Deno.test("a command run without the permission it needs says so in one line (exit 1)", async () => {
  const main = `${ROOT}/cli/main.ts`;
  const write = await run(Deno.execPath(), [
    "run",
    "--no-prompt",
    "--allow-read",
    main,
    "filter",
    STREAM,
    "/tmp/never-written.mig",
  ]);
  assert.equal(write.code, 1);
  assert.match(
    write.err,
    /^error: vmem-dump filter needs --allow-write --allow-sys: run it as vmem-dump[^\n]*\n$/,
  );
  const json = await run(Deno.execPath(), [
    "run",
    "--no-prompt",
    main,
    "inspect",
    "--json",
    STREAM,
  ]);
  assert.equal(json.code, 1);
  assert.equal(JSON.parse(json.err).error.code, "permission-denied");
  // --help needs no more than reading the command's module.
  const help = await run(Deno.execPath(), [
    "run",
    "--no-prompt",
    "--allow-read",
    main,
    "verify",
    "--help",
  ]);
  assert.equal(help.code, 0, help.err);
});

Deno.test("bin/vmem-dump without deno names the fix", () =>
  withDir(async (dir) => {
    await Deno.mkdir(`${dir}/bin`);
    await Deno.copyFile(`${ROOT}/bin/vmem-dump`, `${dir}/bin/vmem-dump`);
    const r = await run("sh", [`${dir}/bin/vmem-dump`, "inspect", "x"], {
      env: { PATH: "/usr/bin:/bin" },
      clearEnv: true,
    });
    assert.equal(r.code, 1);
    assert.match(r.err, /^vmem-dump: deno not found: run 'npm install' in /);
  }));

Deno.test("bin/vmem-dump refuses a standard input or output that is the input file", async () => {
  // Without --allow-all Deno refuses to stat /dev/stdin and /dev/stdout: the guard must still
  // see which file the descriptors are (it once saw nothing, and these replaced the evidence).
  await withDir(async (dir) => {
    const evidence = `${dir}/ev.mig`;
    const original = await Deno.readFile(STREAM);
    const cases = [
      `"$0" filter "$1" - >> "$1"`, // appends to its own input
      `"$0" verify "$1" --forward - 1<> "$1"`, // overwrites its input in place
      `"$0" convert - "$1" --force --to gzip < "$1"`, // replaces the file on standard input
    ];
    for (const script of cases) {
      await Deno.writeFile(evidence, original);
      const r = await run("sh", ["-c", script, `${ROOT}/bin/vmem-dump`, evidence]);
      assert.equal(r.code, 1, `${script}: ${r.err}`);
      assert.match(r.err, /it is the input .*refusing to write over evidence/, script);
      assert.deepEqual(await Deno.readFile(evidence), original, script);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ev.mig"], script);
    }
    // Standard input that is another file still works, and gives the output its permissions.
    await Deno.writeFile(evidence, original, { mode: 0o640 });
    await Deno.chmod(evidence, 0o640);
    const r = await run("sh", [
      "-c",
      `"$0" convert - "$1.gz" --to gzip < "$1"`,
      `${ROOT}/bin/vmem-dump`,
      evidence,
    ]);
    assert.equal(r.code, 0, r.err);
    assert.equal((await Deno.stat(`${evidence}.gz`)).mode! & 0o777, 0o640 & ~Deno.umask());
  });
});

Deno.test("bin/vmem-dump names '-' when a /dev or /proc path is refused", async () => {
  // Deno wants --allow-all for /dev/stdin; its own advice names a flag the launcher never passes.
  const r = await run("sh", [
    "-c",
    `"$0" inspect /dev/stdin < "$1"`,
    `${ROOT}/bin/vmem-dump`,
    STREAM,
  ]);
  assert.equal(r.code, 1, r.err);
  assert.equal(r.err.trim().split("\n").length, 1, r.err);
  assert.match(r.err, /^error: Cannot open \/dev\/stdin: .*give '-' for standard input/);
  assert.doesNotMatch(r.err, /--allow-all flag/);
});

Deno.test("bin/vmem-dump names '-' when a /dev output is refused, and writes nothing", async () => {
  // The output helper reports Deno's refusal of /dev/stdout as an OutputError: same advice.
  const r = await run("sh", [
    "-c",
    `"$0" filter "$1" /dev/stdout`,
    `${ROOT}/bin/vmem-dump`,
    STREAM,
  ]);
  assert.equal(r.code, 1, r.err);
  assert.equal(r.out, "");
  assert.equal(r.err.trim().split("\n").length, 1, r.err);
  assert.match(r.err, /^error: Cannot open \/dev\/stdout: .*give '-' for standard input or output/);
  assert.doesNotMatch(r.err, /--allow-all flag/);
});
