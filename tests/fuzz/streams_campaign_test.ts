import { CI_SEED, ciCampaign } from "./_campaign.ts";

Deno.test(`mutation campaign: migration streams through the commands, containers, plug maps, mapped-ram files, multifd channels (seed ${CI_SEED})`, async () => {
  await ciCampaign({
    "migration-cli": 150,
    "container": 600,
    "plugmap": 800,
    "mapped-ram": 50,
    "multifd": 600,
  });
});
