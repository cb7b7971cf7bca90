/**
 * Per-page codecs of kdump-compressed dumps: zlib and zstd through one kept
 * `node:zlib` context per codec (`src/io/zlib_context.ts`: a fresh context
 * per page costs 3-7 times the decoding), with the one-shot functions as the
 * fallback; LZO by our own decoder (`_lzo1x.ts`); Snappy is recognised but
 * not decoded.
 *
 * @module
 */

import { deflateSync, inflateSync, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { ZlibContext } from "../io/zlib_context.ts";
import { decompressLzo1x, LzoError } from "./_lzo1x.ts";
import { FormatError, UnsupportedFeatureError } from "../errors.ts";
import {
  DUMP_DH_COMPRESSED_LZO,
  DUMP_DH_COMPRESSED_SNAPPY,
  DUMP_DH_COMPRESSED_ZLIB,
  DUMP_DH_COMPRESSED_ZSTD,
} from "./header.ts";

/**
 * Name of the codec of a `page_desc.flags` value.
 *
 * @param flags The flags.
 * @returns `none`, `zlib`, `lzo`, `snappy`, `zstd`, or `unknown 0x…`.
 *
 * @example
 * ```ts
 * import { kdumpCodecName } from "@vmem-dump/vmem-dump/kdump";
 * console.log(kdumpCodecName(1)); // zlib
 * ```
 */
export function kdumpCodecName(flags: number): string {
  switch (flags) {
    case 0:
      return "none";
    case DUMP_DH_COMPRESSED_ZLIB:
      return "zlib";
    case DUMP_DH_COMPRESSED_LZO:
      return "lzo";
    case DUMP_DH_COMPRESSED_SNAPPY:
      return "snappy";
    case DUMP_DH_COMPRESSED_ZSTD:
      return "zstd";
    default:
      return `unknown 0x${flags.toString(16)}`;
  }
}

/**
 * Decode the data of one page. The result must be exactly `blockSize` bytes
 * (crash and libkdumpfile reject anything else too).
 *
 * @param data The page data as stored (a view is fine; it is not kept).
 * @param flags `page_desc.flags`.
 * @param blockSize The dump's page size.
 * @param fileOffset File offset of the data, for errors.
 * @returns The page, `blockSize` bytes; `data` itself when stored as is.
 * @throws {UnsupportedFeatureError} for Snappy pages.
 * @throws {FormatError} `bad-record` for unknown flags, corrupt data or a wrong length.
 *
 * @example
 * ```ts
 * import { deflateSync } from "node:zlib";
 * import { decompressKdumpPage } from "@vmem-dump/vmem-dump/kdump";
 * const page = new Uint8Array(4096).fill(7);
 * const out = decompressKdumpPage(deflateSync(page), 1, 4096, 0);
 * console.log(out.length, out[0]); // 4096 7
 * ```
 */
export function decompressKdumpPage(
  data: Uint8Array,
  flags: number,
  blockSize: number,
  fileOffset: number,
): Uint8Array {
  let out: Uint8Array;
  if (flags === 0) {
    out = data;
  } else if (flags === DUMP_DH_COMPRESSED_ZLIB || flags === DUMP_DH_COMPRESSED_ZSTD) {
    const name = kdumpCodecName(flags);
    const context = keptContext(flags);
    if (context !== undefined) {
      // One page through the kept context; room for one byte too many shows an overlong page.
      const page = new Uint8Array(blockSize + 1);
      const r = context.run(data, page, 0);
      if (r.error !== undefined) {
        dropContext(flags); // Deno's contexts do not recover from an error
        throw new FormatError(
          `Cannot decompress kdump page: corrupt ${name} data (${r.error})`,
          { format: "kdump", code: "bad-record", offset: fileOffset },
        );
      }
      out = page.subarray(0, r.written);
    } else {
      out = oneShot(data, flags, blockSize, name, fileOffset);
    }
  } else if (flags === DUMP_DH_COMPRESSED_LZO) {
    const page = new Uint8Array(blockSize);
    try {
      out = page.subarray(0, decompressLzo1x(data, page));
    } catch (e) {
      if (!(e instanceof LzoError)) throw e;
      throw new FormatError(
        `Cannot decompress kdump page: corrupt lzo data (${e.message} at byte ${e.at} of ` +
          `${data.byteLength})`,
        { format: "kdump", code: "bad-record", offset: fileOffset + e.at },
      );
    }
  } else if (flags === DUMP_DH_COMPRESSED_SNAPPY) {
    throw new UnsupportedFeatureError(
      `Cannot decompress kdump page: snappy pages are not supported ` +
        `(makedumpfile -c, -l or -z, and QEMU kdump-zlib or kdump-lzo dumps are)`,
      "kdump",
      fileOffset,
    );
  } else {
    throw new FormatError(
      `Cannot decompress kdump page: unknown compression flags 0x${flags.toString(16)}`,
      { format: "kdump", code: "bad-record", offset: fileOffset },
    );
  }
  if (out.byteLength !== blockSize) {
    throw new FormatError(
      `Cannot decompress kdump page: ${kdumpCodecName(flags)} data decodes to ${
        out.byteLength > blockSize ? "more than" : ""
      } ${out.byteLength} bytes, not the block size ${blockSize}`.replace("  ", " "),
      { format: "kdump", code: "bad-record", offset: fileOffset },
    );
  }
  return out;
}

/** The one-shot functions: a fresh context per page (the fallback). */
function oneShot(
  data: Uint8Array,
  flags: number,
  blockSize: number,
  name: string,
  fileOffset: number,
): Uint8Array {
  let out: Uint8Array;
  {
    try {
      // maxOutputLength + 1 lets an overlong page show up as a wrong length below.
      const options = { maxOutputLength: blockSize + 1 };
      const b = flags === DUMP_DH_COMPRESSED_ZLIB
        ? inflateSync(data, options)
        : zstdDecompressSync(data, options);
      out = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } catch (e) {
      if (e instanceof RangeError) {
        out = new Uint8Array(blockSize + 1); // too long: reported below
      } else {
        throw new FormatError(
          `Cannot decompress kdump page: corrupt ${name} data (${(e as Error).message})`,
          { format: "kdump", code: "bad-record", offset: fileOffset },
          { cause: e },
        );
      }
    }
  }
  return out;
}

/** Kept decompression contexts by codec: `null` when the runtime has none that works. */
const kept = new Map<number, ZlibContext | null>();

/** The kept context for `flags`, opened and checked on first use. */
function keptContext(flags: number): ZlibContext | undefined {
  let c = kept.get(flags);
  if (c === undefined) {
    c = checkedContext(flags) ?? null;
    kept.set(flags, c);
  }
  return c ?? undefined;
}

function dropContext(flags: number): void {
  kept.get(flags)?.close();
  kept.delete(flags);
}

/** A context that decodes a sample page twice like the one-shot function does. */
function checkedContext(flags: number): ZlibContext | undefined {
  const zlib = flags === DUMP_DH_COMPRESSED_ZLIB;
  const context = ZlibContext.open(zlib ? "inflate" : "zstd-decompress");
  if (context === undefined) return undefined;
  const page = new Uint8Array(4096);
  for (let i = 0; i < page.length; i++) page[i] = (i * 7 + (i >> 9)) & 0xff;
  const packed = zlib ? deflateSync(page) : zstdCompressSync(page);
  const out = new Uint8Array(page.length + 1);
  for (let round = 0; round < 2; round++) {
    const r = context.run(packed, out, 0);
    if (
      r.error !== undefined || r.written !== page.length ||
      !page.every((b, i) => b === out[i])
    ) {
      context.close();
      return undefined;
    }
  }
  return context;
}
