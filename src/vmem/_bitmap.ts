/**
 * Plug bitmaps: one bit per device block, LSB-first bytes (bit i is byte
 * `i >> 3`, bit `i & 7`). Runs of plugged blocks, range classes, and bitmaps
 * built from runs. Private. (QEMU's wire form is converted in
 * `src/migration/wire_bitmap.ts`.)
 *
 * @module
 */

import { bitmapByteLength, testBit } from "../io/bits.ts";
import type { BlockRun } from "./ranges.ts";

/**
 * Runs of equal bits with value `value` in `[0, bits)`, as `[first, count]`.
 * Skips whole bytes of the other value, so sparse maps are cheap.
 */
export function runsOf(bitmap: Uint8Array, bits: number, value: boolean): BlockRun[] {
  const runs: BlockRun[] = [];
  const skip = value ? 0x00 : 0xff;
  let i = 0;
  while (i < bits) {
    if ((i & 7) === 0 && bitmap[i >>> 3] === skip) {
      i += 8;
      continue;
    }
    if (testBit(bitmap, i) !== value) {
      i++;
      continue;
    }
    const first = i;
    const fill = value ? 0xff : 0x00;
    while (i < bits) {
      if ((i & 7) === 0 && i + 8 <= bits && bitmap[i >>> 3] === fill) {
        i += 8;
        continue;
      }
      if (testBit(bitmap, i) !== value) break;
      i++;
    }
    runs.push([first, i - first]);
  }
  return runs;
}

/**
 * Whether blocks `[first, end)` are all set (`"plugged"`), all clear
 * (`"unplugged"`) or both (`"mixed"`). `end > first`.
 */
export function classifyBits(
  bitmap: Uint8Array,
  first: number,
  end: number,
): "plugged" | "unplugged" | "mixed" {
  let set = false;
  let clear = false;
  let i = first;
  while (i < end) {
    if ((i & 7) === 0 && i + 8 <= end) {
      const b = bitmap[i >>> 3]!;
      if (b === 0xff) set = true;
      else if (b === 0) clear = true;
      else return "mixed";
      i += 8;
    } else {
      if (testBit(bitmap, i)) set = true;
      else clear = true;
      i++;
    }
    if (set && clear) return "mixed";
  }
  return set ? "plugged" : "unplugged";
}

/** Build an LSB-first bitmap of `bits` bits from runs (callers validate the runs first). */
export function bitmapFromRuns(runs: readonly BlockRun[], bits: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bitmapByteLength(bits));
  for (const [first, count] of runs) {
    for (let i = first; i < first + count; i++) out[i >>> 3] = out[i >>> 3]! | (1 << (i & 7));
  }
  return out;
}
