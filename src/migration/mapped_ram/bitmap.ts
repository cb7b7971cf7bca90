/**
 * Reading a mapped-ram page bitmap in pieces. QEMU writes each RAMBlock's
 * bitmap as the host's `unsigned long` words (migration/ram.c,
 * `ram_save_file_bmap`): 64-bit words in the byte order of the host that
 * saved the VM, bit `i` = page `i`. On a little-endian host (x86-64,
 * aarch64) that is an LSB-first byte bitmap (bit `i` is bit `i & 7` of byte
 * `i >> 3`); a big-endian host (s390x) reverses the bytes of every word.
 * The file does not say which host wrote it: little-endian is the default.
 *
 * Pieces are read on demand (1 MiB of bitmap = 32 GiB of 4 KiB pages), so a
 * huge RAMBlock's bitmap is never held whole.
 *
 * @module
 */

import { readAt } from "../../io/positional.ts";
import type { PositionalReader } from "../../io/positional.ts";
import { forEachSetRun } from "../../io/bits.ts";
import type { MappedRamBlock } from "./block_layout.ts";

/** Byte order of the 64-bit words of a mapped-ram bitmap (that of the host QEMU ran on). */
export type BitmapByteOrder = "little" | "big";

/** Options for {@linkcode readBitmapPieces}. */
export interface BitmapReadOptions {
  /** Byte order of the bitmap's words. @default {"little"} */
  byteOrder?: BitmapByteOrder;
  /** Bitmap bytes per piece (rounded down to whole words). @default {1048576} */
  pieceBytes?: number;
}

/** A run of pages of one piece of a bitmap. */
export interface BitmapPiece {
  /** Page of bit 0 of `bits` (a multiple of 64). */
  firstPage: number;
  /** Valid bits: pages `firstPage … firstPage + pageCount − 1` (the rest of the last word is not). */
  pageCount: number;
  /** The bits in LSB-first order (converted from a big-endian host's order). Owned by the caller. */
  bits: Uint8Array<ArrayBuffer>;
  /** File offset of `bits[0]`'s word. */
  fileOffset: number;
}

/** Default piece size: 1 MiB of bitmap. */
const PIECE_BYTES = 1 << 20;

/** Reverse the bytes of every 8-byte word, in place (big-endian host order ⇄ LSB-first). */
export function swapBitmapWords(bytes: Uint8Array): void {
  for (let w = 0; w + 8 <= bytes.byteLength; w += 8) {
    for (let j = 0; j < 4; j++) {
      const t = bytes[w + j]!;
      bytes[w + j] = bytes[w + 7 - j]!;
      bytes[w + 7 - j] = t;
    }
  }
}

/**
 * Read the bitmap of `block` for pages `[firstPage, firstPage + pageCount)`
 * (the whole block by default), in pieces of whole 64-page words.
 *
 * @param reader The file.
 * @param block The block's layout (not an ignored block).
 * @param range Pages to cover. @default {the whole block}
 * @param options Byte order and piece size.
 * @returns The pieces in ascending page order.
 * @throws {UnexpectedEofError} when the bitmap runs past the end of the file.
 *
 * @example
 * ```ts ignore
 * for await (const p of readBitmapPieces(file, block)) console.log(p.firstPage, p.pageCount);
 * ```
 */
export async function* readBitmapPieces(
  reader: PositionalReader,
  block: MappedRamBlock,
  range: { firstPage: number; pageCount: number } = { firstPage: 0, pageCount: block.pageCount },
  options: BitmapReadOptions = {},
): AsyncGenerator<BitmapPiece> {
  const pieceWords = Math.max(1, Math.floor((options.pieceBytes ?? PIECE_BYTES) / 8));
  const end = Math.min(block.pageCount, range.firstPage + range.pageCount);
  let word = Math.floor(range.firstPage / 64);
  const lastWord = Math.ceil(end / 64);
  while (word < lastWord) {
    const words = Math.min(pieceWords, lastWord - word);
    const fileOffset = block.bitmapOffset + word * 8;
    const bits = await readAt(reader, { fileOffset, byteLength: words * 8 }, {
      format: "migration",
      what: "a mapped-ram bitmap",
    });
    if (options.byteOrder === "big") swapBitmapWords(bits);
    const firstPage = word * 64;
    yield { firstPage, pageCount: Math.min(words * 64, end - firstPage), bits, fileOffset };
    word += words;
  }
}

/** Bits examined per batch of {@linkcode setRunBatches}: bounds a batch to 32,768 runs. */
const RUN_BATCH_BITS = 1 << 16;

/**
 * The runs of set bits among bits `[from, to)` of a piece, in batches of
 * flat `[first, count, first, count, …]` arrays, each from at most 65,536
 * bits, so that a fragmented bitmap never builds a huge list. A run that
 * crosses a batch boundary comes as two adjacent runs.
 *
 * @param bits LSB-first bits (a {@linkcode BitmapPiece}'s `bits`).
 * @param from First bit.
 * @param to End bit (exclusive).
 * @returns Non-empty batches, in ascending order.
 *
 * @example
 * ```ts
 * import { setRunBatches } from "./bitmap.ts";
 * console.log([...setRunBatches(new Uint8Array([0b0110]), 0, 8)]); // [[1, 2]]
 * ```
 */
export function* setRunBatches(bits: Uint8Array, from: number, to: number): Generator<number[]> {
  for (let start = from; start < to; start += RUN_BATCH_BITS) {
    const runs: number[] = [];
    forEachSetRun(bits, start, Math.min(to, start + RUN_BATCH_BITS), (first, count) => {
      runs.push(first, count);
    });
    if (runs.length > 0) yield runs;
  }
}
