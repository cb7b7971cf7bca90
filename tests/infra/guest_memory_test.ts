import assert from "node:assert/strict";
import { compareGuestMemory, hashElfLoads, readElfLoads } from "../_util/guest_memory.ts";
import { sha256Hex } from "../_util/hashing.ts";
import { tempDir } from "../_util/qemu.ts";

interface Seg {
  gpa: number;
  data: Uint8Array;
  memByteLength?: number;
}

/** A minimal little-endian ELF64 core file with one PT_LOAD per segment. */
function buildElf(segs: Seg[]): Uint8Array {
  const phoff = 64, phentsize = 56;
  let dataAt = phoff + phentsize * segs.length;
  const size = dataAt + segs.reduce((a, s) => a + s.data.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 4, true); // ET_CORE
  v.setUint16(18, 62, true); // EM_X86_64
  v.setBigUint64(32, BigInt(phoff), true);
  v.setUint16(52, 8, true); // e_ehsize as QEMU writes it
  v.setUint16(54, phentsize, true);
  v.setUint16(56, segs.length, true);
  segs.forEach((s, i) => {
    const at = phoff + i * phentsize;
    v.setUint32(at, 1, true); // PT_LOAD
    v.setBigUint64(at + 8, BigInt(dataAt), true);
    v.setBigUint64(at + 16, BigInt(s.gpa), true);
    v.setBigUint64(at + 24, BigInt(s.gpa), true);
    v.setBigUint64(at + 32, BigInt(s.data.length), true);
    v.setBigUint64(at + 40, BigInt(s.memByteLength ?? s.data.length), true);
    out.set(s.data, dataAt);
    dataAt += s.data.length;
  });
  return out;
}

const page = (fill: number, n = 1) => new Uint8Array(4096 * n).fill(fill);

Deno.test("compareGuestMemory() finds equal memory equal regardless of PT_LOAD split", async () => {
  await using tmp = await tempDir();
  const a = `${tmp.path}/a.elf`, b = `${tmp.path}/b.elf`;
  const low = page(1, 4);
  await Deno.writeFile(
    a,
    buildElf([{ gpa: 0, data: low }, { gpa: 0x1_0000_0000, data: page(7, 2) }]),
  );
  await Deno.writeFile(
    b,
    buildElf([
      { gpa: 0x1_0000_0000, data: page(7, 2) },
      { gpa: 0, data: low.subarray(0, 8192) },
      { gpa: 8192, data: low.subarray(8192) },
    ]),
  );
  const cmp = await compareGuestMemory(a, b);
  assert.equal(cmp.equal, true);
  assert.equal(cmp.comparedBytes, 6 * 4096);
  assert.deepEqual(cmp.loadsA.map((l) => l.gpa), [0, 0x1_0000_0000]);
});

Deno.test("compareGuestMemory() reports differing pages and coverage, and honours ignored ranges", async () => {
  await using tmp = await tempDir();
  const a = `${tmp.path}/a.elf`, b = `${tmp.path}/b.elf`;
  const other = page(1, 4);
  other[4096 + 5] = 9; // page 1
  other[3 * 4096] = 9; // page 3
  await Deno.writeFile(
    a,
    buildElf([{ gpa: 0, data: page(1, 4) }, { gpa: 0x10000, data: page(2) }]),
  );
  await Deno.writeFile(b, buildElf([{ gpa: 0, data: other }, { gpa: 0x20000, data: page(2) }]));
  const cmp = await compareGuestMemory(a, b);
  assert.equal(cmp.equal, false);
  assert.equal(cmp.differentPages, 2);
  assert.deepEqual(cmp.differences, [{ gpa: 0x1000, byteLength: 0x1000 }, {
    gpa: 0x3000,
    byteLength: 0x1000,
  }]);
  assert.deepEqual(cmp.onlyInA, [{ gpa: 0x10000, byteLength: 0x1000 }]);
  assert.deepEqual(cmp.onlyInB, [{ gpa: 0x20000, byteLength: 0x1000 }]);
  const ignored = await compareGuestMemory(a, b, {
    ignoreGpaRanges: [
      { gpa: 0x1000, byteLength: 0x1000 },
      { gpa: 0x3000, byteLength: 0x1000 },
      { gpa: 0x10000, byteLength: 0x20000 },
    ],
  });
  assert.equal(ignored.equal, true);
});

Deno.test("compareGuestMemory() treats p_memsz beyond p_filesz as zeros", async () => {
  await using tmp = await tempDir();
  const a = `${tmp.path}/a.elf`, b = `${tmp.path}/b.elf`;
  await Deno.writeFile(a, buildElf([{ gpa: 0, data: page(3), memByteLength: 3 * 4096 }]));
  await Deno.writeFile(
    b,
    buildElf([{ gpa: 0, data: new Uint8Array([...page(3), ...page(0, 2)]) }]),
  );
  assert.equal((await compareGuestMemory(a, b)).equal, true);
});

Deno.test("hashElfLoads() hashes each PT_LOAD's file data", async () => {
  await using tmp = await tempDir();
  const a = `${tmp.path}/a.elf`;
  await Deno.writeFile(a, buildElf([{ gpa: 0x2000, data: page(5) }, { gpa: 0, data: page(4, 2) }]));
  const loads = await readElfLoads(a);
  assert.deepEqual(loads.map((l) => [l.gpa, l.fileByteLength]), [[0, 8192], [0x2000, 4096]]);
  const h = await hashElfLoads(a);
  assert.deepEqual(h.map((l) => l.sha256), [sha256Hex(page(4, 2)), sha256Hex(page(5))]);
  await Deno.writeFile(a, new Uint8Array(64));
  await assert.rejects(readElfLoads(a), /not an ELF/);
});
