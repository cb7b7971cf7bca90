/**
 * The one envelope of every `--json` report (docs/glossary.md): `kind`,
 * `version`, `tool`, `input`, `verdict`, then the command's own fields; the
 * report versions in one table; and the glossary's device and range objects,
 * converted from the library's camelCase in one place.
 *
 * @module
 */

import { TOOL_VERSION } from "../src/version.ts";
import type { CliIo } from "./io.ts";

/**
 * The version of each command's report. Bump a command's number whenever
 * its report changes shape, and say what changed in docs/glossary.md.
 */
export const REPORT_VERSIONS = {
  inspect: 2,
  plugmap: 2,
  filter: 2,
  verify: 2,
  proxy: 2,
  strip: 2,
  scan: 3,
  convert: 2,
} as const;

/** A command that prints a report. */
export type ReportCommand = keyof typeof REPORT_VERSIONS;

/** The outcome of a command; see {@linkcode VERDICT_EXIT_CODES}. */
export type Verdict = "done" | "clean" | "violations" | "findings" | "inconclusive";

/** The exit code of each verdict (0 done or clean, 3 violations or findings, 4 inconclusive). */
export const VERDICT_EXIT_CODES: Readonly<Record<Verdict, number>> = {
  done: 0,
  clean: 0,
  violations: 3,
  findings: 3,
  inconclusive: 4,
};

/** What an input or output is. */
export type ReportFormat = "migration" | "mapped-ram" | "elf" | "kdump" | "raw" | "plugmap";

/** The `input` (and `output`) object of a report. */
export interface ReportFile {
  /** As given on the command line (`-`: standard input or output; proxy: the endpoint). */
  path: string;
  /** What it is. */
  format: ReportFormat;
  /** What wraps it (`raw` when nothing does), or `null` when it does not apply. */
  container: string | null;
  /** Its size as stored (input) or the bytes written (output); `null` when unknown. */
  byteLength: number | null;
  /** Command-specific additions (`sha256`, `compression`, `libvirt`, `baseGpa` …). */
  [extra: string]: unknown;
}

/** The envelope fields a command supplies. */
export interface ReportHead {
  /** The input. */
  input: ReportFile;
  /** The outcome. */
  verdict: Verdict;
  /** The output, for commands that write one. */
  output?: ReportFile | undefined;
}

/** The envelope's keys, which a report body must not repeat. */
const ENVELOPE_KEYS = new Set(["kind", "version", "tool", "input", "verdict", "output"]);

/** `vmem-dump X.Y.Z`: the `tool` of every report. */
export const TOOL_NAME_VERSION = `vmem-dump ${TOOL_VERSION}`;

/**
 * A report: the envelope, then `output` when there is one, then `body` in
 * its own key order.
 *
 * @param command The command (its `kind` is `<command>-report`).
 * @param head Input, verdict, output.
 * @param body The command's fields.
 * @returns The report object.
 * @throws {TypeError} when `body` repeats an envelope key (a bug).
 */
export function buildReport(
  command: ReportCommand,
  head: ReportHead,
  body: Record<string, unknown>,
): Record<string, unknown> {
  const report: Record<string, unknown> = {
    kind: `${command}-report`,
    version: REPORT_VERSIONS[command],
    tool: TOOL_NAME_VERSION,
    input: head.input,
    verdict: head.verdict,
  };
  if (head.output !== undefined) report.output = head.output;
  for (const [key, value] of Object.entries(body)) {
    if (ENVELOPE_KEYS.has(key)) {
      throw new TypeError(`Internal error: the ${command} report body repeats the key ${key}`);
    }
    report[key] = value;
  }
  return report;
}

/**
 * The report as JSON text (two-space indent, final newline).
 *
 * @param command The command.
 * @param head Input, verdict, output.
 * @param body The command's fields.
 * @returns The text to print.
 */
export function reportJson(
  command: ReportCommand,
  head: ReportHead,
  body: Record<string, unknown>,
): string {
  return JSON.stringify(buildReport(command, head, body), null, 2) + "\n";
}

/**
 * Print a report: on standard output, or on standard error when standard
 * output carries the command's data (`OUT` is `-`).
 *
 * @param io The command's output.
 * @param text The report text.
 * @param dataOnStdout Whether standard output carries data.
 */
export async function printReport(io: CliIo, text: string, dataOnStdout = false): Promise<void> {
  await (dataOnStdout ? io.err(text) : io.out(text));
}

/** Device fields as the library holds them (camelCase; unknown ones absent or `undefined`). */
export interface DeviceFields {
  /** PCI path (`""` when unknown). */
  path: string;
  /** RAMBlock idstr (`""` when unknown). */
  ramblock: string;
  /** Guest-physical base. */
  memaddr: number;
  /** Region size. */
  regionSize?: number | undefined;
  /** Block size. */
  blockSize: number;
  /** NUMA node. */
  node?: number | undefined;
  /** Usable region size (`null`: unknown, kept as `null`). */
  usableRegionSize?: number | null | undefined;
  /** Plugged bytes. */
  size?: number | undefined;
  /** Requested size (`null`: unknown, kept as `null`). */
  requestedSize?: number | null | undefined;
  /** Plugged block runs `[firstBlock, blockCount]`. */
  plugged?: readonly (readonly [number, number])[] | undefined;
}

/**
 * A device object in the glossary's keys (the plug-map JSON keys, QMP's
 * names): `path`, `ramblock`, `memaddr`, `region-size`, `block-size`, and
 * `node`, `usable-region-size`, `size`, `requested-size`, `plugged` when the
 * caller knows them. Report fields go after it (spread it first).
 *
 * @param d The device as the library holds it.
 * @returns The JSON object.
 */
export function deviceJson(d: DeviceFields): Record<string, unknown> {
  const out: Record<string, unknown> = { path: d.path, ramblock: d.ramblock, memaddr: d.memaddr };
  if (d.regionSize !== undefined) out["region-size"] = d.regionSize;
  out["block-size"] = d.blockSize;
  if (d.node !== undefined) out.node = d.node;
  if (d.usableRegionSize !== undefined) out["usable-region-size"] = d.usableRegionSize;
  if (d.size !== undefined) out.size = d.size;
  if (d.requestedSize !== undefined) out["requested-size"] = d.requestedSize;
  if (d.plugged !== undefined) out.plugged = d.plugged.map(([first, count]) => [first, count]);
  return out;
}

/**
 * Guest-physical ranges as the glossary writes them: `[{gpa, byteLength}]`.
 *
 * @param ranges Ranges (extra fields are dropped).
 * @returns The JSON list.
 */
export function gpaRangesJson(
  ranges: readonly { gpa: number; byteLength: number }[],
): { gpa: number; byteLength: number }[] {
  return ranges.map((r) => ({ gpa: r.gpa, byteLength: r.byteLength }));
}

/** Where a plug state came from (docs/glossary.md, "Plug-state sources"). */
export type PlugStateSourceName =
  | "plugmap"
  | "plugmap-from"
  | "early"
  | "device"
  | "first-pass"
  | "structure";

/** The `plugState` object of a report. */
export interface PlugStateJson {
  /** Where it came from, without repeats, in the order first used. */
  sources: PlugStateSourceName[];
  /** The input's own layout when it was read: `early`, `late`, `none`; `null` when not read. */
  layout: "early" | "late" | "none" | null;
  /** The file of `--plugmap` or `--plugmap-from`, or `null`. */
  path: string | null;
}
