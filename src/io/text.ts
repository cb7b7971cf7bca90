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
