/** Small synthetic inputs shared by the scan tests. */

import { PlugMap } from "../../src/vmem/plug_map.ts";

export const BLOCK = 0x20_0000;
export const GPA = 0x1_0000_0000;

/** One device of 4 blocks of 2 MiB; `plugged` lists plugged block indexes. */
export function testMap(plugged: number[] = [0]): PlugMap {
  const bitmap = new Uint8Array(1);
  for (const b of plugged) bitmap[0]! |= 1 << b;
  return new PlugMap([{
    path: "0000:00:01.0",
    ramBlock: "0000:00:01.0/vmem0mem",
    gpa: GPA,
    regionSize: 4 * BLOCK,
    blockSize: BLOCK,
    node: 0,
    usableRegionSize: undefined,
    size: plugged.length * BLOCK,
    requestedSize: undefined,
    bitmap,
  }]);
}
