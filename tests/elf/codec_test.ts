import assert from "node:assert/strict";
import {
  decodePrstatus,
  decodeQemuCpuState,
  EHDR32_SIZE,
  EHDR64_SIZE,
  type ElfHeader,
  type ElfPhdr,
  encodeNote,
  parseNotes,
  parseVmcoreinfo,
  readEhdr,
  readIdent,
  readPhdr,
  readShdr,
  writeEhdr,
  writePhdr,
  writeShdr,
} from "../../src/elf/mod.ts";
import { emptyShdr } from "../../src/elf/shdr.ts";
import { FormatError, UnexpectedEofError } from "../../src/errors.ts";

function header(elfClass: 32 | 64, littleEndian: boolean): ElfHeader {
  const ident = new Uint8Array(16);
  ident.set([0x7f, 0x45, 0x4c, 0x46, elfClass === 64 ? 2 : 1, littleEndian ? 1 : 2, 1, 0]);
  return {
    elfClass,
    littleEndian,
    ident,
    type: 4,
    machine: elfClass === 64 ? 62 : 3,
    version: 1,
    entry: 0x1234n,
    phdrFileOffset: 0x40,
    shdrFileOffset: 0x1_0000,
    flags: 1,
    ehdrByteLength: 8,
    phdrEntrySize: elfClass === 64 ? 56 : 32,
    phdrCount: 0xffff,
    shdrEntrySize: elfClass === 64 ? 64 : 40,
    shdrCount: 1,
    shstrIndex: 0,
  };
}

for (const elfClass of [32, 64] as const) {
  for (const le of [true, false]) {
    const tag = `ELF${elfClass} ${le ? "LE" : "BE"}`;

    Deno.test(`readEhdr() decodes what writeEhdr() wrote (${tag})`, () => {
      const h = header(elfClass, le);
      const bytes = new Uint8Array(elfClass === 64 ? EHDR64_SIZE : EHDR32_SIZE);
      writeEhdr(new DataView(bytes.buffer), 0, h);
      assert.deepEqual(readEhdr(bytes), h);
      // e_machine sits at 18 in the file's byte order.
      assert.equal(le ? bytes[18] : bytes[19], h.machine);
    });

    Deno.test(`readPhdr() decodes what writePhdr() wrote (${tag})`, () => {
      const p: ElfPhdr = {
        type: 1,
        flags: 7,
        fileOffset: 0x1000n,
        vaddr: elfClass === 64 ? 0xffff_8880_0000_0000n : 0xc000_0000n,
        paddr: 0x10_0000n,
        fileByteLength: 0x2000n,
        memByteLength: 0x3000n,
        align: 0x1000n,
      };
      const v = new DataView(new ArrayBuffer(64));
      writePhdr(v, 4, elfClass, le, p);
      assert.deepEqual(readPhdr(v, 4, elfClass, le), p);
      // p_flags moves: 4 in ELF64, 24 in ELF32.
      assert.equal(v.getUint32(4 + (elfClass === 64 ? 4 : 24), le), 7);
    });

    Deno.test(`readShdr() decodes what writeShdr() wrote (${tag})`, () => {
      const s = {
        ...emptyShdr(),
        nameIndex: 1,
        type: 3,
        fileOffset: 0x99n,
        byteLength: 11n,
        info: 70000,
        link: 2,
      };
      const v = new DataView(new ArrayBuffer(64));
      writeShdr(v, 0, elfClass, le, s);
      assert.deepEqual(readShdr(v, 0, elfClass, le), s);
    });

    Deno.test(`parseNotes() splits notes written by encodeNote() (${tag})`, () => {
      const desc1 = new Uint8Array(336).fill(7);
      const desc2 = new TextEncoder().encode(
        "OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(phys_base)=0\n",
      );
      const a = encodeNote({ name: "CORE", type: 1, desc: desc1 }, le);
      const b = encodeNote({ name: "QEMU", type: 0, desc: new Uint8Array(432) }, le);
      const c = encodeNote({ name: "VMCOREINFO", type: 0, desc: desc2 }, le);
      assert.equal(a.byteLength, 356);
      assert.equal(b.byteLength, 452);
      const all = new Uint8Array([...a, ...b, ...c]);
      const notes = parseNotes(all, 0x200, le);
      assert.deepEqual(notes.map((n) => [n.kind, n.name, n.type, n.fileOffset, n.byteLength]), [
        ["prstatus", "CORE", 1, 0x200, 356],
        ["qemu-cpu-state", "QEMU", 0, 0x200 + 356, 452],
        ["vmcoreinfo", "VMCOREINFO", 0, 0x200 + 808, c.byteLength],
      ]);
      assert.deepEqual(notes[0]!.desc, desc1);
      assert.equal(parseVmcoreinfo(notes[2]!.desc).get("PAGESIZE"), "4096");
      assert.equal(parseVmcoreinfo(notes[2]!.desc).get("NUMBER(phys_base)"), "0");
    });
  }
}

Deno.test("readIdent() rejects bad magic, class, encoding and version with offsets", () => {
  const good = [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  const cases: Array<[number, number, string, number]> = [
    [1, 0x46, "bad-magic", 0],
    [4, 3, "bad-header", 4],
    [5, 0, "bad-header", 5],
    [6, 2, "bad-version", 6],
  ];
  for (const [at, value, code, offset] of cases) {
    const bytes = new Uint8Array(good);
    bytes[at] = value;
    assert.throws(
      () => readIdent(bytes),
      (e) => e instanceof FormatError && e.code === code && e.offset === offset,
    );
  }
  assert.throws(() => readIdent(new Uint8Array(good).subarray(0, 10)), UnexpectedEofError);
  assert.throws(() => readEhdr(new Uint8Array([...good, 0, 0])), UnexpectedEofError);
});

Deno.test("parseNotes() rejects a note whose descriptor runs past the segment", () => {
  const note = encodeNote({ name: "CORE", type: 1, desc: new Uint8Array(336) }, true);
  assert.throws(
    () => parseNotes(note.subarray(0, 300), 0x1000, true),
    (e) => e instanceof FormatError && e.code === "bad-note" && e.offset === 0x1004,
  );
  // A name that runs past the end.
  const bad = note.slice(0, 16);
  new DataView(bad.buffer).setUint32(0, 100, true);
  assert.throws(
    () => parseNotes(bad, 0, true),
    (e) => e instanceof FormatError && e.code === "bad-note" && e.offset === 0,
  );
  // A partial header of non-zero bytes.
  assert.throws(
    () => parseNotes(new Uint8Array([1, 0, 0]), 0x40, true),
    (e) => e instanceof FormatError && e.offset === 0x40,
  );
  // Zero padding after the last note is accepted.
  assert.equal(parseNotes(new Uint8Array([...note, 0, 0, 0, 0]), 0, true).length, 1);
});

Deno.test("parseNotes() accepts a last note without descriptor padding", () => {
  const note = encodeNote(
    { name: "VMCOREINFO", type: 0, desc: new Uint8Array([65, 61, 49]) },
    true,
  );
  const trimmed = note.subarray(0, note.byteLength - 1); // desc of 3 bytes, padding cut
  const [n] = parseNotes(trimmed, 0, true);
  assert.equal(n!.desc.byteLength, 3);
  assert.equal(n!.byteLength, trimmed.byteLength);
});

Deno.test("decodePrstatus() reads pid and registers of x86_64 and i386 notes", () => {
  const d64 = new Uint8Array(336);
  const v64 = new DataView(d64.buffer);
  v64.setUint32(32, 2, false);
  v64.setBigUint64(112 + 16 * 8, 0xffff_ffff_8100_0000n, false); // rip
  v64.setBigUint64(112 + 26 * 8, 0x2bn, false); // gs
  const s64 = decodePrstatus(d64, 62, false)!;
  assert.equal(s64.pid, 2);
  assert.equal(s64.registers.rip, 0xffff_ffff_8100_0000n);
  assert.equal(s64.registers.gs, 0x2bn);
  const d32 = new Uint8Array(144);
  const v32 = new DataView(d32.buffer);
  v32.setUint32(24, 3, true);
  v32.setUint32(72 + 12 * 4, 0xc010_0000, true); // eip
  const s32 = decodePrstatus(d32, 3, true)!;
  assert.equal(s32.pid, 3);
  assert.equal(s32.registers.eip, 0xc010_0000n);
  assert.equal(decodePrstatus(d32, 62, true), undefined);
  assert.equal(decodePrstatus(new Uint8Array(10), 183, true), undefined);
});

Deno.test("decodeQemuCpuState() checks version and size", () => {
  const d = new Uint8Array(440);
  const v = new DataView(d.buffer);
  v.setUint32(0, 1, true);
  v.setUint32(4, 440, true);
  v.setBigUint64(8 + 16 * 8, 0x1234n, true); // rip
  v.setUint32(152 + 0 * 24, 0x10, true); // cs selector
  const s = decodeQemuCpuState(d, true)!;
  assert.equal(s.registers.rip, 0x1234n);
  assert.equal(s.segments.cs!.selector, 0x10);
  v.setUint32(0, 2, true);
  assert.equal(decodeQemuCpuState(d, true), undefined);
  v.setUint32(0, 1, true);
  v.setUint32(4, 4096, true);
  assert.equal(decodeQemuCpuState(d, true), undefined);
});
