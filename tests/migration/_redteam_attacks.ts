/**
 * Red-team attacks on the verifier (issue 9: "think like an attacker of your
 * own verifier"), each built from a real QEMU stream by splicing bytes where
 * QEMU's loader reads them. They exploit how QEMU's loader (not the stream's
 * looks) decides what a section is and what the RAMBlock list means:
 *
 * - idstrs: QEMU compares a section idstr as a C string (`ram\0x` is `ram`)
 *   and also accepts a device's vmstate name without its device path (its
 *   compat entry: `virtio-mem` is the virtio-mem device); migration/savevm.c
 *   `find_se`. Any instance id matches a device's alias id −1.
 * - block lists: QEMU accepts another `ram` START section with another
 *   MEM_SIZE list at any time and keeps its plug state; the list need not
 *   name every RAMBlock (migration/ram.c `ram_load_precopy`, `parse_ramblocks`).
 *
 * Every attack uses the tiny guest's holes shape (blocks 0-13 and 64-99
 * plugged, a marker page "DATA block=NNN" in each): it injects the page of
 * {@linkcode ATTACK_PAGE_GPA} (block 39, unplugged), or restates the plug
 * state with block {@linkcode ATTACK_UNPLUGGED_BLOCK} (plugged) unplugged.
 *
 * @module
 */

import type { MigrationRecord, VirtioMemEarlyRecord } from "../../src/migration/types.ts";
import { MIG_CMD_POSTCOPY_ADVISE, QEMU_VM_COMMAND } from "../../src/migration/constants.ts";
import {
  ATTACK_UNPLUGGED_BLOCK,
  type BaseStream,
  be32,
  concat,
  encodeRecords,
  header,
  pageRecords,
  splice,
  vmdescCopy,
  withVmdesc,
} from "./_device_state_attacks.ts";

/** Bytes of a FULL section (header, body, footer); the idstr is written byte for byte (latin1). */
export function fullSection(
  sectionId: number,
  idstr: string,
  instanceId: number,
  versionId: number,
  body: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const name = Uint8Array.from(idstr, (c) => c.charCodeAt(0));
  return concat([
    new Uint8Array([0x04]),
    be32(sectionId),
    new Uint8Array([name.byteLength]),
    name,
    be32(instanceId),
    be32(versionId),
    body,
    new Uint8Array([0x7e]),
    be32(sectionId),
  ]);
}

/**
 * A copy of a wire bitmap (be64 words) with device block `i` cleared, and
 * how many bytes that unplugs (0 when the block is not plugged there, as in
 * the bundled stream, whose device has nothing plugged: the restatement then
 * repeats the plug state, which is enough to test how it is named).
 */
function unplugBit(wire: Uint8Array, i: number, blockSize: number) {
  const out = wire.slice();
  const at = 8 * (i >>> 6) + 7 - ((i & 63) >>> 3);
  const was = ((out[at] ?? 0) >>> (i & 7)) & 1;
  if (was === 1) out[at]! &= ~(1 << (i & 7));
  return { wire: out, unplugged: was * blockSize };
}

/**
 * The plug state restated with {@linkcode ATTACK_UNPLUGGED_BLOCK} unplugged:
 * the body of the section that states it (the early section's body in the
 * early layout, a copy of the `P/virtio-mem` body in the late layout), the
 * idstr QEMU writes for it and its vmstate name.
 */
function restatedPlugState(base: BaseStream): { body: Uint8Array; idstr: string; vmsd: string } {
  const i = ATTACK_UNPLUGGED_BLOCK;
  if (base.early !== undefined) {
    const e = base.early.body;
    const { wire, unplugged } = unplugBit(e.bitmap, i, e.blockSize);
    const restated: VirtioMemEarlyRecord = { ...e, size: e.size - unplugged, bitmap: wire };
    return {
      body: encodeRecords([restated]),
      idstr: base.early.header.idstr,
      vmsd: "virtio-mem-device-early",
    };
  }
  const device = base.records.find((r) => r.kind === "virtio-mem-device");
  if (device?.kind !== "virtio-mem-device" || device.state.bitmap === undefined) {
    throw new Error("the base stream has no late-layout device section");
  }
  // Late layout: addr, region, block size (8 each), node (4), usable, size, requested (8 each), bitmap.
  const body = device.data.slice();
  const fields = device.state.fieldsOffset;
  const { wire, unplugged } = unplugBit(device.state.bitmap, i, device.state.blockSize!);
  body.set(wire, fields + 52);
  const view = new DataView(body.buffer);
  view.setBigUint64(fields + 36, BigInt(device.state.size! - unplugged));
  return { body, idstr: base.device.idstr, vmsd: "virtio-mem" };
}

/** A FULL section right after `P/virtio-mem`, and a vmdesc entry that describes it. */
function inTail(
  base: BaseStream,
  section: { idstr: string; versionId: number; vmsd: string; body: Uint8Array },
  sectionId = 0x7ffe,
  instanceId = 0,
): Uint8Array<ArrayBuffer> {
  const bytes = fullSection(sectionId, section.idstr, instanceId, section.versionId, section.body);
  const vmdesc = vmdescCopy(base);
  const at = vmdesc.devices.findIndex((d) => d.name === base.device.idstr);
  vmdesc.devices.splice(at + 1, 0, {
    name: section.idstr,
    instance_id: instanceId,
    vmsd_name: section.vmsd,
    version: section.versionId,
    fields: [{ name: "data", type: "buffer", size: section.body.byteLength }],
  });
  return withVmdesc(base, vmdesc, { at: base.afterDevice, piece: bytes });
}

/**
 * The swallow (see `swallow-by-vmdesc`): `hidden(id)` is a FULL section under
 * the id of the section after `P/virtio-mem`, placed after that section's
 * footer, and the vmdesc claims that section's body runs over it.
 */
function swallowed(
  base: BaseStream,
  hidden: (id: number) => Uint8Array,
): Uint8Array<ArrayBuffer> {
  const piece = hidden(base.next.header.sectionId);
  const vmdesc = vmdescCopy(base);
  const entry = vmdesc.devices.find((d) => d.name === base.next.header.idstr)!;
  entry.fields = [...(entry.fields ?? []), { name: "unused", type: "buffer", size: piece.length }];
  return withVmdesc(base, vmdesc, { at: base.next.end, piece });
}

/** The body of a `ram` section with the attack page, then EOS. */
function ramBody(base: BaseStream, tag: string): Uint8Array<ArrayBuffer> {
  return encodeRecords(pageRecords(base, tag));
}

/** The idstr attacks, by name. Each returns the crafted stream. */
export const IDSTR_ATTACKS = {
  /** A FULL section `ram\0x` with the page after `P/virtio-mem`: QEMU loads it as `ram`. */
  "nul-ram-in-tail": (base: BaseStream) =>
    inTail(base, { idstr: "ram\0x", versionId: 4, vmsd: "ram", body: ramBody(base, "EVIL-NUL") }),

  /** The plug state restated after `P/virtio-mem` under its idstr plus a NUL byte. */
  "nul-plug-state-in-tail": (base: BaseStream) => {
    const s = restatedPlugState(base);
    return inTail(base, { ...s, idstr: `${s.idstr}\0`, versionId: 1 });
  },

  /** The plug state restated after `P/virtio-mem` under its compat idstr (the vmstate name alone). */
  "compat-plug-state-in-tail": (base: BaseStream) => {
    const s = restatedPlugState(base);
    return inTail(base, { ...s, idstr: s.vmsd, versionId: 1 });
  },

  /** The swallow hiding a FULL `ram\0x` section with the page. */
  "swallow-nul-ram": (base: BaseStream) =>
    swallowed(base, (id) => fullSection(id, "ram\0x", 0, 4, ramBody(base, "EVIL-SWALLOW-NUL"))),

  /** The swallow hiding the plug state restated under its compat idstr. */
  "swallow-compat-plug-state": (base: BaseStream) => {
    const s = restatedPlugState(base);
    return swallowed(base, (id) => fullSection(id, s.vmsd, 0, 1, s.body));
  },

  /**
   * The plug state restated after `P/virtio-mem` under its own idstr with
   * instance id 0xffffffff: QEMU's loader matches it to the device's alias
   * id −1, so the instance id does not make it another device.
   */
  "alias-instance-plug-state": (base: BaseStream) => {
    const s = restatedPlugState(base);
    return inTail(base, { ...s, versionId: 1 }, 0x7ffe, 0xffff_ffff);
  },

  /**
   * A subsection of the `P/virtio-mem` body renamed `virtio/64bit_features\0`
   * (its vmdesc entry too): QEMU looks subsections up as C strings and loads
   * it as before. Harmless in itself; a name the decoder cannot look up sent
   * it to the footer search, a second way to read the body (refused now).
   */
  "nul-subsection-name": (base: BaseStream) => {
    const name = "virtio/64bit_features";
    const device = base.records.find((r) => r.kind === "virtio-mem-device")!;
    if (device.kind !== "virtio-mem-device") throw new Error("no device section");
    const needle = Uint8Array.from(
      `\x05${String.fromCharCode(name.length)}${name}`,
      (c) => c.charCodeAt(0),
    );
    const at = indexOf(device.data, needle);
    if (at < 0) throw new Error(`no subsection ${name}`);
    const body = concat([
      device.data.subarray(0, at),
      new Uint8Array([0x05, name.length + 1]),
      needle.subarray(2),
      new Uint8Array([0]),
      device.data.subarray(at + needle.length),
    ]);
    // QEMU describes the whole virtio state as one field: one byte more.
    const vmdesc = vmdescCopy(base);
    const entry = vmdesc.devices.find((d) => d.name === base.device.idstr)!;
    entry.fields[entry.fields.length - 1].size += 1;
    const json = new TextEncoder().encode(JSON.stringify(vmdesc));
    return concat([
      base.bytes.subarray(0, device.streamOffset),
      body,
      base.bytes.subarray(device.streamOffset + device.data.byteLength, base.eofAt + 1),
      new Uint8Array([0x06]),
      be32(json.byteLength),
      json,
    ]);
  },
} as const;

/** First index of `needle` in `hay`, or -1. */
function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  for (let i = hay.indexOf(needle[0]!); i >= 0; i = hay.indexOf(needle[0]!, i + 1)) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/** Names of the idstr attacks. */
export type IdstrAttackName = keyof typeof IDSTR_ATTACKS;

/** The MEM_SIZE record of the base stream. */
function memSizeOf(base: BaseStream): MigrationRecord & { kind: "ram-mem-size" } {
  const r = base.records.find((x) => x.kind === "ram-mem-size");
  if (r?.kind !== "ram-mem-size") throw new Error("no MEM_SIZE list");
  return r;
}

/** Stream offset of the first `ram` PART section (after the early sections, when there are). */
function firstRamPart(base: BaseStream): number {
  return base.records.find((r) => r.kind === "section-part")!.streamOffset;
}

/**
 * Before the first `ram` PART section: another START of `ram` (same section id,
 * as QEMU routes the later PART sections by it) with the block list
 * `blocks`, and a PART with the attack page, in the order `order`.
 */
function secondList(
  base: BaseStream,
  blocks: (memSize: MigrationRecord & { kind: "ram-mem-size" }) => MigrationRecord[],
  order: "page-first" | "list-first",
  tag: string,
): Uint8Array<ArrayBuffer> {
  const id = base.ramId;
  const list = encodeRecords([
    header("section-start", id, "ram", 4),
    ...blocks(memSizeOf(base)),
    { kind: "ram-eos", streamOffset: 0 },
    { kind: "section-footer", streamOffset: 0, sectionId: id },
  ]);
  const page = encodeRecords([
    header("section-part", id, "ram", 4),
    ...pageRecords(base, tag),
    { kind: "section-footer", streamOffset: 0, sectionId: id },
  ]);
  return splice(
    base.bytes,
    firstRamPart(base),
    concat(order === "list-first" ? [list, page] : [page, list]),
  );
}

/** The base stream without its `P/virtio-mem` section (and its vmdesc entry). */
function withoutDeviceSection(base: BaseStream, bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const vmdesc = vmdescCopy(base);
  vmdesc.devices = vmdesc.devices.filter((d) => d.name !== base.device.idstr);
  const json = new TextEncoder().encode(JSON.stringify(vmdesc));
  const grown = bytes.byteLength - base.bytes.byteLength; // what was spliced in before the tail
  return concat([
    bytes.subarray(0, base.device.streamOffset + grown),
    bytes.subarray(base.afterDevice + grown, base.eofAt + grown + 1),
    new Uint8Array([0x06]),
    be32(json.byteLength),
    json,
  ]);
}

/** The block-list attacks, by name. Each returns the crafted stream. */
export const MEM_SIZE_ATTACKS = {
  /**
   * The same block list again in a second `ram` START section, with the
   * attack page where the verifier used to forget it: before the repeated
   * list in the late layout (the pages it held were dropped), after it in the
   * early layout (the early plug state was dropped).
   */
  "repeated-list": (base: BaseStream) =>
    secondList(
      base,
      (m) => [m],
      base.early === undefined ? "page-first" : "list-first",
      "EVIL-MEMSIZE",
    ),

  /**
   * As `repeated-list` (early layout), and without the `P/virtio-mem`
   * section: QEMU then never runs the device's post-load discard of
   * unplugged memory, so the page stays where it landed.
   */
  "repeated-list-no-device-section": (base: BaseStream) =>
    withoutDeviceSection(
      base,
      secondList(base, (m) => [m], "list-first", "EVIL-MEMSIZE-KEPT"),
    ),

  /** A second list that leaves the virtio-mem RAMBlock out (QEMU needs no block listed). */
  "list-without-vmem-block": (base: BaseStream) =>
    secondList(
      base,
      (m) => {
        const blocks = m.blocks.filter((b) => b.idstr !== base.vmemBlock);
        const vmem = m.blocks.find((b) => b.idstr === base.vmemBlock)!;
        return [{ ...m, blocks, totalBytes: m.totalBytes - vmem.usedLength }];
      },
      "list-first",
      "EVIL-MEMSIZE-PARTIAL",
    ),

  /** A second list that gives the virtio-mem RAMBlock another length. */
  "list-resizes-vmem-block": (base: BaseStream) =>
    secondList(
      base,
      (m) => {
        const blocks = m.blocks.map((b) =>
          b.idstr === base.vmemBlock ? { ...b, usedLength: b.usedLength / 2 } : b
        );
        const vmem = m.blocks.find((b) => b.idstr === base.vmemBlock)!;
        return [{ ...m, blocks, totalBytes: m.totalBytes - vmem.usedLength / 2 }];
      },
      "list-first",
      "EVIL-MEMSIZE-RESIZED",
    ),
} as const;

/** Names of the block-list attacks. */
export type MemSizeAttackName = keyof typeof MEM_SIZE_ATTACKS;

/** A copy of a FULL section (header to footer) under section id `id`. */
function underId(section: Uint8Array, id: number): Uint8Array<ArrayBuffer> {
  const out = section.slice();
  out.set(be32(id), 1);
  out.set(be32(id), out.byteLength - 4);
  return out;
}

/** A FULL `ram` section with the attack page under section id `id`. */
function ramFullSection(base: BaseStream, id: number, tag: string): Uint8Array<ArrayBuffer> {
  return fullSection(id, "ram", 0, 4, ramBody(base, tag));
}

/**
 * The swallow with a link between the device that ends early and the hidden
 * RAM: QEMU reads on over anything it accepts, so the footer right after
 * the device's real body need not be followed by the RAM itself.
 */
export const SWALLOW_CHAIN_ATTACKS = {
  /**
   * The section after `P/virtio-mem` once more, under a fresh section id
   * (QEMU accepts any id for a FULL section: it only checks that the footer
   * repeats it, and loads the device twice), then the FULL `ram` section.
   */
  "swallow-via-fresh-id": (base: BaseStream) =>
    swallowed(base, (id) =>
      concat([
        underId(base.bytes.subarray(base.next.header.streamOffset, base.next.end), 0x7777),
        ramFullSection(base, id, "EVIL-SWALLOW-ID"),
      ])),

  /**
   * A POSTCOPY_ADVISE command without payload (harmless to a destination
   * without postcopy; commands have no footer), then the FULL `ram` section.
   */
  "swallow-via-command": (base: BaseStream) =>
    swallowed(base, (id) =>
      concat([
        new Uint8Array([QEMU_VM_COMMAND, 0, MIG_CMD_POSTCOPY_ADVISE, 0, 0]),
        ramFullSection(base, id, "EVIL-SWALLOW-CMD"),
      ])),
} as const;

/** Names of the swallow-chain attacks. */
export type SwallowChainAttackName = keyof typeof SWALLOW_CHAIN_ATTACKS;
