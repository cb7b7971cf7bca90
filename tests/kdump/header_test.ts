/**
 * kdump header writers against files built field by field with hand-written
 * offsets (tests/kdump/_builder.ts): reading a built file and writing its
 * headers back gives the same bytes, in both byte orders and word sizes.
 */

import assert from "node:assert/strict";
import { viewOf } from "../../src/io/endian.ts";
import { diskDumpHeaderLayout } from "../../src/kdump/header.ts";
import {
  kdumpSubHeaderSize,
  PAGE_DESC_SIZE,
  readDiskDumpHeader,
  readKdumpSubHeader,
  readPageDesc,
  writeDiskDumpHeader,
  writeKdumpSubHeader,
  writePageDesc,
} from "../../src/kdump/mod.ts";
import { buildKdump } from "./_builder.ts";

for (const wordSize of [8, 4] as const) {
  for (const littleEndian of [true, false]) {
    const tag = `${wordSize * 8}-bit ${littleEndian ? "LE" : "BE"}`;
    Deno.test(`kdump headers and descriptors round-trip byte for byte (${tag})`, () => {
      const pages = new Map([[3, new Uint8Array(4096).fill(9)], [70_000, new Uint8Array(4096)]]);
      const { bytes, descTableOffset } = buildKdump({
        maxMapnr: 80_000,
        pages,
        wordSize,
        littleEndian,
        codec: 0x20,
      });
      const header = readDiskDumpHeader(bytes.subarray(0, 464));
      assert.equal(header.wordSize, wordSize);
      assert.equal(header.littleEndian, littleEndian);
      const size = diskDumpHeaderLayout(wordSize).byteLength;
      const again = new Uint8Array(size);
      writeDiskDumpHeader(again, header);
      assert.deepEqual(again, bytes.subarray(0, size));

      const subSize = kdumpSubHeaderSize(wordSize);
      const sub = readKdumpSubHeader(bytes.subarray(4096, 4096 + subSize), header, bytes.length);
      assert.equal(sub.maxMapnr, 80_000);
      const subAgain = new Uint8Array(subSize);
      writeKdumpSubHeader(subAgain, sub, header);
      assert.deepEqual(subAgain, bytes.subarray(4096, 4096 + subSize));

      for (let i = 0; i < pages.size; i++) {
        const at = descTableOffset + i * PAGE_DESC_SIZE;
        const d = readPageDesc(viewOf(bytes), at, littleEndian, at);
        const out = new Uint8Array(PAGE_DESC_SIZE);
        writePageDesc(viewOf(out), 0, littleEndian, d);
        assert.deepEqual(out, bytes.subarray(at, at + PAGE_DESC_SIZE));
      }
    });
  }
}
