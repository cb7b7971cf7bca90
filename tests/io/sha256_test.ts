import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { sha256Hex } from "../../src/io/sha256.ts";
import { sha256Positional } from "../../src/io/hash.ts";
import { bytesPositional } from "../../src/io/positional.ts";
import { UnexpectedEofError } from "../../src/errors.ts";

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

Deno.test("sha256Positional() equals node:crypto's SHA-256 on both sides of its Web Crypto limit, and refuses an input that shrinks", async () => {
  for (const n of [0, 1, 4097, 16 << 20, (16 << 20) + 1]) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 131 + (i >> 12)) & 0xff);
    assert.equal(
      await sha256Positional(bytesPositional(bytes), 1 << 20),
      createHash("sha256").update(bytes).digest("hex"),
      `${n} bytes`,
    );
  }
  // A file that claims more bytes than it gives (it was cut while read).
  for (const n of [4096, (16 << 20) + 4096]) {
    const short = bytesPositional(new Uint8Array(n - 100));
    await assert.rejects(
      sha256Positional({ ...short, byteLength: n }),
      (e: unknown) => e instanceof UnexpectedEofError,
      `${n} bytes`,
    );
  }
});
