/**
 * The one formatter of the CLI's human output: numbers, byte counts, sizes,
 * rates, durations and plurals, so every command writes them alike
 * (docs/glossary.md). Addresses and offsets are `0x…` (`hex`); counts have
 * thousands separators (`grouped`); exact byte counts say "bytes"
 * (`byteCount`); sizes people scan are binary units (`formatByteCount`).
 *
 * @module
 */

import { formatByteCount } from "../src/io/text.ts";

export { formatByteCount, hex } from "../src/io/text.ts";

/**
 * Thousands separators, for counts people read. (Not `toLocaleString`: its
 * first call loads ICU data, 10+ ms of a command's run time.)
 *
 * @param n An integer.
 * @returns `1,234,567`.
 */
export function grouped(n: number): string {
  const digits = Math.abs(n).toString();
  if (!/^\d+$/.test(digits)) return n.toString();
  const sign = n < 0 ? "-" : "";
  return sign + digits.replace(/\B(?=(\d{3})+$)/g, ",");
}

/**
 * A count and its noun, singular for one: `1 section`, `2,048 sections`.
 *
 * @param n The count.
 * @param noun The singular noun.
 * @param plural The plural, when it is not `noun + "s"`.
 * @returns The text.
 */
export function count(n: number, noun: string, plural = `${noun}s`): string {
  return `${grouped(n)} ${n === 1 ? noun : plural}`;
}

/**
 * An exact byte count: `1 byte`, `369,036 bytes`.
 *
 * @param n Bytes.
 * @returns The text.
 */
export function byteCount(n: number): string {
  return count(n, "byte");
}

/**
 * A size that is a whole number of binary units in that unit (`2 MiB`,
 * `256 MiB`, `4 GiB`), anything else as an exact byte count: for device
 * geometry, where the exact value matters.
 *
 * @param n Bytes.
 * @returns The text.
 */
export function exactSize(n: number): string {
  const units: [number, string][] = [[2 ** 40, "TiB"], [2 ** 30, "GiB"], [2 ** 20, "MiB"], [
    2 ** 10,
    "KiB",
  ]];
  for (const [unit, name] of units) {
    if (n >= unit && n % unit === 0) return `${grouped(n / unit)} ${name}`;
  }
  return byteCount(n);
}

/**
 * A transfer rate: `512 MiB/s`.
 *
 * @param bytes Bytes moved.
 * @param seconds Time taken.
 * @returns The text, `-` when no time passed.
 */
export function rate(bytes: number, seconds: number): string {
  return seconds > 0 ? `${formatByteCount(Math.round(bytes / seconds))}/s` : "-";
}

/**
 * A duration: `0.42 s`, `12 s`, `3 min 05 s`, `1 h 02 min`.
 *
 * @param seconds The duration.
 * @returns The text.
 */
export function duration(seconds: number): string {
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** A fixed-width table with a header row. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells
    .map((r) =>
      r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd()
    )
    .join("\n") + "\n";
}

/** JSON with a trailing newline (for data outputs; reports use `reportJson`). */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}
