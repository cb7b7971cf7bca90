import assert from "node:assert/strict";
import { constants, zstdCompressSync } from "node:zlib";
import { bytesReader } from "../../src/io/byte_reader.ts";
import { sniffContainer } from "../../src/container/detect.ts";
import { openContainer } from "../../src/container/open.ts";
import { gunzipReader } from "../../src/container/gzip.ts";
import { zstdDecompressReader } from "../../src/container/zstd.ts";
import { ZstdFrameScanner } from "../../src/container/zstd_frames.ts";
import { assertBytesEqual, assertFormatError } from "../_util/assert.ts";
import { BYTE_CHUNKINGS, concatBytes, ONE_BYTE, randomChunking } from "../_util/chunkings.ts";
import { chunkedReader, drain, fakeStream, gzip, zstd } from "./_helpers.ts";

const enc = new TextEncoder();

Deno.test("sniffContainer() names raw, gzip, zstd, skippable zstd and libvirt magics", () => {
  assert.equal(sniffContainer(enc.encode("QEVM\0\0\0\x03")), "raw");
  assert.equal(sniffContainer(new Uint8Array([0x1f, 0x8b, 8, 0])), "gzip");
  assert.equal(sniffContainer(new Uint8Array([0x28, 0xb5, 0x2f, 0xfd])), "zstd");
  assert.equal(sniffContainer(new Uint8Array([0x5a, 0x2a, 0x4d, 0x18])), "zstd");
  assert.equal(sniffContainer(enc.encode("LibvirtQemudSave")), "libvirt-save");
  assert.equal(sniffContainer(enc.encode("LibvirtQemudPart")), "libvirt-partial");
  assert.equal(sniffContainer(enc.encode("\x7fELF")), undefined);
  assert.equal(sniffContainer(enc.encode("QE")), undefined);
});

Deno.test("openContainer() opens raw, gzip and zstd streams under every chunking", async (t) => {
  const stream = fakeStream(200_000);
  for (
    const [kind, bytes] of [["raw", stream], ["gzip", gzip(stream)], [
      "zstd",
      zstd(stream),
    ]] as const
  ) {
    for (const chunking of BYTE_CHUNKINGS) {
      if (chunking === ONE_BYTE && kind !== "raw") continue; // covered below on a small input
      await t.step(`${kind}, ${chunking.name}`, async () => {
        const opened = await openContainer(chunkedReader(bytes, chunking));
        assert.equal(opened.kind, kind);
        assert.equal(opened.innerCompression, kind);
        assert.equal(opened.libvirt, undefined);
        assert.equal(opened.reader.offset, 0);
        assertBytesEqual(await drain(opened.reader), stream);
      });
    }
  }
  await t.step("gzip and zstd, 1-byte chunks", async () => {
    const small = fakeStream(20_000);
    for (const bytes of [gzip(small), zstd(small)]) {
      const opened = await openContainer(chunkedReader(bytes, ONE_BYTE));
      assertBytesEqual(await drain(opened.reader), small);
    }
  });
});

Deno.test("openContainer() reads multi-member gzip and multi-frame zstd with skippable frames", async () => {
  // (Deno's node:zlib zstd alone stops after the first frame; we give each frame its own)
  const a = fakeStream(50_000, 1);
  const b = fakeStream(70_000, 2).subarray(8);
  const gz = await openContainer(bytesReader(concatBytes([gzip(a), gzip(b)])));
  assertBytesEqual(await drain(gz.reader), concatBytes([a, b]));
  const skippable = new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
  const zs = await openContainer(
    bytesReader(concatBytes([skippable, zstd(a), skippable, zstd(b)])),
  );
  assert.equal(zs.kind, "zstd");
  assertBytesEqual(await drain(zs.reader), concatBytes([a, b]));
});

Deno.test("openContainer() rejects an empty input and an unknown magic, or passes it with acceptUnknown", async () => {
  await assertFormatError(openContainer(bytesReader(new Uint8Array(0))), {
    name: "UnexpectedEofError",
    offset: 0,
  });
  const elf = enc.encode("\x7fELF and more bytes");
  await assertFormatError(openContainer(bytesReader(elf)), {
    code: "bad-magic",
    offset: 0,
    format: "container",
    message: "7f 45 4c 46",
  });
  const opened = await openContainer(bytesReader(elf), { acceptUnknown: true });
  assert.equal(opened.kind, "raw");
  assertBytesEqual(await drain(opened.reader), elf);
  // shorter than a magic
  await assertFormatError(openContainer(bytesReader(enc.encode("QE"))), { code: "bad-magic" });
});

Deno.test("openContainer() reports truncated gzip at every cut as UnexpectedEofError, never a hang", async () => {
  const stream = fakeStream(30_000);
  const gz = gzip(stream);
  const cuts = new Set<number>();
  for (let cut = 1; cut < 40; cut++) cuts.add(cut);
  for (let cut = 40; cut < gz.length; cut += 97) cuts.add(cut);
  for (let cut = gz.length - 12; cut < gz.length; cut++) cuts.add(cut);
  for (const cut of cuts) {
    const truncated = gz.subarray(0, cut);
    await assertFormatError(
      (async () => {
        const opened = await openContainer(bytesReader(truncated));
        await drain(opened.reader);
      })(),
      // one byte is not yet a gzip magic
      cut < 2
        ? { code: "bad-magic" }
        : { name: "UnexpectedEofError", maxOffset: cut, timeoutMs: 5000 },
    );
  }
});

Deno.test("openContainer() reports truncated zstd at every cut as UnexpectedEofError, never a hang", async () => {
  const stream = fakeStream(30_000);
  const z = new Uint8Array(zstdCompressSync(stream, {
    params: { [constants.ZSTD_c_checksumFlag]: 1 },
  }));
  // node:zlib may close with an extra empty frame: a cut at a frame end is a valid stream
  const frameEnds = new ZstdFrameScanner().push(z);
  const cuts = new Set<number>();
  for (let cut = 1; cut < 64; cut++) cuts.add(cut);
  for (let cut = 64; cut < z.length; cut += 41) cuts.add(cut);
  for (let cut = z.length - 24; cut < z.length; cut++) cuts.add(cut);
  for (const cut of cuts) {
    const truncated = z.subarray(0, cut);
    const run = async () => {
      const opened = await openContainer(chunkedReader(truncated, randomChunking(cut, 512)));
      return await drain(opened.reader);
    };
    if (frameEnds.includes(cut)) {
      assertBytesEqual(await run(), stream);
      continue;
    }
    const e = await assertFormatError(run(), { maxOffset: cut, timeoutMs: 5000 });
    // cut inside the 4-byte magic: the magic is unknown; afterwards: truncation
    if (cut >= 4) assert.equal(e.name, "UnexpectedEofError", `cut ${cut}: ${e.message}`);
  }
});

Deno.test("zstdDecompressReader() rejects trailing garbage after the last frame", async () => {
  const stream = fakeStream(10_000);
  const z = zstd(stream);
  const input = concatBytes([z, enc.encode("garbage!")]);
  await assertFormatError(drain(zstdDecompressReader(bytesReader(input))), {
    code: "bad-magic",
    offset: z.length,
    message: "trailing garbage",
  });
});

Deno.test("zstdDecompressReader() maps corrupt blocks to FormatError with format container", async () => {
  const stream = fakeStream(100_000);
  const z = new Uint8Array(zstdCompressSync(stream, {
    params: { [constants.ZSTD_c_checksumFlag]: 1 },
  }));
  let failures = 0;
  for (let at = 12; at < z.length; at += Math.max(1, z.length >> 6)) {
    const bad = z.slice();
    bad[at] = bad[at]! ^ 0xa5;
    try {
      const out = await drain(zstdDecompressReader(bytesReader(bad)));
      // a flip inside a raw literal may go unnoticed only without checksum; we asked for one
      assert.equal(out.length <= stream.length + (1 << 20), true);
    } catch (e) {
      assert.ok(e instanceof Error && "code" in e && "offset" in e, String(e));
      failures++;
    }
  }
  assert.ok(failures > 0);
});

Deno.test("zstdDecompressReader() reports corruption found after the first MiB of output as a FormatError", async (t) => {
  // Deno's node:zlib zstd threw such errors from a process.nextTick (an uncaught exception
  // that killed verify and scan) once the decompressor's 1 MiB output buffer had filled.
  // The demo stream is zstd 1.5.4 output: descriptor 0xa4 at 4 (single segment, checksum,
  // 4-byte content size at 5).
  const demo = await Deno.readFile(
    new URL("../../testdata/migration/q10-s3-malicious.mig.zst", import.meta.url),
  );
  assert.equal(demo[4], 0xa4);
  for (
    const [what, at, flip, message] of [
      ["content size smaller than the data", 5, 0xff, /more data than its header declares/],
      ["content size smaller, high byte", 7, 0x01, /more data than its header declares/],
      ["a literal changed: the checksum does not match", 100, 0x55, /checksum/],
    ] as const
  ) {
    await t.step(what, async () => {
      const bad = demo.slice();
      bad[at] = bad[at]! ^ flip;
      const opened = await openContainer(bytesReader(bad));
      await assertFormatError(drain(opened.reader), {
        name: "FormatError",
        code: "bad-record",
        format: "container",
        message,
      });
    });
  }
});

Deno.test("zstdDecompressReader() names the window when a frame needs more than windowLogMax", async () => {
  const stream = fakeStream(64 << 10);
  // window log 20 (1 MiB) frame, read with a 2^17 limit
  const z = new Uint8Array(zstdCompressSync(stream, {
    params: { [constants.ZSTD_c_windowLog]: 20, [constants.ZSTD_c_contentSizeFlag]: 0 },
  }));
  await assertFormatError(drain(zstdDecompressReader(bytesReader(z), { windowLogMax: 17 })), {
    code: "too-large",
    format: "container",
    offset: 0,
    message: /needs a 1 MiB window \(window log 20.*limit is 128 KiB \(windowLogMax 17\)/,
  });
  assertBytesEqual(await drain(zstdDecompressReader(bytesReader(z), { windowLogMax: 20 })), stream);
});

Deno.test("zstdDecompressReader() keeps memory bounded on a zstd bomb (1 GiB of zeros)", async () => {
  const zeros = new Uint8Array(64 << 20);
  const one = new Uint8Array(zstdCompressSync(zeros));
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 16; i++) parts.push(one); // 16 frames × 64 MiB = 1 GiB
  const bomb = concatBytes(parts);
  const reader = zstdDecompressReader(bytesReader(bomb), { highWaterMark: 4 << 20 });
  const first = await reader.read(1 << 20);
  assert.equal(first.length, 1 << 20);
  const rssBefore = Deno.memoryUsage().rss;
  // let zlib run ahead if it would; it must stop at the high-water mark
  await new Promise((r) => setTimeout(r, 300));
  const grown = Deno.memoryUsage().rss - rssBefore;
  assert.ok(grown < 256 << 20, `RSS grew by ${grown >> 20} MiB while nobody read`);
  await reader.cancel();
});

Deno.test("gunzipReader() maps a corrupt member to FormatError and a cut one to UnexpectedEofError", async () => {
  const stream = fakeStream(50_000);
  const gz = gzip(stream);
  const bad = gz.slice();
  bad[gz.length - 5] = bad[gz.length - 5]! ^ 0xff; // CRC32
  await assertFormatError(drain(gunzipReader(bytesReader(bad))), {
    name: "FormatError",
    format: "container",
  });
  await assertFormatError(drain(gunzipReader(bytesReader(gz.subarray(0, gz.length - 3)))), {
    name: "UnexpectedEofError",
    offset: gz.length - 3,
  });
});

Deno.test("openContainer() inner reader reports migration truncation with the inner format", async () => {
  const stream = fakeStream(1000);
  const opened = await openContainer(bytesReader(zstd(stream)));
  await opened.reader.skip(990);
  await assertFormatError(opened.reader.read(20), {
    name: "UnexpectedEofError",
    format: "migration",
    offset: 1000,
  });
});
