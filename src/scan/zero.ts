/**
 * Zero detection for the scanners: the page size they report in, and the
 * word-wise checks (defined in `src/io/zero.ts`, re-exported here as part of
 * the scan API).
 *
 * @module
 */

export { countNonZeroBytes, firstNonZeroIndex, forEachNonZeroPage, isAllZero } from "../io/zero.ts";

/** Size of the pages the scanners report: 4 KiB. */
export const SCAN_PAGE_SIZE = 4096;
