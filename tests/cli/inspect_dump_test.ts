/**
 * `inspect` of dumps and libvirt images, checked against independent
 * readers of the same files: readelf's program headers and notes for ELF,
 * makedumpfile's own kdump output (zlib, `-d 1`) against the ELF it was made
 * from, our provenance note after a real strip, the plug overlay against the
 * scenario's plug map, and a libvirt image's header against the values it
 * was built with. Usage mistakes exit 2, bad input 1. Every JSON report is
 * checked against schemas/inspect-report.schema.json.
 */

import assert from "node:assert/strict";
import { buildLibvirtSaveHeader, QEMU_SAVE_FORMAT_RAW } from "../../src/container/libvirt_save.ts";
import { openPositional } from "../../src/io/positional.ts";
import { subtractGpaRanges } from "../../src/vmem/ranges.ts";
import { runCli } from "../_util/cli.ts";
import { assertReport } from "../_util/report_schema.ts";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { realdata, realdataAvailable } from "../_util/realdata.ts";
import { requireTool, runTool, toolAvailable } from "../_util/tools.ts";
import { parseReadelfLoads } from "../elf/_helpers.ts";
import { pluggedRanges, plugMapJson, REGION, unpluggedRanges } from "../elf/_realdata.ts";

const SCENARIO = "s3-malicious";
const B = 4096;

function total(list: Array<{ byteLength: number }>): number {
  return list.reduce((n, r) => n + r.byteLength, 0);
}

async function inspectJson(args: string[]) {
  const r = await runCli(["inspect", ...args, "--json"]);
  assert.equal(r.code, 0, r.err);
  // deno-lint-ignore no-explicit-any
  return assertReport(r.out, "inspect") as any;
}

Deno.test({
  name:
    "inspect of a real QEMU 7.2 ELF dump, its whole-region variant and makedumpfile's kdump of it: headers, ranges, notes, VMCOREINFO and plug state agree with readelf, the ELF and the plug map",
  ignore: !realdataAvailable("out-small") || !toolAvailable("readelf", "makedumpfile"),
  fn: async () => {
    requireTool("readelf");
    requireTool("makedumpfile");
    const elf = await realdata("out-small", `${SCENARIO}.elf`);
    const raw = await realdata("out-small", `${SCENARIO}.vmem0.raw`);
    const dir = await Deno.makeTempDir({ prefix: "vmem-inspect-dump-" });
    try {
      const pm = `${dir}/pm.json`;
      await Deno.writeTextFile(pm, plugMapJson(SCENARIO));

      // QEMU's own ELF (7.2 layout, unplugged memory already left out).
      const d = await inspectJson([elf, "--plugmap", pm]);
      assert.equal(d.kind, "inspect-report");
      assert.equal(d.input.format, "elf");
      assert.equal(d.input.container, null);
      assert.equal(d.layout, "qemu");
      const re = await runTool("readelf", ["-lW", elf]);
      const loads = parseReadelfLoads(re.stdout).loads;
      assert.deepEqual(
        d.loads.map((l: { gpa: number; fileOffset: number; fileByteLength: number }) => [
          l.gpa,
          l.fileOffset,
          l.fileByteLength,
        ]),
        loads.map((l) => [l.paddr, l.fileOffset, l.fileByteLength]),
      );
      // The release as `strings` would find it in the notes (independent of our note parser).
      using head = await openPositional(elf);
      const first = new Uint8Array(1 << 16);
      await head.readInto(0, first);
      const release = /OSRELEASE=([^\s]+)/.exec(new TextDecoder("latin1").decode(first))?.[1];
      assert.ok(release);
      assert.equal(d.vmcoreinfo.release, release);
      assert.equal(d.vmcoreinfo.pageSize, B);
      assert.equal(d.vmcoreinfo.pgOffline.key, "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)");
      assert.equal(d.provenance, null);
      assert.equal(d.memoryByPlugState.pluggedByteLength, total(pluggedRanges(SCENARIO)));
      assert.equal(
        d.memoryByPlugState.unpluggedByteLength,
        0,
        "QEMU >= 6.2 leaves unplugged memory out",
      );
      assert.equal(d.memoryByPlugState.pluggedAbsentByteLength, 0);

      // The whole-region variant (as QEMU < 6.2 wrote it): the unplugged blocks are in it.
      const whole = `${dir}/whole.elf`;
      await writeWholeRegionElf(elf, raw, REGION, whole);
      const w = await inspectJson([whole, "--plugmap", pm]);
      assert.equal(w.layout, "classic");
      assert.deepEqual(w.memoryByPlugState.unplugged, unpluggedRanges(SCENARIO));
      const text = await runCli(["inspect", whole, "--plugmap", pm]);
      assert.match(text.out, /unplugged memory in the dump: [\d,]+ bytes \(strip removes it\)/);

      // makedumpfile's kdump of it (zlib, zero pages excluded), then our strip of that.
      const kdump = `${dir}/mk.kdump`;
      const mk = await runTool("makedumpfile", ["-c", "-d", "1", whole, kdump], {
        timeoutMs: 300_000,
      });
      assert.equal(mk.code, 0, mk.stderr);
      const k = await inspectJson([kdump, "--plugmap", pm]);
      assert.equal(k.input.format, "kdump");
      assert.equal(k.input.container, "raw");
      assert.equal(k.compression, "zlib");
      assert.equal(k.subHeader.dumpLevel, 1);
      assert.deepEqual(k.dumpLevelExcludes, ["zero pages"]);
      assert.equal(k.vmcoreinfo.release, release);
      assert.equal(k.header.utsname.release, release);
      assert.deepEqual(k.present, w.memory, "1st bitmap = the ELF's memory");
      assert.equal(k.presentPages, total(w.memory) / B);
      // makedumpfile -d 1 keeps zero pages in the 2nd bitmap (descriptors of one shared zero
      // page) and leaves out the pages the guest marked PG_offline: virtio-mem's unplugged
      // blocks inside memory the guest had added. So whatever it left out is unplugged memory.
      assert.equal(k.excludedPages, k.presentPages - k.dumpedPages);
      assert.equal(total(k.dumped), k.dumpedPages * B);
      const leftOut = subtractGpaRanges(k.present, k.dumped);
      assert.equal(total(leftOut), k.excludedPages * B);
      assert.deepEqual(subtractGpaRanges(leftOut, unpluggedRanges(SCENARIO)), []);
      assert.deepEqual(k.memoryByPlugState.unplugged, unpluggedRanges(SCENARIO));

      const stripped = `${dir}/stripped.kdump`;
      const s = await runCli(["strip", kdump, stripped, "--plugmap", pm]);
      assert.equal(s.code, 0, s.err);
      const st = await inspectJson([stripped, "--plugmap", pm]);
      assert.equal(st.memoryByPlugState.unpluggedByteLength, 0);
      assert.equal(st.provenance.steps.length, 1);
      assert.deepEqual(st.provenance.steps[0].removed, unpluggedRanges(SCENARIO));
      assert.equal(st.provenance.steps[0].reason, "unplugged virtio-mem blocks");
      const stText = await runCli(["inspect", stripped]);
      assert.match(
        stText.out,
        /strip -> kdump: removed [\d,]+ bytes \(unplugged virtio-mem blocks\)/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("inspect of a libvirt save image shows its header before the stream report", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-inspect-libvirt-" });
  try {
    const stream = await Deno.readFile(
      new URL("../../testdata/migration/q72-qboot-unplugged.mig", import.meta.url),
    );
    const xml = "<domain type='kvm'><name>guest1</name><uuid>1234</uuid></domain>";
    const header = buildLibvirtSaveHeader({
      xml,
      cookie: "<cookie/>",
      compression: QEMU_SAVE_FORMAT_RAW,
      wasRunning: 1,
    });
    const image = new Uint8Array(header.headerBytes.length + stream.length);
    image.set(header.headerBytes);
    image.set(stream, header.headerBytes.length);
    await Deno.writeFile(`${dir}/guest.save`, image);
    const j = await inspectJson([`${dir}/guest.save`]);
    assert.equal(j.input.container, "libvirt-save");
    assert.equal(j.input.libvirt.xml, xml);
    assert.equal(j.input.libvirt.cookie, "<cookie/>");
    assert.equal(j.input.libvirt.compression, "raw");
    assert.equal(j.input.libvirt.wasRunning, true);
    assert.equal(j.input.libvirt.headerByteLength, header.headerBytes.length);
    assert.equal(j.machineType, "pc-q35-7.2", "the stream report follows");
    const t = await runCli(["inspect", `${dir}/guest.save`]);
    assert.match(t.out, /^libvirt: {2}LibvirtQemudSave version 2 .*payload raw, was running/);
    assert.match(t.out, /\ndomain: {3}guest1 1234, XML \d+ chars, cookie 9 chars\n/);
    assert.match(t.out, /\nheader: {3}QEVM version 3, machine pc-q35-7.2\n/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("inspect --base: a raw image with a plug map; usage mistakes exit 2, bad dumps exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-inspect-raw-" });
  try {
    await Deno.writeFile(`${dir}/img`, new Uint8Array(3 * 0x20_0000));
    await Deno.writeTextFile(`${dir}/pm.json`, plugMapJson(SCENARIO));
    const j = await inspectJson([
      `${dir}/img`,
      "--base",
      "0x100000000",
      "--plugmap",
      `${dir}/pm.json`,
    ]);
    assert.equal(j.input.format, "raw");
    assert.equal(j.input.baseGpa, 0x1_0000_0000);
    assert.deepEqual(j.memory, [{ gpa: 0x1_0000_0000, byteLength: 3 * 0x20_0000 }]);
    assert.equal(j.memoryByPlugState.pluggedByteLength, 3 * 0x20_0000);
    assert.equal(
      j.memoryByPlugState.pluggedAbsentByteLength,
      total(pluggedRanges(SCENARIO)) - 3 * 0x20_0000,
    );
    const mig = new URL("../../testdata/migration/q72-qboot-unplugged.mig", import.meta.url)
      .pathname;
    const elfHead = new Uint8Array(64);
    elfHead.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
    await Deno.writeFile(`${dir}/cut.elf`, elfHead.subarray(0, 40));
    const cases: Array<[string[], number, RegExp]> = [
      [["inspect", "-", "--base", "0"], 2, /needs a file/],
      [["inspect", mig, "--plugmap", `${dir}/pm.json`], 2, /apply to dumps/],
      [["inspect", `${dir}/img`, "--base", "zz"], 2, /--base/],
      [
        ["inspect", `${dir}/img`, "--base", "0", "--plugmap", "a", "--plugmap-from", "b"],
        2,
        /either --plugmap or --plugmap-from/,
      ],
      [["inspect", `${dir}/cut.elf`], 1, /offset 0x/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, code, `${args.join(" ")}: ${r.err}`);
      assert.match(r.err, message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
