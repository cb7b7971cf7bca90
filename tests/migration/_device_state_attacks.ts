/**
 * Crafted migration streams that make QEMU load more (or other) state than
 * the device-state tail shows at first sight, each built from a real QEMU
 * stream by splicing bytes at the places QEMU's loader reads them
 * (migration/savevm.c `qemu_loadvm_state_main`). Used by the attack tests
 * with real QEMU 7.2 and 10.0 and by the consumer-agreement tests.
 *
 * Every attack injects at most one page, {@linkcode ATTACK_PAGE_GPA}'s, into
 * a block the base stream's plug state leaves unplugged.
 *
 * @module
 */

import { bytesReader } from "../../src/io/byte_reader.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import { MigrationEncoder } from "../../src/migration/encoder.ts";
import type {
  MigrationRecord,
  SectionHeaderRecord,
  VirtioMemEarlyRecord,
  VmdescRecord,
} from "../../src/migration/types.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { evilPage } from "../_util/guest.ts";

/** Where the injected page lands: block 39 of the tiny guest's device (unplugged in the holes shape). */
export const ATTACK_BLOCK = 39;
/** Block size of the tiny guest's device. */
export const ATTACK_BLOCK_SIZE = 2 << 20;
/** Guest-physical base of the tiny guest's device. */
export const ATTACK_VMEM_GPA = 0x1_0000_0000;
/** Offset of the injected page inside the device's RAMBlock. */
export const ATTACK_RAM_OFFSET = ATTACK_BLOCK * ATTACK_BLOCK_SIZE + 0x3000;
/** Guest-physical address of the injected page. */
export const ATTACK_PAGE_GPA = ATTACK_VMEM_GPA + ATTACK_RAM_OFFSET;
/** The injected page: 64 text lines naming the attack's tag and the gpa. */
export function attackPage(tag: string): Uint8Array<ArrayBuffer> {
  return evilPage(tag, ATTACK_PAGE_GPA);
}

/** What the attack builders need to know about the base stream. */
export interface BaseStream {
  /** The stream bytes. */
  bytes: Uint8Array;
  /** Its records (the decoder's, in prove mode: the base stream is honest). */
  records: MigrationRecord[];
  /** Section id of `ram`. */
  ramId: number;
  /** The virtio-mem RAMBlock idstr. */
  vmemBlock: string;
  /** The `P/virtio-mem` section header. */
  device: SectionHeaderRecord;
  /** Stream offset just after the `P/virtio-mem` section's footer. */
  afterDevice: number;
  /** The FULL section right after `P/virtio-mem`, and where its footer ends. */
  next: { header: SectionHeaderRecord; end: number };
  /** The early section (QEMU >= 8.0 machine types), its header and where its footer ends. */
  early: { header: SectionHeaderRecord; body: VirtioMemEarlyRecord; end: number } | undefined;
  /** The vmdesc record. */
  vmdesc: VmdescRecord;
  /** Stream offset of QEMU_VM_EOF. */
  eofAt: number;
  /**
   * Where the attacks put their page: {@linkcode ATTACK_RAM_OFFSET} when
   * that block is unplugged in the stream's plug state, else 0x3000 into the
   * first unplugged block.
   */
  attackOffset: number;
}

/** Decode a base stream and find the places the attacks splice at. */
export async function baseStream(bytes: Uint8Array): Promise<BaseStream> {
  const records: MigrationRecord[] = [];
  for await (const r of decodeMigration(bytesReader(bytes))) records.push(r);
  const start = records.find((r) => r.kind === "section-start") as SectionHeaderRecord;
  const memSize = records.find((r) => r.kind === "ram-mem-size")!;
  const vmemBlock = memSize.kind === "ram-mem-size"
    ? memSize.blocks.find((b) => b.idstr.endsWith("mem") && b.idstr.includes("/"))!.idstr
    : "";
  const endOf = (header: SectionHeaderRecord): number => {
    const i = records.indexOf(header);
    const f = records.slice(i + 1).find((r) => r.kind === "section-footer")!;
    return f.streamOffset + 5;
  };
  const fulls = records.filter((r): r is SectionHeaderRecord => r.kind === "section-full");
  const device = fulls.find((r) => r.idstr.endsWith("/virtio-mem"))!;
  const next = fulls[fulls.indexOf(device) + 1]!;
  const earlyHeader = fulls.find((r) => r.idstr.endsWith("/virtio-mem-device-early"));
  const earlyBody = records.find((r): r is VirtioMemEarlyRecord => r.kind === "virtio-mem-early");
  const late = records.find((r) => r.kind === "virtio-mem-device");
  const wire = earlyBody?.bitmap ??
    (late?.kind === "virtio-mem-device" ? late.state.bitmap : undefined);
  const blockSize = earlyBody?.blockSize ??
    (late?.kind === "virtio-mem-device" ? late.state.blockSize : undefined) ?? ATTACK_BLOCK_SIZE;
  const blocks = (earlyBody?.regionSize ??
    (late?.kind === "virtio-mem-device" ? late.state.regionSize : undefined) ?? 0) / blockSize;
  const plugged = (i: number) =>
    wire !== undefined && ((wire[8 * (i >>> 6) + 7 - ((i & 63) >>> 3)]! >>> (i & 7)) & 1) === 1;
  let block = ATTACK_BLOCK < blocks && !plugged(ATTACK_BLOCK) ? ATTACK_BLOCK : -1;
  for (let i = 0; block < 0 && i < blocks; i++) if (!plugged(i)) block = i;
  return {
    bytes,
    records,
    ramId: start.sectionId,
    vmemBlock,
    device,
    afterDevice: endOf(device),
    next: { header: next, end: endOf(next) },
    early: earlyHeader && earlyBody
      ? { header: earlyHeader, body: earlyBody, end: endOf(earlyHeader) }
      : undefined,
    vmdesc: records.find((r): r is VmdescRecord => r.kind === "vmdesc")!,
    eofAt: records.find((r) => r.kind === "eof")!.streamOffset,
    attackOffset: block * blockSize + 0x3000,
  };
}

/** Encode records into bytes (a fresh encoder: the first page record must name its block). */
export function encodeRecords(records: readonly MigrationRecord[]): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  const enc = new MigrationEncoder(new ByteWriter((c) => void parts.push(c.slice())));
  for (const r of records) enc.write(r);
  void enc.flush();
  return concat(parts);
}

/** Concatenate byte arrays. */
export const concat = concatBytes;

/** Big-endian 32-bit bytes. */
export function be32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

/** Big-endian 64-bit bytes (`n` a safe integer). */
export function be64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

/** A counted string as QEMU writes idstrs: a length byte, then the bytes (latin1, NULs kept). */
export function cstr8(s: string): Uint8Array {
  return concat([new Uint8Array([s.length]), Uint8Array.from(s, (c) => c.charCodeAt(0))]);
}

/** Insert `piece` at stream offset `at`. */
export function splice(bytes: Uint8Array, at: number, piece: Uint8Array): Uint8Array<ArrayBuffer> {
  return concat([bytes.subarray(0, at), piece, bytes.subarray(at)]);
}

/**
 * The base stream with `piece` inserted at stream offset `at` (before EOF)
 * and the vmdesc replaced by `parsed`.
 */
export function withVmdesc(
  base: BaseStream,
  parsed: unknown,
  insert: { at: number; piece: Uint8Array } = { at: base.eofAt, piece: new Uint8Array(0) },
): Uint8Array<ArrayBuffer> {
  const json = new TextEncoder().encode(JSON.stringify(parsed));
  const { at, piece } = insert;
  return concat([
    base.bytes.subarray(0, at),
    piece,
    base.bytes.subarray(at, base.eofAt + 1),
    new Uint8Array([0x06]),
    be32(json.byteLength),
    json,
  ]);
}

/** The vmdesc's device list, as a deep copy to edit. */
// deno-lint-ignore no-explicit-any
export function vmdescCopy(base: BaseStream): { devices: any[] } {
  return JSON.parse(new TextDecoder().decode(base.vmdesc.json));
}

/** The records of a `ram` section body carrying the attack page, then EOS. */
export function pageRecords(base: BaseStream, tag: string): MigrationRecord[] {
  return [
    {
      kind: "ram-page",
      streamOffset: 0,
      ramBlock: base.vmemBlock,
      ramOffset: base.attackOffset,
      continued: false,
      data: attackPage(tag),
    },
    { kind: "ram-eos", streamOffset: 0 },
  ];
}

/** A section header record (only the fields the encoder writes matter). */
export function header(
  kind: SectionHeaderRecord["kind"],
  sectionId: number,
  idstr: string,
  versionId: number,
): SectionHeaderRecord {
  return { kind, streamOffset: 0, sectionId, idstr, instanceId: 0, versionId };
}

/** A `ram` PART section with the attack page. */
function ramPart(base: BaseStream, tag: string): Uint8Array<ArrayBuffer> {
  return encodeRecords([
    header("section-part", base.ramId, "ram", 4),
    ...pageRecords(base, tag),
    { kind: "section-footer", streamOffset: 0, sectionId: base.ramId },
  ]);
}

/** A FULL `ram` section (QEMU loads it like START) with the attack page, under section id `id`. */
function ramFull(base: BaseStream, tag: string, id: number): Uint8Array<ArrayBuffer> {
  return encodeRecords([
    header("section-full", id, "ram", 4),
    ...pageRecords(base, tag),
    { kind: "section-footer", streamOffset: 0, sectionId: id },
  ]);
}

/** The attacks, by name. Each returns the crafted stream. */
export const ATTACKS = {
  /** A `ram` PART section with the page, right after the `P/virtio-mem` section (issue 9's finding). */
  "ram-part-after-device": (base: BaseStream) =>
    splice(base.bytes, base.afterDevice, ramPart(base, "EVIL-PART")),

  /** A FULL `ram` section with the page in the tail. */
  "ram-full-in-tail": (base: BaseStream) =>
    splice(base.bytes, base.afterDevice, ramFull(base, "EVIL-FULL", 0x7fff)),

  /**
   * A PACKAGED command in the tail whose blob is a `ram` PART section with
   * the page and QEMU_VM_EOF (which ends the nested load cleanly).
   */
  "packaged-in-tail": (base: BaseStream) => {
    const blob = concat([ramPart(base, "EVIL-PACKAGED"), new Uint8Array([0x00])]);
    const command = concat([new Uint8Array([0x08, 0x00, 0x07, 0x00, 0x04]), be32(blob.byteLength)]);
    return splice(base.bytes, base.afterDevice, concat([command, blob]));
  },

  /**
   * The swallow: after the section that follows `P/virtio-mem`, a FULL `ram`
   * section under that section's id (so its footer is that section's footer
   * again), and the vmdesc claims the section's body runs to there.
   */
  "swallow-by-vmdesc": (base: BaseStream) => {
    const hidden = ramFull(base, "EVIL-SWALLOW", base.next.header.sectionId);
    const vmdesc = vmdescCopy(base);
    const entry = vmdesc.devices.find((d) => d.name === base.next.header.idstr)!;
    entry.fields = [...(entry.fields ?? []), {
      name: "unused",
      type: "buffer",
      size: hidden.byteLength,
    }];
    return withVmdesc(base, vmdesc, { at: base.next.end, piece: hidden });
  },

  /** 100 MB of junk (QEMU_VM_EOF, then random bytes) right after `P/virtio-mem`. */
  "junk-in-tail": (base: BaseStream) => {
    const junk = new Uint8Array(100_000_000);
    let x = 0x12345678;
    for (let i = 0; i < junk.byteLength; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      junk[i] = x;
      junk[i + 1] = x >>> 8;
      junk[i + 2] = x >>> 16;
      junk[i + 3] = x >>> 24;
    }
    junk[0] = 0x00;
    return splice(base.bytes, base.afterDevice, junk);
  },

  /** The vmdesc names the `P/virtio-mem` section differently (QEMU never reads the vmdesc). */
  "vmdesc-renamed": (base: BaseStream) => {
    const vmdesc = vmdescCopy(base);
    const entry = vmdesc.devices.find((d) => d.name === base.device.idstr)!;
    entry.name = entry.name.replace(/\/virtio-mem$/, "/virtio-mex");
    return withVmdesc(base, vmdesc);
  },

  /** No vmdesc: the stream ends at QEMU_VM_EOF. */
  "no-vmdesc": (base: BaseStream) => base.bytes.slice(0, base.eofAt + 1),

  /**
   * A second early section for the device, before any RAM, whose bitmap
   * unplugs one more block (`ATTACK_UNPLUGGED_BLOCK`, plugged in the first);
   * the vmdesc describes it, so the device state adds up.
   */
  "two-early-sections": (base: BaseStream) => {
    const vmdesc = vmdescCopy(base);
    let first: { header: SectionHeaderRecord; body: VirtioMemEarlyRecord };
    let at: number;
    let pieces: MigrationRecord[] = [];
    if (base.early !== undefined) {
      first = base.early;
      at = base.early.end;
      const i = vmdesc.devices.findIndex((d) => d.name === first.header.idstr);
      vmdesc.devices.splice(i + 1, 0, structuredClone(vmdesc.devices[i]));
    } else {
      // QEMU 7.2 has no early sections: make them from the device section's late-layout state.
      const late = base.records.find((r) => r.kind === "virtio-mem-device")!;
      if (late.kind !== "virtio-mem-device" || late.state.bitmap === undefined) {
        throw new Error("the base stream has no late-layout device section");
      }
      const s = late.state;
      const idstr = `${late.devicePath}/virtio-mem-device-early`;
      first = {
        header: header("section-full", 0x7ffe, idstr, 1),
        body: {
          kind: "virtio-mem-early",
          streamOffset: 0,
          devicePath: late.devicePath,
          gpa: s.gpa!,
          regionSize: s.regionSize!,
          blockSize: s.blockSize!,
          node: s.node!,
          size: s.size!,
          bitmap: s.bitmap!,
        },
      };
      const start = base.records.find((r) => r.kind === "section-start")!;
      const startFooter = base.records.find((r) =>
        r.kind === "section-footer" && r.streamOffset > start.streamOffset
      )!;
      at = startFooter.streamOffset + 5;
      pieces = [
        first.header,
        first.body,
        { kind: "section-footer", streamOffset: 0, sectionId: first.header.sectionId },
      ];
      const entry = {
        name: idstr,
        instance_id: 0,
        vmsd_name: "virtio-mem-device-early",
        version: 1,
        fields: [{ name: "state", type: "buffer", size: 36 + s.bitmap!.byteLength }],
      };
      vmdesc.devices.splice(0, 0, entry, structuredClone(entry));
    }
    const bitmap = first.body.bitmap.slice();
    const i = ATTACK_UNPLUGGED_BLOCK;
    bitmap[8 * (i >>> 6) + 7 - ((i & 63) >>> 3)]! &= ~(1 << (i & 7));
    const second: VirtioMemEarlyRecord = {
      ...first.body,
      size: first.body.size - first.body.blockSize,
      bitmap,
    };
    const piece = encodeRecords([
      ...pieces,
      first.header,
      second,
      { kind: "section-footer", streamOffset: 0, sectionId: first.header.sectionId },
    ]);
    return withVmdesc(base, vmdesc, { at, piece });
  },
} as const;

/** The block the second early section unplugs (plugged in the holes shape: blocks 0-13 and 64-99). */
export const ATTACK_UNPLUGGED_BLOCK = 64;

/** Names of the attacks. */
export type AttackName = keyof typeof ATTACKS;
