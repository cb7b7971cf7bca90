/**
 * A {@linkcode PositionalReader} over the guest-physical memory of a kdump
 * file: `readInto(gpa, buf)` decompresses the pages it covers. Pages that
 * are not in the dump read as zeros; callers that must tell them apart ask
 * the bitmaps first.
 *
 * @module
 */

import type { PositionalReader } from "../io/positional.ts";
import type { KdumpFile } from "./reader.ts";

/**
 * Physical memory of a kdump file as a positional reader (its `byteLength`
 * is `maxMapnr × blockSize`). Reads go through
 * {@linkcode KdumpFile.iteratePages}, so a large read decodes its pages in
 * batches. Closing it does not close the dump.
 *
 * @param dump The opened dump.
 * @returns The reader.
 *
 * @example
 * ```ts ignore
 * import { kdumpPhysicalReader, readKdump } from "@vmem-dump/vmem-dump/kdump";
 * using dump = await readKdump("vmcore");
 * const mem = kdumpPhysicalReader(dump);
 * const page = new Uint8Array(4096);
 * await mem.readInto(0x100000, page);
 * ```
 */
export function kdumpPhysicalReader(dump: KdumpFile): PositionalReader {
  const B = dump.blockSize;
  const byteLength = dump.maxMapnr * B;
  return {
    byteLength,
    async readInto(gpa, into) {
      const want = Math.max(0, Math.min(into.byteLength, byteLength - gpa));
      into.fill(0, 0, want);
      if (want === 0) return 0;
      const first = Math.floor(gpa / B);
      const end = Math.ceil((gpa + want) / B);
      for await (const batch of dump.iteratePages(first, end)) {
        for (const p of batch) {
          const pageGpa = p.pfn * B;
          const from = Math.max(gpa, pageGpa);
          const to = Math.min(gpa + want, pageGpa + B);
          into.set(p.data.subarray(from - pageGpa, to - pageGpa), from - gpa);
        }
      }
      return want;
    },
    close() {},
  };
}
