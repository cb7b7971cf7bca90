/** What the real fixtures' producer says about the pages written into unplugged blocks. */

import { realdataFacts, type RealdataSet } from "../_util/realdata.ts";

/** Stream payload offsets of the EVIL-MIG pages of `s3-malicious.mig`, by gpa (analysis.json, "payload at N"). */
export function evilPayloadOffsets(set: RealdataSet): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of realdataFacts(set).analysis.scenarios["s3-malicious"].malicious) {
    const hit = /payload at (\d+)/.exec(m.in_migration_stream ?? "");
    if (hit) out.set(Number.parseInt(m.gpa, 16), Number(hit[1]));
  }
  return out;
}
