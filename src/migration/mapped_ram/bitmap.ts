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

/**
 * Call `fn` for every run of set bits among bits `[from, to)` of an
 * LSB-first bitmap. Zero and all-ones bytes are skipped a word at a time.
 *
 * @param bits The bitmap.
 * @param from First bit.
 * @param to End bit (exclusive).
 * @param fn Receives the first bit and the length of each run.
 *
 * @example
 * ```ts
 * import { forEachSetRun } from "@vmem-dump/vmem-dump";
 * forEachSetRun(new Uint8Array([0b1110_0001, 0xff, 0]), 0, 24, (first, count) => console.log(first, count));
 * // 0 1
 * // 5 11
 * ```
 */
export function forEachSetRun(
  bits: Uint8Array,
  from: number,
  to: number,
  fn: (first: number, count: number) => void,
): void {
  let i = from;
  while (i < to) {
    i = nextBit(bits, i, to, 1);
    if (i >= to) return;
    const stop = nextBit(bits, i + 1, to, 0);
    fn(i, stop - i);
    i = stop;
  }
}

/** First bit ≥ `i` (and < `to`) equal to `value`, or `to`. */
function nextBit(bits: Uint8Array, i: number, to: number, value: 0 | 1): number {
  const skipByte = value === 1 ? 0 : 0xff;
  const skipWord = value === 1 ? 0 : 0xffffffff;
  const lastByte = to >>> 3; // bytes wholly below `to`
  while (i < to) {
    if ((i & 7) === 0) {
      // Skip whole bytes, then whole 32-bit words, that cannot hold the bit sought.
      let byte = i >>> 3;
      while (byte < lastByte && (byte & 3) !== 0 && bits[byte] === skipByte) byte++;
      if ((byte & 3) === 0) {
        while (byte + 4 <= lastByte && word32(bits, byte) === skipWord) byte += 4;
      }
      while (byte < lastByte && bits[byte] === skipByte) byte++;
      if (byte * 8 > i) {
        i = byte * 8;
        continue;
      }
    }
    if (((bits[i >>> 3]! >>> (i & 7)) & 1) === value) return i;
    i++;
  }
  return to;
}

function word32(bits: Uint8Array, byte: number): number {
  return (bits[byte]! | bits[byte + 1]! << 8 | bits[byte + 2]! << 16 | bits[byte + 3]! << 24) >>> 0;
}

/**
 * Clear bits `[from, to)` of an LSB-first bitmap.
 *
 * @param bits The bitmap (modified).
 * @param from First bit.
 * @param to End bit (exclusive).
 *
 * @example
 * ```ts
 * import { clearBitRange } from "@vmem-dump/vmem-dump";
 * const bits = new Uint8Array([0xff, 0xff]);
 * clearBitRange(bits, 4, 12);
 * console.log(bits); // Uint8Array [15, 240]
 * ```
 */
export function clearBitRange(bits: Uint8Array, from: number, to: number): void {
  let i = from;
  while (i < to && (i & 7) !== 0) {
    bits[i >>> 3]! &= ~(1 << (i & 7));
    i++;
  }
  const full = (to - i) >>> 3;
  bits.fill(0, i >>> 3, (i >>> 3) + full);
  i += full * 8;
  while (i < to) {
    bits[i >>> 3]! &= ~(1 << (i & 7));
    i++;
  }
}
