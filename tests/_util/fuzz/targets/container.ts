/**
 * Campaign target `container`: mutated gzip, zstd and libvirt save images
 * (with raw, gzip and zstd payloads) of a real migration stream, opened
 * with `openContainer` and decoded to the end. The zstd seeds are the
 * committed `zstd -19` files (real zstd 1.5.4 output); gzip and libvirt
 * images are built from the same real stream (node:zlib's gzip, libvirt's
 * header layout).
 *
 * Oracle: a typed error (container errors with an offset inside the
 * compressed input) or the whole stream decoded; never a hang, never an
 * uncaught exception from the decompressor (the flipped byte 5 of the demo
 * stream was one).
 *
 * @module
 */

import { gzipSync } from "node:zlib";
import { bytesReader } from "../../../../src/io/byte_reader.ts";
import { openContainer } from "../../../../src/container/open.ts";
import {
  buildLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_ZSTD,
} from "../../../../src/container/libvirt_save.ts";
import { decodeMigrationBatches } from "../../../../src/migration/decoder.ts";
import { concatBytes } from "../../chunkings.ts";
import type { Anatomy, Field, Span } from "../mutate.ts";
import { typedErrorLabel } from "../oracle.ts";
import type { FuzzTarget, SeedInput } from "../target.ts";

const TESTDATA = new URL("../../../../testdata/migration/", import.meta.url);

/** Fields and frames of a zstd input (RFC 8878 §3.1.1): frame headers and block headers. */
export function zstdAnatomy(bytes: Uint8Array, base = 0): Anatomy {
  const fields: Field[] = [];
  const spans: Span[] = [];
  const le = (offset: number, width: 1 | 2 | 4 | 8, name: string, role: Field["role"]) =>
    fields.push({ offset: base + offset, width, littleEndian: true, name, role });
  let at = 0;
  while (at + 6 <= bytes.length) {
    const magic = bytes[at]! | bytes[at + 1]! << 8 | bytes[at + 2]! << 16 | bytes[at + 3]! << 24;
    const start = at;
    if ((magic >>> 4) === 0x184d2a5) {
      le(at + 4, 4, "skippable frame size", "length");
      const size = bytes[at + 4]! | bytes[at + 5]! << 8 | bytes[at + 6]! << 16 |
        bytes[at + 7]! << 24;
      at += 8 + (size >>> 0);
      spans.push({ start: base + start, end: base + at, name: "skippable frame" });
      continue;
    }
    if (magic >>> 0 !== 0xfd2fb528) break;
    const fhd = bytes[at + 4]!;
    le(at + 4, 1, "frame header descriptor", "flags");
    const fcsFlag = fhd >> 6;
    const single = (fhd >> 5) & 1;
    const dictFlag = fhd & 3;
    let p = at + 5;
    if (!single) {
      le(p, 1, "window descriptor", "length");
      p++;
    }
    const dictBytes = [0, 1, 2, 4][dictFlag]!;
    p += dictBytes;
    const fcsBytes = fcsFlag === 0 ? (single ? 1 : 0) : [0, 2, 4, 8][fcsFlag]!;
    if (fcsBytes > 0) le(p, fcsBytes as 1 | 2 | 4 | 8, "frame content size", "length");
    p += fcsBytes;
    for (let blocks = 0; p + 3 <= bytes.length; blocks++) {
      const h = bytes[p]! | bytes[p + 1]! << 8 | bytes[p + 2]! << 16;
      const last = h & 1;
      const type = (h >> 1) & 3;
      const size = h >> 3;
      if (blocks < 64 || last) le(p, 2, `block ${blocks} header (low)`, "length");
      const blockStart = p;
      p += 3 + (type === 1 ? 1 : size);
      if (blocks < 64) {
        spans.push({ start: base + blockStart, end: base + p, name: `block ${blocks}` });
      }
      if (last) break;
    }
    if (fhd & 4) {
      le(p, 4, "content checksum", "other");
      p += 4;
    }
    at = p;
    spans.push({ start: base + start, end: base + at, name: "frame" });
  }
  return { fields, spans };
}

/** Fields of a gzip member (RFC 1952): flags, mtime, extra length, CRC32 and ISIZE. */
export function gzipAnatomy(bytes: Uint8Array, base = 0): Anatomy {
  const f = (offset: number, width: 1 | 2 | 4 | 8, name: string, role: Field["role"]): Field => ({
    offset: base + offset,
    width,
    littleEndian: true,
    name,
    role,
  });
  return {
    fields: [
      f(2, 1, "gzip CM", "id"),
      f(3, 1, "gzip FLG", "flags"),
      f(4, 4, "gzip MTIME", "other"),
      f(bytes.length - 8, 4, "gzip CRC32", "other"),
      f(bytes.length - 4, 4, "gzip ISIZE", "length"),
    ],
    spans: [{ start: base, end: base + bytes.length, name: "gzip member" }],
  };
}

/** Fields of a libvirt save header (libvirt's `virQEMUSaveHeader`). */
function libvirtAnatomy(littleEndian: boolean): Anatomy {
  const f = (offset: number, name: string, role: Field["role"]): Field => ({
    offset,
    width: 4,
    littleEndian,
    name,
    role,
  });
  return {
    fields: [
      f(16, "libvirt version", "id"),
      f(20, "libvirt data_len", "length"),
      f(24, "libvirt was_running", "flags"),
      f(28, "libvirt format", "id"),
      f(32, "libvirt cookieOffset", "offset"),
    ],
    spans: [],
  };
}

function shifted(a: Anatomy, by: number): Anatomy {
  return {
    fields: a.fields.map((f) => ({ ...f, offset: f.offset + by })),
    spans: a.spans.map((s) => ({ ...s, start: s.start + by, end: s.end + by })),
  };
}

function merge(...parts: Anatomy[]): Anatomy {
  return { fields: parts.flatMap((p) => p.fields), spans: parts.flatMap((p) => p.spans) };
}

/** The container seeds: zstd tool output, gzip and libvirt images of the same real streams. */
export async function containerSeeds(): Promise<SeedInput[]> {
  const zst = await Deno.readFile(new URL("q10-s3-malicious.mig.zst", TESTDATA));
  const zst72 = await Deno.readFile(new URL("q72-s3-malicious.mig.zst", TESTDATA));
  const small = await Deno.readFile(new URL("q72-qboot-unplugged.mig", TESTDATA));
  const gz = new Uint8Array(gzipSync(small));
  const seeds: SeedInput[] = [
    { name: "q10-s3-malicious.mig.zst", bytes: zst, anatomy: zstdAnatomy(zst) },
    { name: "q72-s3-malicious.mig.zst", bytes: zst72, anatomy: zstdAnatomy(zst72) },
    { name: "q72-qboot-unplugged.mig.gz", bytes: gz, anatomy: gzipAnatomy(gz) },
  ];
  for (
    const [name, format, payload, inner, littleEndian] of [
      ["raw", QEMU_SAVE_FORMAT_RAW, small, undefined, true],
      ["gzip", QEMU_SAVE_FORMAT_GZIP, gz, gzipAnatomy(gz), false],
      ["zstd", QEMU_SAVE_FORMAT_ZSTD, zst72, zstdAnatomy(zst72), true],
    ] as const
  ) {
    const header = buildLibvirtSaveHeader({
      xml: "<domain type='kvm'><name>fuzz</name></domain>",
      cookie: "<cookie/>",
      compression: format,
      littleEndian,
      dataLength: 4096,
    });
    const bytes = concatBytes([header.headerBytes, payload]);
    seeds.push({
      name: `libvirt save image, ${name} payload${littleEndian ? "" : ", big-endian"}`,
      bytes,
      anatomy: merge(
        libvirtAnatomy(littleEndian),
        inner ? shifted(inner, header.headerBytes.length) : { fields: [], spans: [] },
      ),
    });
  }
  return seeds;
}

/** Open `input` as a container and decode the stream inside to the end. */
export async function runContainer(input: Uint8Array): Promise<string> {
  try {
    const opened = await openContainer(bytesReader(input));
    for await (const _ of decodeMigrationBatches(opened.reader)) { /* to the end */ }
    return `decoded ${opened.kind}`;
  } catch (e) {
    return typedErrorLabel(e, { maxOffset: { container: input.length } });
  }
}

/** The target. */
export const containerTarget: FuzzTarget = {
  name: "container",
  description: "gzip, zstd and libvirt save images of real streams: openContainer and decode",
  timeoutMs: 20_000,
  seeds: containerSeeds,
  run: runContainer,
};
