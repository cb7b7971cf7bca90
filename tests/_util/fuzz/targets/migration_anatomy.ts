/**
 * The anatomy of a real migration stream for the mutation campaign: its
 * length, count, offset and id fields (the configuration section's
 * subsections and capabilities, section headers and footers, commands, the RAMBlock list, page record headers, the virtio-mem state and
 * its plug bitmap, the vmdesc length) and its sections as spans (so that
 * sections can be duplicated, swapped, moved after the device state or
 * removed).
 *
 * The unmutated seed is decoded once with the library's decoder to find the
 * records; field offsets come from the wire layout of each record
 * (migration/savevm.c, migration/ram.c, hw/virtio/virtio-mem.c). The
 * device-state sections of the tail are found by their headers and footers.
 *
 * Page records are many (half a real stream is zero pages), so only a
 * sample of them becomes fields: every PAGE record of a virtio-mem block, the
 * first and last of each section, and one in 64 of the rest. Page addresses
 * get extra values: the first page of every unplugged block, the last page
 * of the region and the first byte past it, so a mutation can move a page
 * into unplugged memory (a violation every command must see alike).
 *
 * @module
 */

import { bytesReader } from "../../../../src/io/byte_reader.ts";
import { bytesPositional } from "../../../../src/io/positional.ts";
import { positionalByteReader } from "../../../../src/io/positional_byte_reader.ts";
import { decodeMigrationBatches } from "../../../../src/migration/decoder.ts";
import type { MigrationRecord } from "../../../../src/migration/types.ts";
import type { Anatomy, Field, FieldRole, Span, TextNumber } from "../mutate.ts";

const PAGE_MASK = 0xfffn;

/** A device's plug state as the stream states it. */
interface StreamDevice {
  devicePath: string;
  blockSize: number;
  regionSize: number;
  bitmap: Uint8Array;
}

function bitSet(wire: Uint8Array, i: number): boolean {
  // be64 words: bit i of word w is block 64·w + i.
  const word = Math.floor(i / 64);
  const bit = i % 64;
  return ((wire[word * 8 + 7 - (bit >> 3)]! >> (bit & 7)) & 1) === 1;
}

/** Page-address values that land in interesting places of a device's region. */
function addressValues(d: StreamDevice | undefined): bigint[] {
  if (d === undefined) return [];
  const out: bigint[] = [];
  const blocks = Math.floor(d.regionSize / d.blockSize);
  for (let i = 0; i < blocks && out.length < 48; i++) {
    const start = BigInt(i * d.blockSize);
    out.push(start, start + BigInt(d.blockSize) - 4096n);
    if (!bitSet(d.bitmap, i)) out.push(start + 4096n);
  }
  out.push(BigInt(d.regionSize) - 4096n, BigInt(d.regionSize), BigInt(d.regionSize) + 4096n);
  return out;
}

/** Every single-bit change of a 64-bit word. */
function bitToggles(word: bigint): bigint[] {
  const out: bigint[] = [];
  for (let b = 0n; b < 64n; b++) out.push(word ^ (1n << b));
  return out;
}

function u64be(bytes: Uint8Array, at: number): bigint {
  let v = 0n;
  for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(bytes[at + i] ?? 0);
  return v;
}

/**
 * The configuration section's fields (migration/savevm.c
 * `vmstate_configuration`): the machine type's length, then per subsection
 * its name length and version, the target page bits, the capability count,
 * each capability's name length and its last byte (a NUL there is a name QEMU
 * reads shorter, which must be refused).
 */
function configurationFields(
  bytes: Uint8Array,
  at: number,
  field: (offset: number, width: 1 | 4, name: string, role: FieldRole, values?: bigint[]) => void,
): void {
  const u32 = (o: number) => new DataView(bytes.buffer, bytes.byteOffset).getUint32(o);
  field(at + 1, 4, "configuration machine-type length", "length");
  let p = at + 5 + u32(at + 1);
  while (p + 2 <= bytes.length && bytes[p] === 0x05) {
    const nameLength = bytes[p + 1]!;
    const name = new TextDecoder("latin1").decode(bytes.subarray(p + 2, p + 2 + nameLength));
    field(p + 1, 1, `configuration subsection ${name} name length`, "length");
    const body = p + 2 + nameLength + 4;
    field(body - 4, 4, `configuration subsection ${name} version`, "id");
    if (name === "configuration/target-page-bits") {
      field(body, 4, "target page bits", "other", [0n, 9n, 10n, 12n, 16n, 17n, 0xffffffffn]);
      p = body + 4;
    } else if (name === "configuration/capabilities") {
      field(body, 4, "capability count", "count");
      let q = body + 4;
      for (let i = 0, n = u32(body); i < n && q < bytes.length; i++) {
        const length = bytes[q]!;
        field(q, 1, `capability ${i} name length`, "length");
        if (length > 0) field(q + length, 1, `capability ${i} name's last byte`, "other", [0n]);
        q += 1 + length;
      }
      p = q;
    } else if (name === "configuration/uuid") p = body + 16;
    else break;
  }
}

/**
 * Walk a real migration stream.
 *
 * A mapped-ram file (`options.mappedRam`) is read with its blocks' regions
 * skipped, and its anatomy adds each block's mapped-ram header and bitmap
 * words (little-endian host words; a word's toggles set or clear single
 * pages, e.g. a page of an unplugged block).
 *
 * @param bytes The whole stream (raw, not in a container), or the mapped-ram file.
 * @param options `mappedRam` for a mapped-ram file.
 * @returns Its fields and spans.
 * @throws {FormatError} when the stream does not decode (seeds are real, unmutated streams).
 */
export async function migrationAnatomy(
  bytes: Uint8Array,
  options: { mappedRam?: boolean } = {},
): Promise<Anatomy> {
  const fields: Field[] = [];
  const spans: Span[] = [];
  const numbers: TextNumber[] = [];
  const field = (
    offset: number,
    width: 1 | 2 | 4 | 8,
    name: string,
    role: FieldRole,
    values?: bigint[],
  ) => {
    if (offset + width <= bytes.length) {
      fields.push({
        offset,
        width,
        littleEndian: false,
        name,
        role,
        ...(values ? { values } : {}),
      });
    }
  };
  const devices = new Map<string, StreamDevice>();
  const pages: {
    kind: string;
    streamOffset: number;
    ramBlock: string;
    ramOffset: number;
    continued: boolean;
  }[] = [];
  let sectionStart = -1;
  let sectionName = "";
  const records: MigrationRecord[] = [];
  const reader = options.mappedRam
    ? positionalByteReader(bytesPositional(bytes))
    : bytesReader(bytes);
  const mappedBlocks: { idstr: string; bitmapOffset: number; bitmapByteLength: number }[] = [];
  for await (
    const batch of decodeMigrationBatches(reader, { mappedRam: options.mappedRam ?? false })
  ) {
    for (const r of batch) {
      if ("ramOffset" in r) {
        const { kind, streamOffset, ramBlock, ramOffset, continued } = r;
        pages.push({ kind, streamOffset, ramBlock, ramOffset, continued });
      } else records.push(r);
    }
  }
  for (const r of records) {
    const at = r.streamOffset;
    switch (r.kind) {
      case "header":
        field(at + 4, 4, "header version", "id");
        break;
      case "configuration":
        configurationFields(bytes, at, field);
        break;
      case "section-start":
      case "section-full": {
        const len = bytes[at + 5]!;
        field(at + 1, 4, `${r.kind} ${r.idstr} section id`, "id");
        field(at + 5, 1, `${r.kind} ${r.idstr} idstr length`, "length");
        field(at + 6 + len, 4, `${r.kind} ${r.idstr} instance id`, "id");
        field(at + 10 + len, 4, `${r.kind} ${r.idstr} version id`, "id");
        sectionStart = at;
        sectionName = `${r.kind} ${r.idstr}`;
        break;
      }
      case "section-part":
      case "section-end":
        field(at + 1, 4, `${r.kind} ${r.idstr} section id`, "id");
        sectionStart = at;
        sectionName = `${r.kind} ${r.idstr}`;
        break;
      case "section-footer":
        field(at + 1, 4, `footer of section ${r.sectionId}`, "id");
        if (sectionStart >= 0) {
          spans.push({ start: sectionStart, end: at + 5, name: sectionName });
          sectionStart = -1;
        }
        break;
      case "command":
        field(at + 1, 2, `command ${r.name} number`, "id");
        field(at + 3, 2, `command ${r.name} length`, "length");
        if (r.name === "PACKAGED") field(at + 5, 4, "PACKAGED length", "length");
        spans.push({ start: at, end: at + 5 + r.payload.length, name: `command ${r.name}` });
        break;
      case "ram-mem-size": {
        field(at, 8, "MEM_SIZE total | flags", "length");
        let p = at + 8;
        for (const b of r.blocks) {
          const len = bytes[p]!;
          field(p, 1, `RAMBlock ${b.idstr} idstr length`, "length");
          field(p + 1 + len, 8, `RAMBlock ${b.idstr} used length`, "length");
          p += 1 + len + 8;
          if (b.pageSize !== undefined) {
            field(p, 8, `RAMBlock ${b.idstr} page size`, "length");
            p += 8;
          }
          if (b.gpa !== undefined) {
            field(p, 8, `RAMBlock ${b.idstr} gpa`, "address");
            p += 8;
          }
          if (b.mappedRam !== undefined) {
            const m = b.mappedRam;
            const h = m.headerOffset;
            field(h, 4, `RAMBlock ${b.idstr} mapped-ram version`, "id");
            field(h + 4, 8, `RAMBlock ${b.idstr} mapped-ram page_size`, "length");
            field(h + 12, 8, `RAMBlock ${b.idstr} mapped-ram bitmap_offset`, "offset");
            field(h + 20, 8, `RAMBlock ${b.idstr} mapped-ram pages_offset`, "offset");
            mappedBlocks.push({
              idstr: b.idstr,
              bitmapOffset: m.bitmapOffset,
              bitmapByteLength: m.bitmapByteLength,
            });
            p = m.areaEnd; // the stream goes on after the block's pages
          }
        }
        break;
      }
      case "ram-eos":
        field(at, 8, "EOS flags", "flags");
        break;
      case "virtio-mem-early": {
        field(at, 8, `early ${r.devicePath} addr`, "address");
        field(at + 8, 8, `early ${r.devicePath} region size`, "length");
        field(at + 16, 8, `early ${r.devicePath} block size`, "length");
        field(at + 24, 4, `early ${r.devicePath} node`, "id");
        field(at + 28, 8, `early ${r.devicePath} size`, "length");
        for (let w = 0; w * 8 < r.bitmap.length; w++) {
          const o = at + 36 + w * 8;
          field(
            o,
            8,
            `early ${r.devicePath} bitmap word ${w}`,
            "flags",
            bitToggles(u64be(bytes, o)),
          );
        }
        devices.set(r.devicePath, {
          devicePath: r.devicePath,
          blockSize: r.blockSize,
          regionSize: r.regionSize,
          bitmap: r.bitmap,
        });
        break;
      }
      case "virtio-mem-device": {
        const f = at + r.state.fieldsOffset;
        const name = `${r.devicePath} device state`;
        if (r.state.layout === "late") {
          field(f, 8, `${name} addr`, "address");
          field(f + 8, 8, `${name} region size`, "length");
          field(f + 16, 8, `${name} block size`, "length");
          field(f + 24, 4, `${name} node`, "id");
          field(f + 28, 8, `${name} usable region size`, "length");
          field(f + 36, 8, `${name} size`, "length");
          field(f + 44, 8, `${name} requested size`, "length");
          const words = (r.state.bitmap?.length ?? 0) / 8;
          for (let w = 0; w < words; w++) {
            const o = f + 52 + w * 8;
            field(o, 8, `${name} bitmap word ${w}`, "flags", bitToggles(u64be(bytes, o)));
          }
          if (r.state.bitmap && r.state.blockSize && r.state.regionSize) {
            devices.set(r.devicePath, {
              devicePath: r.devicePath,
              blockSize: r.state.blockSize,
              regionSize: r.state.regionSize,
              bitmap: r.state.bitmap,
            });
          }
        } else {
          field(f, 8, `${name} usable region size`, "length");
          field(f + 8, 8, `${name} requested size`, "length");
        }
        break;
      }
      case "vmdesc": {
        field(at + 1, 4, "vmdesc length", "length");
        spans.push({ start: at, end: bytes.length, name: "vmdesc" });
        // The sizes the vmdesc gives for device fields: hints the decoder checks against the
        // sections. Every "size" value, and a sample of the other numbers.
        const lengthField: Field = {
          offset: at + 1,
          width: 4,
          littleEndian: false,
          name: "vmdesc length",
          role: "length",
        };
        const text = new TextDecoder("latin1").decode(bytes.subarray(at + 5));
        let others = 0;
        for (const m of text.matchAll(/("[a-z_-]+"):\s*(\d+)/g)) {
          const digits = m[2]!;
          const offset = at + 5 + m.index! + m[0].length - digits.length;
          const isSize = m[1] === '"size"';
          if (!isSize && others++ % 8 !== 0) continue;
          numbers.push({ offset, length: digits.length, name: `vmdesc ${m[1]}`, lengthField });
        }
        break;
      }
    }
  }
  // Mapped-ram bitmaps: the words of a virtio-mem block's device blocks, and words with pages.
  for (const m of mappedBlocks) {
    const device = [...devices.values()].find((d) => m.idstr.startsWith(`${d.devicePath}/`));
    const words = m.bitmapByteLength / 8;
    const wordsPerBlock = device ? device.blockSize / 4096 / 64 : 0;
    let kept = 0;
    for (let w = 0; w < words; w++) {
      const o = m.bitmapOffset + w * 8;
      let word = 0n;
      for (let i = 7; i >= 0; i--) word = (word << 8n) | BigInt(bytes[o + i] ?? 0);
      const interesting = (wordsPerBlock > 0 && w % wordsPerBlock === 0) ||
        (word !== 0n && kept < 64);
      if (!interesting) continue;
      kept++;
      if (o + 8 <= bytes.length) {
        fields.push({
          offset: o,
          width: 8,
          littleEndian: true,
          name: `${m.idstr} bitmap word ${w}`,
          role: "flags",
          values: bitToggles(word),
        });
      }
    }
    spans.push({
      start: m.bitmapOffset,
      end: m.bitmapOffset + m.bitmapByteLength,
      name: `${m.idstr} bitmap`,
    });
  }
  // Page records: a sample, with addresses into the plug state's interesting places.
  const sectionOfLast = new Map<string, number>();
  for (const [i, r] of pages.entries()) sectionOfLast.set(r.ramBlock, i);
  for (const [i, r] of pages.entries()) {
    const device = [...devices.values()].find((d) => r.ramBlock.startsWith(`${d.devicePath}/`));
    const keep = (device !== undefined && r.kind === "ram-page") || i % 64 === 0 ||
      sectionOfLast.get(r.ramBlock) === i || i === 0;
    if (!keep) continue;
    const header = u64be(bytes, r.streamOffset);
    const flags = header & PAGE_MASK;
    const values = addressValues(device).map((o) => o | flags);
    values.push(header ^ 0x20n, header ^ 0x2n, header ^ 0x8n, header | 0x40n, header | 0x100n);
    field(
      r.streamOffset,
      8,
      `${r.kind} ${r.ramBlock}+0x${r.ramOffset.toString(16)} header`,
      "address",
      values,
    );
    if (!r.continued) {
      field(r.streamOffset + 8, 1, `${r.kind} ${r.ramBlock} idstr length`, "length");
    }
  }
  return { fields, spans, numbers };
}
