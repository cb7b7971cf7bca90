/**
 * Scan a raw image of guest memory (QEMU `pmemsave`, a copy of a memory
 * backend file) for non-zero data in unplugged virtio-mem blocks.
 *
 * @module
 */

import type { PositionalReader } from "../io/positional.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import {
  FindingCollector,
  type FindingPageSink,
  type PlugStateInfo,
  type ScanReport,
} from "./findings.ts";
import { CoverageCounter, unpluggedRangesPerDevice } from "./coverage.ts";
import { clipRanges, scanFilePieces } from "./_memory_pages.ts";
import { SCAN_PAGE_SIZE } from "./zero.ts";

/** Options shared by the dump scanners. */
export interface ScanDumpOptions {
  /** The plug state to judge by. */
  plugMap: PlugMap;
  /** Pages listed in the report at most (totals stay exact). @default {100} */
  maxFindings?: number;
  /** Bytes of page content in each listed finding's hexdump. @default {32} */
  hexdumpBytes?: number;
  /** Also hand every finding with its content to this sink (`scan --extract`). @default {undefined} */
  pageSink?: FindingPageSink;
  /** Size of each read. @default {4194304} */
  chunkSize?: number;
  /** How the report names the plug state. @default {{ source: "plugmap", detail: null }} */
  plugState?: PlugStateInfo;
  /** Path the report names as input. @default {null} */
  path?: string | null;
  /** Called after each chunk with the unplugged bytes checked so far and the total to check. @default {undefined} */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** Options for {@linkcode scanRawImage}. */
export interface ScanRawOptions extends ScanDumpOptions {
  /** Guest-physical address of the image's first byte; a multiple of 4096. */
  baseGpa: number;
}

/** Default read size of the dump scanners: 4 MiB. */
export const SCAN_CHUNK_SIZE = 4 << 20;

/** The collector of a dump scanner, from its options. */
export function dumpCollector(options: ScanDumpOptions): FindingCollector {
  return new FindingCollector({
    ...(options.maxFindings === undefined ? {} : { maxFindings: options.maxFindings }),
    ...(options.hexdumpBytes === undefined ? {} : { hexdumpBytes: options.hexdumpBytes }),
    ...(options.pageSink === undefined ? {} : { pageSink: options.pageSink }),
  });
}

/** Why unplugged memory outside a raw image is absent, in words. */
export function outsideImageDetail(baseGpa: number, byteLength: number): string {
  return `outside the raw image, which holds gpa 0x${baseGpa.toString(16)}-0x${
    (baseGpa + byteLength).toString(16)
  } (is --base right?)`;
}

/**
 * Scan a raw memory image whose first byte is guest-physical `baseGpa`.
 * Only the unplugged ranges of the plug map that the image covers are read
 * (plugged memory is skipped with a seek, not read); each 4 KiB page in
 * them that is not all zero is a finding. Reads are double-buffered, so the
 * next chunk is read while the current one is checked. Memory use is two
 * chunks plus the listed findings, whatever the image size.
 *
 * @param reader The image.
 * @param options Plug map, base address, listing bound, chunk size.
 * @returns The report (`input.kind` is `raw`).
 * @throws {RangeError} when `baseGpa` is not a non-negative multiple of 4096.
 * @throws {UnexpectedEofError} when the image shrinks while it is read.
 *
 * @example Scan a pmemsave image of the virtio-mem region
 * ```ts ignore
 * import { openPositional } from "@vmem-dump/vmem-dump";
 * import { parsePlugMapSource } from "@vmem-dump/vmem-dump/vmem";
 * import { scanRawImage } from "@vmem-dump/vmem-dump/scan";
 * const { map } = parsePlugMapSource(await Deno.readTextFile("s3.plugmap.json"));
 * using image = await openPositional("s3-malicious.vmem0.raw");
 * const report = await scanRawImage(image, { plugMap: map, baseGpa: 0x1_0000_0000 });
 * console.log(report.summary.findings);
 * ```
 *
 * @example Scan bytes in memory
 * ```ts
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * import { PlugMap } from "@vmem-dump/vmem-dump/vmem";
 * import { scanRawImage } from "@vmem-dump/vmem-dump/scan";
 * const map = new PlugMap([{
 *   path: "", ramBlock: "", gpa: 0x1_0000_0000, regionSize: 0x40_0000, blockSize: 0x20_0000,
 *   node: 0, usableRegionSize: undefined, size: 0x20_0000, requestedSize: undefined,
 *   bitmap: new Uint8Array([0b01]),
 * }]);
 * const image = new Uint8Array(0x40_0000);
 * image[0x20_0000 + 0x1234] = 7; // block 1 is unplugged
 * const report = await scanRawImage(bytesPositional(image), { plugMap: map, baseGpa: 0x1_0000_0000 });
 * console.log(report.devices[0]!.blocks[0]!.firstNonZero!.blockOffset.toString(16)); // "1234"
 * ```
 */
export async function scanRawImage(
  reader: PositionalReader,
  options: ScanRawOptions,
): Promise<ScanReport> {
  const { plugMap, baseGpa } = options;
  if (!Number.isSafeInteger(baseGpa) || baseGpa < 0 || baseGpa % SCAN_PAGE_SIZE !== 0) {
    throw new RangeError(
      `Cannot scan a raw image at base gpa ${baseGpa}: it must be a non-negative multiple of 4096`,
    );
  }
  const chunkSize = options.chunkSize ?? SCAN_CHUNK_SIZE;
  if (!(chunkSize >= SCAN_PAGE_SIZE && chunkSize % SCAN_PAGE_SIZE === 0)) {
    throw new RangeError(`Cannot scan in chunks of ${chunkSize} bytes: use a multiple of 4096`);
  }
  const collector = dumpCollector(options);
  const coverage = new CoverageCounter(plugMap);
  const imageEnd = baseGpa + reader.byteLength;
  const { inside, outside } = clipRanges(unpluggedRangesPerDevice(plugMap), baseGpa, imageEnd);
  const detail = outsideImageDetail(baseGpa, reader.byteLength);
  for (const r of outside) coverage.absent(r, "outside-image", detail);
  const total = inside.reduce((n, r) => n + r.byteLength, 0);
  await scanFilePieces(
    reader,
    inside.map((r) => ({ gpa: r.gpa, byteLength: r.byteLength, fileOffset: r.gpa - baseGpa })),
    {
      collector,
      coverage,
      plugMap,
      chunkSize,
      pageSize: SCAN_PAGE_SIZE,
      format: "raw",
      // Only the last page of an image whose size is not a multiple of 4 KiB is cut: zero-extend it.
      readPage: async (gpa) => {
        const page = new Uint8Array(SCAN_PAGE_SIZE);
        await reader.readInto(gpa - baseGpa, page);
        return page;
      },
      ...(options.onProgress ? { onBytes: (n: number) => options.onProgress!(n, total) } : {}),
    },
  );
  return collector.report(plugMap, {
    input: {
      path: options.path ?? null,
      kind: "raw",
      container: null,
      byteLength: reader.byteLength,
      baseGpa,
    },
    plugState: options.plugState ?? { source: "plugmap", detail: null },
    coverage,
    sortPagesByGpa: true,
  });
}
