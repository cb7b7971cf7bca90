/**
 * Strip real QEMU dumps (7.2 `out-small` with VMCOREINFO, 10.0 `out-q10`)
 * and check the output through paths that do not use our reader: readelf,
 * od, gdb, makedumpfile, the pmemsave image of the region, plain file reads.
 */
import assert from "node:assert/strict";
import {
  decodePrstatus,
  decodeQemuCpuState,
  parseVmcoreinfo,
  readElfCore,
  stripElf,
} from "../../src/elf/mod.ts";
import { loadPlugState } from "../../src/input/load_plug_state.ts";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { realdata, realdataAvailable, type RealdataSet, sha256File } from "../_util/realdata.ts";
import {
  haveTool,
  parseReadelfLoads,
  type ReadelfLoad,
  readFileBytes,
  runTool,
} from "./_helpers.ts";
import {
  assertSameFileBytes,
  countMarker,
  firstNonZero,
  pluggedRanges,
  plugMapJson,
  REGION,
  unpluggedRanges,
} from "./_realdata.ts";

async function exclusionFor(dir: string, scenario: string) {
  const path = `${dir}/${scenario}.plugmap.json`;
  Deno.writeTextFileSync(path, plugMapJson(scenario));
  const map = (await loadPlugState({ plugMapFile: path })).plugMap;
  const exclude = map.unpluggedGpaRanges();
  assert.deepEqual(exclude, unpluggedRanges(scenario), "src/vmem agrees with the fixture facts");
  return exclude;
}

async function readelfLoads(
  path: string,
): Promise<{ loads: ReadelfLoad[]; notes: number; text: string }> {
  const r = await runTool("readelf", ["-lW", path]);
  assert.equal(r.code, 0, `readelf -lW ${path}: ${r.stderr}`);
  assert.equal(r.stderr.trim(), "", `readelf warnings on ${path}: ${r.stderr}`);
  return { ...parseReadelfLoads(r.stdout), text: r.stdout };
}

/** Program headers of a file through readelf when present, else a minimal direct parse. */
async function loadsOf(path: string): Promise<ReadelfLoad[]> {
  if (haveTool("readelf")) return (await readelfLoads(path)).loads;
  using core = await readElfCore(path);
  return core.loads.map((s) => ({
    fileOffset: s.fileOffset ?? 0,
    vaddr: Number(s.phdr.vaddr),
    paddr: s.gpa!,
    fileByteLength: s.fileByteLength,
    byteLength: s.byteLength,
  }));
}

const overlaps = (a: { gpa: number; byteLength: number }, b: { gpa: number; byteLength: number }) =>
  a.gpa < b.gpa + b.byteLength && b.gpa < a.gpa + a.byteLength;

/**
 * The checks every stripped output of a scenario must pass:
 * sorted identity-mapped PT_LOADs, no byte of unplugged memory, every
 * plugged byte equal to the pmemsave image, everything else equal to the
 * input dump's segment at the same gpa.
 */
async function checkStripped(out: string, realElf: string, raw: string, scenario: string) {
  const loads = await loadsOf(out);
  const inputLoads = await loadsOf(realElf);
  if (haveTool("readelf")) {
    const { notes, text } = await readelfLoads(out);
    assert.equal(notes, 1);
    assert.match(text, /Program Headers:\n\s+Type.*\n\s+NOTE/, "PT_NOTE first");
    assert.match(text, /starting at offset 64\n/);
  }
  for (let i = 1; i < loads.length; i++) {
    assert.ok(loads[i - 1]!.paddr < loads[i]!.paddr, "sorted by p_paddr");
  }
  const unplugged = unpluggedRanges(scenario);
  let pluggedCovered = 0;
  for (const l of loads) {
    assert.equal(l.vaddr, l.paddr, "p_vaddr = p_paddr");
    assert.equal(l.fileByteLength, l.byteLength, "no zero-fill tail");
    const range = { gpa: l.paddr, byteLength: l.byteLength };
    for (const u of unplugged) {
      assert.ok(!overlaps(range, u), `PT_LOAD ${l.paddr.toString(16)} holds unplugged memory`);
    }
    if (overlaps(range, REGION)) {
      await assertSameFileBytes(
        { path: out, fileOffset: l.fileOffset },
        { path: raw, fileOffset: l.paddr - REGION.gpa },
        l.byteLength,
        `plugged memory at 0x${l.paddr.toString(16)}`,
      );
      pluggedCovered += l.byteLength;
    } else {
      const src = inputLoads.find((x) =>
        x.paddr <= l.paddr && l.paddr + l.byteLength <= x.paddr + x.byteLength
      );
      assert.ok(src, `no input segment for 0x${l.paddr.toString(16)}`);
      await assertSameFileBytes(
        { path: out, fileOffset: l.fileOffset },
        { path: realElf, fileOffset: src.fileOffset + (l.paddr - src.paddr) },
        l.byteLength,
        `memory at 0x${l.paddr.toString(16)}`,
      );
    }
  }
  assert.equal(
    pluggedCovered,
    pluggedRanges(scenario).reduce((n, r) => n + r.byteLength, 0),
    "every plugged byte kept",
  );
  // Outside the region, the same memory as the input.
  const outside = (ls: ReadelfLoad[]) =>
    ls.filter((l) => !overlaps({ gpa: l.paddr, byteLength: l.byteLength }, REGION)).map((
      l,
    ) => [l.paddr, l.byteLength]);
  assert.deepEqual(outside(loads), outside(inputLoads));
}

/** od and gdb read the same bytes at a plugged gpa as the pmemsave image, and gdb refuses an unplugged gpa. */
async function probeWithTools(
  out: string,
  raw: string,
  scenario: string,
  realElf: string,
  set: RealdataSet,
) {
  const loads = await loadsOf(out);
  let gpa: number | undefined;
  for (const plugged of pluggedRanges(scenario)) {
    const at = await firstNonZero(raw, plugged.gpa - REGION.gpa, plugged.byteLength);
    if (at !== undefined) {
      gpa = plugged.gpa + at;
      break;
    }
  }
  if (pluggedRanges(scenario).length === 0) return;
  assert.ok(gpa !== undefined, "a non-zero line in plugged memory");
  const want = [...(await readFileBytes(raw, gpa - REGION.gpa, 16))];
  const seg = loads.find((l) => l.paddr <= gpa && gpa < l.paddr + l.byteLength)!;
  const fileOffset = seg.fileOffset + (gpa - seg.paddr);
  if (haveTool("od")) {
    const r = await runTool("od", [
      "-A",
      "n",
      "-t",
      "u1",
      "-v",
      "-j",
      String(fileOffset),
      "-N",
      "16",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split(/\s+/).map(Number), want, "od at the computed offset");
  }
  if (haveTool("crash")) {
    // crash reads the ELF header, notes and VMCOREINFO without a vmlinux.
    const mine = await runTool("crash", ["--osrelease", out]);
    const theirs = await runTool("crash", ["--osrelease", realElf]);
    // Without VMCOREINFO (out-q10) crash fails on both the same way.
    assert.equal(mine.code, theirs.code, mine.stderr);
    assert.equal(mine.stdout, theirs.stdout);
    if (set === "out-small") assert.match(mine.stdout, /^6\.1\.0-\S+\n$/);
  }
  if (haveTool("gdb")) {
    const unplugged = unpluggedRanges(scenario)[0]!;
    const r = await runTool("gdb", [
      "-nx",
      "-batch",
      "-ex",
      `core-file ${out}`,
      "-ex",
      `x/16xb 0x${gpa.toString(16)}`,
      "-ex",
      `x/4xb 0x${unplugged.gpa.toString(16)}`,
    ], { timeoutMs: 120_000 });
    const bytes = [
      ...r.stdout.matchAll(
        new RegExp(
          `^0x${
            gpa.toString(16).padStart(0)
          }[^:]*:((?:\\s+0x[0-9a-f]{2})+)$|^0x[0-9a-f]+:((?:\\s+0x[0-9a-f]{2})+)$`,
          "gm",
        ),
      ),
    ]
      .flatMap((m) => (m[1] ?? m[2] ?? "").trim().split(/\s+/).map(Number));
    assert.deepEqual(bytes.slice(0, 16), want, `gdb x/16xb:\n${r.stdout}\n${r.stderr}`);
    assert.match(
      r.stdout + r.stderr,
      new RegExp(`Cannot access memory at address 0x${unplugged.gpa.toString(16)}`),
    );
  }
}

const CASES: Array<{ set: RealdataSet; scenario: string; layout: "qemu-classic" | "qemu-7.2" }> = [
  { set: "out-small", scenario: "s3-malicious", layout: "qemu-classic" },
  { set: "out-q10", scenario: "s3-malicious", layout: "qemu-7.2" },
];

for (const { set, scenario, layout } of CASES) {
  Deno.test({
    name:
      `stripElf() on a real ${set} dump and on its whole-region variant keeps plugged bytes only (${scenario})`,
    ignore: !realdataAvailable(set),
    sanitizeResources: true,
    fn: async () => {
      const realElf = await realdata(set, `${scenario}.elf`);
      const raw = await realdata(set, `${scenario}.vmem0.raw`);
      const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-real-" });
      try {
        const exclude = await exclusionFor(dir, scenario);

        // 1. The real QEMU >= 6.2 dump: nothing of the region to remove, layout rewritten.
        const out = `${dir}/real.stripped.elf`;
        const report = await stripElf(realElf, out, { exclude });
        assert.equal(
          report.removedByteLength,
          0,
          "QEMU >= 6.2 already leaves unplugged memory out",
        );
        assert.equal(report.inputLayout.sectionHeadersFirst, true);
        assert.equal(report.inputLayout.ehdrByteLengthQuirk, true);
        await checkStripped(out, realElf, raw, scenario);
        await probeWithTools(out, raw, scenario, realElf, set);

        // 2. Idempotent: stripping the output again gives the same bytes.
        const again = `${dir}/again.elf`;
        const report2 = await stripElf(out, again, { exclude });
        assert.equal(report2.removedByteLength, 0);
        assert.equal(await sha256File(again), await sha256File(out));
        Deno.removeSync(again);

        // 3. The dump QEMU < 6.2 or /proc/vmcore would have made: the whole region, EVIL pages included.
        const whole = `${dir}/whole.elf`;
        await writeWholeRegionElf(realElf, raw, REGION, whole, { layout });
        assert.equal(
          await countMarker(whole, "EVIL-"),
          4 * 64,
          "the whole-region input carries the 4 EVIL pages",
        );
        const wholeOut = `${dir}/whole.stripped.elf`;
        const r3 = await stripElf(whole, wholeOut, { exclude, countNonZero: true });
        Deno.removeSync(whole);
        assert.deepEqual(
          r3.removed.map((r) => ({ gpa: r.gpa, byteLength: r.byteLength })),
          unpluggedRanges(scenario),
        );
        assert.equal(r3.removedFileByteLength, r3.removedByteLength);
        assert.equal(
          r3.removed.reduce((n, r) => n + (r.nonZeroPages ?? 0), 0),
          4,
          "the 4 EVIL pages were counted",
        );
        assert.equal(await countMarker(wholeOut, "EVIL-"), 0, "no EVIL byte left");
        await checkStripped(wholeOut, realElf, raw, scenario);
        // Same memory, same notes, same layout: byte-identical to the stripped real dump.
        assert.equal(await sha256File(wholeOut), await sha256File(out));
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "stripElf() on real out-small s0 and s1 dumps removes nothing and keeps the notes",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-real-" });
    try {
      for (const scenario of ["s0-unplugged", "s1-plugged-200M"]) {
        const realElf = await realdata("out-small", `${scenario}.elf`);
        const raw = await realdata("out-small", `${scenario}.vmem0.raw`);
        const exclude = await exclusionFor(dir, scenario);
        const out = `${dir}/${scenario}.elf`;
        const report = await stripElf(realElf, out, { exclude });
        assert.equal(report.removedByteLength, 0);
        assert.equal(report.notes.count, 3);
        await checkStripped(out, realElf, raw, scenario);
        using a = await readElfCore(realElf);
        using b = await readElfCore(out);
        assert.deepEqual(b.noteSegments[0]!.bytes, a.noteSegments[0]!.bytes, "notes byte for byte");
        assert.deepEqual(b.notes.map((n) => n.kind), ["prstatus", "qemu-cpu-state", "vmcoreinfo"]);
        // The notes decode, and the two CPU views agree.
        const prstatus = decodePrstatus(b.notes[0]!.desc, b.ehdr.machine, b.ehdr.littleEndian)!;
        const qemu = decodeQemuCpuState(b.notes[1]!.desc, b.ehdr.littleEndian)!;
        assert.equal(prstatus.pid, 1);
        assert.equal(prstatus.registers.rip, qemu.registers.rip);
        assert.equal(prstatus.registers.rsp, qemu.registers.rsp);
        assert.ok((qemu.cr[0]! & 0x8000_0000n) !== 0n, "paging on");
        assert.match(parseVmcoreinfo(b.notes[2]!.desc).get("OSRELEASE") ?? "", /^6\.1\./);
        Deno.removeSync(out);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

/** PT_LOADs of a makedumpfile -E output below the virtio-mem region, with their data hashes. */
async function lowMemory(path: string) {
  const loads = (await readelfLoads(path)).loads.filter((l) => l.paddr < REGION.gpa);
  const out = [];
  for (const l of loads) {
    const bytes = new Uint8Array(l.fileByteLength);
    using f = await Deno.open(path);
    await f.seek(l.fileOffset, Deno.SeekMode.Start);
    let got = 0;
    while (got < bytes.byteLength) got += (await f.read(bytes.subarray(got))) ?? Infinity;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    out.push({
      paddr: l.paddr,
      filesz: l.fileByteLength,
      memsz: l.byteLength,
      sha: [...digest].join(","),
    });
  }
  return out;
}

Deno.test({
  name: "stripElf() output is accepted by makedumpfile with results consistent with the input",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    if (!haveTool("makedumpfile") || !haveTool("readelf")) return;
    const scenario = "s3-malicious";
    const realElf = await realdata("out-small", `${scenario}.elf`);
    const raw = await realdata("out-small", `${scenario}.vmem0.raw`);
    const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-mdf-" });
    try {
      const exclude = await exclusionFor(dir, scenario);
      // Spec §11: makedumpfile 1.7.2 rejects QEMU >= 7.2's own layout.
      const direct = await runTool("makedumpfile", [
        "-E",
        "-d",
        "31",
        realElf,
        `${dir}/direct.out`,
      ]);
      console.log(
        `makedumpfile on the QEMU 7.2 dump as is: exit ${direct.code}: ${
          (direct.stdout + direct.stderr).split("\n").filter((l) => l.trim()).join(" | ")
        }`,
      );

      const whole = `${dir}/whole.elf`; // what QEMU < 6.2 writes: classic layout, whole region
      await writeWholeRegionElf(realElf, raw, REGION, whole, { layout: "qemu-classic" });
      const stripped = `${dir}/stripped.elf`;
      await stripElf(whole, stripped, { exclude });

      const results: Record<string, string> = {};
      for (const [name, input] of [["whole", whole], ["stripped", stripped]] as const) {
        const e = `${dir}/${name}.mdf-E`;
        const r = await runTool("makedumpfile", ["-E", "-d", "31", input!, e], {
          timeoutMs: 300_000,
        });
        assert.equal(r.code, 0, `makedumpfile -E -d 31 on ${name}: ${r.stdout}\n${r.stderr}`);
        const c = await runTool("makedumpfile", ["-c", "-d", "31", input, `${dir}/${name}.mdf-c`], {
          timeoutMs: 300_000,
        });
        assert.equal(c.code, 0, `makedumpfile -c -d 31 on ${name}: ${c.stdout}\n${c.stderr}`);
        Deno.removeSync(`${dir}/${name}.mdf-c`);
        results[name] = e;
      }
      Deno.removeSync(whole);
      // The kept memory of pc.ram (and the BIOS) is the same with and without the strip.
      const a = await lowMemory(results.whole!);
      const b = await lowMemory(results.stripped!);
      assert.ok(a.length > 1);
      assert.deepEqual(b, a);
      // Above 4 GiB: makedumpfile keeps the EVIL pages of unplugged blocks from the whole-region
      // input (they have no memmap to be classified by), none from ours.
      assert.ok(await countMarker(results.whole!, "EVIL-") > 0);
      assert.equal(await countMarker(results.stripped!, "EVIL-"), 0);
      for (const l of (await readelfLoads(results.stripped!)).loads) {
        for (const u of unpluggedRanges(scenario)) {
          assert.ok(
            !overlaps({ gpa: l.paddr, byteLength: l.byteLength }, u),
            "makedumpfile output of ours holds no unplugged memory",
          );
        }
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
