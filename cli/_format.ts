/** Small text helpers shared by the CLI commands. */

export { formatByteCount, hex } from "../src/io/text.ts";

/**
 * Thousands separators, for byte counts people read. (Not `toLocaleString`:
 * its first call loads ICU data, 10+ ms of a command's run time.)
 */
export function grouped(n: number): string {
  const digits = Math.abs(n).toString();
  if (!/^\d+$/.test(digits)) return n.toString();
  const sign = n < 0 ? "-" : "";
  return sign + digits.replace(/\B(?=(\d{3})+$)/g, ",");
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

/** JSON with a trailing newline. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}
