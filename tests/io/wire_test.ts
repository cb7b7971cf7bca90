/**
 * Field tables (src/io/wire.ts): definition checks, width checks on write,
 * and the error offset of a 64-bit field past 2^53.
 */

import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { getWireBigUint, getWireUint, setWireUint, wireLayout } from "../../src/io/wire.ts";
import { EHDR32, EHDR64 } from "../../src/elf/ehdr.ts";
import { PHDR32, PHDR64 } from "../../src/elf/phdr.ts";
import { SHDR32, SHDR64 } from "../../src/elf/shdr.ts";
import {
  DISK_DUMP_HEADER_32,
  DISK_DUMP_HEADER_64,
  KDUMP_SUB_HEADER_32,
  KDUMP_SUB_HEADER_64,
} from "../../src/kdump/header.ts";
import { PAGE_DESC } from "../../src/kdump/page_desc.ts";

Deno.test("wireLayout() rejects fields outside the record and overlapping fields", () => {
  assert.throws(() => wireLayout("r", 4, { a: ["a", 2, 4] }), RangeError);
  assert.throws(() => wireLayout("r", 8, { a: ["a", 0, 4], b: ["b", 2, 4] }), /overlaps/);
});

Deno.test("every table covers its record without gaps where C has none", () => {
  // The ELF records are packed: the fields (plus e_ident) add up to the size.
  for (const [layout, extra] of [[EHDR64, 16], [EHDR32, 16], [PHDR64, 0], [PHDR32, 0]] as const) {
    const sum = Object.values(layout.fields).reduce((n: number, f) => n + f.width, extra);
    assert.equal(sum, layout.byteLength, layout.name);
  }
  for (const layout of [SHDR64, SHDR32, PAGE_DESC, KDUMP_SUB_HEADER_64, KDUMP_SUB_HEADER_32]) {
    const sum = Object.values(layout.fields).reduce((n, f) => n + f.width, 0);
    assert.equal(sum, layout.byteLength, layout.name);
  }
  // disk_dump_header: 64-bit has 6 bytes of padding before the timestamp (402 → 408).
  const sum = (l: typeof DISK_DUMP_HEADER_64) =>
    Object.values(l.fields).reduce((n, f) => n + f.width, 0);
  assert.equal(sum(DISK_DUMP_HEADER_64), 464 - 6);
  assert.equal(sum(DISK_DUMP_HEADER_32), 452 - 2);
});

Deno.test("setWireUint() refuses values wider than the field, naming it", () => {
  const v = new DataView(new ArrayBuffer(64));
  assert.throws(
    () => setWireUint(v, 0, PHDR32.fields.fileOffset, 0x1_0000_0000n, true),
    /p_offset = 0x100000000 into a 32-bit field/,
  );
  assert.throws(() => setWireUint(v, 0, EHDR64.fields.phdrCount, 0x10000, true), /e_phnum/);
  assert.throws(() => setWireUint(v, 0, EHDR64.fields.entry, -1, true), /e_entry/);
  setWireUint(v, 0, EHDR64.fields.entry, 0xffff_ffff_ffff_ffffn, false);
  assert.equal(getWireBigUint(v, 0, EHDR64.fields.entry, false), 0xffff_ffff_ffff_ffffn);
});

Deno.test("getWireUint() reports a 64-bit value past 2^53 at the field's input offset", () => {
  const v = new DataView(new ArrayBuffer(24));
  v.setBigUint64(0, 1n << 60n, true);
  try {
    getWireUint(v, 0, PAGE_DESC.fields.fileOffset, true, { format: "kdump", fileOffset: 0x7000 });
    assert.fail("no error");
  } catch (e) {
    assert.ok(e instanceof FormatError);
    assert.equal(e.code, "too-large");
    assert.equal(e.offset, 0x7000);
    assert.equal(e.format, "kdump");
  }
});
