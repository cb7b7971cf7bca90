/**
 * The device-state tail, walked section by section with the vmdesc sizes
 * (src/migration/_tail.ts, _parser.ts): every real stream we have is proven
 * (no problem, no ambiguity), the big `out` streams included; the verdicts do
 * not depend on how the input is chunked; and the ways a tail cannot be
 * proven are errors in `prove` mode and records in `describe` mode. (A live
 * source that stays open after its vmdesc: live_end_test.ts.)
 */

import assert from "node:assert/strict";
import { zstdDecompressSync } from "node:zlib";
import { FormatError, UnexpectedEofError } from "../../src/errors.ts";
import { bytesReader, StreamByteReader } from "../../src/io/byte_reader.ts";
import { decodeMigration, decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { inspectMigration } from "../../src/migration/inspect.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { vmdescSections } from "../../src/migration/vmdesc.ts";
import { assertFormatError } from "../_util/assert.ts";
import { BYTE_CHUNKINGS, chunkedStream } from "../_util/chunkings.ts";
import { CLI_MAIN } from "../_util/cli.ts";
import {
  realdata,
  realdataAvailable,
  realdataFacts,
  type RealdataSet,
  realdataSharedDir,
} from "../_util/realdata.ts";
import { tinyStream } from "./_stream_util.ts";
import { ATTACKS, baseStream, concat } from "./_device_state_attacks.ts";

const TESTDATA = new URL("../../testdata/migration/", import.meta.url);

async function decodeAll(bytes: Uint8Array): Promise<MigrationRecord[]> {
  const out: MigrationRecord[] = [];
  for await (const r of decodeMigration(bytesReader(bytes))) out.push(r);
  return out;
}

/** Check that a stream's device state was proven and that every FULL section the vmdesc lists was delimited. */
async function assertProven(bytes: Uint8Array, what: string): Promise<void> {
  const records = await decodeAll(bytes); // prove mode: throws on any problem
  const vmdesc = records.find((r) => r.kind === "vmdesc");
  assert.ok(vmdesc?.kind === "vmdesc", `${what}: a vmdesc`);
  const described = vmdescSections(vmdesc.parsed)!;
  const fulls = records.filter((r) => r.kind === "section-full");
  assert.deepEqual(
    fulls.map((r) => r.kind === "section-full" ? r.idstr : ""),
    described.map((s) => s.idstr),
    `${what}: every section the vmdesc lists, in order`,
  );
  const bodies = records.filter((r) =>
    r.kind === "device-state" || r.kind === "virtio-mem-device" || r.kind === "virtio-mem-early"
  );
  assert.equal(bodies.length, described.length, `${what}: one body per section`);
  const report = await inspectMigration(
    decodeMigrationBatches(bytesReader(bytes), { deviceState: "describe" }),
  );
  assert.equal(report.tailMatchesVmdesc, true, what);
  assert.deepEqual(report.tailProblems, [], what);
  assert.ok(!report.sections.some((s) => s.afterDeviceState), what);
}

for (const set of ["out-small", "out-q10"] as RealdataSet[]) {
  Deno.test({
    name: `decodeMigration() proves the device state of every real ${set} stream`,
    ignore: !realdataAvailable(set),
    fn: async () => {
      for (const scenario of realdataFacts(set).scenarios) {
        await assertProven(await Deno.readFile(await realdata(set, `${scenario}.mig`)), scenario);
      }
    },
  });
}

Deno.test("decodeMigration() proves the device state of every stream in testdata/", async () => {
  for (const name of ["q72-tiny-unplugged.mig", "q72-qboot-unplugged.mig"]) {
    await assertProven(await Deno.readFile(new URL(name, TESTDATA)), name);
  }
  for (const name of ["q72-s3-malicious.mig.zst", "q10-s3-malicious.mig.zst"]) {
    const bytes = zstdDecompressSync(await Deno.readFile(new URL(name, TESTDATA)));
    await assertProven(bytes, name);
  }
});

Deno.test({
  name:
    "vmem-dump inspect proves the device state of every big real out stream (streamed from the archive)",
  sanitizeResources: false,
  fn: async () => {
    // The set unpacks to 6.7 GB: every .mig member goes straight from tar into `inspect -`.
    const archive = `${realdataSharedDir("out")}/fixtures.tar.zst`;
    const dir = await Deno.makeTempDir({ prefix: "vmem-out-" });
    try {
      const run = await new Deno.Command("bash", {
        args: [
          "-c",
          'zstd -q -d --long=30 -c -- "$ARCHIVE" | tar -x -f - --wildcards "*.mig" ' +
          '--to-command=\'"$DENO" run -A "$MAIN" inspect --json - > "$OUT/$(basename "$TAR_FILENAME").json"\'',
        ],
        env: { ARCHIVE: archive, DENO: Deno.execPath(), MAIN: CLI_MAIN, OUT: dir },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(run.success, new TextDecoder().decode(run.stderr));
      const names = realdataFacts("out").scenarios.map((s) => `${s}.mig`);
      for (const name of names) {
        const report = JSON.parse(await Deno.readTextFile(`${dir}/${name}.json`));
        assert.equal(report.tailMatchesVmdesc, true, name);
        assert.deepEqual(report.tailProblems, [], name);
        assert.ok(report.sections.length > 30, `${name}: ${report.sections.length} sections`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("decodeMigration() gives the same verdict for every attack under every chunking", async (t) => {
  // Attacks on the tiny real stream (QEMU 7.2, late layout); the real-QEMU test loads them.
  const base = await baseStream(await tinyStream());
  const verdict = async (stream: ReadableStream<Uint8Array>) => {
    try {
      const kinds: string[] = [];
      for await (const r of decodeMigration(new StreamByteReader(stream))) {
        if ("afterDeviceState" in r && r.afterDeviceState) {
          kinds.push(`${r.kind}@${r.streamOffset}`);
        }
      }
      return kinds.join(",") || "clean";
    } catch (e) {
      assert.ok(e instanceof FormatError, String(e));
      return `${e.name}:${e.code}@${e.offset}`;
    }
  };
  for (
    const name of [
      "ram-part-after-device",
      "ram-full-in-tail",
      "packaged-in-tail",
      "swallow-by-vmdesc",
      "vmdesc-renamed",
      "no-vmdesc",
    ] as const
  ) {
    await t.step(name, async () => {
      const bytes = ATTACKS[name](base);
      const whole = await verdict(chunkedStream(bytes, BYTE_CHUNKINGS[0]!));
      assert.notEqual(whole, "clean", name);
      for (const chunking of BYTE_CHUNKINGS.slice(1)) {
        assert.equal(await verdict(chunkedStream(bytes, chunking)), whole, chunking.name);
      }
    });
  }
});

Deno.test("decodeMigration() says why a device-state tail cannot be proven, and inspect describes it", async (t) => {
  const tiny = await tinyStream();
  const base = await baseStream(tiny);
  const describe = async (bytes: Uint8Array) =>
    await inspectMigration(decodeMigrationBatches(bytesReader(bytes), { deviceState: "describe" }));

  await t.step("no vmdesc: an error (as a truncation), described as no-vmdesc", async () => {
    const bytes = ATTACKS["no-vmdesc"](base);
    await assertFormatError(decodeAll(bytes), {
      name: "UnexpectedEofError",
      message: /without QEMU_VM_EOF and the vmdesc/,
    });
    const r = await describe(bytes);
    assert.deepEqual(r.tailProblems.map((p) => p.code), ["no-vmdesc"]);
    assert.equal(r.eof, true);
  });

  await t.step("a vmdesc that is not JSON", async () => {
    const json = new TextEncoder().encode("{not json}");
    const bytes = concat([
      tiny.subarray(0, base.eofAt + 1),
      new Uint8Array([0x06, 0, 0, 0, json.length]),
      json,
    ]);
    await assertFormatError(decodeAll(bytes), { code: "unproven", message: /not valid JSON/ });
    assert.deepEqual((await describe(bytes)).tailProblems.map((p) => p.code), ["bad-vmdesc"]);
  });

  await t.step("a vmdesc whose sizes do not add up", async () => {
    const vmdesc = JSON.parse(new TextDecoder().decode(base.vmdesc.json));
    vmdesc.devices[0].fields[0].size += 1;
    const json = new TextEncoder().encode(JSON.stringify(vmdesc));
    const be = new Uint8Array(4);
    new DataView(be.buffer).setUint32(0, json.byteLength);
    const bytes = concat([tiny.subarray(0, base.eofAt + 1), new Uint8Array([0x06]), be, json]);
    await assertFormatError(decodeAll(bytes), { code: "unproven", message: /footer/ });
    const r = await describe(bytes);
    assert.deepEqual(r.tailProblems.map((p) => p.code), ["undelimited"]);
    assert.equal(r.tailMatchesVmdesc, false);
  });

  await t.step(
    "a renamed vmdesc entry: every byte accounted for, but the vmdesc disagrees",
    async () => {
      const bytes = ATTACKS["vmdesc-renamed"](base);
      await assertFormatError(decodeAll(bytes), { code: "unproven", message: /virtio-mex/ });
      const r = await describe(bytes);
      assert.deepEqual(r.tailProblems.map((p) => p.code), ["vmdesc-mismatch"]);
      assert.ok(
        r.virtioMem.some((v) => v.section === "device"),
        "the device section is still parsed",
      );
    },
  );

  await t.step("a section swallowed by an enlarged vmdesc size: ambiguous", async () => {
    const bytes = ATTACKS["swallow-by-vmdesc"](base);
    await assertFormatError(decodeAll(bytes), { code: "unproven", message: /FULL section "ram"/ });
    assert.deepEqual((await describe(bytes)).tailProblems.map((p) => p.code), ["ambiguous"]);
  });

  await t.step("RAM after device state: decoded as what it is", async () => {
    const records = await decodeAll(ATTACKS["ram-part-after-device"](base));
    const part = records.find((r) => r.kind === "section-part" && r.afterDeviceState === true);
    assert.ok(part, "the PART section is tagged");
    const page = records[records.indexOf(part) + 1]!;
    assert.equal(page.kind, "ram-page");
  });

  await t.step("a tail over the cap is an error in both modes", async () => {
    for (const deviceState of ["prove", "describe"] as const) {
      await assertFormatError(
        (async () => {
          for await (
            const _ of decodeMigrationBatches(bytesReader(tiny), { deviceState, tailCap: 1000 })
          ) { /* decode */ }
        })(),
        { code: "too-large", message: /runs past 1000 bytes/ },
      );
    }
  });
});

Deno.test("decodeMigration() rejects a tail cut at any point with UnexpectedEofError or an unproven tail", async () => {
  const tiny = await tinyStream();
  const base = await baseStream(tiny);
  const tailStart =
    base.records.find((r) => r.kind === "section-full" && !r.idstr.endsWith("-early"))!
      .streamOffset;
  let cuts = 0;
  for (let cut = tailStart; cut < tiny.byteLength; cut += 97) {
    try {
      await decodeAll(tiny.subarray(0, cut));
      assert.fail(`cut at ${cut} decoded`);
    } catch (e) {
      assert.ok(
        e instanceof UnexpectedEofError || (e instanceof FormatError && e.code === "unproven"),
        `${cut}: ${e}`,
      );
      assert.ok(e.offset <= cut, `cut ${cut}: offset ${e.offset}`);
      cuts++;
    }
  }
  assert.ok(cuts > 100);
});
