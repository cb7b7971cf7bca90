/**
 * The standing mutation campaign as a CI test: a fixed seed (override with
 * `VMEM_FUZZ_SEED`), a fixed number of cases per target, every oracle of
 * `tests/_util/fuzz/`. Failing inputs are written to `.cache/fuzz-failures/`.
 * The campaign's files are split so that `deno test --parallel` runs them on
 * both cores.
 *
 * @module
 */

import assert from "node:assert/strict";
import { formatCampaignReport, runCampaign } from "../_util/fuzz/campaign.ts";
import { envGet } from "../_util/tools.ts";

/** The CI campaign's seed. */
export const CI_SEED = Number(envGet("VMEM_FUZZ_SEED") ?? 20251202);

const FAIL_DIR = decodeURIComponent(
  new URL("../../.cache/fuzz-failures", import.meta.url).pathname,
);

/**
 * Run `cases` per target and fail on any failure; also fail when a target's
 * outcomes are all alike (a campaign that never reaches a reader, or never
 * gets past its first check, proves nothing).
 *
 * @param cases Cases per target.
 */
export async function ciCampaign(cases: Record<string, number>): Promise<void> {
  const report = await runCampaign({
    seed: CI_SEED,
    targets: Object.keys(cases),
    cases,
    timeoutScale: 4,
    failDir: FAIL_DIR,
  });
  const text = formatCampaignReport(report);
  console.log(text);
  assert.equal(report.failures.length, 0, text);
  for (const [name, t] of Object.entries(report.targets)) {
    assert.equal(t.cases, cases[name], `${name}: ${t.cases} of ${cases[name]} cases ran`);
    assert.ok(Object.keys(t.outcomes).length >= 2, `${name}: only ${Object.keys(t.outcomes)}`);
  }
}
