import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FindingCollector } from "../../src/scan/findings.ts";
import { formatScanReport } from "../../src/scan/format_report.ts";
import { formatHexdump, fromHex, hexWindow, toHex } from "../../src/scan/hexdump.ts";
import { BLOCK, GPA, testMap } from "./_fixtures.ts";

const META = {
  input: { path: null, kind: "raw" as const, container: null, byteLength: null, baseGpa: GPA },
  plugState: { source: "plugmap", detail: null },
};

Deno.test("FindingCollector.report() keeps totals exact while listing at most maxFindings pages", () => {
  const map = testMap();
  const device = map.devices[0]!;
  const collector = new FindingCollector({ maxFindings: 3 });
  const page = new Uint8Array(4096);
  for (let i = 0; i < 10; i++) {
    page.fill(0);
    page[100 + i] = 0xaa;
    page[200] = 0xbb;
    collector.addPage(device, {
      gpa: GPA + BLOCK + i * 4096,
      content: page,
      source: "memory",
      fileOffset: BLOCK + i * 4096,
    });
  }
  const report = collector.report(map, { ...META, sortPagesByGpa: true });
  assert.equal(report.summary.findings, 10);
  assert.equal(report.summary.nonZeroPages, 10);
  assert.equal(report.summary.nonZeroBytes, 20);
  assert.equal(report.summary.listedPages, 3);
  assert.equal(report.summary.truncated, true);
  assert.equal(report.summary.unpluggedBytes, 3 * BLOCK);
  const block = report.devices[0]!.blocks[0]!;
  assert.equal(block.blockIndex, 1);
  assert.equal(block.ramOffset, BLOCK);
  assert.deepEqual(block.firstNonZero, { blockOffset: 100, gpa: GPA + BLOCK + 100 });
  assert.equal(block.pages.length, 3);
  const first = block.pages[0]!;
  assert.equal(first.firstNonZeroOffset, 100);
  assert.equal(first.nonZeroBytes, 2);
  assert.equal(first.fileOffset, BLOCK);
  assert.equal(first.hexdump!.gpa, GPA + BLOCK + 96);
  assert.equal(fromHex(first.hexdump!.hex)[4], 0xaa);
  const expected = new Uint8Array(4096);
  expected[100] = 0xaa;
  expected[200] = 0xbb;
  assert.equal(first.sha256, createHash("sha256").update(expected).digest("hex"));
  // The report is plain JSON.
  assert.deepEqual(JSON.parse(JSON.stringify(report)), report);
  assert.match(formatScanReport(report), /10 findings .* 3 listed \(--max-findings 3\)/);
});

Deno.test("FindingCollector.addPage() records zero and unknown pages without counting them as non-zero", () => {
  const map = testMap();
  const device = map.devices[0]!;
  const collector = new FindingCollector();
  collector.addPage(device, {
    gpa: GPA + 2 * BLOCK,
    content: new Uint8Array(4096),
    source: "ram-zero-page",
    streamOffset: 99,
  });
  collector.addPage(device, {
    gpa: GPA + 2 * BLOCK + 4096,
    content: undefined,
    source: "ram-xbzrle-page",
    streamOffset: 200,
  });
  const report = collector.report(map, META);
  const block = report.devices[0]!.blocks[0]!;
  assert.equal(block.findings, 2);
  assert.equal(block.nonZeroPages, 0);
  assert.equal(block.unknownContent, 1);
  assert.equal(block.firstNonZero, null);
  assert.equal(
    block.pages[0]!.sha256,
    createHash("sha256").update(new Uint8Array(4096)).digest("hex"),
  );
  assert.equal(block.pages[0]!.firstNonZeroOffset, null);
  assert.equal(block.pages[1]!.sha256, null);
  assert.equal(block.pages[1]!.hexdump, null);
});

Deno.test("FindingCollector.addPage() rejects a page outside the device", () => {
  const map = testMap();
  assert.throws(
    () =>
      new FindingCollector().addPage(map.devices[0]!, {
        gpa: GPA - 4096,
        content: undefined,
        source: "memory",
      }),
    RangeError,
  );
});

Deno.test("hexWindow() and formatHexdump() show the bytes around the first non-zero byte", () => {
  const page = new Uint8Array(4096);
  page.set(new TextEncoder().encode("EVIL"), 4094 - 2);
  const w = hexWindow(page, 0x1000, 4092);
  assert.equal(w.gpa, 0x1000 + 4096 - 32); // shifted back to stay inside the page
  assert.equal(toHex(fromHex(w.hex)), w.hex);
  const text = formatHexdump(fromHex(w.hex), w.gpa);
  assert.equal(text.split("\n").length, 2);
  assert.ok(text.startsWith("000001fe0  00 00"), text);
  assert.match(text, /\|\.\.\.\.\.\.\.\.\.\.\.\.EVIL\|$/);
  assert.throws(() => fromHex("abc"), SyntaxError);
});
