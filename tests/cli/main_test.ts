import assert from "node:assert/strict";
import { errorLine, main } from "../../cli/main.ts";
import { UsageError } from "../../cli/io.ts";
import { FormatError, OutputError, UnexpectedEofError } from "../../src/errors.ts";
import { TOOL_VERSION } from "../../src/version.ts";

Deno.test("--version prints the version of deno.json", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
  ) as { version: string };
  assert.equal(TOOL_VERSION, config.version);
  let out = "";
  const code = await main(["--version"], {
    out: (t) => Promise.resolve(void (out += t)),
    err: () => Promise.resolve(),
    stderrIsTerminal: false,
  });
  assert.equal(code, 0);
  assert.equal(out, `vmem-dump ${config.version}\n`);
});

Deno.test("errorLine() gives one line without a stack for every error class", () => {
  const cases: Array<[unknown, RegExp]> = [
    [new UsageError("bad flag"), /^bad flag$/],
    [
      new FormatError("Cannot decode: bad magic", {
        format: "migration",
        code: "bad-magic",
        offset: 0,
      }),
      /^Cannot decode: bad magic at offset 0x0$/,
    ],
    [new UnexpectedEofError("Cannot read page", "migration", 0x10), /at offset 0x10$/],
    [
      new OutputError("no space left on device writing o at offset 0x2", { code: "io", path: "o" }),
      /^no space left on device writing o at offset 0x2$/,
    ],
    [
      new Deno.errors.NotFound("No such file or directory (os error 2): open '/x/y.mig'"),
      /^cannot open \/x\/y\.mig: no such file or directory$/,
    ],
    [new TypeError("Cannot read x"), /^Cannot read x$/],
    [new SyntaxError("Unexpected token\n  in JSON"), /^SyntaxError: Unexpected token; in JSON$/],
    ["a string", /^a string$/],
  ];
  for (const [e, want] of cases) {
    const line = errorLine(e);
    assert.match(line, want);
    assert.doesNotMatch(line, /\n|^\s+at /m);
  }
});
