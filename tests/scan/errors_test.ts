/**
 * Every error `scan` gives for a stream carries an offset where `verify`
 * gives one for the same input (issue 9 §4), on corrupted real QEMU 7.2
 * and 10.0 streams: truncations and byte flips.
 */

import assert from "node:assert/strict";
import { main } from "../../cli/main.ts";
import { zstdDecompressSync } from "node:zlib";
import { seededRandom } from "../_util/chunkings.ts";

const TESTDATA = new URL("../../testdata/migration/", import.meta.url);
const fixture = (name: string) => decodeURIComponent(new URL(name, TESTDATA).pathname);

async function runIn(args: string[]): Promise<{ code: number; err: string }> {
  let err = "";
  const code = await main(args, {
    out: () => Promise.resolve(),
    err: (t) => Promise.resolve(void (err += t)),
    stderrIsTerminal: false,
  });
  return { code, err };
}

const OFFSET = / at offset 0x[0-9a-f]+$/m;

Deno.test("scan errors on corrupted real streams carry an offset wherever verify's do", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-scan-errors-" });
  try {
    // Real QEMU 7.2 (late layout) and 10.0 (early layout) streams, and the 10.0 one in zstd
    // (truncations only: bit flips inside zstd frames can crash Deno's node:zlib, see the report).
    // A copy as a plain Uint8Array: Buffer.slice() below would share memory.
    const q10 = new Uint8Array(
      zstdDecompressSync(await Deno.readFile(fixture("q10-s3-malicious.mig.zst"))),
    );
    const inputs: Array<[string, Uint8Array, boolean]> = [
      ["q72-qboot-unplugged.mig", await Deno.readFile(fixture("q72-qboot-unplugged.mig")), true],
      ["q10-s3-malicious.mig", q10, true],
      ["q10-s3-malicious.mig.zst", await Deno.readFile(fixture("q10-s3-malicious.mig.zst")), false],
    ];
    for (const [name, good, flips] of inputs) {
      const random = seededRandom(0x5ca9);
      const cases: Array<[string, Uint8Array]> = [];
      for (const cut of [0, 3, 4, 8, 9, 20, 100, 1000, good.length >> 1, good.length - 1]) {
        cases.push([`truncated at ${cut}`, good.subarray(0, cut)]);
      }
      for (let i = 0; flips && i < 40; i++) {
        const at = i < 12 ? i : Math.floor(random() * good.length);
        const bad = good.slice();
        bad[at] = bad[at]! ^ (1 << Math.floor(random() * 8));
        cases.push([`bit flip at ${at}`, bad]);
      }
      await t.step(name, async () => {
        let compared = 0;
        for (const [label, bytes] of cases) {
          const path = `${dir}/case.bin`;
          await Deno.writeFile(path, bytes);
          const verify = await runIn(["verify", path]);
          const scan = await runIn(["scan", path, "--format", "migration"]);
          for (const r of [verify, scan]) {
            assert.doesNotMatch(r.err, /^\s+at /m, `${label}: a stack trace`);
          }
          if (verify.code !== 1 || scan.code !== 1 || !OFFSET.test(verify.err)) continue;
          compared++;
          assert.match(scan.err, OFFSET, `${name}, ${label}: verify said ${verify.err}`);
          // Both read the stream with the same decoder: the same offset.
          assert.equal(
            OFFSET.exec(scan.err)![0],
            OFFSET.exec(verify.err)![0],
            `${name}, ${label}: ${verify.err} vs ${scan.err}`,
          );
        }
        assert.ok(compared >= 5, `only ${compared} inputs where both failed`);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
