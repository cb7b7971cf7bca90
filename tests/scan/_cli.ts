/** Run `vmem-dump scan` in-process and capture what it prints. */

import { main } from "../../cli/main.ts";
import type { ScanReport } from "../../src/scan/findings.ts";

/** What one in-process run gave. */
export interface ScanRun {
  code: number;
  out: string;
  err: string;
  /** The parsed `--json` report, when `--json` was given and the run printed one. */
  report: ScanReport | undefined;
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
    ? JSON.parse(out) as ScanReport
    : undefined;
  return { code, out, err, report };
}

/** Every listed page of a report, in report order. */
export function listedPages(report: ScanReport) {
  return report.devices.flatMap((d) => d.blocks.flatMap((b) => b.pages));
}
