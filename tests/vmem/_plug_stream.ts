/**
 * Test helpers for plug-state extraction: cut real virtio-mem sections out
 * of the real fixture streams, and assemble small synthetic streams around
 * them (header, configuration, `ram` START/END, early and device sections,
 * EOF, vmdesc).
 *
 * @module
 */

import type { RamBlockInfo, VirtioMemEarlyRecord } from "../../src/migration/types.ts";
import { realdata, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import { readFileBytes as readRange } from "../_util/files.ts";

const enc = new TextEncoder();

/** One section cut from a real stream. */
export interface RealSection {
  idstr: string;
  sectionId: number;
  /** Stream offset of the section header. */
  streamOffset: number;
  /** Stream offset of the body. */
  bodyOffset: number;
  /** Header bytes (type … version). */
  header: Uint8Array<ArrayBuffer>;
  /** Body bytes. */
  body: Uint8Array<ArrayBuffer>;
  /** Footer bytes (0x7E + id). */
  footer: Uint8Array<ArrayBuffer>;
}

/** The virtio-mem sections of a real scenario plus the facts recorded about it. */
export interface RealVirtioMem {
  set: RealdataSet;
  scenario: string;
  migPath: string;
  ramBlocks: RamBlockInfo[];
  device: RealSection;
  early: RealSection | undefined;
  /** The early section as the decoder would emit it. */
  earlyRecord: VirtioMemEarlyRecord | undefined;
  // deno-lint-ignore no-explicit-any
  truth: any;
  // deno-lint-ignore no-explicit-any
  qmp: any;
  /** Where the virtio-mem-device fields start in the device body (from analysis.json). */
  fieldsOffset: number;
}

async function cut(
  path: string,
  s: { offset: number; data_offset: number; data_len: number; idstr: string; section_id: number },
): Promise<RealSection> {
  const all = await readRange(path, s.offset, s.data_offset - s.offset + s.data_len + 5);
  const h = s.data_offset - s.offset;
  return {
    idstr: s.idstr,
    sectionId: s.section_id,
    streamOffset: s.offset,
    bodyOffset: s.data_offset,
    header: all.slice(0, h),
    body: all.slice(h, h + s.data_len),
    footer: all.slice(h + s.data_len),
  };
}

/** Cut the virtio-mem sections of a real scenario (unpacks the set on first use). */
export async function realVirtioMem(set: RealdataSet, scenario: string): Promise<RealVirtioMem> {
  const facts = realdataFacts(set);
  const sc = facts.analysis.scenarios[scenario];
  const mig = sc.migration;
  const migPath = await realdata(set, `${scenario}.mig`);
  // deno-lint-ignore no-explicit-any
  const sections: any[] = mig.virtio_mem_sections;
  const dev = sections.find((s) => s.idstr.endsWith("/virtio-mem"));
  const ear = sections.find((s) => s.idstr.endsWith("/virtio-mem-device-early"));
  const device = await cut(migPath, dev);
  const early = ear ? await cut(migPath, ear) : undefined;
  let earlyRecord: VirtioMemEarlyRecord | undefined;
  if (early) {
    const v = new DataView(early.body.buffer);
    earlyRecord = {
      kind: "virtio-mem-early",
      streamOffset: early.bodyOffset,
      devicePath: early.idstr.slice(0, -"/virtio-mem-device-early".length),
      gpa: Number(v.getBigUint64(0)),
      regionSize: Number(v.getBigUint64(8)),
      blockSize: Number(v.getBigUint64(16)),
      node: v.getUint32(24),
      size: Number(v.getBigUint64(28)),
      bitmap: early.body.slice(36),
    };
  }
  return {
    set,
    scenario,
    migPath,
    // deno-lint-ignore no-explicit-any
    ramBlocks: mig.ramblocks.map((b: any) => ({ idstr: b.idstr, usedLength: b.used_length })),
    device,
    early,
    earlyRecord,
    truth: sc.bitmap,
    qmp: facts.qmp[scenario],
    fieldsOffset: mig.virtio_mem_device_section.virtio_mem_device_body_offset,
  };
}

/** Concatenate byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function be32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function be64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, Math.floor(n / 2 ** 32));
  v.setUint32(4, n >>> 0);
  return b;
}

function cstr8(s: string): Uint8Array {
  const b = enc.encode(s);
  return concat([new Uint8Array([b.byteLength]), b]);
}

/** A long section header (FULL by default). */
export function longHeader(
  sectionId: number,
  idstr: string,
  instanceId = 0,
  versionId = 1,
  type = 0x04,
): Uint8Array {
  return concat([
    new Uint8Array([type]),
    be32(sectionId),
    cstr8(idstr),
    be32(instanceId),
    be32(versionId),
  ]);
}

/** A section footer. */
export function footer(sectionId: number): Uint8Array {
  return concat([new Uint8Array([0x7e]), be32(sectionId)]);
}

/** An early section body: addr, region, block, node, size, wire bitmap. */
export function earlyBody(
  f: {
    gpa: number;
    regionSize: number;
    blockSize: number;
    node: number;
    size: number;
    wire: Uint8Array;
  },
): Uint8Array {
  return concat([
    be64(f.gpa),
    be64(f.regionSize),
    be64(f.blockSize),
    be32(f.node),
    be64(f.size),
    f.wire,
  ]);
}

/** What goes into a synthetic stream. */
export interface SyntheticStream {
  ramBlocks: readonly RamBlockInfo[];
  /** Complete sections (header + body + footer) placed after the `ram` START section (early sections). */
  early?: readonly Uint8Array[];
  /** Complete FULL sections placed after the `ram` END section (device state). */
  devices?: readonly Uint8Array[];
  /**
   * Device names and body lengths for the vmdesc (the early sections' entries
   * come first, derived from their bytes, as QEMU writes them); `undefined`
   * leaves the vmdesc out.
   */
  vmdesc?: readonly { name: string; bodyLength: number }[];
  /** One PAGE record of this block at offset 0 in a PART section (so the early layout has a first page). */
  pageBlock?: string;
}

/** Build a small but well-formed stream (QEMU 7.2-like framing, `ram` id 2). */
export function buildStream(s: SyntheticStream): Uint8Array<ArrayBuffer> {
  const total = s.ramBlocks.reduce((n, b) => n + b.usedLength, 0);
  const parts: Uint8Array[] = [
    enc.encode("QEVM"),
    be32(3),
    new Uint8Array([0x07]),
    be32(10),
    enc.encode("pc-q35-7.2"),
    longHeader(2, "ram", 0, 4, 0x01),
    be64(total + 0x4),
  ];
  for (const b of s.ramBlocks) parts.push(cstr8(b.idstr), be64(b.usedLength));
  parts.push(be64(0x10), footer(2));
  for (const e of s.early ?? []) parts.push(e);
  if (s.pageBlock !== undefined) {
    parts.push(
      new Uint8Array([0x02]),
      be32(2),
      be64(0x08),
      cstr8(s.pageBlock),
      new Uint8Array(4096),
      be64(0x10),
      footer(2),
    );
  }
  parts.push(new Uint8Array([0x03]), be32(2), be64(0x10), footer(2));
  for (const d of s.devices ?? []) parts.push(d);
  parts.push(new Uint8Array([0x00]));
  if (s.vmdesc !== undefined) {
    const early = (s.early ?? []).map((e) => {
      const nameLength = e[5]!;
      return {
        name: new TextDecoder().decode(e.subarray(6, 6 + nameLength)),
        bodyLength: e.byteLength - (6 + nameLength + 8) - 5,
      };
    });
    const json = enc.encode(JSON.stringify({
      page_size: 4096,
      devices: [...early, ...s.vmdesc].map((d) => ({
        name: d.name,
        instance_id: 0,
        vmsd_name: "virtio-mem",
        version: 1,
        fields: [{ name: "virtio", type: "virtio", size: d.bodyLength }],
      })),
    }));
    parts.push(new Uint8Array([0x06]), be32(json.byteLength), json);
  }
  return concat(parts);
}

/** A stream around one real scenario's sections: RAMBlock list, early section, a page, the device section, vmdesc. */
export function streamAround(
  r: RealVirtioMem,
  device: Uint8Array = r.device.body,
  earlyBytes: Uint8Array | undefined = r.early?.body,
): Uint8Array<ArrayBuffer> {
  return buildStream({
    ramBlocks: r.ramBlocks,
    early: r.early && earlyBytes ? [concat([r.early.header, earlyBytes, r.early.footer])] : [],
    pageBlock: r.ramBlocks[0]!.idstr,
    devices: [concat([r.device.header, device, r.device.footer])],
    vmdesc: [{ name: r.device.idstr, bodyLength: r.device.body.byteLength }],
  });
}
