/**
 * Truncation of a small real QEMU stream at every byte: the decoder must end
 * with UnexpectedEofError at or before the cut, never succeed, never throw
 * anything else, never hang. Two test files split the cuts so that
 * `deno test --parallel` runs them on both cores.
 */

import { truncationCuts } from "./_truncation.ts";

Deno.test("decodeMigration() reports every truncation of a real stream (first half of the cuts) as UnexpectedEofError", async () => {
  await truncationCuts(0, 2);
});
