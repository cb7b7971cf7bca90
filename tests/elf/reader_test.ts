import assert from "node:assert/strict";
import { iterateGpaRange, iterateLoadData, readElfCore } from "../../src/elf/mod.ts";
import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../../src/errors.ts";
import { bytesPositional } from "../../src/io/positional.ts";
import { encodeNote } from "../../src/elf/note.ts";
import { buildElf, type BuildSpec } from "../_util/elf_builder.ts";
import { assertFormatError, prng } from "./_helpers.ts";

function pattern(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

function notesFor(le: boolean): Uint8Array {
  return new Uint8Array([
    ...encodeNote({ name: "CORE", type: 1, desc: new Uint8Array(336).fill(1) }, le),
    ...encodeNote({ name: "QEMU", type: 0, desc: new Uint8Array(432).fill(2) }, le),
  ]);
}

function sampleSpec(
  elfClass: 32 | 64,
  le: boolean,
  layout: "qemu-classic" | "qemu-7.2",
): BuildSpec {
  return {
    elfClass,
    littleEndian: le,
    layout,
    notes: notesFor(le),
    loads: [
      { paddr: 0n, data: pattern(0x3000, 1) },
      { paddr: 0xfffc_0000n, data: pattern(0x1000, 2) },
      { paddr: 0x1_0000n, data: pattern(0x800, 3), memByteLength: 0x2000 }, // zero-fill tail
      { paddr: 0x2_0000n, memByteLength: 0x1000 }, // paging-style, no file data
    ],
  };
}

for (const elfClass of [32, 64] as const) {
  for (const le of [true, false]) {
    for (const layout of ["qemu-classic", "qemu-7.2"] as const) {
      const tag = `ELF${elfClass} ${le ? "LE" : "BE"} ${layout}`;
      Deno.test(`readElfCore() reads headers, notes and segments (${tag})`, async () => {
        const spec = sampleSpec(elfClass, le, layout);
        const bytes = buildElf(spec);
        using core = await readElfCore(bytesPositional(bytes));
        assert.equal(core.ehdr.elfClass, elfClass);
        assert.equal(core.ehdr.littleEndian, le);
        assert.equal(core.phdrCount, 5);
        assert.equal(core.layout.sectionHeadersFirst, layout === "qemu-7.2");
        assert.equal(core.layout.ehdrByteLengthQuirk, layout === "qemu-7.2");
        assert.deepEqual(core.notes.map((n) => n.kind), ["prstatus", "qemu-cpu-state"]);
        assert.deepEqual(
          core.loads.map((
            s,
          ) => [s.gpa, s.byteLength, s.fileByteLength, s.fileOffset === undefined]),
          [[0, 0x3000, 0x3000, false], [0xfffc_0000, 0x1000, 0x1000, false], [
            0x1_0000,
            0x2000,
            0x800,
            false,
          ], [
            0x2_0000,
            0x1000,
            0,
            true,
          ]],
        );
        // Segment bytes in file order, in small chunks.
        const seen = new Map<number, number[]>();
        for await (const c of iterateLoadData(core, { chunkSize: 0x700 })) {
          const list = seen.get(c.segmentIndex) ?? [];
          list.push(...c.data);
          seen.set(c.segmentIndex, list);
        }
        assert.deepEqual(Uint8Array.from(seen.get(1)!), spec.loads[0]!.data);
        assert.deepEqual(Uint8Array.from(seen.get(3)!), spec.loads[2]!.data);
      });
    }
  }
}

Deno.test("iterateGpaRange() reports data, zero-fill tails and absent memory in order", async () => {
  const spec = sampleSpec(64, true, "qemu-7.2");
  using core = await readElfCore(bytesPositional(buildElf(spec)));
  const chunks = [];
  for await (
    const c of iterateGpaRange(core, { gpa: 0x2000, byteLength: 0xf000 }, { chunkSize: 0x400 })
  ) {
    chunks.push(
      c.kind === "data"
        ? { kind: c.kind, gpa: c.gpa, n: c.data.byteLength }
        : { kind: c.kind, gpa: c.gpa, n: c.byteLength },
    );
  }
  assert.deepEqual(chunks, [
    { kind: "data", gpa: 0x2000, n: 0x400 },
    { kind: "data", gpa: 0x2400, n: 0x400 },
    { kind: "data", gpa: 0x2800, n: 0x400 },
    { kind: "data", gpa: 0x2c00, n: 0x400 },
    { kind: "absent", gpa: 0x3000, n: 0xd000 },
    { kind: "data", gpa: 0x1_0000, n: 0x400 },
    { kind: "data", gpa: 0x1_0400, n: 0x400 },
    { kind: "zero", gpa: 0x1_0800, n: 0x800 },
  ]);
  // Data at the right place.
  for await (const c of iterateGpaRange(core, { gpa: 0xfffc_0010, byteLength: 4 })) {
    assert.equal(c.kind, "data");
    if (c.kind === "data") {
      assert.deepEqual(c.data, (spec.loads[1]!.data as Uint8Array).subarray(0x10, 0x14));
    }
  }
});

Deno.test("readElfCore() resolves PN_XNUM from section header 0 in both QEMU layouts", async () => {
  for (const layout of ["qemu-classic", "qemu-7.2"] as const) {
    const loads = Array.from(
      { length: 70_000 },
      (_, i) => ({ paddr: BigInt(i * 16), data: new Uint8Array(16).fill(i & 0xff) }),
    );
    const bytes = buildElf({ layout, notes: notesFor(true), loads });
    using core = await readElfCore(bytesPositional(bytes));
    assert.equal(core.ehdr.phdrCount, 0xffff);
    assert.equal(core.phdrCount, 70_001);
    assert.equal(core.layout.extendedNumbering, true);
    assert.equal(core.loads.length, 70_000);
    assert.equal(core.loads.at(-1)!.gpa, 69_999 * 16);
  }
});

/** Patch a u64/u32 field of phdr `index` in a classic ELF64 LE built file. */
function patchPhdr64(bytes: Uint8Array, index: number, fieldAt: number, value: bigint): number {
  const at = 64 + index * 56 + fieldAt;
  new DataView(bytes.buffer).setBigUint64(at, value, true);
  return at;
}

Deno.test("readElfCore() rejects corrupt files with typed errors and offsets", async (t) => {
  const fresh = () => buildElf(sampleSpec(64, true, "qemu-classic"));
  await t.step("not ELF", async () => {
    await assertFormatError(
      readElfCore(bytesPositional(new TextEncoder().encode("QEVM\0\0\0\x03 not an elf"))),
      {
        code: "bad-magic",
        offset: 0,
      },
    );
  });
  await t.step("not a core file", async () => {
    const b = fresh();
    b[16] = 2; // ET_EXEC
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "bad-header", offset: 16 });
  });
  await t.step("segment bytes past the end of the file", async () => {
    const b = fresh();
    const at = patchPhdr64(b, 1, 8, BigInt(b.byteLength - 0x100));
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "out-of-range", offset: at });
  });
  await t.step("absurd phnum", async () => {
    const b = fresh();
    new DataView(b.buffer).setUint16(56, 0xfff0, true);
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "out-of-range", offset: 56 });
  });
  await t.step("absurd phnum through PN_XNUM", async () => {
    const b = fresh();
    const v = new DataView(b.buffer);
    v.setUint16(56, 0xffff, true); // e_phnum = PN_XNUM without section headers
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "bad-header", offset: 56 });
  });
  await t.step("e_phoff past the end", async () => {
    const b = fresh();
    new DataView(b.buffer).setBigUint64(32, 1n << 40n, true);
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "out-of-range", offset: 32 });
  });
  await t.step("no program headers, e_phoff past the end: nothing is read there", async () => {
    // Found by the mutation campaign (cli-json case 3934873498): an empty table at an
    // e_phoff far past the file was read anyway, and the end-of-file error named an
    // offset 2^50 bytes beyond the 222-byte input.
    const b = fresh();
    const v = new DataView(b.buffer);
    v.setUint16(56, 0, true); // e_phnum
    v.setBigUint64(32, 0x5003800080000n, true); // e_phoff
    using core = await readElfCore(bytesPositional(b));
    assert.equal(core.phdrCount, 0);
    assert.deepEqual(core.loads, []);
  });
  await t.step("64-bit offset above 2^53", async () => {
    const b = fresh();
    const at = patchPhdr64(b, 1, 8, 1n << 60n);
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "too-large", offset: at });
  });
  await t.step("overlapping segments in the file", async () => {
    const b = fresh();
    const v = new DataView(b.buffer);
    const first = v.getBigUint64(64 + 1 * 56 + 8, true);
    const at = patchPhdr64(b, 2, 8, first + 0x100n); // segment 2 inside segment 1's bytes
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "bad-segment", offset: at });
  });
  await t.step("overlapping identity-mapped memory with other bytes", async () => {
    const b = fresh();
    patchPhdr64(b, 2, 16, 0x1000n); // vaddr
    const at = patchPhdr64(b, 2, 24, 0x1000n); // paddr inside segment 1 (0..0x3000)
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "bad-segment", offset: at });
  });
  await t.step("segment bytes on top of the program headers", async () => {
    const b = fresh();
    const at = patchPhdr64(b, 1, 8, 70n);
    await assertFormatError(readElfCore(bytesPositional(b)), { code: "bad-segment", offset: at });
  });
  await t.step("p_filesz larger than p_memsz", async () => {
    const b = fresh();
    const at = patchPhdr64(b, 1, 40, 0x10n);
    await assertFormatError(readElfCore(bytesPositional(b)), {
      code: "bad-segment",
      offset: at - 8,
    });
  });
  await t.step("truncated notes", async () => {
    const b = fresh();
    const v = new DataView(b.buffer);
    const noteOffset = Number(v.getBigUint64(64 + 8, true));
    v.setUint32(noteOffset + 4, 0x10000, true); // n_descsz of the first note far too big
    await assertFormatError(readElfCore(bytesPositional(b)), {
      code: "bad-note",
      offset: noteOffset + 4,
    });
  });
  await t.step("PT_NOTE past the end of the file", async () => {
    const b = fresh();
    const at = patchPhdr64(b, 0, 32, 1n << 40n);
    await assertFormatError(readElfCore(bytesPositional(b)), {});
    assert.ok(at > 0);
  });
  await t.step("too many program headers for the limit", async () => {
    const b = fresh();
    await assert.rejects(
      readElfCore(bytesPositional(b), { maxPhdrCount: 2 }),
      UnsupportedFeatureError,
    );
  });
});

Deno.test("readElfCore() accepts paging-style aliases: several segments for the same physical bytes", async () => {
  const data = pattern(0x2000, 9);
  const bytes = buildElf({
    notes: notesFor(true),
    loads: [{ paddr: 0x1000n, vaddr: 0xffff_8000_0000_1000n, data }],
  });
  // Add a second mapping of the second page by hand: rebuild with two loads sharing bytes.
  const spec: BuildSpec = {
    notes: notesFor(true),
    loads: [{ paddr: 0x1000n, vaddr: 0xffff_8000_0000_1000n, data }, {
      paddr: 0x2000n,
      vaddr: 0xffff_c000_0000_0000n,
      data: data.subarray(0x1000),
    }],
  };
  const two = buildElf(spec);
  const v = new DataView(two.buffer);
  const off1 = v.getBigUint64(64 + 56 + 8, true);
  v.setBigUint64(64 + 2 * 56 + 8, off1 + 0x1000n, true); // point the alias at the same bytes
  using core = await readElfCore(bytesPositional(two));
  assert.equal(core.loads.length, 2);
  assert.ok(bytes.byteLength > 0);
});

Deno.test("readElfCore() never throws anything but FormatError for flipped or truncated headers", async () => {
  const bytes = buildElf(sampleSpec(64, true, "qemu-7.2"));
  const headerEnd = 64 + 2 * 64 + 5 * 56 + 808; // headers + notes
  const r = prng(42);
  for (let i = 0; i < headerEnd; i++) {
    const b = bytes.slice();
    b[i] = b[i]! ^ (1 + Math.floor(r() * 255));
    try {
      using core = await readElfCore(bytesPositional(b));
      for await (const _ of iterateLoadData(core)) { /* read it all */ }
    } catch (e) {
      assert.ok(e instanceof FormatError, `byte ${i}: ${e}`);
    }
  }
  for (let cut = 0; cut < headerEnd + 64; cut++) {
    try {
      using core = await readElfCore(bytesPositional(bytes.subarray(0, cut)));
      assert.fail(`cut at ${cut} was accepted with ${core.loads.length} loads`);
    } catch (e) {
      assert.ok(e instanceof FormatError, `cut ${cut}: ${e}`);
      if (e instanceof UnexpectedEofError) assert.ok(e.offset <= cut);
    }
  }
});
