/** Run `vmem-dump scan` in-process and capture what it prints. */

import { main } from "../../cli/main.ts";
import type { PlugStateJson } from "../../cli/_report.ts";
import type { Coverage } from "../../src/scan/coverage.ts";
import type { DeviceFindings, ScanReport, ScanSummary } from "../../src/scan/findings.ts";
import { assertReport } from "../_util/report_schema.ts";

/** Coverage as `scan --json` writes it. */
export interface CoverageJson {
  unpluggedByteLength: number;
  examinedByteLength: number;
  absentByteLength: number;
  absent: Coverage["absent"];
}

/** What `scan --json` prints (schemas/scan-report.schema.json): the library's report in the glossary's names. */
export type ScanReportJson =
  & Omit<
    ScanReport,
    "format" | "version" | "tool" | "input" | "plugState" | "devices" | "summary" | "coverage"
  >
  & {
    kind: "scan-report";
    version: number;
    tool: string;
    input: {
      path: string;
      format: ScanReport["input"]["kind"];
      container: string;
      byteLength: number | null;
      baseGpa: number | null;
    };
    plugState: PlugStateJson;
    summary: Omit<ScanSummary, "unpluggedBytes"> & { unpluggedByteLength: number };
    coverage: CoverageJson | null;
    devices: (
      & Omit<DeviceFindings, "ramBlock" | "gpa" | "regionSize" | "blockSize" | "coverage">
      & {
        ramblock: string;
        memaddr: number;
        "region-size": number;
        "block-size": number;
        coverage: CoverageJson | null;
      }
    )[];
  };

/** What one in-process run gave. */
export interface ScanRun {
  code: number;
  out: string;
  err: string;
  /** The parsed `--json` report (checked against its schema), when `--json` was given and the run printed one. */
  report: ScanReportJson | undefined;
}

/** Run `scan ARGS` through `cli/main.ts` (so errors map to exit codes as for users). */
export async function scanCli(args: string[]): Promise<ScanRun> {
  let out = "";
  let err = "";
  const io = {
    out: (t: string) => {
      out += t;
      return Promise.resolve();
    },
    err: (t: string) => {
      err += t;
      return Promise.resolve();
    },
    stderrIsTerminal: false,
  };
  const code = await main(["scan", ...args], io);
  const report = args.includes("--json") && out.startsWith("{")
    ? assertReport(out, "scan") as unknown as ScanReportJson
    : undefined;
  return { code, out, err, report };
}

/** Every listed page of a report, in report order. */
export function listedPages<P>(report: { devices: { blocks: { pages: P[] }[] }[] }): P[] {
  return report.devices.flatMap((d) => d.blocks.flatMap((b) => b.pages));
}
