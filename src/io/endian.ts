/**
 * Fixed-width integer access with explicit byte order, and a safe path from
 * 64-bit fields to `number`.
 *
 * @module
 */

import { type ErrorFormat, FormatError } from "../errors.ts";

/**
 * A `DataView` over exactly the bytes of `u8` (a subarray-safe view).
 *
 * @example
 * ```ts
 * import { viewOf } from "./endian.ts";
 * const u8 = new Uint8Array([0, 0, 1, 2]).subarray(2);
 * console.log(viewOf(u8).getUint16(0)); // 0x0102
 * ```
 */
export function viewOf(u8: Uint8Array): DataView {
  return new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
}

/**
 * Read a u64 as a `number` without BigInt, or throw a `FormatError` when it
 * exceeds `Number.MAX_SAFE_INTEGER`.
 *
 * @param view The view to read.
 * @param at Offset in the view.
 * @param littleEndian Byte order.
 * @param where Format and absolute offset for the error.
 * @returns The value as an exact `number`.
 * @throws {FormatError} when the value is not a safe integer.
 *
 * @example
 * ```ts
 * import { getSafeU64, viewOf } from "./endian.ts";
 * const v = viewOf(new Uint8Array([0, 0, 0, 1, 0, 0, 0, 0]));
 * console.log(getSafeU64(v, 0, false, { format: "migration", offset: 0 })); // 4294967296
 * ```
 */
export function getSafeU64(
  view: DataView,
  at: number,
  littleEndian: boolean,
  where: { format: ErrorFormat; offset: number },
): number {
  const value = tryGetSafeU64(view, at, littleEndian);
  if (value === undefined) {
    const hi = view.getUint32(littleEndian ? at + 4 : at, littleEndian);
    const lo = view.getUint32(littleEndian ? at : at + 4, littleEndian);
    throw new FormatError(
      `Cannot use 64-bit value 0x${hi.toString(16)}${
        lo.toString(16).padStart(8, "0")
      }: it exceeds 2^53`,
      { format: where.format, code: "too-large", offset: where.offset },
    );
  }
  return value;
}

/**
 * Read a u64 as a `number`, or `undefined` when it exceeds
 * `Number.MAX_SAFE_INTEGER` (for parsers that decide themselves what an
 * oversized value means). The one place where the 2^53 limit is checked.
 *
 * @param view The view to read.
 * @param at Offset in the view.
 * @param littleEndian Byte order.
 * @returns The value as an exact `number`, or `undefined`.
 *
 * @example
 * ```ts
 * import { tryGetSafeU64, viewOf } from "./endian.ts";
 * const v = viewOf(new Uint8Array([0xff, 0, 0, 0, 0, 0, 0, 0]));
 * console.log(tryGetSafeU64(v, 0, false)); // undefined
 * ```
 */
export function tryGetSafeU64(
  view: DataView,
  at: number,
  littleEndian: boolean,
): number | undefined {
  const hi = view.getUint32(littleEndian ? at + 4 : at, littleEndian);
  if (hi > 0x1fffff) return undefined;
  return hi * 0x1_0000_0000 + view.getUint32(littleEndian ? at : at + 4, littleEndian);
}

/**
 * Write a non-negative safe integer as a u64.
 *
 * @param view The view to write.
 * @param at Offset in the view.
 * @param value A safe non-negative integer.
 * @param littleEndian Byte order.
 *
 * @example
 * ```ts
 * import { setU64, viewOf } from "./endian.ts";
 * const u8 = new Uint8Array(8);
 * setU64(viewOf(u8), 0, 2 ** 32, false);
 * console.log(u8[3]); // 1
 * ```
 */
export function setU64(view: DataView, at: number, value: number, littleEndian: boolean): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Cannot write ${value} as u64: not a safe non-negative integer`);
  }
  const hi = Math.floor(value / 0x1_0000_0000);
  const lo = value >>> 0;
  view.setUint32(littleEndian ? at + 4 : at, hi, littleEndian);
  view.setUint32(littleEndian ? at : at + 4, lo, littleEndian);
}
