/**
 * The dump side of `scan` (raw images, ELF and kdump dumps), loaded only when
 * a dump is scanned: a stream scan does not pay for the dump readers'
 * start-up.
 *
 * @module
 */

import { readElfCore } from "../../src/elf/reader.ts";
import { openPositional } from "../../src/io/positional.ts";
import { readKdump } from "../../src/kdump/reader.ts";
import type { ScanReport } from "../../src/scan/findings.ts";
import { scanElfCore } from "../../src/scan/scan_elf.ts";
import { scanKdump } from "../../src/scan/scan_kdump.ts";
import { type ScanDumpOptions, scanRawImage } from "../../src/scan/scan_raw.ts";

/**
 * Scan the dump at `path`.
 *
 * @param kind What it is.
 * @param path The file.
 * @param options The scanners' options; `baseGpa` for raw images.
 * @returns The report.
 */
export async function scanDumpFile(
  kind: "raw" | "elf" | "kdump",
  path: string,
  options: ScanDumpOptions & { baseGpa: number | undefined },
): Promise<ScanReport> {
  const { baseGpa, ...dumpOptions } = options;
  if (kind === "raw") {
    using image = await openPositional(path);
    return await scanRawImage(image, { ...dumpOptions, baseGpa: baseGpa! });
  }
  if (kind === "elf") {
    using core = await readElfCore(path);
    return await scanElfCore(core, dumpOptions);
  }
  using dump = await readKdump(path);
  return await scanKdump(dump, dumpOptions);
}
