import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  BYTE_CHUNKINGS,
  chunkedFileStream,
  chunkedStream,
  FILE_CHUNKINGS,
} from "../_util/chunkings.ts";
import { assertBytesEqual, assertFormatError } from "../_util/assert.ts";
import { realdata, realdataFacts, type RealdataSet } from "../_util/realdata.ts";
import {
  decodeAll,
  oneChunk,
  roundTripBytes,
  roundTripDigest,
  tinyStream,
} from "./_stream_util.ts";
import { FormatError } from "../../src/errors.ts";

const SETS: RealdataSet[] = ["out-small", "out-q10"];

for (const set of SETS) {
  for (const scenario of realdataFacts(set).scenarios) {
    Deno.test(`decodeMigration() + encodeMigration() reproduce real ${set}/${scenario}.mig byte for byte`, async (t) => {
      const path = await realdata(set, `${scenario}.mig`);
      const expected = realdataFacts(set).sha256[`${scenario}.mig`];
      assert.ok(expected, "the producer recorded a checksum");
      const chunkings = scenario.startsWith("s3") ? FILE_CHUNKINGS : FILE_CHUNKINGS.slice(0, 1);
      for (const chunking of chunkings) {
        await t.step(chunking.name, async () => {
          const got = await roundTripDigest(await chunkedFileStream(path, chunking));
          assert.equal(got.byteLength, (await Deno.stat(path)).size);
          assert.equal(got.sha256, expected);
        });
      }
    });
  }
}

Deno.test("decodeMigration() + encodeMigration() reproduce the tiny real stream under every chunking", async (t) => {
  const bytes = await tinyStream();
  for (const chunking of BYTE_CHUNKINGS) {
    await t.step(chunking.name, async () => {
      assertBytesEqual(await roundTripBytes(chunkedStream(bytes, chunking)), bytes);
    });
  }
});

Deno.test("decodeMigration() recognises every section of the real QEMU 10 stream", async () => {
  const path = await realdata("out-q10", "s2-holes-100M.mig");
  const kinds = new Map<string, number>();
  let early: { gpa: number; blockSize: number; regionSize: number; size: number } | undefined;
  let commands: string[] = [];
  const bytes = await Deno.readFile(path);
  for (const r of await decodeAll(oneChunk(bytes))) {
    kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
    if (r.kind === "virtio-mem-early") early = r;
    if (r.kind === "command") commands = [...commands, r.name];
  }
  // Facts from shared/realdata/README.md: early section at offset 224, SWITCHOVER_START before ram END.
  assert.deepEqual(commands, ["SWITCHOVER_START"]);
  assert.equal(early?.gpa, 0x1_0000_0000);
  assert.equal(early?.regionSize, 0x1000_0000);
  assert.equal(early?.blockSize, 0x20_0000);
  assert.equal(early?.size, 50 * 0x20_0000);
  assert.equal(kinds.get("eof"), 1);
  assert.equal(kinds.get("vmdesc"), 1);
});

Deno.test("decodeMigration() counts the same RAM records as the producer's own parser", async () => {
  for (const set of SETS) {
    const facts = realdataFacts(set);
    for (const scenario of facts.scenarios) {
      const expected = facts.analysis.scenarios[scenario].migration.ram_records as Record<
        string,
        { page: number; zero: number }
      >;
      const counts: Record<string, { page: number; zero: number }> = {};
      const path = await realdata(set, `${scenario}.mig`);
      for (const r of await decodeAll(await chunkedFileStream(path, FILE_CHUNKINGS[0]!))) {
        if (r.kind !== "ram-page" && r.kind !== "ram-zero-page") continue;
        const c = counts[r.ramBlock] ??= { page: 0, zero: 0 };
        if (r.kind === "ram-page") c.page++;
        else c.zero++;
      }
      for (const [block, want] of Object.entries(expected)) {
        assert.deepEqual(counts[block] ?? { page: 0, zero: 0 }, {
          page: want.page,
          zero: want.zero,
        }, `${set}/${scenario} ${block}`);
      }
    }
  }
});

Deno.test("decodeMigration() meets single-byte flips in the headers with typed errors only", async () => {
  const bytes = await tinyStream();
  const records = await decodeAll(oneChunk(bytes));
  const targets = new Set<number>();
  for (const r of records) {
    if (r.kind === "ram-page" || r.kind === "ram-zero-page") continue;
    if (r.kind === "opaque" || r.kind === "vmdesc") continue;
    for (let o = r.streamOffset; o < r.streamOffset + 16 && o < bytes.byteLength; o++) {
      targets.add(o);
    }
  }
  // And the first and last 32 page records' headers and idstrs.
  const pages = records.filter((r) => r.kind === "ram-page" || r.kind === "ram-zero-page");
  for (const r of [...pages.slice(0, 32), ...pages.slice(-32)]) {
    for (let o = r.streamOffset; o < r.streamOffset + 12; o++) targets.add(o);
  }
  let errors = 0;
  for (const at of targets) {
    for (const mask of [0x01, 0x80, 0xff]) {
      const copy = bytes.slice();
      copy[at]! ^= mask;
      try {
        await decodeAll(oneChunk(copy));
      } catch (e) {
        assert.ok(
          e instanceof FormatError,
          `flip 0x${mask.toString(16)} at ${at}: ${e instanceof Error ? e.stack : e}`,
        );
        errors++;
      }
    }
  }
  assert.ok(errors > targets.size, `${errors} typed errors over ${targets.size} positions`);
});

Deno.test("decodeMigration() names the bad field and its offset", async (t) => {
  const bytes = await tinyStream();
  const mutate = (at: number, value: number) => {
    const c = bytes.slice();
    c[at] = value;
    return c;
  };
  await t.step("bad magic", async () => {
    await assertFormatError(decodeAll(oneChunk(mutate(0, 0x00))), { code: "bad-magic", offset: 0 });
  });
  await t.step("bad version", async () => {
    await assertFormatError(decodeAll(oneChunk(mutate(7, 2))), { code: "bad-version", offset: 4 });
  });
  const records = await decodeAll(oneChunk(bytes));
  const part = records.find((r) => r.kind === "section-part")!;
  await t.step("unknown section type", async () => {
    await assertFormatError(decodeAll(oneChunk(mutate(part.streamOffset, 0x2a))), {
      code: "bad-section",
      offset: part.streamOffset,
      message: /unknown section type 0x2a/,
    });
  });
  await t.step("footer naming another section", async () => {
    const footer = records.find((r) => r.kind === "section-footer")!;
    await assertFormatError(decodeAll(oneChunk(mutate(footer.streamOffset + 4, 0x63))), {
      code: "bad-footer",
      offset: footer.streamOffset + 1,
    });
  });
  await t.step("unknown RAMBlock", async () => {
    const named = records.find((r) => r.kind === "ram-zero-page" && !r.continued)!;
    await assertFormatError(decodeAll(oneChunk(mutate(named.streamOffset + 9, 0x21))), {
      code: "unknown-block",
      offset: named.streamOffset + 8,
    });
  });
  await t.step("RAM offset past the block", async () => {
    const rec = records.find((r) => r.kind === "ram-zero-page" && r.ramBlock === "pc.rom")!;
    await assertFormatError(decodeAll(oneChunk(mutate(rec.streamOffset + 4, 0x7f))), {
      code: "out-of-range",
      offset: rec.streamOffset,
    });
  });
  await t.step(
    "RAM offset past the block in a run of CONTINUE records (page and zero page)",
    async () => {
      for (const kind of ["ram-page", "ram-zero-page"] as const) {
        // The 3rd record of a run of CONTINUE records of one kind: the decoder's hot loop reads it.
        const run = records.filter((r) => r.kind === kind && r.continued);
        const rec = run[Math.min(2, run.length - 1)]!;
        await assertFormatError(decodeAll(oneChunk(mutate(rec.streamOffset + 3, 0x7f))), {
          code: "out-of-range",
          offset: rec.streamOffset,
          message: /RAM offset 0x7f[0-9a-f]{8} is past the end of/,
        });
      }
    },
  );
  await t.step("invalid flag combination", async () => {
    const rec = records.find((r) => r.kind === "ram-zero-page")!;
    await assertFormatError(decodeAll(oneChunk(mutate(rec.streamOffset + 7, 0x0a))), {
      code: "bad-record",
      offset: rec.streamOffset + 6,
    });
  });
  await t.step("CONTINUE before any block", async () => {
    const first = records.find((r) => r.kind === "ram-zero-page" || r.kind === "ram-page")!;
    await assertFormatError(decodeAll(oneChunk(mutate(first.streamOffset + 7, 0x22))), {
      code: "bad-record",
      offset: first.streamOffset,
    });
  });
  await t.step("unknown command", async () => {
    // Replace the first PART header with a command 0x0077.
    const c = bytes.slice();
    c.set([0x08, 0x00, 0x77, 0x00, 0x00], part.streamOffset);
    await assertFormatError(decodeAll(oneChunk(c)), {
      code: "bad-command",
      offset: part.streamOffset + 1,
    });
  });
  await t.step("RDMA hook", async () => {
    const rec = records.find((r) => r.kind === "ram-zero-page")!;
    const c = bytes.slice();
    c.set([0, 0, 0, 0, 0, 0, 0, 0x80], rec.streamOffset);
    await assertFormatError(decodeAll(oneChunk(c)), {
      name: "UnsupportedFeatureError",
      offset: rec.streamOffset,
    });
  });
});

Deno.test("decodeMigration() keeps a truncated real stream from hanging or over-allocating", async () => {
  // The vmdesc length claims 4 GiB: refused before any allocation.
  const bytes = await tinyStream();
  const records = await decodeAll(oneChunk(bytes));
  const vmdesc = records.find((r) => r.kind === "vmdesc")!;
  const c = bytes.slice();
  new DataView(c.buffer).setUint32(vmdesc.streamOffset + 1, 0xffff_fff0);
  await assertFormatError(decodeAll(oneChunk(c)), { name: "UnexpectedEofError" });
  const h = createHash("sha256").update(bytes).digest("hex");
  assert.equal(h.length, 64);
});
