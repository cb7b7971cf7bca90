/**
 * The odd byte offsets of the every-byte truncation test (the even ones, and
 * why there are two files: truncation_even_cuts_test.ts).
 */

import { truncationCuts } from "./_truncation.ts";

Deno.test("decodeMigration() reports every truncation of a real stream at an odd offset as UnexpectedEofError", async () => {
  await truncationCuts(1, 2);
});
