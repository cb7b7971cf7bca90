/**
 * The package is publishable: an MIT LICENSE and `license` field, a
 * `deno publish --dry-run` that succeeds with no warning but the one the
 * CLI's lazy imports give (offline: JSR is never contacted for a dry run)
 * that ships the library, the CLI and the docs but no tests, benchmarks,
 * scripts or test data, `deno doc --lint` clean on every export, and the
 * `./cli` export installs as docs/library.md says, as a working `vmem-dump`.
 */

import assert from "node:assert/strict";
import { tempDir } from "../_util/qemu.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);

interface DenoJson {
  name: string;
  license?: string;
  exports: Record<string, string>;
  publish?: { include?: string[]; exclude?: string[] };
}

const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)) as DenoJson;

async function deno(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test("the package is MIT-licensed and exports the library, its subpaths and the CLI", () => {
  assert.equal(config.license, "MIT");
  const license = Deno.readTextFileSync(`${ROOT}LICENSE`);
  assert.match(license, /^MIT License\n/);
  assert.match(license, /Copyright \(c\) \d{4} vmem-dump authors/);
  assert.equal(config.exports["."], "./mod.ts");
  assert.equal(config.exports["./cli"], "./cli/main.ts");
  for (const [name, path] of Object.entries(config.exports)) {
    assert.ok(Deno.statSync(`${ROOT}${path}`).isFile, `export ${name}: ${path} exists`);
  }
});

Deno.test("deno publish --dry-run succeeds, warns only of the lazy imports, ships no tests or test data", async () => {
  const { code, text } = await deno(["publish", "--dry-run", "--allow-dirty"]);
  assert.equal(code, 0, text);
  assert.match(text, /Success Dry run complete/);
  // One warning is known and meant: cli/_lazy.ts imports the CLI's on-demand modules through a
  // variable, which keeps them out of the start-up graph (docs/cli.md#start-up). The specifiers
  // are relative to the module, so they resolve in the published package all the same.
  const warnings = [...text.matchAll(/warning\[([\w-]+)\][^\n]*\n\s*-->\s*(\S+?):\d+:\d+/g)]
    .map((m) => `${m[1]} ${m[2]!.slice(ROOT.length)}`);
  assert.deepEqual(warnings, ["unanalyzable-dynamic-import cli/_lazy.ts"], text);
  assert.equal(text.match(/warning/gi)?.length, 1, text);
  const files = [...text.matchAll(/file:\/\/\S+/g)].map((m) =>
    decodeURIComponent(new URL(m[0]).pathname).slice(ROOT.length)
  );
  assert.ok(files.length > 50, `only ${files.length} files listed: ${text}`);
  for (const f of ["LICENSE", "README.md", "deno.json", "mod.ts", "cli/main.ts"]) {
    assert.ok(files.includes(f), `${f} is published`);
  }
  for (const path of Object.values(config.exports)) {
    assert.ok(files.includes(path.slice(2)), `export ${path} is published`);
  }
  const stray = files.filter((f) =>
    /^(tests|bench|scripts|testdata|node_modules|dist)\//.test(f) || /_test\.ts$/.test(f) ||
    !/^(src\/|cli\/|docs\/|mod\.ts$|deno\.json$|README\.md$|LICENSE$)/.test(f)
  );
  assert.deepEqual(stray, [], "only the library, the CLI, the docs, README and LICENSE");
});

Deno.test("deno doc --lint is clean on every export", async () => {
  for (const [name, path] of Object.entries(config.exports)) {
    const { code, text } = await deno(["doc", "--lint", path]);
    assert.equal(code, 0, `export ${name} (${path}):\n${text}`);
  }
});

Deno.test("the ./cli export installs as docs/library.md says, and its commands run", async () => {
  // The documented command, with the published package replaced by this checkout's export.
  const docs = Deno.readTextFileSync(`${ROOT}docs/library.md`).replaceAll("\\\n", " ");
  const line = /^deno install (.*)$/m.exec(docs);
  assert.ok(line, "docs/library.md shows the deno install command");
  const args = line[1]!.trim().split(/\s+/);
  assert.equal(args.at(-1), `jsr:${config.name}/cli`, "it installs this package's ./cli export");
  assert.match(line[1]!, /^-g -n vmem-dump /);
  await using tmp = await tempDir("vmem-install-");
  const { code, text } = await deno([
    "install",
    ...args.slice(0, -1),
    "--root",
    tmp.path,
    "--config",
    "deno.json",
    config.exports["./cli"]!,
  ]);
  assert.equal(code, 0, text);
  const bin = `${tmp.path}/bin/vmem-dump`;
  const denoDir = Deno.execPath().slice(0, Deno.execPath().lastIndexOf("/"));
  const run = async (cliArgs: string[]) => {
    const out = await new Deno.Command(bin, {
      args: cliArgs,
      cwd: tmp.path,
      stdout: "piped",
      stderr: "piped",
      env: { PATH: `${denoDir}:${Deno.env.get("PATH") ?? ""}` },
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
  };
  const stream = `${ROOT}testdata/migration/q10-s3-malicious.mig.zst`;
  const inspect = await run(["inspect", "--json", stream]);
  assert.equal(inspect.code, 0, inspect.err);
  const report = JSON.parse(inspect.out);
  assert.equal(report.kind, "inspect-report");
  assert.equal(report.input.container, "zstd");
  // A writing command needs every permission the documented line grants (write, sys).
  const filter = await run(["filter", stream, "clean.mig"]);
  assert.equal(filter.code, 0, filter.err);
  assert.ok(Deno.statSync(`${tmp.path}/clean.mig`).size > 0);
});
