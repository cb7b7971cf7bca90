import { CI_SEED, ciCampaign } from "./_campaign.ts";

Deno.test(`mutation campaign: ELF and kdump dumps through scan, strip and convert; the CLI's --json contract and scan --extract (seed ${CI_SEED})`, async () => {
  await ciCampaign({ "elf": 50, "kdump": 250, "cli-json": 120 });
});
