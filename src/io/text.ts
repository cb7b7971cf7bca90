/**
 * Text views of numbers and bytes for messages and reports: `0x…` for
 * addresses and offsets, and lossless byte strings (idstrs, machine names,
 * magics), where each byte is one UTF-16 code unit.
 *
 * `TextDecoder("latin1")` is not a substitute: the Encoding Standard maps
 * that label to windows-1252, which turns bytes 0x80–0x9f into other
 * characters, so a name would not survive a round trip.
 *
 * @module
 */

/**
 * `0x…` for an address, offset or id.
 *
 * @param n A non-negative integer.
 * @returns Lower-case hex with a `0x` prefix.
 *
 * @example
 * ```ts
 * import { hex } from "./text.ts";
 * console.log(hex(4096)); // "0x1000"
 * ```
 */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * Bytes as space-separated lower-case hex pairs, for messages about magic
 * numbers (`28 b5 2f fd`).
 *
 * @param bytes A few bytes.
 * @returns The hex pairs.
 *
 * @example
 * ```ts
 * import { hexBytes } from "./text.ts";
 * console.log(hexBytes(new Uint8Array([0x28, 0xb5, 0x2f, 0xfd]))); // "28 b5 2f fd"
 * ```
 */
export function hexBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/**
 * A byte count for people: `512 B`, `1.5 KiB`, `110 MiB`, `2.00 GiB`.
 *
 * @param n A byte count.
 * @returns Three significant digits in the largest binary unit below it.
 *
 * @example
 * ```ts
 * import { formatByteCount } from "./text.ts";
 * console.log(formatByteCount(163577856)); // "156 MiB"
 * ```
 */
export function formatByteCount(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}

/**
 * Bytes to a string without loss: each byte becomes one code unit.
 *
 * @param bytes The bytes.
 * @returns The byte string.
 *
 * @example
 * ```ts
 * import { latin1Decode } from "./text.ts";
 * console.log(latin1Decode(new Uint8Array([0x72, 0x61, 0x6d]))); // "ram"
 * ```
 */
export function latin1Decode(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.byteLength; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

/**
 * The inverse of {@linkcode latin1Decode}; a character above 0xff is a caller bug.
 *
 * @param text A byte string.
 * @returns Its bytes (a new array).
 * @throws {RangeError} when `text` holds a character above 0xff.
 *
 * @example
 * ```ts
 * import { latin1Encode } from "./text.ts";
 * console.log(latin1Encode("ram")); // Uint8Array(3) [ 114, 97, 109 ]
 * ```
 */
export function latin1Encode(text: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`Cannot encode ${JSON.stringify(text)}: not a byte string`);
    out[i] = c;
  }
  return out;
}
