/**
 * The flattened container of makedumpfile `-F` and QEMU's `kdump-*`
 * formats: a 4096-byte header, then records `{offset, buf_size}` (big-endian
 * i64 each) followed by `buf_size` bytes that belong at `offset` of the real
 * file, ended by `offset = buf_size = -1`. {@linkcode openFlattened} indexes
 * the records and presents the real file as a {@linkcode PositionalReader}
 * without copying it (the idea of libkdumpfile's flatmap).
 *
 * @module
 */

import { FormatError, UnexpectedEofError } from "../errors.ts";
import type { PositionalReader } from "../io/positional.ts";
import { getWireBigUint, type WireLayout, wireLayout } from "../io/wire.ts";

/** `MAKEDUMPFILE_SIGNATURE` padded to 16 bytes with NULs. */
export const MAKEDUMPFILE_SIGNATURE = "makedumpfile";

/** `MAX_SIZE_MDF_HEADER`: the flattened header takes 4096 bytes. */
export const MAX_SIZE_MDF_HEADER = 4096;

/** `makedumpfile_header` (big-endian, at 0 of a 4096-byte block). */
export const MAKEDUMPFILE_HEADER: WireLayout<"signature" | "type" | "version"> = wireLayout(
  "makedumpfile_header",
  32,
  { signature: ["signature", 0, 16], type: ["type", 16, 8], version: ["version", 24, 8] },
);

/** `makedumpfile_data_header` (big-endian): where the next `buf_size` bytes belong. */
export const MAKEDUMPFILE_DATA_HEADER: WireLayout<"offset" | "bufSize"> = wireLayout(
  "makedumpfile_data_header",
  16,
  { offset: ["offset", 0, 8], bufSize: ["buf_size", 8, 8] },
);

/** Size of one `makedumpfile_data_header`. */
const DATA_HEADER_SIZE = MAKEDUMPFILE_DATA_HEADER.byteLength;

/** Bytes read at a time while indexing the records. */
const INDEX_WINDOW = 1 << 16;

/**
 * Whether bytes start with the flattened-format header ("makedumpfile" and
 * four NULs, type 1).
 *
 * @param head The first bytes of a file (at least 24).
 * @returns Whether it is a flattened file.
 *
 * @example
 * ```ts
 * import { isFlattenedKdump } from "@vmem-dump/vmem-dump/kdump";
 * console.log(isFlattenedKdump(new Uint8Array(24))); // false
 * ```
 */
export function isFlattenedKdump(head: Uint8Array): boolean {
  if (head.byteLength < 24) return false;
  for (let i = 0; i < 16; i++) {
    const want = i < MAKEDUMPFILE_SIGNATURE.length ? MAKEDUMPFILE_SIGNATURE.charCodeAt(i) : 0;
    if (head[i] !== want) return false;
  }
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return getWireBigUint(view, 0, MAKEDUMPFILE_HEADER.fields.type, false) === 1n;
}

/** One piece of the real file: `byteLength` bytes at `fileOffset`, stored at `sourceOffset`. */
interface Piece {
  fileOffset: number;
  byteLength: number;
  sourceOffset: number;
}

/** The real file of a flattened dump, read through the record index. */
export interface FlattenedReader extends PositionalReader, Disposable {
  /** Records in the flattened file (terminator not counted). */
  readonly recordCount: number;
}

/**
 * Index a flattened file and return a reader of the file it stands for.
 * Records may come in any order; records that overlap must agree on the
 * bytes they share (crash and makedumpfile `-R` pick different ones); bytes
 * no record covers read as zero. The index holds one entry per record; no
 * record data is read until asked for, except where records overlap.
 *
 * @param source The flattened file.
 * @returns A reader of the real file; closing it closes `source`.
 * @throws {FormatError} `bad-magic`/`bad-version` for a wrong header, `bad-record` for
 *   negative or overlong records or overlapping records that differ,
 *   {@linkcode UnexpectedEofError} without a terminator.
 *
 * @example
 * ```ts ignore
 * import { openPositional } from "@vmem-dump/vmem-dump";
 * import { openFlattened } from "@vmem-dump/vmem-dump/kdump";
 * using real = await openFlattened(await openPositional("qemu.kdump-zlib"));
 * console.log(real.byteLength);
 * ```
 */
export async function openFlattened(source: PositionalReader): Promise<FlattenedReader> {
  const head = new Uint8Array(24);
  const got = await source.readInto(0, head);
  if (got < 24 || !isFlattenedKdump(head)) {
    throw new FormatError("Cannot read flattened dump: no makedumpfile header", {
      format: "kdump",
      code: "bad-magic",
      offset: 0,
    });
  }
  const pieces: Piece[] = [];
  let window = new Uint8Array(0);
  let windowStart = 0;
  let position = MAX_SIZE_MDF_HEADER;
  let overlapping = false;
  let end = 0;
  for (;;) {
    if (position + DATA_HEADER_SIZE > windowStart + window.byteLength) {
      window = new Uint8Array(Math.min(INDEX_WINDOW, Math.max(0, source.byteLength - position)));
      windowStart = position;
      const n = await source.readInto(position, window);
      window = window.subarray(0, n);
      if (n < DATA_HEADER_SIZE) {
        throw new UnexpectedEofError(
          "Cannot read flattened dump: the file ends before the end-of-records marker",
          "kdump",
          position + n,
        );
      }
    }
    const view = new DataView(window.buffer, window.byteOffset, window.byteLength);
    const at = position - windowStart;
    // Both fields are signed (int64_t): -1/-1 ends the records.
    const offset = BigInt.asIntN(
      64,
      getWireBigUint(view, at, MAKEDUMPFILE_DATA_HEADER.fields.offset, false),
    );
    const size = BigInt.asIntN(
      64,
      getWireBigUint(view, at, MAKEDUMPFILE_DATA_HEADER.fields.bufSize, false),
    );
    if (offset === -1n && size === -1n) break;
    const dataStart = position + DATA_HEADER_SIZE;
    if (offset < 0n || size < 0n || offset > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new FormatError(
        `Cannot read flattened dump: bad record offset ${offset} size ${size}`,
        { format: "kdump", code: "bad-record", offset: position },
      );
    }
    if (size > BigInt(source.byteLength - dataStart)) {
      throw new UnexpectedEofError(
        `Cannot read flattened dump: record of ${size} bytes runs past the end of the file`,
        "kdump",
        source.byteLength,
      );
    }
    const piece = {
      fileOffset: Number(offset),
      byteLength: Number(size),
      sourceOffset: dataStart,
    };
    if (piece.fileOffset < end) overlapping = true;
    end = Math.max(end, piece.fileOffset + piece.byteLength);
    if (piece.byteLength > 0) pieces.push(piece);
    position = dataStart + piece.byteLength;
  }
  const index = overlapping ? await resolveOverlaps(source, pieces) : pieces;
  return new FlattenedFileReader(source, index, end, pieces.length);
}

/**
 * Turn pieces in write order into sorted, disjoint pieces. Records that
 * overlap must agree on the bytes they share: makedumpfile `-R` keeps the
 * last one, but crash (makedumpfile.c `read_flattened_format`) sorts the
 * records by offset and takes whichever one its binary search meets first,
 * so a dump whose overlapping records differ reads differently in each (no
 * makedumpfile or QEMU output has overlapping records).
 *
 * @throws {FormatError} `bad-record` at the later record's header when they differ.
 */
async function resolveOverlaps(source: PositionalReader, pieces: Piece[]): Promise<Piece[]> {
  const out: Piece[] = []; // sorted by fileOffset, disjoint
  for (const p of pieces) {
    const pEnd = p.fileOffset + p.byteLength;
    // first piece that ends after p starts
    let lo = 0;
    let hi = out.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = out[mid]!;
      if (m.fileOffset + m.byteLength <= p.fileOffset) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    const replaced: Piece[] = [];
    while (i < out.length && out[i]!.fileOffset < pEnd) {
      const q = out[i]!;
      const qEnd = q.fileOffset + q.byteLength;
      await assertSameBytes(source, p, q);
      if (q.fileOffset < p.fileOffset) {
        replaced.push({ ...q, byteLength: p.fileOffset - q.fileOffset });
      }
      if (qEnd > pEnd) {
        const cut = pEnd - q.fileOffset;
        replaced.push({
          fileOffset: pEnd,
          byteLength: qEnd - pEnd,
          sourceOffset: q.sourceOffset + cut,
        });
      }
      i++;
    }
    const before = replaced.filter((r) => r.fileOffset < p.fileOffset);
    const after = replaced.filter((r) => r.fileOffset >= pEnd);
    out.splice(lo, i - lo, ...before, p, ...after);
  }
  return out;
}

/** Fail unless pieces `p` (the later record) and `q` hold the same bytes where they overlap. */
async function assertSameBytes(source: PositionalReader, p: Piece, q: Piece): Promise<void> {
  const from = Math.max(p.fileOffset, q.fileOffset);
  const to = Math.min(p.fileOffset + p.byteLength, q.fileOffset + q.byteLength);
  const a = new Uint8Array(Math.min(INDEX_WINDOW, to - from));
  const b = new Uint8Array(a.byteLength);
  for (let at = from; at < to; at += a.byteLength) {
    const n = Math.min(a.byteLength, to - at);
    const x = a.subarray(0, n);
    const y = b.subarray(0, n);
    const got = (await source.readInto(p.sourceOffset + (at - p.fileOffset), x)) +
      (await source.readInto(q.sourceOffset + (at - q.fileOffset), y));
    if (got < 2 * n) {
      throw new UnexpectedEofError(
        "Cannot read flattened dump: the file shrank while it was indexed",
        "kdump",
        source.byteLength,
      );
    }
    for (let k = 0; k < n; k++) {
      if (x[k] !== y[k]) {
        throw new FormatError(
          `Cannot read flattened dump: the record at 0x${
            (p.sourceOffset - DATA_HEADER_SIZE).toString(16)
          } gives byte 0x${(at + k).toString(16)} of the dump another value than an earlier ` +
            `record (crash reads one of them, makedumpfile -R the last)`,
          { format: "kdump", code: "bad-record", offset: p.sourceOffset - DATA_HEADER_SIZE },
        );
      }
    }
  }
}

class FlattenedFileReader implements FlattenedReader {
  readonly byteLength: number;
  readonly recordCount: number;
  #source: PositionalReader;
  #pieces: Piece[];

  constructor(source: PositionalReader, pieces: Piece[], byteLength: number, records: number) {
    this.#source = source;
    this.#pieces = pieces.slice().sort((a, b) => a.fileOffset - b.fileOffset);
    this.byteLength = byteLength;
    this.recordCount = records;
  }

  async readInto(fileOffset: number, into: Uint8Array): Promise<number> {
    if (!Number.isSafeInteger(fileOffset) || fileOffset < 0) {
      throw new RangeError(`Cannot read at file offset ${fileOffset}`);
    }
    const want = Math.max(0, Math.min(into.byteLength, this.byteLength - fileOffset));
    const end = fileOffset + want;
    into.fill(0, 0, want);
    const pieces = this.#pieces;
    let lo = 0;
    let hi = pieces.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = pieces[mid]!;
      if (m.fileOffset + m.byteLength <= fileOffset) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < pieces.length && pieces[i]!.fileOffset < end; i++) {
      const p = pieces[i]!;
      const from = Math.max(fileOffset, p.fileOffset);
      const to = Math.min(end, p.fileOffset + p.byteLength);
      const part = into.subarray(from - fileOffset, to - fileOffset);
      const n = await this.#source.readInto(p.sourceOffset + (from - p.fileOffset), part);
      if (n < part.byteLength) {
        throw new UnexpectedEofError(
          "Cannot read flattened dump: the file shrank while it was read",
          "kdump",
          p.sourceOffset + (from - p.fileOffset) + n,
        );
      }
    }
    return want;
  }

  close(): void {
    this.#source.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
