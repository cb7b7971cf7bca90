/** The second half of tests/migration/truncation_test.ts. */

import { truncationCuts } from "./_truncation.ts";

Deno.test("decodeMigration() reports every truncation of a real stream (second half of the cuts) as UnexpectedEofError", async () => {
  await truncationCuts(1, 2);
});
