import assert from "node:assert/strict";
import {
  encodeNote,
  iterateGpaRange,
  planStrip,
  readElfCore,
  stripElf,
} from "../../src/elf/mod.ts";
import { FormatError, UnsupportedFeatureError } from "../../src/errors.ts";
import { bytesPositional, type PositionalReader } from "../../src/io/positional.ts";
import { buildElf, type BuildLoad, type BuildSpec } from "../_util/elf_builder.ts";
import { haveTool, listDir, memorySink, prng, runTool } from "./_helpers.ts";

const notes = (le: boolean) =>
  new Uint8Array([
    ...encodeNote({ name: "CORE", type: 1, desc: new Uint8Array(336).fill(0x11) }, le),
    ...encodeNote({
      name: "VMCOREINFO",
      type: 0,
      desc: new TextEncoder().encode("PAGESIZE=4096\n"),
    }, le),
  ]);

async function strip(
  input: Uint8Array,
  exclude: { gpa: number; byteLength: number }[],
  pageAlign?: number,
) {
  const out = memorySink();
  const report = await stripElf(bytesPositional(input), out.sink, {
    exclude,
    ...(pageAlign !== undefined ? { pageAlign } : {}),
  });
  return { bytes: out.bytes(), report };
}

/** Expected byte at each gpa: number = file byte or 0 from a tail; undefined = absent. */
function model(spec: BuildSpec, exclude: { gpa: number; byteLength: number }[]) {
  const mem = new Map<number, number>();
  for (const l of spec.loads) {
    const data = l.data as Uint8Array | undefined;
    const filesz = data?.byteLength ?? 0;
    const memsz = l.memByteLength ?? filesz;
    for (let i = 0; i < memsz; i++) mem.set(Number(l.paddr) + i, i < filesz ? data![i]! : 0);
  }
  for (const x of exclude) for (let g = x.gpa; g < x.gpa + x.byteLength; g++) mem.delete(g);
  return mem;
}

function randomCase(
  seed: number,
  elfClass: 32 | 64,
  le: boolean,
  layout: "qemu-classic" | "qemu-7.2",
) {
  const r = prng(seed);
  const loads: BuildLoad[] = [];
  let gpa = Math.floor(r() * 64);
  const n = 1 + Math.floor(r() * 5);
  for (let i = 0; i < n; i++) {
    const memsz = 1 + Math.floor(r() * 600);
    const kind = r();
    const filesz = kind < 0.6 ? memsz : kind < 0.85 ? Math.floor(r() * memsz) : 0;
    const data = filesz > 0
      ? Uint8Array.from({ length: filesz }, () => 1 + Math.floor(r() * 255))
      : undefined;
    const vaddrKind = r();
    const vaddr = vaddrKind < 0.5 ? undefined : vaddrKind < 0.8 ? BigInt(gpa) + 0xc000_0000n : 0n;
    loads.push({
      paddr: BigInt(gpa),
      ...(vaddr !== undefined ? { vaddr } : {}),
      ...(data ? { data } : {}),
      memByteLength: memsz,
      ...(filesz === 0 ? { emptyFileOffset: 0n } : {}),
    });
    gpa += memsz + (r() < 0.5 ? 0 : Math.floor(r() * 100));
  }
  // Shuffle the phdr order: the rewrite sorts by p_paddr.
  if (r() < 0.5) loads.reverse();
  const exclude = Array.from({ length: Math.floor(r() * 6) }, () => ({
    gpa: Math.floor(r() * (gpa + 50)),
    byteLength: Math.floor(r() * 200),
  }));
  return {
    spec: { elfClass, littleEndian: le, layout, notes: notes(le), loads } as BuildSpec,
    exclude,
  };
}

for (const elfClass of [32, 64] as const) {
  for (const le of [true, false]) {
    for (const layout of ["qemu-classic", "qemu-7.2"] as const) {
      const tag = `ELF${elfClass} ${le ? "LE" : "BE"} ${layout}`;
      Deno.test(`stripElf() keeps exactly the memory outside the excluded ranges (${tag})`, async () => {
        for (let seed = 1; seed <= 40; seed++) {
          const { spec, exclude } = randomCase(
            seed * 7919 + elfClass + (le ? 1 : 0),
            elfClass,
            le,
            layout,
          );
          const input = buildElf(spec);
          const expected = model(spec, exclude);
          const pageAlign = seed % 3 === 0 ? 0 : seed % 3 === 1 ? 4096 : 64;
          const { bytes, report } = await strip(input, exclude, pageAlign);
          using out = await readElfCore(bytesPositional(bytes));
          // Header shape: classic layout, PT_NOTE first, sorted PT_LOADs.
          assert.equal(out.ehdr.phdrFileOffset, elfClass === 64 ? 64 : 52);
          assert.equal(out.ehdr.ehdrByteLength, elfClass === 64 ? 64 : 52);
          assert.equal(out.ehdr.shdrCount, 0);
          assert.equal(out.phdrs[0]!.type, 4);
          assert.deepEqual(out.noteSegments[0]!.bytes, notes(le));
          const paddrs = out.loads.map((s) => s.phdr.paddr);
          assert.deepEqual(paddrs, [...paddrs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
          // Byte by byte: the same memory, excluded bytes absent.
          let total = 0;
          for (const s of out.loads) {
            for await (const c of iterateGpaRange(out, { gpa: s.gpa!, byteLength: s.byteLength })) {
              assert.notEqual(c.kind, "absent");
              for (let i = 0; i < c.byteLength; i++) {
                const want = expected.get(c.gpa + i);
                assert.notEqual(want, undefined, `seed ${seed}: gpa ${c.gpa + i} should be absent`);
                assert.equal(
                  c.kind === "data" ? c.data[i] : 0,
                  want,
                  `seed ${seed}: gpa ${c.gpa + i}`,
                );
              }
              total += c.byteLength;
            }
            if (pageAlign > 1 && s.fileByteLength > 0) {
              assert.equal(
                s.fileOffset! % pageAlign,
                s.gpa! % pageAlign,
                "data congruent to p_paddr",
              );
            }
          }
          assert.equal(total, expected.size, `seed ${seed}: memory size`);
          const inputMem = spec.loads.reduce((n, l) => n + (l.memByteLength ?? 0), 0);
          assert.equal(report.removedByteLength, inputMem - expected.size);
          // Idempotent: stripping the output again changes nothing.
          const again = await strip(bytes, exclude, pageAlign);
          assert.deepEqual(again.bytes, bytes, `seed ${seed}: second strip differs`);
          assert.equal(again.report.removedByteLength, 0);
        }
      });
    }
  }
}

Deno.test("planStrip() keeps the virtual-physical delta and the no-virtual-address sentinels", async () => {
  const data = new Uint8Array(0x3000).fill(5);
  const spec: BuildSpec = {
    notes: notes(true),
    loads: [
      { paddr: 0x10_0000n, vaddr: 0xffff_8880_0010_0000n, data }, // direct map
      { paddr: 0x20_0000n, vaddr: 0n, data }, // no virtual address
      { paddr: 0x30_0000n, vaddr: 0xffff_ffff_ffff_ffffn, data }, // sentinel
      { paddr: 0x40_0000n, data }, // identity (QEMU non-paging)
    ],
  };
  using core = await readElfCore(bytesPositional(buildElf(spec)));
  const exclude = [0x10_0000, 0x20_0000, 0x30_0000, 0x40_0000].map((g) => ({
    gpa: g + 0x1000,
    byteLength: 0x1000,
  }));
  const { plan } = planStrip(core, { exclude });
  const loads = plan.phdrs.slice(1).map((p) => [p.paddr, p.vaddr]);
  assert.deepEqual(loads, [
    [0x10_0000n, 0xffff_8880_0010_0000n],
    [0x10_2000n, 0xffff_8880_0010_2000n],
    [0x20_0000n, 0n],
    [0x20_2000n, 0n],
    [0x30_0000n, 0xffff_ffff_ffff_ffffn],
    [0x30_2000n, 0xffff_ffff_ffff_ffffn],
    [0x40_0000n, 0x40_0000n],
    [0x40_2000n, 0x40_2000n],
  ]);
});

Deno.test("stripElf() never turns an excluded range into a zero-fill tail", async () => {
  const spec: BuildSpec = {
    notes: notes(true),
    loads: [{ paddr: 0x1000n, data: new Uint8Array(0x4000).fill(3) }],
  };
  const { bytes } = await strip(buildElf(spec), [{ gpa: 0x4000, byteLength: 0x10_0000 }]);
  using out = await readElfCore(bytesPositional(bytes));
  assert.deepEqual(out.loads.map((s) => [s.gpa, s.byteLength, s.fileByteLength]), [[
    0x1000,
    0x3000,
    0x3000,
  ]]);
});

Deno.test("stripElf() merges several PT_NOTE segments into one, byte for byte", async () => {
  const a = encodeNote({ name: "CORE", type: 1, desc: new Uint8Array(336) }, true);
  const b = encodeNote(
    { name: "VMCOREINFO", type: 0, desc: new TextEncoder().encode("A=1\n") },
    true,
  );
  const spec: BuildSpec = {
    notes: a,
    extraNotes: [b],
    loads: [{ paddr: 0n, data: new Uint8Array(16) }],
  };
  const { bytes, report } = await strip(buildElf(spec), []);
  using out = await readElfCore(bytesPositional(bytes));
  assert.equal(out.noteSegments.length, 1);
  assert.deepEqual(out.noteSegments[0]!.bytes, new Uint8Array([...a, ...b]));
  assert.equal(report.notes.count, 2);
});

Deno.test("stripElf() writes PN_XNUM headers when the pieces pass 65534", async () => {
  // One 1.1 MiB segment with every other 8 bytes excluded: 70,000 pieces.
  const pieces = 70_000;
  const data = new Uint8Array(pieces * 16);
  for (let i = 0; i < data.length; i++) data[i] = i & 0xff;
  const spec: BuildSpec = { notes: notes(true), loads: [{ paddr: 0x1000_0000n, data }] };
  const exclude = Array.from(
    { length: pieces },
    (_, i) => ({ gpa: 0x1000_0000 + i * 16 + 8, byteLength: 8 }),
  );
  const { bytes, report } = await strip(buildElf(spec), exclude, 0);
  assert.equal(report.outputLoadCount, pieces);
  assert.equal(report.extendedNumbering, true);
  using out = await readElfCore(bytesPositional(bytes));
  assert.equal(out.ehdr.phdrCount, 0xffff);
  assert.equal(out.ehdr.phdrFileOffset, 64);
  assert.equal(out.shdrs.length, 1);
  assert.equal(out.shdrs[0]!.info, pieces + 1);
  assert.equal(out.loads.length, pieces);
  assert.equal(out.loads[123]!.gpa, 0x1000_0000 + 123 * 16);
  // Idempotent with PN_XNUM too.
  const again = await strip(bytes, exclude, 0);
  assert.deepEqual(again.bytes, bytes);
  if (haveTool("readelf")) {
    const dir = Deno.makeTempDirSync({ prefix: "vmem-xnum-" });
    try {
      Deno.writeFileSync(`${dir}/x.elf`, bytes);
      const r = await runTool("readelf", ["-hW", `${dir}/x.elf`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Number of program headers:\s+65535 \(70001\)/);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
});

Deno.test("stripElf() leaves no output file when the input is corrupt", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-" });
  try {
    const bytes = buildElf({
      notes: notes(true),
      loads: [{ paddr: 0n, data: new Uint8Array(64) }],
    });
    new DataView(bytes.buffer).setUint16(56, 0x7fff, true); // absurd phnum
    Deno.writeFileSync(`${dir}/in.elf`, bytes);
    await assert.rejects(stripElf(`${dir}/in.elf`, `${dir}/out.elf`, { exclude: [] }), FormatError);
    assert.deepEqual(listDir(dir), ["in.elf"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("stripElf() removes its temporary file when the input fails in the middle of the copy", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vmem-strip-" });
  try {
    const bytes = buildElf({
      notes: notes(true),
      loads: [{ paddr: 0n, data: new Uint8Array(1 << 20) }],
    });
    const inner = bytesPositional(bytes);
    let reads = 0;
    const failing: PositionalReader = {
      byteLength: inner.byteLength,
      readInto(fileOffset, into) {
        if (fileOffset > 4096 && ++reads > 2) return Promise.reject(new Error("disk on fire"));
        return inner.readInto(fileOffset, into);
      },
      close() {},
    };
    await assert.rejects(
      stripElf(failing, `${dir}/out.elf`, { exclude: [], chunkSize: 64 << 10 }),
      /disk on fire/,
    );
    assert.deepEqual(listDir(dir), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("stripElf() rejects program header types it cannot carry over", async () => {
  const bytes = buildElf({ notes: notes(true), loads: [{ paddr: 0n, data: new Uint8Array(64) }] });
  new DataView(bytes.buffer).setUint32(64 + 56, 2, true); // PT_DYNAMIC instead of PT_LOAD
  const e = await stripElf(bytesPositional(bytes), memorySink().sink, { exclude: [] }).catch((e) =>
    e
  );
  assert.ok(e instanceof UnsupportedFeatureError);
  assert.equal(e.offset, 64 + 56);
});

Deno.test("stripElf() counts non-zero pages in removed file bytes when asked", async () => {
  const data = new Uint8Array(0x8000);
  data[0x1234] = 1; // page 1
  data[0x5000] = 2; // page 5
  data[0x5fff] = 3; // page 5 again
  data[0x7000] = 4; // page 7, kept
  const out = memorySink();
  const report = await stripElf(
    bytesPositional(buildElf({ notes: notes(true), loads: [{ paddr: 0x10000n, data }] })),
    out.sink,
    {
      exclude: [{ gpa: 0x11000, byteLength: 0x1000 }, { gpa: 0x13000, byteLength: 0x4000 }],
      countNonZero: true,
      chunkSize: 0x800,
    },
  );
  assert.deepEqual(report.removed.map((r) => [r.gpa, r.byteLength, r.nonZeroPages]), [[
    0x11000,
    0x1000,
    1,
  ], [0x13000, 0x4000, 1]]);
});

Deno.test("stripElf() writes p_align 0 and keeps p_flags of the PT_LOADs", async () => {
  const spec: BuildSpec = {
    notes: notes(true),
    loads: [{ paddr: 0x1000n, data: new Uint8Array(0x2000), flags: 7, align: 0x1000n }],
  };
  const { bytes } = await strip(buildElf(spec), [{ gpa: 0x2000, byteLength: 0x10 }]);
  using out = await readElfCore(bytesPositional(bytes));
  assert.deepEqual(out.loads.map((s) => [s.phdr.flags, s.phdr.align]), [[7, 0n], [7, 0n]]);
  // The first PT_LOAD's data is page aligned, so p_align 0 is what tells crash the layout.
  assert.equal(out.loads[0]!.fileOffset! % 4096, 0);
});
