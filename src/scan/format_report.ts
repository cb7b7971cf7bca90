/**
 * The human-readable form of a scan report (what `scan` prints without
 * `--json`).
 *
 * @module
 */

import { formatByteCount, hex } from "../io/text.ts";
import type { BlockFindings, DeviceFindings, PageFinding, ScanReport } from "./findings.ts";
import type { Coverage } from "./coverage.ts";
import { formatHexdump, fromHex } from "./hexdump.ts";

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function inputLine(r: ScanReport): string {
  const i = r.input;
  const name = i.path ?? "(memory)";
  const size = i.byteLength === null ? "" : `, ${formatByteCount(i.byteLength)}`;
  switch (i.kind) {
    case "raw":
      return `${name}: raw image at gpa ${hex(i.baseGpa ?? 0)}${size}`;
    case "elf":
      return `${name}: ELF dump${size}`;
    case "kdump":
      return `${name}: kdump-compressed dump${
        i.container === "kdump-flattened" ? " (flattened)" : ""
      }${size}`;
    case "mapped-ram":
      return `${name}: mapped-ram file${
        i.container && i.container !== "raw" ? ` in ${i.container}` : ""
      }${size}`;
    case "migration":
      return `${name}: migration stream${
        i.container && i.container !== "raw" ? ` in ${i.container}` : ""
      }${size}`;
  }
}

/** "examined X of Y unplugged; absent: A (why), B (why)". */
function coverageText(c: Coverage): string {
  const absent = c.absent.map((a) => `${formatByteCount(a.byteLength)} ${a.detail}`);
  return `examined ${formatByteCount(c.examinedBytes)} of ${
    formatByteCount(c.unpluggedBytes)
  } unplugged memory` +
    (absent.length === 0 ? "" : `; absent from the input: ${absent.join("; ")}`);
}

function deviceLines(d: DeviceFindings): string[] {
  const name = d.path || d.ramBlock || "(unnamed)";
  const ram = d.ramBlock && d.ramBlock !== name ? ` (${d.ramBlock})` : "";
  const lines = [
    `device ${name}${ram}: gpa ${hex(d.gpa)}-${hex(d.gpa + d.regionSize)}, block ${
      formatByteCount(d.blockSize)
    }, ` +
    `${d.pluggedBlocks}/${d.pluggedBlocks + d.unpluggedBlocks} blocks plugged: ` +
    (d.findings === 0
      ? "no findings"
      : `${plural(d.findings, "finding")} in ${plural(d.blocks.length, "block")}`),
  ];
  if (d.coverage !== null) lines.push(`  ${coverageText(d.coverage)}`);
  return lines;
}

function blockLines(b: BlockFindings, isStream: boolean, blocksOnly: boolean): string[] {
  const what = isStream ? plural(b.findings, "record") : plural(b.findings, "non-zero page");
  const parts = [
    `  block ${b.blockIndex} gpa ${hex(b.gpa)}-${hex(b.gpa + b.byteLength)} ramOffset ${
      hex(b.ramOffset)
    }: ${what}`,
  ];
  if (isStream) parts.push(`, ${b.nonZeroPages} non-zero`);
  parts.push(`, ${b.nonZeroBytes} non-zero bytes`);
  if (b.unknownContent > 0) parts.push(`, ${b.unknownContent} of unknown content`);
  parts.push(
    b.firstNonZero === null
      ? ", all zero"
      : `, first non-zero byte at block offset ${hex(b.firstNonZero.blockOffset)} (gpa ${
        hex(b.firstNonZero.gpa)
      })`,
  );
  const lines = [parts.join("")];
  for (const p of b.pages) lines.push(...pageLines(p));
  if (b.pages.length < b.findings) {
    lines.push(
      b.pages.length === 0 && blocksOnly
        ? "    (pages not known one by one: the plug state came after them)"
        : `    … ${b.findings - b.pages.length} more not listed`,
    );
  }
  return lines;
}

function pageLines(p: PageFinding): string[] {
  const where = p.streamOffset !== null
    ? `${p.source} record at stream offset ${p.streamOffset} (${hex(p.streamOffset)})`
    : p.fileOffset !== null
    ? `file offset ${hex(p.fileOffset)}`
    : "assembled from pieces";
  const content = p.nonZeroBytes === null
    ? "content unknown"
    : p.firstNonZeroOffset === null
    ? "all zero"
    : `${p.nonZeroBytes} non-zero bytes from page offset ${hex(p.firstNonZeroOffset)}`;
  const lines = [
    `    page gpa ${hex(p.gpa)} ramOffset ${hex(p.ramOffset)}, ${where}: ${content}`,
  ];
  if (p.sha256 !== null) lines.push(`      sha256 ${p.sha256}`);
  if (p.hexdump !== null) {
    lines.push(formatHexdump(fromHex(p.hexdump.hex), p.hexdump.gpa, { indent: "      " }));
  }
  return lines;
}

/**
 * Render a report for people: input, plug state, one line per device and
 * per block with findings, the listed pages with SHA-256 and hexdump, the
 * totals and warnings. Ends with a newline.
 *
 * @param report The report.
 * @returns The text.
 *
 * @example
 * ```ts ignore
 * import { formatScanReport } from "@vmem-dump/vmem-dump/scan";
 * console.log(formatScanReport(report));
 * ```
 */
export function formatScanReport(report: ScanReport): string {
  const isStream = report.input.kind === "migration" || report.input.kind === "mapped-ram";
  const s = report.summary;
  const lines: string[] = [];
  lines.push(`scan ${inputLine(report)}`);
  lines.push(
    `plug state: ${report.plugState.source}${
      report.plugState.detail ? ` (${report.plugState.detail})` : ""
    }, ` +
      `${plural(report.devices.length, "device")}, ${formatByteCount(s.unpluggedBytes)} unplugged`,
  );
  if (report.coverage !== null && report.devices.length > 1) {
    lines.push(`all devices: ${coverageText(report.coverage)}`);
  }
  if (s.pageRecords !== null) {
    lines.push(
      report.input.kind === "mapped-ram"
        ? `pages in the file: ${s.pageRecords}`
        : `page records in the stream: ${s.pageRecords}`,
    );
  }
  for (const d of report.devices) {
    lines.push(...deviceLines(d));
    for (const b of d.blocks) lines.push(...blockLines(b, isStream, report.details === "blocks"));
  }
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  if (s.findings > 0) {
    lines.push(
      `result: ${
        plural(s.findings, "finding")
      } (${s.nonZeroPages} non-zero, ${s.nonZeroBytes} non-zero bytes) ` +
        `in ${plural(s.blocksWithFindings, "block")} of ${
          plural(s.devicesWithFindings, "device")
        }` +
        (!s.truncated
          ? ""
          : report.details === "blocks"
          ? `; ${s.listedPages} listed (counted per block only)`
          : `; ${s.listedPages} listed (--max-findings ${report.maxFindings})`),
    );
  }
  lines.push(`verdict: ${report.verdict}: ${report.verdictReason}`);
  return lines.join("\n") + "\n";
}
