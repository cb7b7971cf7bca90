/**
 * Helpers for the filter, verify and proxy tests: a deterministic synthetic
 * stream builder, record decoding/encoding shortcuts and a record digest for
 * "every other record is identical" checks.
 *
 * @module
 */

import { ByteWriter } from "../../src/io/byte_writer.ts";
import { bytesReader, StreamByteReader } from "../../src/io/byte_reader.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { MigrationEncoder } from "../../src/migration/encoder.ts";
import type { MigrationRecord, RamBlockInfo } from "../../src/migration/types.ts";
import { PlugMap } from "../../src/vmem/plug_map.ts";
import {
  type ExtractPlugMapResult,
  extractPlugStateFromReader,
} from "../../src/migration/plug_state.ts";
import { chunkedFileStream, concatBytes, seededRandom } from "../_util/chunkings.ts";

/** RAMBlock idstr of the synthetic virtio-mem device. */
export const VMEM_RAMBLOCK = "0000:00:01.0/vmem0mem";
/** Device path of the synthetic virtio-mem device. */
export const VMEM_PATH = "0000:00:01.0";
/** Guest-physical base of the synthetic device. */
export const VMEM_GPA = 0x1_0000_0000;
/** Block size of the synthetic device. */
export const VMEM_BLOCK = 1 << 20;

/** What {@linkcode syntheticRecords} builds. */
export interface SyntheticOptions {
  /** PRNG seed. */
  seed: number;
  /** Device blocks (1 MiB each). @default {16} */
  blocks?: number;
  /** Plugged flags per block; random when absent. */
  plugged?: boolean[];
  /** Emit the early section (QEMU >= 8.0 layout). @default {true} */
  early?: boolean;
  /** Page records. @default {64} */
  pages?: number;
  /** Probability that a vmem page lies in an unplugged block. @default {0.2} */
  strayRate?: number;
}

/** A synthetic stream: records, plugged flags, and a plug map for them. */
export interface Synthetic {
  /** The records (streamOffset is 0 everywhere; decode the bytes for real offsets). */
  records: MigrationRecord[];
  /** Plugged flags per device block. */
  plugged: boolean[];
  /** The plug map matching `plugged`. */
  plugMap: PlugMap;
}

/** LSB-first bitmap from flags. */
export function lsbBitmap(flags: readonly boolean[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(flags.length / 8));
  flags.forEach((f, i) => {
    if (f) out[i >> 3]! |= 1 << (i & 7);
  });
  return out;
}

/** QEMU wire bitmap (be64 words) from flags. */
export function wireBitmap(flags: readonly boolean[]): Uint8Array {
  const out = new Uint8Array(8 * Math.ceil(flags.length / 64));
  flags.forEach((f, i) => {
    if (f) out[8 * (i >> 6) + 7 - ((i & 63) >> 3)]! |= 1 << (i & 7);
  });
  return out;
}

/** A plug map for the synthetic device. */
export function syntheticPlugMap(plugged: readonly boolean[], ramBlock = VMEM_RAMBLOCK): PlugMap {
  return new PlugMap([{
    path: VMEM_PATH,
    ramBlock,
    gpa: VMEM_GPA,
    regionSize: plugged.length * VMEM_BLOCK,
    blockSize: VMEM_BLOCK,
    node: 0,
    usableRegionSize: undefined,
    size: plugged.filter((x) => x).length * VMEM_BLOCK,
    requestedSize: undefined,
    bitmap: lsbBitmap(plugged),
  }]);
}

/**
 * A small valid stream with a virtio-mem RAMBlock, `pc.ram`, all four page
 * record kinds and CONTINUE set the way QEMU's sender sets it.
 */
export function syntheticRecords(options: SyntheticOptions): Synthetic {
  const rnd = seededRandom(options.seed);
  const nBlocks = options.blocks ?? 16;
  const plugged = options.plugged ?? Array.from({ length: nBlocks }, () => rnd() < 0.6);
  const strayRate = options.strayRate ?? 0.2;
  const ramBlocks: RamBlockInfo[] = [
    { idstr: VMEM_RAMBLOCK, usedLength: nBlocks * VMEM_BLOCK },
    { idstr: "pc.ram", usedLength: 16 << 20 },
  ];
  const s = 0;
  const r: MigrationRecord[] = [
    { kind: "header", streamOffset: s, version: 3 },
    {
      kind: "configuration",
      streamOffset: s,
      machineType: "pc-q35-10.0",
      subsections: [],
      capabilities: [],
      targetPageBits: undefined,
    },
    {
      kind: "section-start",
      streamOffset: s,
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      kind: "ram-mem-size",
      streamOffset: s,
      totalBytes: ramBlocks.reduce((a, b) => a + b.usedLength, 0),
      blocks: ramBlocks,
    },
    { kind: "ram-eos", streamOffset: s },
    { kind: "section-footer", streamOffset: s, sectionId: 2 },
  ];
  if (options.early ?? true) {
    r.push(
      {
        kind: "section-full",
        streamOffset: s,
        sectionId: 3,
        idstr: `${VMEM_PATH}/virtio-mem-device-early`,
        instanceId: 0,
        versionId: 1,
      },
      {
        kind: "virtio-mem-early",
        streamOffset: s,
        devicePath: VMEM_PATH,
        gpa: VMEM_GPA,
        regionSize: nBlocks * VMEM_BLOCK,
        blockSize: VMEM_BLOCK,
        node: 0,
        size: plugged.filter((x) => x).length * VMEM_BLOCK,
        bitmap: wireBitmap(plugged),
      },
      { kind: "section-footer", streamOffset: s, sectionId: 3 },
    );
  }
  const pluggedIdx = plugged.flatMap((p, i) => (p ? [i] : []));
  const unpluggedIdx = plugged.flatMap((p, i) => (p ? [] : [i]));
  let last: string | undefined;
  const nPages = options.pages ?? 64;
  const sections = 3;
  for (let sec = 0; sec < sections; sec++) {
    r.push({
      kind: sec === sections - 1 ? "section-end" : "section-part",
      streamOffset: s,
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    });
    for (let p = 0; p < nPages / sections; p++) {
      let ramBlock: string, ramOffset: number;
      const page = Math.floor(rnd() * 256) * 4096;
      if (rnd() < 0.3) {
        ramBlock = "pc.ram";
        ramOffset = Math.floor(rnd() * 16) * VMEM_BLOCK + page;
      } else {
        ramBlock = VMEM_RAMBLOCK;
        const pool = (rnd() < strayRate && unpluggedIdx.length > 0) || pluggedIdx.length === 0
          ? unpluggedIdx
          : pluggedIdx;
        const block = pool[Math.floor(rnd() * pool.length)] ?? 0;
        ramOffset = block * VMEM_BLOCK + page;
      }
      // Runs: often several pages of the same block in a row.
      const run = 1 + Math.floor(rnd() * 4);
      for (let k = 0; k < run; k++) {
        const off = ramOffset + k * 4096;
        if (off % VMEM_BLOCK === 0 && k > 0) break;
        const continued = ramBlock === last;
        last = ramBlock;
        const base = { streamOffset: s, ramBlock, ramOffset: off, continued };
        const pick = rnd();
        if (pick < 0.45) {
          const data = new Uint8Array(4096);
          data.fill((off >>> 12) & 0xff);
          data[0] = p;
          r.push({ kind: "ram-page", ...base, data });
        } else if (pick < 0.9) r.push({ kind: "ram-zero-page", ...base, fill: 0 });
        else if (pick < 0.95) {
          r.push({
            kind: "ram-xbzrle-page",
            ...base,
            encoding: 1,
            data: new Uint8Array([3, 1, 2, 3]),
          });
        } else r.push({ kind: "ram-compressed-page", ...base, data: new Uint8Array(17).fill(9) });
      }
    }
    if (sec === 1) r.push({ kind: "ram-multifd-flush", streamOffset: s });
    r.push({ kind: "ram-eos", streamOffset: s }, {
      kind: "section-footer",
      streamOffset: s,
      sectionId: 2,
    });
  }
  const json = new TextEncoder().encode(JSON.stringify({ page_size: 4096, devices: [] }));
  r.push({ kind: "eof", streamOffset: s }, {
    kind: "vmdesc",
    streamOffset: s,
    json,
    parsed: JSON.parse(new TextDecoder().decode(json)),
  });
  return { records: r, plugged, plugMap: syntheticPlugMap(plugged) };
}

/** Encode records (or batches) into one byte array. Throws like the encoder does. */
export async function encodeRecords(
  records: Iterable<MigrationRecord | readonly MigrationRecord[]>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const enc = new MigrationEncoder(
    new ByteWriter((c) => {
      chunks.push(c);
    }, { chunkSize: 1 << 16 }),
  );
  for (const item of records) {
    if (Array.isArray(item)) { for (const r of item as readonly MigrationRecord[]) enc.write(r); }
    else enc.write(item as MigrationRecord);
  }
  await enc.flush();
  return concatBytes(chunks);
}

/** Decode bytes into batches. */
export async function decodeBatches(
  bytes: Uint8Array | ReadableStream<Uint8Array>,
): Promise<MigrationRecord[][]> {
  const reader = bytes instanceof Uint8Array ? bytesReader(bytes) : new StreamByteReader(bytes);
  const out: MigrationRecord[][] = [];
  for await (const b of decodeMigrationBatches(reader)) out.push(b.map(copyRecord));
  return out;
}

/** Copy the byte views of a record so it survives the reader's buffers. */
export function copyRecord(r: MigrationRecord): MigrationRecord {
  if ("data" in r) return { ...r, data: r.data.slice() } as MigrationRecord;
  return r;
}

/** Whether a record is a page record. */
export function isPage(r: MigrationRecord): r is Extract<MigrationRecord, { ramOffset: number }> {
  return r.kind === "ram-page" || r.kind === "ram-zero-page" || r.kind === "ram-xbzrle-page" ||
    r.kind === "ram-compressed-page";
}

/**
 * A string that identifies a record's content (not its stream offset and,
 * for page records, not its CONTINUE flag unless `withContinue`).
 */
export function recordKey(r: MigrationRecord, withContinue = true): string {
  const parts: string[] = [r.kind];
  for (const [k, v] of Object.entries(r)) {
    if (k === "streamOffset" || k === "kind" || k === "parsed") continue;
    if (k === "continued" && !withContinue) continue;
    if (v instanceof Uint8Array) parts.push(`${k}=${v.byteLength}:${fnv(v)}`);
    else if (k === "state") {
      parts.push(`${k}=${JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? fnv(x) : x))}`);
    } else parts.push(`${k}=${JSON.stringify(v)}`);
  }
  return parts.join("|");
}

function fnv(b: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.byteLength; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return (h >>> 0).toString(16);
}

/** Split an array of records into batches of `size` (or random sizes when `size` is a function). */
export function rebatch(
  records: readonly MigrationRecord[],
  size: number | (() => number),
): MigrationRecord[][] {
  const out: MigrationRecord[][] = [];
  for (let i = 0; i < records.length;) {
    const n = Math.max(1, typeof size === "number" ? size : size());
    out.push(records.slice(i, i + n));
    i += n;
  }
  return out;
}

export { memoryIo } from "../_util/cli.ts";

/**
 * A reader over a file with no read-ahead (so aborting mid-stream leaves no
 * pending read behind), 1 MiB per chunk.
 */
export async function fileReader(path: string): Promise<StreamByteReader> {
  return new StreamByteReader(
    await chunkedFileStream(path, { name: "1 MiB reads", kind: "whole" }),
  );
}

/** The plug state of a stream file (first pass), read without read-ahead. */
export async function plugStateOf(path: string): Promise<ExtractPlugMapResult> {
  const reader = await fileReader(path);
  try {
    return await extractPlugStateFromReader(reader, {
      seekableFile: { path, byteLength: (await Deno.stat(path)).size },
    });
  } finally {
    await reader.cancel();
  }
}
