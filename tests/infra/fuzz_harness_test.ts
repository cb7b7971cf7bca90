/**
 * The mutation campaign's own machinery (tests/_util/fuzz/): every oracle
 * fails when it should, cases replay from their seed, and a hang or an
 * uncaught exception costs one case, not the campaign.
 */

import assert from "node:assert/strict";
import { assertCleanCampaign, runCampaign } from "../_util/fuzz/campaign.ts";
import { caseSeedOf, mutate, Rng } from "../_util/fuzz/mutate.ts";

const enc = new TextEncoder();

Deno.test("the campaign reports each kind of misbehaviour as the failure it is, and goes on", async () => {
  const cases = ["o", "h", "a", "t", "u", "f", "l", "o"].map((c, i) => ({
    target: "selftest",
    caseSeed: i,
    input: enc.encode(`${c}...`),
  }));
  const report = await runCampaign({ seed: 1, targets: ["selftest"], replay: cases });
  const kinds = report.failures.map((f) => f.failure?.kind);
  assert.deepEqual(kinds, [
    "hang",
    "allocation",
    "untyped-error",
    "uncaught",
    "bad-offset",
    "leftover-file",
  ]);
  assert.equal(report.targets.selftest!.cases, 8);
  assert.equal(report.targets.selftest!.outcomes["ok"], 2, "the cases after a hang still run");
  assert.match(report.failures[1]!.failure!.stack, /misbehave/, "the allocation's stack is kept");
  // The suite's campaign tests fail on any of these, naming the case seed that replays it.
  assert.throws(() => assertCleanCampaign(report, { selftest: 8 }), (e: Error) => {
    assert.match(e.message, /FAIL selftest case seed 1 .*: hang: no answer within/);
    assert.match(
      e.message,
      /FAIL selftest case seed 4 .*\n {2}replay: deno task fuzz --target selftest --input FILE\n/,
    );
    assert.match(e.message, /FAIL selftest case seed 6 .*: leftover-file/);
    return true;
  });
});

Deno.test("a campaign test fails when cases did not run or never got past one outcome", async () => {
  const cases = ["o", "o"].map((c, i) => ({
    target: "selftest",
    caseSeed: i,
    input: enc.encode(c),
  }));
  const report = await runCampaign({ seed: 1, targets: ["selftest"], replay: cases });
  assert.throws(
    () => assertCleanCampaign(report, { selftest: 2 }),
    /every case ended alike \(ok\)/,
  );
  assert.throws(() => assertCleanCampaign(report, { selftest: 3 }), /2 of 3 cases ran/);
  assert.throws(() => assertCleanCampaign(report, { elf: 1 }), /elf: not in the campaign/);
});

Deno.test("a case seed gives the same mutated bytes every time; different seeds differ", () => {
  const input = new Uint8Array(4096).map((_, i) => i * 7);
  const anatomy = {
    fields: [{
      offset: 8,
      width: 4 as const,
      littleEndian: false,
      name: "len",
      role: "length" as const,
    }],
    spans: [{ start: 100, end: 200, name: "a" }, { start: 300, end: 400, name: "b" }],
  };
  const seeds = Array.from({ length: 50 }, (_, i) => caseSeedOf(7, "t", i));
  assert.equal(new Set(seeds).size, 50);
  const runs = seeds.map((s) => mutate(input, anatomy, new Rng(s)));
  for (const [i, s] of seeds.entries()) {
    const again = mutate(input, anatomy, new Rng(s));
    assert.deepEqual(again.mutations, runs[i]!.mutations);
    assert.deepEqual(again.bytes, runs[i]!.bytes);
  }
  assert.ok(new Set(runs.map((r) => r.mutations.join())).size > 40);
  assert.deepEqual(
    input,
    new Uint8Array(4096).map((_, i) => i * 7),
    "the seed input is not changed",
  );
});
