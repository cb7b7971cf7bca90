/**
 * Campaign target `selftest`: a reader that misbehaves on purpose, so that
 * tests/infra/fuzz_harness_test.ts can show that each oracle of the
 * campaign fails when it should. The first byte of the input says what to do:
 * `o` succeed, `h` hang in a synchronous loop, `a` allocate 1 GiB, `t` throw
 * a TypeError, `u` throw from a timer (uncaught), `f` throw a FormatError
 * whose offset lies past the input, `l` leave a file behind. Never run by
 * default (it is marked heavy) and never in the CI campaign.
 *
 * @module
 */

import { FormatError } from "../../../../src/errors.ts";
import { OracleFailure, typedErrorLabel } from "../oracle.ts";
import type { CaseContext, FuzzTarget } from "../target.ts";

async function misbehave(input: Uint8Array, context: CaseContext): Promise<string> {
  switch (String.fromCharCode(input[0] ?? 0x6f)) {
    case "h":
      for (;;) { /* a reader stuck in a loop */ }
    case "a":
      return `allocated ${new Uint8Array(1 << 30).length}`;
    case "t":
      throw new TypeError("a reader tripped over its own feet");
    case "u":
      setTimeout(() => {
        throw new Error("thrown where nobody catches it");
      }, 0);
      return await new Promise(() => {});
    case "f":
      return typedErrorLabel(
        new FormatError("bad", { format: "raw", code: "bad-record", offset: input.length + 10 }),
        { maxOffset: { raw: input.length } },
      );
    case "l":
      await Deno.writeTextFile(`${context.workDir}/left.tmp`, "x");
      for await (const e of Deno.readDir(context.workDir)) {
        throw new OracleFailure("leftover-file", `left ${e.name}`);
      }
      return "ok";
    default:
      return "ok";
  }
}

/** The target. */
export const selftestTarget: FuzzTarget = {
  name: "selftest",
  description: "a reader that misbehaves on purpose (the campaign's own test); only when named",
  timeoutMs: 3_000,
  heavy: true,
  seeds: () =>
    Promise.resolve([{
      name: "ok",
      bytes: new Uint8Array([0x6f, 0, 0, 0]),
      anatomy: { fields: [], spans: [] },
    }]),
  run: misbehave,
};
