import assert from "node:assert/strict";
import { constants, zstdCompressSync } from "node:zlib";
import {
  formatByteSize,
  type ZstdFrameInfo,
  ZstdFrameScanner,
} from "../../src/container/zstd_frames.ts";
import { assertFormatError } from "../_util/assert.ts";
import { BYTE_CHUNKINGS, concatBytes, splitBytes } from "../_util/chunkings.ts";
import { fakeStream } from "./_helpers.ts";

function scan(bytes: Uint8Array, chunks = [bytes], options = {}): ZstdFrameInfo[] {
  const frames: ZstdFrameInfo[] = [];
  const s = new ZstdFrameScanner({ ...options, onFrame: (f) => frames.push(f) });
  for (const c of chunks) s.push(c);
  s.finish();
  return frames;
}

Deno.test("ZstdFrameScanner walks frames, skippable frames and checksums under every chunking", async (t) => {
  const a = new Uint8Array(zstdCompressSync(fakeStream(70_000, 1), {
    params: { [constants.ZSTD_c_checksumFlag]: 1 },
  }));
  const b = new Uint8Array(zstdCompressSync(new Uint8Array(300_000))); // RLE blocks
  const c = new Uint8Array(zstdCompressSync(new Uint8Array(0)));
  const skippable = new Uint8Array([0x5e, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 0xaa, 0xbb]);
  const all = concatBytes([a, skippable, b, c]);
  // node:zlib may end its output with an extra empty frame: expect what each part holds
  const shift = (frames: ZstdFrameInfo[], by: number) =>
    frames.map((f) => [f.streamOffset + by, f.skippable, f.checksum, f.contentSize]);
  const expected = [
    ...shift(scan(a), 0),
    [a.length, true, false, undefined],
    ...shift(scan(b), a.length + skippable.length),
    ...shift(scan(c), a.length + skippable.length + b.length),
  ];
  assert.deepEqual(expected[0], [0, false, true, undefined]); // streaming: no content size
  for (const chunking of BYTE_CHUNKINGS) {
    await t.step(chunking.name, () => {
      const frames = scan(all, splitBytes(all, chunking));
      assert.deepEqual(shift(frames, 0), expected);
    });
  }
});

Deno.test("ZstdFrameScanner reads the window size of a long-distance frame", () => {
  const z = new Uint8Array(zstdCompressSync(fakeStream(10_000), {
    params: {
      [constants.ZSTD_c_windowLog]: 27,
      [constants.ZSTD_c_enableLongDistanceMatching]: 1,
      [constants.ZSTD_c_contentSizeFlag]: 0,
    },
  }));
  const [frame] = scan(z);
  assert.equal(frame!.windowSize, 2 ** 27);
  assert.equal(frame!.contentSize, undefined);
  assert.throws(() => scan(z, [z], { windowLogMax: 26 }), /needs a 128 MiB window \(window log 27/);
});

Deno.test("ZstdFrameScanner rejects truncation at every cut with UnexpectedEofError", async () => {
  const z = new Uint8Array(zstdCompressSync(fakeStream(20_000), {
    params: { [constants.ZSTD_c_checksumFlag]: 1 },
  }));
  for (let cut = 0; cut < z.length; cut++) {
    await assertFormatError(() => scan(z.subarray(0, cut)), {
      name: "UnexpectedEofError",
      offset: cut,
      format: "container",
    });
  }
});

Deno.test("ZstdFrameScanner rejects reserved bits, reserved block types and garbage", async () => {
  const z = new Uint8Array(zstdCompressSync(fakeStream(5_000)));
  const reserved = z.slice();
  reserved[4] = reserved[4]! | 0x08;
  await assertFormatError(() => scan(reserved), { code: "bad-header", offset: 4 });
  const garbage = concatBytes([z, new Uint8Array([1, 2, 3, 4])]);
  await assertFormatError(() => scan(garbage), { code: "bad-magic", offset: z.length });
  // a hand-made frame: magic, FHD (single segment, 1-byte FCS), FCS, block header of type 3
  const badBlock = new Uint8Array([0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x07, 0, 0]);
  await assertFormatError(() => scan(badBlock), { code: "bad-record", offset: 6 });
  assert.throws(() => new ZstdFrameScanner({ windowLogMax: 32 }), RangeError);
});

Deno.test("formatByteSize() picks the largest exact binary unit", () => {
  assert.equal(formatByteSize(2 ** 30), "1 GiB");
  assert.equal(formatByteSize(3 * 2 ** 20), "3 MiB");
  assert.equal(formatByteSize(1536), "1536 bytes");
  assert.equal(formatByteSize(2048), "2 KiB");
});
