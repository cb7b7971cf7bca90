import assert from "node:assert/strict";
import { UnexpectedEofError } from "../../src/errors.ts";
import { createHash } from "node:crypto";
import { iterateGpaRange, planGpaRange, readElfCore } from "../../src/elf/reader.ts";
import { bytesPositional, type PositionalReader } from "../../src/io/positional.ts";
import { scanElfCore } from "../../src/scan/scan_elf.ts";
import { scanRawImage } from "../../src/scan/scan_raw.ts";
import { seededRandom } from "../_util/chunkings.ts";
import { buildElf } from "../_util/elf_builder.ts";
import { BLOCK, GPA, testMap } from "./_fixtures.ts";

/** A reader that remembers every range read. */
function spy(reader: PositionalReader): PositionalReader & { reads: [number, number][] } {
  const reads: [number, number][] = [];
  return {
    byteLength: reader.byteLength,
    reads,
    readInto(fileOffset, into) {
      reads.push([fileOffset, into.byteLength]);
      return reader.readInto(fileOffset, into);
    },
    close() {},
  };
}

/** A 4-block image: block 0 plugged and full of data, blocks 1-3 unplugged. */
function image(): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(4 * BLOCK);
  bytes.fill(0x5a, 0, BLOCK); // plugged data: never a finding
  bytes[BLOCK + 5 * 4096 + 0x789] = 0x11; // block 1, page 5, mid-page
  bytes[BLOCK + 5 * 4096 + 0x900] = 0x22;
  bytes[3 * BLOCK + BLOCK - 1] = 0x33; // last byte of the region
  return bytes;
}

Deno.test("scanRawImage() reports non-zero unplugged pages with the exact first non-zero byte", async () => {
  const reader = spy(bytesPositional(image()));
  const report = await scanRawImage(reader, {
    plugMap: testMap([0]),
    baseGpa: GPA,
    chunkSize: 1 << 20,
  });
  assert.equal(report.summary.findings, 2);
  assert.equal(report.summary.nonZeroBytes, 3);
  assert.equal(report.coverage!.examinedBytes, 3 * BLOCK);
  assert.equal(report.coverage!.absentBytes, 0);
  const [b1, b3] = report.devices[0]!.blocks;
  assert.equal(b1!.blockIndex, 1);
  assert.deepEqual(b1!.firstNonZero, {
    blockOffset: 5 * 4096 + 0x789,
    gpa: GPA + BLOCK + 5 * 4096 + 0x789,
  });
  assert.equal(b1!.pages[0]!.gpa, GPA + BLOCK + 5 * 4096);
  assert.equal(b1!.pages[0]!.fileOffset, BLOCK + 5 * 4096);
  assert.equal(b1!.pages[0]!.firstNonZeroOffset, 0x789);
  assert.equal(b1!.pages[0]!.nonZeroBytes, 2);
  assert.equal(b3!.blockIndex, 3);
  assert.deepEqual(b3!.firstNonZero, { blockOffset: BLOCK - 1, gpa: GPA + 4 * BLOCK - 1 });
  // Plugged memory is skipped, not read.
  for (const [at, n] of reader.reads) {
    assert.ok(at >= BLOCK && at + n <= 4 * BLOCK, `read ${at}+${n}`);
  }
});

Deno.test("scanRawImage() counts unplugged memory outside the image as absent", async () => {
  const bytes = image().subarray(0, 2 * BLOCK); // the image stops after block 1
  const report = await scanRawImage(bytesPositional(bytes), {
    plugMap: testMap([0]),
    baseGpa: GPA,
  });
  assert.equal(report.summary.findings, 1);
  assert.equal(report.coverage!.examinedBytes, BLOCK);
  assert.deepEqual(report.coverage!.absent.map((a) => [a.reason, a.byteLength]), [
    ["outside-image", 2 * BLOCK],
  ]);
  assert.equal(report.verdict, "findings");
  // Without the finding, the same image is inconclusive, not clean.
  const clean = await scanRawImage(bytesPositional(new Uint8Array(2 * BLOCK)), {
    plugMap: testMap([0]),
    baseGpa: GPA,
  });
  assert.equal(clean.verdict, "inconclusive");
  assert.match(
    clean.verdictReason,
    /4.00 MiB of 6.00 MiB unplugged memory was not in the input: 4.00 MiB outside the raw image/,
  );
});

Deno.test("scanRawImage() finds nothing when every block with data is plugged", async () => {
  const report = await scanRawImage(bytesPositional(image()), {
    plugMap: testMap([0, 1, 3]),
    baseGpa: GPA,
  });
  assert.equal(report.summary.findings, 0);
  assert.equal(report.coverage!.examinedBytes, BLOCK);
  assert.equal(report.verdict, "clean");
  assert.equal(report.devices[0]!.coverage!.unpluggedBytes, BLOCK);
});

Deno.test("scanRawImage() rejects an unaligned base and reports a file that shrinks", async () => {
  await assert.rejects(
    scanRawImage(bytesPositional(image()), { plugMap: testMap(), baseGpa: GPA + 1 }),
    RangeError,
  );
  const shrinking: PositionalReader = {
    byteLength: 4 * BLOCK,
    readInto: () => Promise.resolve(0),
    close() {},
  };
  await assert.rejects(
    scanRawImage(shrinking, { plugMap: testMap(), baseGpa: GPA }),
    UnexpectedEofError,
  );
});

Deno.test("scanRawImage() lists at most maxFindings pages and keeps the totals exact", async () => {
  const bytes = new Uint8Array(4 * BLOCK);
  for (let p = 0; p < 20; p++) bytes[BLOCK + p * 4096 + p] = 1;
  const report = await scanRawImage(bytesPositional(bytes), {
    plugMap: testMap(),
    baseGpa: GPA,
    maxFindings: 4,
  });
  assert.equal(report.summary.findings, 20);
  assert.equal(report.summary.listedPages, 4);
  assert.deepEqual(report.devices[0]!.blocks[0]!.pages.map((p) => p.firstNonZeroOffset), [
    0,
    1,
    2,
    3,
  ]);
});

Deno.test("scanElfCore() scans unplugged memory through the PT_LOADs, cut pages included", async () => {
  const mem = image();
  // Block 1 is split across two PT_LOADs in the middle of a page that holds data on both sides;
  // block 2 is a zero-fill tail; block 3 is not in the dump.
  const cutAt = 5 * 4096 + 0x800;
  const elf = buildElf({
    loads: [
      { paddr: BigInt(GPA), data: mem.subarray(0, BLOCK + cutAt) },
      {
        paddr: BigInt(GPA + BLOCK + cutAt),
        data: mem.subarray(BLOCK + cutAt, 2 * BLOCK),
        memByteLength: 2 * BLOCK - cutAt,
      },
    ],
  });
  using core = await readElfCore(bytesPositional(elf));
  const report = await scanElfCore(core, { plugMap: testMap([0]), chunkSize: 1 << 16 });
  assert.equal(report.input.kind, "elf");
  assert.equal(report.summary.findings, 1);
  assert.equal(report.coverage!.examinedBytes, BLOCK);
  assert.deepEqual(
    report.coverage!.absent.map((a) => [a.reason, a.byteLength]).sort(),
    [["not-in-dump", BLOCK], ["zero-fill", BLOCK]],
  );
  assert.equal(report.coverage!.absentBytes, 2 * BLOCK);
  const block = report.devices[0]!.blocks[0]!;
  assert.equal(block.blockIndex, 1);
  assert.deepEqual(block.firstNonZero, {
    blockOffset: 5 * 4096 + 0x789,
    gpa: GPA + BLOCK + 5 * 4096 + 0x789,
  });
  const page = block.pages[0]!;
  assert.equal(page.nonZeroBytes, 2); // both halves of the cut page
  assert.equal(page.fileOffset, null);
});

Deno.test("scanElfCore() leaves out the bytes past the end of the file of a header crash would read as a load", async () => {
  const mem = image();
  // Header 1, made a PT_NULL (crash reads every header after the first as a load), would give
  // unplugged block 2 bytes from a file offset past the end of the file: no reader can show
  // them, so they are neither a finding nor an error.
  const elf = buildElf({
    extraNotes: [new Uint8Array(16)],
    loads: [{ paddr: BigInt(GPA), data: mem }],
  });
  const view = new DataView(elf.buffer);
  const phdr1 = Number(view.getBigUint64(32, true)) + 56;
  assert.equal(view.getUint32(phdr1, true), 4); // PT_NOTE
  view.setUint32(phdr1, 0, true); // PT_NULL
  // [p_offset, findings]: wholly past the end, the two pages of image() and nothing else; the
  // last 8 file bytes (the region's last 8 bytes, 0x33 at the end), a third finding at the
  // header's gpa, which is what crash shows there.
  const cases: Array<[number, number]> = [[elf.byteLength + 0x1000_0000, 2], [
    elf.byteLength - 8,
    3,
  ]];
  for (const [fileOffset, findings] of cases) {
    view.setBigUint64(phdr1 + 8, BigInt(fileOffset), true); // p_offset
    view.setBigUint64(phdr1 + 24, BigInt(GPA + 2 * BLOCK), true); // p_paddr
    view.setBigUint64(phdr1 + 32, BigInt(2 * 4096), true); // p_filesz
    using core = await readElfCore(bytesPositional(elf));
    const report = await scanElfCore(core, { plugMap: testMap([0]), chunkSize: 1 << 16 });
    assert.equal(report.summary.findings, findings, `p_offset 0x${fileOffset.toString(16)}`);
    if (findings === 3) {
      const block2 = report.devices[0]!.blocks.find((b) => b.blockIndex === 2)!;
      assert.deepEqual(block2.firstNonZero, { blockOffset: 7, gpa: GPA + 2 * BLOCK + 7 });
    }
  }
});

Deno.test("scanElfCore() gives file offsets of pages inside one PT_LOAD", async () => {
  const elf = buildElf({ loads: [{ paddr: BigInt(GPA), data: image() }] });
  using core = await readElfCore(bytesPositional(elf));
  const report = await scanElfCore(core, { plugMap: testMap([0]) });
  assert.equal(report.summary.findings, 2);
  const load = core.loads.find((l) => l.gpa === GPA)!;
  const page = report.devices[0]!.blocks[0]!.pages[0]!;
  assert.equal(page.fileOffset, load.fileOffset! + BLOCK + 5 * 4096);
  assert.equal(elf[page.fileOffset! + 0x789], 0x11);
});

Deno.test("scanRawImage() zero-extends a short last page of an image whose size is not a multiple of 4 KiB", async () => {
  const bytes = new Uint8Array(BLOCK + 4096 + 100);
  bytes[BLOCK + 4096 + 50] = 9;
  const report = await scanRawImage(bytesPositional(bytes), {
    plugMap: testMap([0]),
    baseGpa: GPA,
  });
  assert.equal(report.summary.findings, 1);
  assert.equal(report.coverage!.examinedBytes, 4096 + 100);
  const page = report.devices[0]!.blocks[0]!.pages[0]!;
  assert.equal(page.gpa, GPA + BLOCK + 4096);
  assert.equal(page.firstNonZeroOffset, 50);
  const expected = new Uint8Array(4096);
  expected[50] = 9;
  assert.equal(page.sha256, createHash("sha256").update(expected).digest("hex"));
});

Deno.test("planGpaRange() plans the same pieces iterateGpaRange() reads, overlapping PT_LOADs included", async () => {
  const random = seededRandom(11);
  let compared = 0;
  for (let round = 0; round < 30; round++) {
    const loads = [];
    for (let i = 0; i < 4; i++) {
      const start = Math.floor(random() * 64) * 512;
      const fileBytes = Math.floor(random() * 32) * 512;
      loads.push({
        paddr: BigInt(start),
        vaddr: BigInt(start) + BigInt(i) * (1n << 40n), // distinct deltas: overlaps are allowed
        data: new Uint8Array(fileBytes).fill(i + 1),
        memByteLength: fileBytes + Math.floor(random() * 4) * 512,
      });
    }
    let elf: Uint8Array;
    try {
      elf = buildElf({ loads });
    } catch {
      continue;
    }
    let core;
    try {
      core = await readElfCore(bytesPositional(elf));
    } catch {
      continue; // the reader refuses some overlaps; nothing to compare then
    }
    const ranges = [{ gpa: 0, byteLength: 20_000 }, { gpa: 24_576, byteLength: 20_000 }];
    const planned = ranges.flatMap((r) => [...planGpaRange(core, r)]).map((p) =>
      p.kind === "data"
        ? { kind: "data", gpa: p.gpa, byteLength: p.byteLength, fileOffset: p.fileOffset }
        : { kind: p.kind, gpa: p.gpa, byteLength: p.byteLength }
    );
    const read = [];
    for (const r of ranges) {
      for await (const c of iterateGpaRange(core, r)) {
        read.push(
          c.kind === "data"
            ? { kind: "data", gpa: c.gpa, byteLength: c.byteLength, fileOffset: c.fileOffset }
            : { kind: c.kind, gpa: c.gpa, byteLength: c.byteLength },
        );
      }
    }
    // iterateGpaRange() splits data into chunks; merge adjacent data pieces before comparing.
    const merged: typeof read = [];
    for (const c of read) {
      const last = merged[merged.length - 1];
      if (
        last && last.kind === "data" && c.kind === "data" && last.gpa + last.byteLength === c.gpa &&
        last.fileOffset! + last.byteLength === c.fileOffset
      ) last.byteLength += c.byteLength;
      else merged.push({ ...c });
    }
    assert.deepEqual(planned, merged, `round ${round}`);
    compared++;
    core.close();
  }
  assert.ok(compared >= 10, `only ${compared} layouts compared`);
});
