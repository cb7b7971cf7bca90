import assert from "node:assert/strict";
import {
  BYTE_CHUNKINGS,
  chunkedFileStream,
  chunkedStream,
  chunkSizes,
  collectBytes,
  concatBytes,
  FILE_CHUNKINGS,
  ONE_BYTE,
  seededRandom,
  splitBytes,
} from "../_util/chunkings.ts";
import { assertBytesEqual } from "../_util/assert.ts";
import { hashStream, sha256File, sha256Hex } from "../_util/hashing.ts";

const sample = (n: number) => {
  const rnd = seededRandom(n);
  return new Uint8Array(n).map(() => (rnd() * 256) | 0);
};

Deno.test("seededRandom() repeats its sequence for a seed", () => {
  const a = seededRandom(7), b = seededRandom(7), c = seededRandom(8);
  const xs = [a(), a(), a()];
  assert.deepEqual(xs, [b(), b(), b()]);
  assert.notDeepEqual(xs, [c(), c(), c()]);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
});

Deno.test("chunkSizes() covers the input exactly with positive sizes, deterministically", () => {
  for (const c of [...BYTE_CHUNKINGS, ...FILE_CHUNKINGS]) {
    for (const n of [0, 1, 17, 4095, 4096, 100_000, 3 << 20]) {
      const sizes = [...chunkSizes(c, n, 1 << 20)];
      assert.equal(sizes.reduce((a, b) => a + b, 0), n, c.name);
      assert.ok(sizes.every((s) => s >= 1), c.name);
      assert.deepEqual(sizes, [...chunkSizes(c, n, 1 << 20)], c.name);
    }
  }
  assert.deepEqual([...chunkSizes(ONE_BYTE, 3)], [1, 1, 1]);
});

Deno.test("chunkSizes() with edges uses tiny chunks only at both ends", () => {
  const edges = FILE_CHUNKINGS.find((c) => c.kind === "edges")!;
  const n = 5 << 20;
  let pos = 0;
  let middleChunks = 0;
  for (const s of chunkSizes(edges, n)) {
    const inEdge = pos < 1 << 20 || pos >= n - (1 << 20);
    if (inEdge) assert.ok(s <= 17, `${s} at ${pos}`);
    else middleChunks++;
    pos += s;
  }
  // 3 MiB in the middle in chunks of 64 KiB..1 MiB
  assert.ok(middleChunks >= 3 && middleChunks <= 50, `${middleChunks}`);
});

Deno.test("chunkedStream() delivers the same bytes under every chunking", async (t) => {
  const bytes = sample(20_000);
  for (const c of BYTE_CHUNKINGS) {
    await t.step(c.name, async () => {
      assertBytesEqual(await collectBytes(chunkedStream(bytes, c)), bytes);
      const parts = splitBytes(bytes, c);
      assertBytesEqual(concatBytes(parts), bytes);
      if (parts.length > 1) assert.ok(parts[1]!.byteOffset > 0, "chunks are views into the input");
      assert.ok(splitBytes(bytes, c, { copy: true }).every((p) => p.byteOffset === 0));
    });
  }
});

Deno.test("chunkedFileStream() streams a file under every file chunking", async (t) => {
  const path = await Deno.makeTempFile({ prefix: "vmem-chunk-" });
  try {
    const bytes = sample(3 * (1 << 20) + 12345);
    await Deno.writeFile(path, bytes);
    const want = sha256Hex(bytes);
    assert.equal(await sha256File(path), want);
    for (const c of FILE_CHUNKINGS) {
      await t.step(c.name, async () => {
        const d = await hashStream(await chunkedFileStream(path, c, { readSize: 1 << 18 }));
        assert.deepEqual(d, { sha256: want, byteLength: bytes.length });
      });
    }
    // cancelling closes the file (the resource sanitizer checks it)
    const s = await chunkedFileStream(path, ONE_BYTE);
    const r = s.getReader();
    await r.read();
    await r.cancel();
  } finally {
    await Deno.remove(path);
  }
});
