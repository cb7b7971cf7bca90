/**
 * Errors and value checks shared by the plug-map model and its codecs. Private.
 *
 * @module
 */

import { FormatError } from "../errors.ts";

/** A `FormatError` (format `plugmap`, code `invariant`): the described state is impossible. */
export function invariantError(message: string): FormatError {
  return new FormatError(`Invalid virtio-mem plug map: ${message}`, {
    format: "plugmap",
    code: "invariant",
    offset: 0,
  });
}

/** A `FormatError` (format `plugmap`, code `bad-json`): the JSON has the wrong shape. */
export function badJsonError(message: string): FormatError {
  return new FormatError(`Cannot read plug map JSON: ${message}`, {
    format: "plugmap",
    code: "bad-json",
    offset: 0,
  });
}

/** Whether `n` is a non-negative safe integer (a size or address in bytes). */
export function isU64(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

/** Whether `v` is a plain JSON object (not `null`, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
