/**
 * Test assertions for binary data and typed format errors.
 *
 * @module
 */

import { AssertionError } from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";

function hex(n: number, width = 0): string {
  return "0x" + n.toString(16).padStart(width, "0");
}

/**
 * A short hexdump of `bytes[from, from + byteLength)`, 16 bytes a line, each
 * line prefixed with its absolute offset; the byte at `mark` is bracketed.
 *
 * @param bytes Data to dump.
 * @param from First offset to show.
 * @param byteLength How many bytes to show.
 * @param mark Offset of a byte to highlight, or -1.
 * @returns The dump, one line per 16 bytes.
 * @example
 * ```ts
 * import { hexdump } from "./assert.ts";
 * console.log(hexdump(new Uint8Array([1, 2, 3]), 0, 3));
 * ```
 */
export function hexdump(bytes: Uint8Array, from: number, byteLength: number, mark = -1): string {
  const lines: string[] = [];
  const start = Math.max(0, from - (from % 16));
  const end = Math.min(bytes.length, from + byteLength);
  for (let line = start; line < end; line += 16) {
    const cells: string[] = [];
    let ascii = "";
    for (let i = line; i < line + 16; i++) {
      if (i >= end) {
        cells.push("  ");
        continue;
      }
      const b = bytes[i]!;
      const h = b.toString(16).padStart(2, "0");
      cells.push(i === mark ? `[${h}]` : h);
      ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
    }
    lines.push(`${line.toString(16).padStart(8, "0")}  ${cells.join(" ")}  |${ascii}|`);
  }
  return lines.join("\n");
}

/**
 * Assert that two byte arrays are identical. On failure the message names the
 * first differing offset in hex, both lengths, and a hexdump of both around it.
 *
 * @param actual Bytes produced by the code under test.
 * @param expected Bytes it should have produced.
 * @param message Optional prefix for the failure message.
 * @throws {AssertionError} When the arrays differ.
 * @example
 * ```ts
 * import { assertBytesEqual } from "./assert.ts";
 * assertBytesEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]));
 * ```
 */
export function assertBytesEqual(
  actual: Uint8Array,
  expected: Uint8Array,
  message?: string,
): void {
  const n = Math.min(actual.length, expected.length);
  let at = -1;
  // compare 4 bytes at a time when both views are aligned; fall back per byte
  let i = 0;
  if (actual.byteOffset % 4 === 0 && expected.byteOffset % 4 === 0) {
    const words = n >>> 2;
    const a32 = new Uint32Array(actual.buffer, actual.byteOffset, words);
    const e32 = new Uint32Array(expected.buffer, expected.byteOffset, words);
    while (i < words && a32[i] === e32[i]) i++;
    i <<= 2;
  }
  for (; i < n; i++) {
    if (actual[i] !== expected[i]) {
      at = i;
      break;
    }
  }
  if (at === -1 && actual.length === expected.length) return;
  if (at === -1) at = n;
  const from = Math.max(0, at - 32);
  const parts = [
    `${message ? message + ": " : ""}bytes differ at offset ${hex(at)} (${at})` +
    `; actual ${actual.length} bytes, expected ${expected.length} bytes`,
    "actual:",
    hexdump(actual, from, 64, at),
    "expected:",
    hexdump(expected, from, 64, at),
  ];
  throw new AssertionError({ message: parts.join("\n"), actual: at, expected: -1 });
}

/** What {@linkcode assertFormatError} checks besides the class. */
export interface FormatErrorExpectation {
  /** Expected `code`, e.g. `"bad-magic"`. @default {undefined} (not checked) */
  code?: string;
  /** Expected exact `offset`. @default {undefined} (not checked) */
  offset?: number;
  /** Upper bound for `offset` (corruption tests: `offset <= cut`). @default {undefined} */
  maxOffset?: number;
  /** Expected `name` (`"FormatError"`, `"UnexpectedEofError"`, …). @default {undefined} */
  name?: string;
  /** Expected `format` (`"migration"`, `"elf"`, …). @default {undefined} */
  format?: string;
  /** A substring or pattern the message must contain. @default {undefined} */
  message?: string | RegExp;
  /** Fail if the promise neither settles nor throws within this time. @default {10000} */
  timeoutMs?: number;
}

/**
 * Assert that a promise (or a sync/async function) fails with a
 * {@linkcode FormatError} (or subclass) matching `expected`. A `TypeError`,
 * `RangeError` or plain `Error`, success, or a hang past `timeoutMs` all fail
 * the assertion.
 *
 * @param promiseOrFn The operation: a promise or a function returning a value or promise.
 * @param expected Fields to check.
 * @returns The caught error, for further checks.
 * @throws {AssertionError} When the operation does not fail as expected.
 * @example
 * ```ts
 * import { assertFormatError } from "./assert.ts";
 * import { FormatError } from "../../src/errors.ts";
 * await assertFormatError(() => {
 *   throw new FormatError("bad", { format: "migration", code: "bad-magic", offset: 0 });
 * }, { code: "bad-magic", offset: 0 });
 * ```
 */
export async function assertFormatError(
  promiseOrFn: Promise<unknown> | (() => unknown),
  expected: FormatErrorExpectation = {},
): Promise<FormatError> {
  const timeoutMs = expected.timeoutMs ?? 10_000;
  let caught: unknown;
  let settled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const op = typeof promiseOrFn === "function"
      ? Promise.resolve().then(promiseOrFn)
      : Promise.resolve(promiseOrFn);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new AssertionError({ message: `no error within ${timeoutMs} ms (hang?)` })),
        timeoutMs,
      );
    });
    await Promise.race([op, timeout]);
    settled = true;
  } catch (e) {
    caught = e;
  } finally {
    clearTimeout(timer);
  }
  if (settled) {
    throw new AssertionError({ message: "expected a FormatError, but the operation succeeded" });
  }
  if (caught instanceof AssertionError) throw caught;
  if (!(caught instanceof FormatError)) {
    const what = caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught);
    throw new AssertionError({
      message: `expected a FormatError, got ${what}` +
        (caught instanceof Error && caught.stack ? `\n${caught.stack}` : ""),
    });
  }
  const e = caught;
  const fail = (what: string, actual: unknown, want: unknown) => {
    throw new AssertionError({
      message: `FormatError ${what}: got ${String(actual)}, expected ${String(want)}` +
        ` (message: ${e.message})`,
      actual,
      expected: want,
    });
  };
  if (expected.name !== undefined && e.name !== expected.name) fail("name", e.name, expected.name);
  if (expected.code !== undefined && e.code !== expected.code) fail("code", e.code, expected.code);
  if (expected.format !== undefined && e.format !== expected.format) {
    fail("format", e.format, expected.format);
  }
  if (expected.offset !== undefined && e.offset !== expected.offset) {
    fail("offset", hex(e.offset), hex(expected.offset));
  }
  if (expected.maxOffset !== undefined && !(e.offset <= expected.maxOffset)) {
    fail("offset", hex(e.offset), `<= ${hex(expected.maxOffset)}`);
  }
  if (expected.message !== undefined) {
    const ok = typeof expected.message === "string"
      ? e.message.includes(expected.message)
      : expected.message.test(e.message);
    if (!ok) fail("message", e.message, expected.message);
  }
  return e;
}

/**
 * How often `needle` occurs in `haystack` (overlapping matches count).
 *
 * @param haystack Bytes to search.
 * @param needle Bytes, or text encoded as UTF-8.
 * @returns The number of matches.
 * @example
 * ```ts
 * import { countBytes } from "./assert.ts";
 * countBytes(new TextEncoder().encode("abab"), "ab"); // 2
 * ```
 */
export function countBytes(haystack: Uint8Array, needle: Uint8Array | string): number {
  const n = typeof needle === "string" ? new TextEncoder().encode(needle) : needle;
  if (n.length === 0) throw new RangeError("empty needle");
  let hits = 0;
  for (let i = haystack.indexOf(n[0]!); i >= 0; i = haystack.indexOf(n[0]!, i + 1)) {
    let j = 1;
    while (j < n.length && haystack[i + j] === n[j]) j++;
    if (j === n.length) hits++;
  }
  return hits;
}
