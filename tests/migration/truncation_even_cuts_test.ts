/**
 * Truncation of a small real QEMU stream at every even byte offset: the
 * decoder must end with UnexpectedEofError at or before the cut, never
 * succeed, never throw anything else, never hang. The odd offsets are in
 * truncation_odd_cuts_test.ts: two files, because `deno test --parallel`
 * runs files (not tests) on both cores.
 */

import { truncationCuts } from "./_truncation.ts";

Deno.test("decodeMigration() reports every truncation of a real stream at an even offset as UnexpectedEofError", async () => {
  await truncationCuts(0, 2);
});
