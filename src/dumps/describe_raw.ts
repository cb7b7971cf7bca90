/**
 * `inspect` of a raw image of guest-physical memory (QEMU `pmemsave`, a
 * `strip --format raw` output): it has no header, so all there is to say is
 * where it sits (`--base`) and how much it holds.
 *
 * @module
 */

import type { GpaRange } from "../vmem/ranges.ts";

/** What `inspect` says about a raw image. */
export interface RawImageDescription {
  /** Always `raw`. */
  format: "raw";
  /** Image size. */
  byteLength: number;
  /** Guest-physical address of its first byte (as given). */
  baseGpa: number;
  /** The memory it holds: one range. */
  memory: GpaRange[];
}

/**
 * Describe a raw image.
 *
 * @param byteLength Image size.
 * @param baseGpa Guest-physical address of its first byte.
 * @returns The description.
 * @throws {RangeError} when the image would end beyond 2^53.
 *
 * @example
 * ```ts
 * import { describeRawImage } from "@vmem-dump/vmem-dump/dumps";
 * console.log(describeRawImage(4096, 0x100000000).memory); // [ { gpa: 4294967296, byteLength: 4096 } ]
 * ```
 */
export function describeRawImage(byteLength: number, baseGpa: number): RawImageDescription {
  if (!Number.isSafeInteger(baseGpa + byteLength) || baseGpa < 0) {
    throw new RangeError(`A raw image of ${byteLength} bytes cannot start at gpa ${baseGpa}`);
  }
  return {
    format: "raw",
    byteLength,
    baseGpa,
    memory: byteLength === 0 ? [] : [{ gpa: baseGpa, byteLength }],
  };
}
