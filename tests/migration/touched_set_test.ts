import assert from "node:assert/strict";
import { CHUNK_SIZE, TouchedSet } from "../../src/migration/_touched_set.ts";

Deno.test("TouchedSet.clear() forgets record counts as well as chunks", () => {
  const set = new TouchedSet(1 << 20);
  for (let i = 0; i < 5; i++) set.add("ram0", 3 * CHUNK_SIZE + i * 4096, 100 + i, 1);
  assert.deepEqual(set.chunks("ram0").map((c) => c.records), [5]);
  set.clear();
  assert.deepEqual(set.chunks("ram0"), []);
  set.add("ram0", 3 * CHUNK_SIZE, 500, 1);
  assert.deepEqual(set.chunks("ram0").map((c) => c.records), [1]);
});
