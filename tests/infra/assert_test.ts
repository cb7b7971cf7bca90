import assert from "node:assert/strict";
import { AssertionError } from "node:assert";
import { FormatError, UnexpectedEofError } from "../../src/errors.ts";
import { assertBytesEqual, assertFormatError, hexdump } from "../_util/assert.ts";

function thrown(fn: () => void): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a throw");
}

Deno.test("assertBytesEqual() accepts equal arrays, also unaligned views", () => {
  const a = new Uint8Array(1000).map((_, i) => i & 0xff);
  assertBytesEqual(a, a.slice());
  assertBytesEqual(a.subarray(3), a.slice(3));
});

Deno.test("assertBytesEqual() names the first differing offset in hex with a hexdump", () => {
  const a = new Uint8Array(300);
  const b = a.slice();
  b[0x123] = 0x5a;
  const e = thrown(() => assertBytesEqual(a, b));
  assert.ok(e instanceof AssertionError);
  assert.match(e.message, /differ at offset 0x123 \(291\)/);
  assert.match(e.message, /\[5a\]/);
  assert.match(e.message, /^00000120 /m);
});

Deno.test("assertBytesEqual() reports a length difference at the end of the shorter input", () => {
  const e = thrown(() => assertBytesEqual(new Uint8Array(4), new Uint8Array(6)));
  assert.match(e.message, /offset 0x4 .*actual 4 bytes, expected 6 bytes/);
});

Deno.test("hexdump() prints offsets, hex and ASCII", () => {
  const dump = hexdump(new TextEncoder().encode("QEVM\0\0\0\x03"), 0, 8);
  assert.match(dump, /^00000000 {2}51 45 56 4d 00 00 00 03 .*\|QEVM\.\.\.\.\|$/);
});

Deno.test("assertFormatError() returns the error when code, offset and name match", async () => {
  const e = await assertFormatError(
    Promise.reject(new UnexpectedEofError("Cannot read page", "migration", 0x40)),
    {
      code: "unexpected-eof",
      offset: 0x40,
      name: "UnexpectedEofError",
      format: "migration",
      maxOffset: 0x40,
    },
  );
  assert.equal(e.offset, 0x40);
  await assertFormatError(() => {
    throw new FormatError("bad", { format: "elf", code: "bad-magic", offset: 0 });
  }, { code: "bad-magic", message: /bad/ });
});

Deno.test("assertFormatError() fails on success, on other errors, on mismatches and on hangs", async () => {
  await assert.rejects(assertFormatError(Promise.resolve(1)), /succeeded/);
  await assert.rejects(
    assertFormatError(() => new Uint8Array(-1)),
    /expected a FormatError, got RangeError/,
  );
  const fe = () =>
    Promise.reject(new FormatError("x", { format: "migration", code: "bad-section", offset: 9 }));
  await assert.rejects(assertFormatError(fe(), { code: "bad-footer" }), /code: got bad-section/);
  await assert.rejects(assertFormatError(fe(), { offset: 8 }), /offset: got 0x9, expected 0x8/);
  await assert.rejects(assertFormatError(fe(), { maxOffset: 8 }), /<= 0x8/);
  await assert.rejects(assertFormatError(fe(), { name: "UnexpectedEofError" }), /name/);
  await assert.rejects(assertFormatError(new Promise(() => {}), { timeoutMs: 20 }), /hang/);
});
