/**
 * Every TypeScript example in README.md and docs/*.md runs as written
 * (against the files in testdata/), unless it is marked `ignore` and says
 * why on its first line. `deno test --doc` type-checks and runs the blocks;
 * this test runs it on exactly those files and checks that each runnable
 * block was run and passed.
 */

import assert from "node:assert/strict";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const LANGS = new Set(["ts", "typescript", "js", "javascript", "tsx", "jsx"]);
/** The first line of a block that is not run. */
const IGNORE_REASON = /^\/\/ Not run by the docs test: \S/;

interface Block {
  file: string;
  /** Line of the opening fence (1-based), as `deno test --doc` names the block. */
  line: number;
  ignore: boolean;
  firstLine: string;
}

function markdownFiles(): string[] {
  const docs = [...Deno.readDirSync(`${ROOT}docs`)]
    .filter((e) => e.isFile && e.name.endsWith(".md"))
    .map((e) => `docs/${e.name}`)
    .sort();
  return ["README.md", ...docs];
}

function codeBlocks(file: string): Block[] {
  const lines = Deno.readTextFileSync(`${ROOT}${file}`).split("\n");
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S+)(.*)$/.exec(lines[i]!);
    if (open === null) continue;
    const end = lines.findIndex((l, j) => j > i && l.startsWith("```"));
    assert.ok(end > i, `${file}:${i + 1}: a code block that is never closed`);
    if (LANGS.has(open[1]!)) {
      blocks.push({
        file,
        line: i + 1,
        ignore: /\bignore\b/.test(open[2]!),
        firstLine: lines[i + 1] ?? "",
      });
    }
    i = end;
  }
  return blocks;
}

Deno.test("every TypeScript example in README.md and docs/*.md runs, or says why not", async () => {
  const files = markdownFiles();
  const blocks = files.flatMap(codeBlocks);
  const runnable = blocks.filter((b) => !b.ignore);
  assert.ok(
    runnable.some((b) => b.file === "README.md"),
    "README.md has a library example that runs",
  );
  for (const b of blocks.filter((b) => b.ignore)) {
    assert.match(
      b.firstLine,
      IGNORE_REASON,
      `${b.file}:${b.line}: an example that does not run starts with "// Not run by the docs test: why"`,
    );
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--doc", "--allow-read", ...files],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  const passed = new Set<string>();
  for (
    const m of text.matchAll(/file:\/\/\S*?\/((?:docs\/)?[\w.-]+\.md)#(\d+)-\d+\.\w+ \.\.\. ok/g)
  ) {
    passed.add(`${m[1]}:${m[2]}`);
  }
  assert.deepEqual(
    [...passed].sort(),
    runnable.map((b) => `${b.file}:${b.line}`).sort(),
    "each runnable block ran and passed",
  );
});
