/**
 * The standing mutation campaign as a CI test: a fixed seed (override with
 * `VMEM_FUZZ_SEED`), a fixed number of cases per target, every oracle of
 * `tests/_util/fuzz/`. Failing inputs are written to `.cache/fuzz-failures/`.
 * The campaign's files are split so that `deno test --parallel` runs them on
 * both cores.
 *
 * @module
 */

import { assertCleanCampaign, formatCampaignReport, runCampaign } from "../_util/fuzz/campaign.ts";
import { envGet } from "../_util/tools.ts";

/** The CI campaign's seed. */
export const CI_SEED = Number(envGet("VMEM_FUZZ_SEED") ?? 20251202);

const FAIL_DIR = decodeURIComponent(
  new URL("../../.cache/fuzz-failures", import.meta.url).pathname,
);

/**
 * Run `cases` per target and fail on any failure, with the case seed that
 * replays it, or when a target's outcomes are all alike
 * ({@linkcode assertCleanCampaign}). The budget is `ci` and the hang timeouts
 * four times the targets' own, so that a loaded two-core machine neither
 * runs out of time nor reports a slow case as a hang.
 *
 * @param cases Cases per target.
 */
export async function ciCampaign(cases: Record<string, number>): Promise<void> {
  const report = await runCampaign({
    seed: CI_SEED,
    targets: Object.keys(cases),
    cases,
    timeoutScale: 4,
    budget: "ci",
    failDir: FAIL_DIR,
  });
  console.log(formatCampaignReport(report));
  assertCleanCampaign(report, cases);
}
