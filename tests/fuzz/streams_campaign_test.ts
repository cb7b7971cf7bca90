import { CI_SEED, ciCampaign } from "./_campaign.ts";

Deno.test(`mutation campaign: migration streams through the commands, containers, plug maps (seed ${CI_SEED})`, async () => {
  await ciCampaign({ "migration-cli": 60, "container": 300, "plugmap": 400 });
});
