import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { sha256Hex } from "../../src/io/sha256.ts";

Deno.test("sha256Hex() equals node:crypto's SHA-256 at every padding boundary and for pages", () => {
  for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 4096, 65_537]) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 131 + n) & 0xff);
    assert.equal(sha256Hex(bytes), createHash("sha256").update(bytes).digest("hex"), `${n} bytes`);
  }
  // A view into a larger buffer hashes only its own bytes.
  const big = new Uint8Array(10_000).map((_, i) => i & 0xff);
  const view = big.subarray(17, 17 + 4096);
  assert.equal(sha256Hex(view), createHash("sha256").update(view).digest("hex"));
});
