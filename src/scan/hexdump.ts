/**
 * Short hexdumps of offending bytes: a window of a page chosen around its
 * first non-zero byte, kept as a hex string in reports and printed in the
 * classic `address  hex bytes  |ascii|` layout for people.
 *
 * @module
 */

/** Bytes of page content a finding keeps for its hexdump. */
export const HEXDUMP_WINDOW = 32;

/** A window of bytes at a guest-physical address, as a hex string. */
export interface HexWindow {
  /** Guest-physical address of the first byte of `hex`. */
  gpa: number;
  /** The bytes as lowercase hex, two digits per byte, no separators. */
  hex: string;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Lowercase hex of `bytes`, two digits per byte.
 *
 * @param bytes The bytes.
 * @returns E.g. `"00ff10"`.
 *
 * @example
 * ```ts
 * import { toHex } from "@vmem-dump/vmem-dump/scan";
 * console.log(toHex(new Uint8Array([0, 255, 16]))); // "00ff10"
 * ```
 */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.byteLength; i++) s += HEX[bytes[i]!]!;
  return s;
}

/**
 * Parse a hex string of {@linkcode toHex} back to bytes.
 *
 * @param hex An even number of hex digits.
 * @returns The bytes.
 * @throws {SyntaxError} when `hex` is not an even-length hex string.
 *
 * @example
 * ```ts
 * import { fromHex } from "@vmem-dump/vmem-dump/scan";
 * console.log(fromHex("00ff10")); // Uint8Array [0, 255, 16]
 * ```
 */
export function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new SyntaxError(
      `Cannot parse hex bytes: ${
        JSON.stringify(hex.slice(0, 16))
      } is not an even-length hex string`,
    );
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.byteLength; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * The hexdump window of a page: {@linkcode HEXDUMP_WINDOW} bytes starting
 * at the first non-zero byte rounded down to 16, shifted back so that it
 * stays inside the page.
 *
 * @param page The page content.
 * @param pageGpa Guest-physical address of `page[0]`.
 * @param firstNonZero Index of the first non-zero byte in `page`, or -1 (window at the start).
 * @param byteLength Window size. @default {32}
 * @returns The window.
 *
 * @example
 * ```ts
 * import { hexWindow } from "@vmem-dump/vmem-dump/scan";
 * const page = new Uint8Array(4096);
 * page[0x123] = 0xab;
 * const w = hexWindow(page, 0x1000, 0x123);
 * console.log(w.gpa.toString(16), w.hex.slice(6, 8)); // "1120" "ab"
 * ```
 */
export function hexWindow(
  page: Uint8Array,
  pageGpa: number,
  firstNonZero: number,
  byteLength = HEXDUMP_WINDOW,
): HexWindow {
  const size = Math.min(byteLength, page.byteLength);
  let start = firstNonZero < 0 ? 0 : firstNonZero - (firstNonZero % 16);
  start = Math.max(0, Math.min(start, page.byteLength - size));
  return { gpa: pageGpa + start, hex: toHex(page.subarray(start, start + size)) };
}

/**
 * Print bytes in the classic layout, 16 per line: address (hex, padded to
 * `addressDigits`), the bytes in two groups of eight, and printable ASCII.
 *
 * @param bytes The bytes.
 * @param address Address of `bytes[0]`.
 * @param options `indent` before each line (default `""`), `addressDigits` (default 9).
 * @returns Lines joined with `\n`, without a final newline.
 *
 * @example
 * ```ts
 * import { formatHexdump } from "@vmem-dump/vmem-dump/scan";
 * console.log(formatHexdump(new TextEncoder().encode("EVIL-PRE gpa=0x1"), 0x101c00000));
 * // 101c00000  45 56 49 4c 2d 50 52 45  20 67 70 61 3d 30 78 31  |EVIL-PRE gpa=0x1|
 * ```
 */
export function formatHexdump(
  bytes: Uint8Array,
  address: number,
  options: { indent?: string; addressDigits?: number } = {},
): string {
  const indent = options.indent ?? "";
  const digits = options.addressDigits ?? 9;
  const lines: string[] = [];
  for (let at = 0; at < bytes.byteLength; at += 16) {
    const row = bytes.subarray(at, at + 16);
    let hex = "";
    let ascii = "";
    for (let i = 0; i < 16; i++) {
      if (i === 8) hex += " ";
      if (i < row.byteLength) {
        const b = row[i]!;
        hex += HEX[b]! + " ";
        ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
      } else {
        hex += "   ";
      }
    }
    lines.push(`${indent}${(address + at).toString(16).padStart(digits, "0")}  ${hex} |${ascii}|`);
  }
  return lines.join("\n");
}
