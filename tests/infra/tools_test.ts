import assert from "node:assert/strict";
import { findTool, requireTool, runTool, toolAvailable } from "../_util/tools.ts";

Deno.test("findTool() finds executables on PATH and not missing ones", () => {
  assert.match(findTool("sh") ?? "", /\/sh$/);
  assert.equal(findTool("vmem-dump-no-such-tool-xyz"), undefined);
  assert.equal(findTool("/bin/sh"), "/bin/sh");
});

Deno.test("requireTool() throws for a missing tool and toolAvailable() accepts present ones", () => {
  assert.throws(() => requireTool("vmem-dump-no-such-tool-xyz"), /not installed/);
  assert.equal(toolAvailable("sh"), true);
});

Deno.test("runTool() captures output and exit code, and kills on timeout", async () => {
  const r = await runTool("sh", ["-c", "echo out; echo err >&2; exit 3"]);
  assert.deepEqual(r, { code: 3, success: false, stdout: "out\n", stderr: "err\n" });
  const fed = await runTool("sh", ["-c", "cat"], { stdin: "hello" });
  assert.equal(fed.stdout, "hello");
  await assert.rejects(runTool("sleep", ["5"], { timeoutMs: 100 }), /timed out/);
});
