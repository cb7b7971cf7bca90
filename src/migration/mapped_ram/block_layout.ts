/**
 * Where one RAMBlock of a mapped-ram file keeps its page bitmap and its
 * pages, checked against what QEMU's writer produces and its loader accepts
 * (migration/ram.c: `mapped_ram_setup_ramblock`, `parse_ramblock_mapped_ram`):
 *
 * ```
 * idstr, used_length | header (28) | bitmap | zero padding | page 0 … page n-1 | next idstr …
 *                    ^ headerOffset ^ bitmapOffset          ^ pagesOffset        ^ areaEnd
 * ```
 *
 * The bitmap holds one bit per target page (set: the page's data is in the
 * file and QEMU loads it; clear: QEMU leaves the page as it is, zero on a
 * fresh destination). The stream goes on at `pagesOffset + used_length`.
 *
 * @module
 */

import { FormatError } from "../../errors.ts";
import { hex } from "../../io/text.ts";
import { MAPPED_RAM_HEADER, MAPPED_RAM_HEADER_VERSION, type MappedRamHeader } from "./header.ts";

/** Where a RAMBlock's bitmap and pages are in a mapped-ram file. */
export interface MappedRamBlock {
  /** File offset of the 28-byte mapped-ram header. */
  headerOffset: number;
  /** Header version. */
  version: number;
  /** Page size of the bitmap (equals the stream's target page size). */
  pageSize: number;
  /** An `x-ignore-shared` block: no bitmap and no pages in the file. */
  ignored: boolean;
  /** File offset of the bitmap (0 when ignored). */
  bitmapOffset: number;
  /** Bytes of the bitmap: whole 64-bit host words, one bit per page. */
  bitmapByteLength: number;
  /** File offset of page 0 (0 when ignored). */
  pagesOffset: number;
  /** Pages of the block (`usedLength / pageSize`). */
  pageCount: number;
  /** File offset where the stream continues: `pagesOffset + usedLength` (the header's end when ignored). */
  areaEnd: number;
}

/** What {@linkcode mappedRamBlockLayout} needs to know about the block. */
export interface MappedRamBlockInput {
  /** RAMBlock idstr, for messages. */
  idstr: string;
  /** Used length from the MEM_SIZE list. */
  usedLength: number;
  /** The decoded header. */
  header: MappedRamHeader;
  /** File offset of the header. */
  headerOffset: number;
  /** The stream's target page size. */
  pageSize: number;
  /** Whether the stream has the `x-ignore-shared` capability. */
  ignoreShared: boolean;
}

function bad(message: string, offset: number): FormatError {
  return new FormatError(`Cannot read mapped-ram block: ${message}`, {
    format: "migration",
    code: "bad-mapped-ram",
    offset,
  });
}

/**
 * Check a block's mapped-ram header and compute its layout. Everything QEMU
 * refuses to load is an error here, and so is a layout QEMU never writes: a
 * bitmap outside the space between the header and the pages (it would
 * overlap the stream or another block), or a page area that does not lie
 * after its header (the stream would go backwards).
 *
 * @param input The block, its header and the stream's page size and capabilities.
 * @returns The layout.
 * @throws {FormatError} (code `bad-version` or `bad-mapped-ram`) with the offset of the bad field.
 *
 * @example
 * ```ts
 * import { mappedRamBlockLayout } from "@vmem-dump/vmem-dump/migration";
 * const layout = mappedRamBlockLayout({
 *   idstr: "pc.ram", usedLength: 0x8000000, headerOffset: 0x1010000f, pageSize: 4096,
 *   ignoreShared: false,
 *   header: { version: 1, pageSize: 4096, bitmapOffset: 0x1010002b, pagesOffset: 0x10200000 },
 * });
 * console.log(layout.pageCount, layout.bitmapByteLength, layout.areaEnd.toString(16)); // 32768 4096 18200000
 * ```
 */
export function mappedRamBlockLayout(input: MappedRamBlockInput): MappedRamBlock {
  const { idstr, usedLength, header, headerOffset, pageSize, ignoreShared } = input;
  const name = JSON.stringify(idstr);
  const headerEnd = headerOffset + MAPPED_RAM_HEADER.byteLength;
  const at = (field: keyof typeof MAPPED_RAM_HEADER.fields) =>
    headerOffset + MAPPED_RAM_HEADER.fields[field].offset;
  if (header.version > MAPPED_RAM_HEADER_VERSION) {
    throw new FormatError(
      `Cannot read mapped-ram block: ${name} has header version ${header.version}; QEMU loads versions up to ${MAPPED_RAM_HEADER_VERSION}`,
      { format: "migration", code: "bad-version", offset: at("version") },
    );
  }
  if (ignoreShared && header.bitmapOffset === 0 && header.pagesOffset === 0) {
    return {
      headerOffset,
      version: header.version,
      pageSize: header.pageSize,
      ignored: true,
      bitmapOffset: 0,
      bitmapByteLength: 0,
      pagesOffset: 0,
      pageCount: 0,
      areaEnd: headerEnd,
    };
  }
  if (header.pageSize !== pageSize) {
    throw bad(
      `${name} counts pages of ${header.pageSize} bytes, the stream's page size is ${pageSize}`,
      at("pageSize"),
    );
  }
  if (usedLength % pageSize !== 0) {
    throw bad(`${name} is ${hex(usedLength)} bytes, not a whole number of pages`, headerOffset);
  }
  if (header.pagesOffset % pageSize !== 0) {
    throw bad(
      `the pages of ${name} start at ${
        hex(header.pagesOffset)
      }, not page-aligned (QEMU refuses it)`,
      at("pagesOffset"),
    );
  }
  const pageCount = usedLength / pageSize;
  const bitmapByteLength = 8 * Math.ceil(pageCount / 64);
  if (
    header.bitmapOffset < headerEnd ||
    header.bitmapOffset + bitmapByteLength > header.pagesOffset
  ) {
    throw bad(
      `the bitmap of ${name} (${hex(bitmapByteLength)} bytes at ${
        hex(header.bitmapOffset)
      }) is not between its header (ending at ${hex(headerEnd)}) and its pages (at ${
        hex(header.pagesOffset)
      })`,
      at("bitmapOffset"),
    );
  }
  const areaEnd = header.pagesOffset + usedLength;
  if (!Number.isSafeInteger(areaEnd)) {
    throw bad(`the pages of ${name} end beyond 2^53`, at("pagesOffset"));
  }
  return {
    headerOffset,
    version: header.version,
    pageSize,
    ignored: false,
    bitmapOffset: header.bitmapOffset,
    bitmapByteLength,
    pagesOffset: header.pagesOffset,
    pageCount,
    areaEnd,
  };
}
