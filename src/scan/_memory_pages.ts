/**
 * The part the dump scanners share: read file pieces that hold unplugged
 * guest memory (double-buffered, in big chunks) and turn every non-zero page
 * into a finding, checking zero-ness word-wise.
 */

import { type ErrorFormat, UnexpectedEofError } from "../errors.ts";
import type { PositionalReader } from "../io/positional.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import type { GpaRange } from "../vmem/ranges.ts";
import type { FindingCollector } from "./findings.ts";
import type { CoverageCounter } from "./coverage.ts";
import { forEachNonZeroPage, isAllZero } from "./zero.ts";
import { loadNativeZeroCompare } from "../io/zero.ts";

/** Guest memory stored in a file: `byteLength` bytes at `fileOffset` hold `[gpa, gpa + byteLength)`. */
export interface FilePiece {
  /** Guest-physical address of the first byte. */
  gpa: number;
  /** Length in bytes. */
  byteLength: number;
  /** File offset of the first byte. */
  fileOffset: number;
}

/** What {@linkcode scanFilePieces} needs of a {@linkcode FindingCollector}. */
export type FindingTarget = Pick<FindingCollector, "addPage" | "pageSink" | "drain">;

/** Options for {@linkcode scanFilePieces}. */
export interface ScanFilePiecesOptions {
  /** Where findings go. */
  collector: FindingTarget;
  /** Counts the bytes examined (each piece must lie inside one device). */
  coverage: CoverageCounter;
  /** The plug state (to find the device of a page). */
  plugMap: PlugMap;
  /** Largest read, a multiple of `pageSize`. */
  chunkSize: number;
  /** Page size of findings. */
  pageSize: number;
  /** Format named in truncation errors. */
  format: ErrorFormat;
  /** The whole page at a page-aligned gpa (for pages that file pieces cut; absent bytes read as zero). */
  readPage: (gpa: number) => Promise<Uint8Array>;
  /** Called after each chunk with the bytes read so far. */
  onBytes?: (bytesRead: number) => void;
}

/** Reads of at most `chunkSize` bytes; after a piece's first read they start on page boundaries. */
function* readsOf(
  pieces: Iterable<FilePiece>,
  chunkSize: number,
  pageSize: number,
): Generator<FilePiece> {
  for (const p of pieces) {
    let done = 0;
    while (done < p.byteLength) {
      const gpa = p.gpa + done;
      const n = Math.min(p.byteLength - done, chunkSize - (gpa % pageSize));
      yield { gpa, byteLength: n, fileOffset: p.fileOffset + done };
      done += n;
    }
  }
}

/**
 * Read every piece and report its non-zero pages. The next read is issued
 * before the current chunk is checked (two buffers), and plugged memory is
 * never part of a piece, so it is never read. Pages a piece boundary cuts
 * are checked piecewise and, when non-zero, re-read whole with `readPage`.
 *
 * @returns The bytes read.
 */
export async function scanFilePieces(
  reader: PositionalReader,
  pieces: Iterable<FilePiece>,
  options: ScanFilePiecesOptions,
): Promise<number> {
  const { collector, plugMap, chunkSize, pageSize } = options;
  // Gigabytes of mostly zero memory: compare long runs natively.
  await loadNativeZeroCompare();
  const buffers = [new Uint8Array(chunkSize), new Uint8Array(chunkSize)];
  const cut = new Set<number>();
  const reads = readsOf(pieces, chunkSize, pageSize);
  const start = (r: FilePiece, slot: number) => {
    const read = reader.readInto(r.fileOffset, buffers[slot]!.subarray(0, r.byteLength));
    read.catch(() => {}); // awaited later; a failure while the collector drains is not unhandled
    return read;
  };
  let next = reads.next();
  let slot = 0;
  let pending = next.done ? undefined : start(next.value, slot);
  let total = 0;
  try {
    while (!next.done) {
      const r = next.value;
      const n = await pending!;
      if (n < r.byteLength) {
        throw new UnexpectedEofError(
          `Cannot read guest memory at file offset 0x${r.fileOffset.toString(16)}: ` +
            `the file ended after ${n} of ${r.byteLength} bytes`,
          options.format,
          r.fileOffset + n,
        );
      }
      next = reads.next();
      pending = next.done ? undefined : start(next.value, slot ^ 1);
      const data = buffers[slot]!.subarray(0, n);
      const end = r.gpa + n;
      // Whole pages inside the chunk; the cut ends are looked at separately.
      const a = Math.min(end, Math.ceil(r.gpa / pageSize) * pageSize);
      const b = Math.max(a, Math.floor(end / pageSize) * pageSize);
      if (a < b) {
        collectNonZeroPages(
          collector,
          plugMap,
          data.subarray(a - r.gpa, b - r.gpa),
          a,
          r.fileOffset + (a - r.gpa),
          pageSize,
        );
      }
      if (r.gpa < a && !isAllZero(data.subarray(0, a - r.gpa))) {
        cut.add(Math.floor(r.gpa / pageSize) * pageSize);
      }
      if (b < end && !isAllZero(data.subarray(b - r.gpa))) cut.add(b);
      options.coverage.examined({ gpa: r.gpa, byteLength: n });
      slot ^= 1;
      total += n;
      options.onBytes?.(total);
      if (collector.pageSink !== undefined) await collector.drain();
    }
  } finally {
    // Settle a read still in flight after a failure, so nothing dangles.
    await pending?.catch(() => {});
  }
  for (const gpa of [...cut].sort((x, y) => x - y)) {
    const device = plugMap.deviceForGpa(gpa);
    if (device !== undefined) {
      collector.addPage(device, { gpa, content: await options.readPage(gpa), source: "memory" });
    }
  }
  return total;
}

/**
 * Report every non-zero page of `chunk` as a finding. `chunkGpa` must be
 * page-aligned; `chunk` must lie in unplugged memory of `plugMap`.
 */
function collectNonZeroPages(
  collector: FindingTarget,
  plugMap: PlugMap,
  chunk: Uint8Array,
  chunkGpa: number,
  fileOffset: number,
  pageSize: number,
): void {
  forEachNonZeroPage(chunk, pageSize, (at) => {
    const gpa = chunkGpa + at;
    const device = plugMap.deviceForGpa(gpa);
    if (device === undefined) return;
    collector.addPage(device, {
      gpa,
      content: chunk.subarray(at, at + pageSize),
      source: "memory",
      fileOffset: fileOffset + at,
    });
  });
}

/** Split `ranges` into the parts inside `[from, to)` and the parts outside. */
export function clipRanges(
  ranges: readonly GpaRange[],
  from: number,
  to: number,
): { inside: GpaRange[]; outside: GpaRange[] } {
  const inside: GpaRange[] = [];
  const outside: GpaRange[] = [];
  for (const r of ranges) {
    const end = r.gpa + r.byteLength;
    const s = Math.max(r.gpa, from);
    const e = Math.min(end, to);
    if (s < e) inside.push({ gpa: s, byteLength: e - s });
    // The parts before `from` and after `to` (the whole range when it misses).
    const beforeEnd = Math.min(end, from);
    if (r.gpa < beforeEnd) outside.push({ gpa: r.gpa, byteLength: beforeEnd - r.gpa });
    const afterStart = Math.max(r.gpa, to);
    if (afterStart < end) outside.push({ gpa: afterStart, byteLength: end - afterStart });
  }
  return { inside, outside };
}
