/**
 * Raw images of guest-physical memory (QEMU `pmemsave`, memory-backend
 * copies): rewrite one with the excluded ranges (unplugged virtio-mem blocks)
 * overwritten by zeros, keeping every other byte and the file size.
 *
 * @module
 */

import {
  type ChunkSink,
  copyRangesTo,
  type CopyStep,
  NonZeroPageCounter,
  openPositional,
  type PositionalReader,
} from "../io/positional.ts";
import { type GpaRange, mergeGpaRanges } from "../vmem/ranges.ts";

/** Options for {@linkcode zeroRawImage}. */
export interface ZeroRawImageOptions {
  /** Guest-physical address of the image's first byte. */
  baseGpa: number;
  /** Ranges to overwrite with zeros. */
  exclude: readonly GpaRange[];
  /** Count the non-zero pages that get zeroed (reads those bytes too). @default {false} */
  countNonZero?: boolean;
  /** Page size for `countNonZero`. @default {4096} */
  pageSize?: number;
  /** Size of each read and write. @default {4194304} */
  chunkSize?: number;
  /**
   * Called after each chunk with the input bytes read so far (of the
   * image's size; the excluded ranges are not read). @default {undefined}
   */
  onProgress?: (inputBytesRead: number) => void;
}

/** A zeroed range of the image. */
export interface ZeroedRange extends GpaRange {
  /** Non-zero pages it held; only with `countNonZero`. */
  nonZeroPages?: number;
}

/** What {@linkcode zeroRawImage} did. */
export interface ZeroRawImageReport {
  /** Image size (input and output). */
  byteLength: number;
  /** Zeroed ranges, clipped to the image, ascending. */
  zeroed: ZeroedRange[];
  /** Total bytes zeroed. */
  zeroedByteLength: number;
}

/** Sort and merge ranges, clipped to `[start, end)`. */
function clippedRanges(ranges: readonly GpaRange[], start: number, end: number): GpaRange[] {
  const clipped = ranges.map((r) => {
    if (
      !Number.isSafeInteger(r.gpa) || !Number.isSafeInteger(r.byteLength) || r.gpa < 0 ||
      r.byteLength < 0
    ) {
      throw new RangeError(
        `Cannot use gpa range ${r.gpa}+${r.byteLength}: not safe non-negative integers`,
      );
    }
    const gpa = Math.max(r.gpa, start);
    return { gpa, byteLength: Math.max(0, Math.min(r.gpa + r.byteLength, end) - gpa) };
  });
  return mergeGpaRanges(clipped);
}

/**
 * Copy a raw memory image with the excluded ranges replaced by zeros.
 *
 * @param input Path of the image or an open reader (left open).
 * @param output Output path (`-` = standard output; atomic for files) or a chunk sink.
 * @param options Base address and ranges.
 * @returns The zeroed ranges.
 * @throws {RangeError} for a base address that is not a safe integer.
 *
 * @example
 * ```ts ignore
 * import { zeroRawImage } from "@vmem-dump/vmem-dump/raw";
 * const report = await zeroRawImage("s3.vmem0.raw", "s3.clean.raw", {
 *   baseGpa: 0x100000000,
 *   exclude: [{ gpa: 0x101c00000, byteLength: 0x6400000 }],
 *   countNonZero: true,
 * });
 * console.log(report.zeroed[0]?.nonZeroPages);
 * ```
 */
export async function zeroRawImage(
  input: string | PositionalReader,
  output: string | ChunkSink,
  options: ZeroRawImageOptions,
): Promise<ZeroRawImageReport> {
  const reader = typeof input === "string" ? await openPositional(input) : input;
  try {
    const base = options.baseGpa;
    const size = reader.byteLength;
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(base + size)) {
      throw new RangeError(
        `Cannot place the image at gpa ${base}: not a safe non-negative integer`,
      );
    }
    const zeroed: ZeroedRange[] = clippedRanges(options.exclude, base, base + size);
    const steps: CopyStep[] = [];
    const counters: Array<[ZeroedRange, NonZeroPageCounter]> = [];
    let cursor = base;
    for (const z of zeroed) {
      if (z.gpa > cursor) {
        steps.push({ kind: "copy", fileOffset: cursor - base, byteLength: z.gpa - cursor });
      }
      if (options.countNonZero) {
        const c = new NonZeroPageCounter(base, options.pageSize ?? 4096);
        counters.push([z, c]);
        steps.push({
          kind: "inspect",
          fileOffset: z.gpa - base,
          byteLength: z.byteLength,
          onData: (d, o) => c.add(d, o),
        });
      }
      steps.push({ kind: "zero", byteLength: z.byteLength });
      cursor = z.gpa + z.byteLength;
    }
    if (cursor < base + size) {
      steps.push({ kind: "copy", fileOffset: cursor - base, byteLength: base + size - cursor });
    }
    const copyOptions = {
      format: "raw" as const,
      ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
      ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
    };
    await copyRangesTo(reader, output, steps, copyOptions);
    for (const [z, c] of counters) z.nonZeroPages = c.count;
    return {
      byteLength: size,
      zeroed,
      zeroedByteLength: zeroed.reduce((n, z) => n + z.byteLength, 0),
    };
  } finally {
    if (typeof input === "string") reader.close();
  }
}
