import { CI_SEED, ciCampaign } from "./_campaign.ts";

Deno.test(`mutation campaign: migration streams through the commands, containers, plug maps, mapped-ram files (seed ${CI_SEED})`, async () => {
  await ciCampaign({ "migration-cli": 48, "container": 240, "plugmap": 300, "mapped-ram": 20 });
});
