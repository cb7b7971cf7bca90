/**
 * Private helpers for ELF field widths.
 *
 * @module
 */

/** Check that a value fits an ELF32 field and return it as a number. */
export function u32(value: number | bigint, field: string): number {
  const n = typeof value === "bigint" ? value : BigInt(value);
  if (n < 0n || n > 0xffff_ffffn) {
    throw new RangeError(`Cannot write ${field} = 0x${n.toString(16)} into a 32-bit ELF field`);
  }
  return Number(n);
}

/** Round a non-negative safe integer up to a multiple of 4 (note padding). */
export function pad4(n: number): number {
  return Math.ceil(n / 4) * 4;
}
