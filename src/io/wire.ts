/**
 * Fixed-layout binary records defined once as field tables (name, offset,
 * width), the way Go's `debug/elf` defines `Header64` and `Prog64`: readers,
 * writers and error offsets all take their offsets from the same table, so a
 * layout is written down in exactly one place.
 *
 * @module
 */

import type { ErrorFormat } from "../errors.ts";
import { getSafeU64, setU64 } from "./endian.ts";

/** Width of an integer field in bytes. */
export type WireWidth = 1 | 2 | 4 | 8;

/** One field of a {@linkcode WireLayout}. */
export interface WireField {
  /** The field's name in the specification or C header (`e_phoff`), for messages. */
  readonly name: string;
  /** Byte offset inside the record. */
  readonly offset: number;
  /** Width in bytes: 1, 2, 4 or 8 for integers, anything for byte arrays. */
  readonly width: number;
}

/** A record layout: its size and its fields by key. */
export interface WireLayout<K extends string> {
  /** Name of the record (`Elf64_Phdr`), for messages. */
  readonly name: string;
  /** Size of the record in bytes. */
  readonly byteLength: number;
  /** The fields. */
  readonly fields: { readonly [P in K]: WireField };
}

/** Field specifications for {@linkcode wireLayout}: `[name, offset, width]` per key. */
export type WireSpec<K extends string> = {
  readonly [P in K]: readonly [name: string, offset: number, width: number];
};

/**
 * Define a record layout. Fields must lie inside the record and must not
 * overlap (checked once, at definition).
 *
 * @param name Name of the record.
 * @param byteLength Size of the record.
 * @param spec `[name, offset, width]` for every field key.
 * @returns The layout.
 * @throws {RangeError} for a field outside the record or two overlapping fields.
 *
 * @example
 * ```ts
 * import { getWireUint, wireLayout } from "./wire.ts";
 * const NHDR = wireLayout("Elf64_Nhdr", 12, {
 *   nameSize: ["n_namesz", 0, 4],
 *   descSize: ["n_descsz", 4, 4],
 *   type: ["n_type", 8, 4],
 * });
 * const v = new DataView(new Uint8Array([5, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0]).buffer);
 * console.log(getWireUint(v, 0, NHDR.fields.descSize, true)); // 8
 * ```
 */
export function wireLayout<K extends string>(
  name: string,
  byteLength: number,
  spec: WireSpec<K>,
): WireLayout<K> {
  const fields = {} as { [P in K]: WireField };
  const taken: Array<[number, number, string]> = [];
  for (const key of Object.keys(spec) as K[]) {
    const [fieldName, offset, width] = spec[key];
    if (offset < 0 || width <= 0 || offset + width > byteLength) {
      throw new RangeError(`${name}.${fieldName} at ${offset}+${width} lies outside the record`);
    }
    for (const [a, b, other] of taken) {
      if (offset < b && a < offset + width) {
        throw new RangeError(`${name}.${fieldName} overlaps ${name}.${other}`);
      }
    }
    taken.push([offset, offset + width, fieldName]);
    fields[key] = Object.freeze({ name: fieldName, offset, width });
  }
  return Object.freeze({ name, byteLength, fields: Object.freeze(fields) });
}

/** Where a record sits, so a 64-bit field too large for a `number` is reported at its offset. */
export interface WireWhere {
  /** Format named in the error. */
  format: ErrorFormat;
  /** Absolute offset of the record in the input. */
  fileOffset: number;
}

/**
 * Read an integer field as a `number`. 8-byte fields must fit 2^53.
 *
 * @param view Source.
 * @param at Offset of the record in `view`.
 * @param field The field (width 1, 2, 4 or 8).
 * @param littleEndian Byte order.
 * @param where Format and input offset of the record, for the 2^53 error (default: `at`).
 * @returns The value.
 * @throws {FormatError} `too-large` when an 8-byte value exceeds 2^53.
 *
 * @example
 * ```ts
 * import { getWireUint } from "./wire.ts";
 * const v = new DataView(new Uint8Array([0, 0, 0, 2]).buffer);
 * console.log(getWireUint(v, 0, { name: "x", offset: 2, width: 2 }, false)); // 2
 * ```
 */
export function getWireUint(
  view: DataView,
  at: number,
  field: WireField,
  littleEndian: boolean,
  where?: WireWhere,
): number {
  const p = at + field.offset;
  switch (field.width) {
    case 1:
      return view.getUint8(p);
    case 2:
      return view.getUint16(p, littleEndian);
    case 4:
      return view.getUint32(p, littleEndian);
    case 8:
      return getSafeU64(view, p, littleEndian, {
        format: where?.format ?? "elf",
        offset: (where?.fileOffset ?? at) + field.offset,
      });
    default:
      throw new RangeError(`${field.name} is ${field.width} bytes wide, not an integer`);
  }
}

/**
 * Read an integer field losslessly as a `bigint` (any width).
 *
 * @param view Source.
 * @param at Offset of the record in `view`.
 * @param field The field.
 * @param littleEndian Byte order.
 * @returns The value.
 *
 * @example
 * ```ts
 * import { getWireBigUint } from "./wire.ts";
 * const v = new DataView(new Uint8Array(8).fill(0xff).buffer);
 * console.log(getWireBigUint(v, 0, { name: "p_offset", offset: 0, width: 8 }, true)); // 18446744073709551615n
 * ```
 */
export function getWireBigUint(
  view: DataView,
  at: number,
  field: WireField,
  littleEndian: boolean,
): bigint {
  if (field.width === 8) return view.getBigUint64(at + field.offset, littleEndian);
  return BigInt(getWireUint(view, at, field, littleEndian));
}

/**
 * Write an integer field, checking that the value fits its width.
 *
 * @param view Destination.
 * @param at Offset of the record in `view`.
 * @param field The field.
 * @param value A non-negative integer (`number` or `bigint`).
 * @param littleEndian Byte order.
 * @throws {RangeError} naming the field when the value does not fit.
 *
 * @example
 * ```ts
 * import { setWireUint } from "./wire.ts";
 * const v = new DataView(new ArrayBuffer(4));
 * setWireUint(v, 0, { name: "p_offset", offset: 0, width: 4 }, 0x74n, true);
 * console.log(v.getUint32(0, true)); // 116
 * ```
 */
export function setWireUint(
  view: DataView,
  at: number,
  field: WireField,
  value: number | bigint,
  littleEndian: boolean,
): void {
  const p = at + field.offset;
  if (field.width === 8) {
    if (typeof value === "bigint") {
      if (value < 0n || value > 0xffff_ffff_ffff_ffffn) throw tooWide(field, value);
      view.setBigUint64(p, value, littleEndian);
    } else {
      if (!Number.isSafeInteger(value) || value < 0) throw tooWide(field, value);
      setU64(view, p, value, littleEndian);
    }
    return;
  }
  const max = field.width === 4 ? 0xffff_ffff : field.width === 2 ? 0xffff : 0xff;
  const n = typeof value === "bigint"
    ? (value >= 0n && value <= BigInt(max) ? Number(value) : -1)
    : value;
  if (!Number.isInteger(n) || n < 0 || n > max) throw tooWide(field, value);
  switch (field.width) {
    case 1:
      view.setUint8(p, n);
      return;
    case 2:
      view.setUint16(p, n, littleEndian);
      return;
    case 4:
      view.setUint32(p, n, littleEndian);
      return;
    default:
      throw new RangeError(`${field.name} is ${field.width} bytes wide, not an integer`);
  }
}

function tooWide(field: WireField, value: number | bigint): RangeError {
  const shown = typeof value === "bigint" || Number.isInteger(value)
    ? `0x${value.toString(16)}`
    : String(value);
  return new RangeError(
    `Cannot write ${field.name} = ${shown} into a ${field.width * 8}-bit field`,
  );
}
