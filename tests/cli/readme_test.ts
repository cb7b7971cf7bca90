/**
 * README.md's tour runs as written: every line of its `sh` blocks that
 * runs `vmem-dump` (and the set-up lines between them) is run in order, in
 * a fresh folder that sees the checkout's testdata/, with `vmem-dump` on
 * PATH as `npm install -g .` puts it there; each line's exit code is the one
 * its comment names (`# exit N`), 0 otherwise. Of the set-up blocks, `npm run
 * demo` runs here, `npm install -g .` in tests/cli/install_test.ts, `deno
 * install` of docs/library.md in tests/infra/package_test.ts; `npm test` is
 * the suite itself, and `deno add jsr:…` needs the published package (its
 * name is checked). (The TypeScript blocks are run by
 * tests/infra/doc_examples_test.ts.)
 *
 * @module
 */

import assert from "node:assert/strict";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");

/** One shell line of the README: the command, and the exit code its comment names. */
interface Example {
  line: string;
  command: string;
  exit: number;
}

/** The lines of README.md's `sh` blocks that are examples (blocks of `npm` set-up left out). */
function readmeExamples(text: string): Example[] {
  const out: Example[] = [];
  for (const block of text.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    const lines = block[1]!.split("\n").filter((l) => l.trim() !== "");
    if (lines.every((l) => /^(npm|deno) /.test(l))) continue;
    for (const line of lines) {
      const hash = line.search(/\s#\s/);
      const command = (hash < 0 ? line : line.slice(0, hash)).trim();
      const exit = /#\s*exit (\d+)/.exec(line)?.[1];
      out.push({ line, command, exit: exit === undefined ? 0 : Number(exit) });
    }
  }
  return out;
}

Deno.test("every vmem-dump line of README.md runs as written, with the exit code it names", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const examples = readmeExamples(readme);
  const ours = examples.filter((e) => e.command.startsWith("vmem-dump "));
  // Every vmem-dump line of the README is one of the examples run here.
  const mentioned = readme.split("\n").filter((l) => l.startsWith("vmem-dump ")).length;
  assert.equal(ours.length, mentioned);
  assert.ok(ours.length >= 10, `only ${ours.length} examples`);
  for (
    const command of ["inspect", "plugmap", "filter", "verify", "proxy", "strip", "scan", "convert"]
  ) {
    assert.ok(ours.some((e) => e.command.startsWith(`vmem-dump ${command} `)), command);
  }

  const dir = await Deno.makeTempDir({ prefix: "vmem-readme-" });
  try {
    // The installed command, as npm links it; the checkout's testdata/ as seen from the work folder.
    await Deno.mkdir(`${dir}/bin`);
    await Deno.symlink(`${ROOT}/bin/vmem-dump`, `${dir}/bin/vmem-dump`);
    await Deno.mkdir(`${dir}/work`);
    await Deno.symlink(`${ROOT}/testdata`, `${dir}/work/testdata`);
    for (const e of examples) {
      const out = await new Deno.Command("bash", {
        args: ["-c", e.command],
        cwd: `${dir}/work`,
        env: { PATH: `${dir}/bin:/usr/bin:/bin`, HOME: Deno.env.get("HOME") ?? dir },
        clearEnv: true,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, e.exit, `${e.line}\n${err}`);
      // A failure is one line (or the usage after it), never a stack trace.
      assert.doesNotMatch(err, /^\s+at /m, e.line);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("README's set-up lines: `npm run demo` runs, `deno add` names this package", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  assert.match(readme, /^npm install && npm run demo /m);
  const demo = await new Deno.Command("npm", {
    args: ["run", "--silent", "demo"],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(demo.stderr);
  assert.equal(demo.code, 0, err);
  assert.match(new TextDecoder().decode(demo.stdout), /^stream: {3}testdata\/migration\/q10-s3/);
  assert.match(
    err,
    /^inspect: testdata\/migration\/q10-s3-malicious\.mig\.zst: 159,306 bytes in /m,
  );
  // The library lines name the package deno.json publishes (JSR is not asked: no network).
  const { name } = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as { name: string };
  const add = /^deno add jsr:(\S+)/m.exec(readme);
  assert.equal(add?.[1], name);
  assert.match(readme, new RegExp(`from "${name}"`));
});
