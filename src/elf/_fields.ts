/**
 * Private helper for ELF note padding.
 *
 * @module
 */

/** Round a non-negative safe integer up to a multiple of 4 (note padding). */
export function pad4(n: number): number {
  return Math.ceil(n / 4) * 4;
}
