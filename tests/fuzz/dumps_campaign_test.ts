import { CI_SEED, ciCampaign } from "./_campaign.ts";

Deno.test(`mutation campaign: ELF and kdump dumps through scan, strip and convert (seed ${CI_SEED})`, async () => {
  await ciCampaign({ "elf": 50, "kdump": 250 });
});
