import assert from "node:assert/strict";
import { bytesReader, PullByteReader } from "../../src/io/byte_reader.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { createAtomicOutput, fileByteReader, openFileReader } from "../../src/io/file.ts";
import { bytesPositional, readAt } from "../../src/io/positional.ts";
import { UnexpectedEofError } from "../../src/errors.ts";
import { BYTE_CHUNKINGS, chunkedStream, seededRandom, splitBytes } from "../_util/chunkings.ts";
import { StreamByteReader } from "../../src/io/byte_reader.ts";

function sample(n: number, seed = 1): Uint8Array {
  const rnd = seededRandom(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256));
}

Deno.test("PullByteReader returns exact bytes and offsets under every chunking", async (t) => {
  const data = sample(50_000);
  for (const chunking of BYTE_CHUNKINGS) {
    await t.step(chunking.name, async () => {
      const r = new StreamByteReader(chunkedStream(data, chunking));
      const rnd = seededRandom(9);
      let at = 0;
      while (at < data.byteLength) {
        const n = Math.min(data.byteLength - at, 1 + Math.floor(rnd() * 5000));
        assert.equal(r.offset, at);
        if (rnd() < 0.2) await r.skip(n);
        else assert.deepEqual(await r.read(n), data.subarray(at, at + n));
        at += n;
      }
      assert.equal(await r.readOrEnd(1), undefined);
      assert.equal(await r.peekByte(), undefined);
    });
  }
});

Deno.test("PullByteReader with reuseStitchBuffers joins reads across recycled chunks byte-exact in two buffers", async (t) => {
  const data = sample(60_000);
  for (const chunking of BYTE_CHUNKINGS) {
    await t.step(chunking.name, async () => {
      // An "until-refill" source: each chunk is scribbled over once the next one is pulled.
      const chunks = splitBytes(data, chunking, { copy: true });
      let last: Uint8Array | undefined;
      const r = new PullByteReader(() => {
        last?.fill(0xee);
        last = chunks.shift();
        return Promise.resolve(last);
      }, { viewLifetime: "until-refill", reuseStitchBuffers: true });
      const rnd = seededRandom(11);
      const joinBuffers = new Set<ArrayBufferLike>();
      const chunkBuffers = new Set(chunks.map((c) => c.buffer));
      let at = 0;
      while (at < data.byteLength) {
        // Records of 5000 bytes (larger than most chunks, as multifd packets are) and a few small ones.
        const n = Math.min(data.byteLength - at, rnd() < 0.2 ? 7 : 5000);
        const got = await r.read(n);
        assert.deepEqual(got, data.subarray(at, at + n), `at ${at}`);
        if (!chunkBuffers.has(got.buffer)) joinBuffers.add(got.buffer);
        at += n;
      }
      assert.equal(await r.readOrEnd(1), undefined);
      // Two buffers (each perhaps first made for a small read, then grown once), not one per read.
      assert.ok(joinBuffers.size <= 4, `${joinBuffers.size} join buffers`);
    });
  }
});

Deno.test("PullByteReader with readInto reads joined bytes into place, byte-exact under every chunking", async (t) => {
  const data = sample(60_000);
  for (const chunking of BYTE_CHUNKINGS) {
    await t.step(chunking.name, async () => {
      // One source, read two ways: whole chunks (pull) or into a buffer (readInto).
      const sizes = splitBytes(data, chunking).map((c) => c.byteLength);
      let at = 0;
      let intoReads = 0;
      const nextSize = () => sizes.shift();
      const r = new PullByteReader(() => {
        const size = nextSize();
        if (size === undefined) return Promise.resolve(undefined);
        const chunk = data.slice(at, at + size);
        at += size;
        return Promise.resolve(chunk);
      }, {
        viewLifetime: "until-refill",
        reuseStitchBuffers: true,
        readInto: (buffer) => {
          const size = nextSize();
          if (size === undefined) return Promise.resolve(null);
          const n = Math.min(size, buffer.byteLength);
          if (n < size) sizes.unshift(size - n); // the rest of that chunk comes next
          buffer.set(data.subarray(at, at + n));
          at += n;
          intoReads++;
          return Promise.resolve(n);
        },
      });
      const rnd = seededRandom(12);
      let pos = 0;
      while (pos < data.byteLength) {
        const n = Math.min(data.byteLength - pos, rnd() < 0.2 ? 7 : 5000);
        assert.deepEqual(await r.read(n), data.subarray(pos, pos + n), `at ${pos}`);
        pos += n;
      }
      assert.equal(await r.readOrEnd(1), undefined);
      if (sizes.length === 0 && chunking.kind !== "whole") assert.ok(intoReads > 0);
    });
  }
});

Deno.test("PullByteReader with readInto reports a truncated join at the offset where the input ended", async () => {
  const data = sample(1000);
  let served = false;
  const r = new PullByteReader(() => {
    if (served) return Promise.resolve(undefined);
    served = true;
    return Promise.resolve(data.slice(0, 100));
  }, {
    viewLifetime: "until-refill",
    reuseStitchBuffers: true,
    readInto: () => Promise.resolve(null),
  });
  await r.read(40);
  await assert.rejects(r.read(500, "a packet"), (e: unknown) => {
    assert.ok(e instanceof UnexpectedEofError);
    assert.equal(e.offset, 100);
    return true;
  });
});

Deno.test("PullByteReader reports truncation with the offset where the input ended", async () => {
  const r = bytesReader(new Uint8Array(10), { startOffset: 100 });
  await r.read(4);
  await assert.rejects(r.read(10, "a thing"), (e: unknown) => {
    assert.ok(e instanceof UnexpectedEofError);
    assert.equal(e.offset, 110);
    assert.match(e.message, /a thing/);
    return true;
  });
});

Deno.test("readAt reports a range past the end at the offset where the file ended, even when it starts beyond it", async () => {
  // A range at an untrusted offset far past the file (the mutation campaign's ELF case
  // 3934873498 read an empty table 2^50 bytes out) names the file's end, a byte of the input.
  const r = bytesPositional(new Uint8Array(222));
  const ranges: [number, number][] = [[200, 40], [0x5003800080000, 0], [1 << 30, 8]];
  for (const [fileOffset, byteLength] of ranges) {
    await assert.rejects(readAt(r, { fileOffset, byteLength }), (e: unknown) => {
      assert.ok(e instanceof UnexpectedEofError);
      assert.equal(e.offset, 222);
      assert.match(e.message, new RegExp(`at 0x${fileOffset.toString(16)}`));
      return true;
    });
  }
});

Deno.test("PullByteReader.tryReadSync never awaits and never crosses a chunk", async () => {
  const chunks = [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5])];
  const r = new PullByteReader(() => Promise.resolve(chunks.shift()));
  assert.equal(r.tryReadSync(1), undefined); // nothing buffered yet
  assert.equal(await r.peekByte(), 1);
  assert.deepEqual(r.tryReadSync(2), new Uint8Array([1, 2]));
  assert.equal(r.tryReadSync(2), undefined);
  assert.deepEqual(await r.read(2), new Uint8Array([3, 4]));
  assert.equal(r.offset, 4);
});

Deno.test("ByteWriter keeps chunk order with a slow asynchronous sink", async () => {
  const got: Uint8Array[] = [];
  const rnd = seededRandom(3);
  const w = new ByteWriter(async (c) => {
    await new Promise((r) => setTimeout(r, Math.floor(rnd() * 3)));
    got.push(c.slice());
  }, { chunkSize: 64, reuseChunks: true });
  const data = sample(10_000, 4);
  for (let i = 0; i < data.byteLength;) {
    const n = Math.min(data.byteLength - i, 1 + Math.floor(rnd() * 100));
    w.bytes(data.subarray(i, i + n));
    i += n;
    await w.flushIfFull();
  }
  await w.flush();
  const joined = new Uint8Array(got.reduce((a, c) => a + c.byteLength, 0));
  let o = 0;
  for (const c of got) {
    joined.set(c, o);
    o += c.byteLength;
  }
  assert.deepEqual(joined, data);
  assert.equal(w.offset, data.byteLength);
});

Deno.test("ByteWriter writes big-endian and little-endian integers", async () => {
  const parts: Uint8Array[] = [];
  const w = new ByteWriter((c) => void parts.push(c));
  w.u16(0x0102);
  w.u32(0x03040506, true);
  w.u64(2 ** 40 + 7);
  w.bigU64(0x1122334455667788n, true);
  await w.flush();
  assert.deepEqual(
    parts[0],
    new Uint8Array([
      1,
      2,
      6,
      5,
      4,
      3,
      0,
      0,
      1,
      0,
      0,
      0,
      0,
      7,
      0x88,
      0x77,
      0x66,
      0x55,
      0x44,
      0x33,
      0x22,
      0x11,
    ]),
  );
  assert.throws(() => w.u64(2 ** 53), RangeError);
});

Deno.test("fileByteReader reads a file byte-exact with read-ahead, copied or recycled", async () => {
  const data = sample(3 * 65536 + 123, 5);
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, data);
    for (const recycleChunks of [0, 4]) {
      using f = await Deno.open(path);
      const r = fileByteReader(f, { chunkSize: 65536, recycleChunks });
      const got = new Uint8Array(data.byteLength);
      let o = 0;
      for (;;) {
        const c = await r.readChunk(7000);
        if (c === undefined) break;
        got.set(c, o);
        o += c.byteLength;
      }
      assert.equal(o, data.byteLength);
      assert.deepEqual(got, data);
    }
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("blocking reads of a regular file still let the event loop turn while an output's signal listeners wait", async () => {
  // 2 MiB read in 4 KiB blocking reads: 512 reads, none of which waits for the event loop.
  const data = sample(2 << 20, 6);
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/in.bin`;
    await Deno.writeFile(path, data);
    const read = async (): Promise<{ turnedAt: number | undefined; bytes: number }> => {
      const input = await openFileReader(path, {
        syncReads: true,
        recycleChunks: 4,
        chunkSize: 4096,
      });
      let turned = false;
      const timer = setTimeout(() => turned = true, 0);
      let turnedAt: number | undefined;
      let bytes = 0;
      for (let c; (c = await input.reader.readChunk(1 << 20)) !== undefined;) {
        bytes += c.byteLength;
        if (turned && turnedAt === undefined) turnedAt = bytes;
      }
      clearTimeout(timer);
      input.close();
      return { turnedAt, bytes };
    };
    // No output: nothing else needs the loop, every read blocks.
    assert.deepEqual(await read(), { turnedAt: undefined, bytes: data.byteLength });
    // An atomic output listens for Ctrl-C: the loop turns within 256 reads (1 MiB here).
    const out = await createAtomicOutput(`${dir}/out.bin`);
    try {
      const { turnedAt, bytes } = await read();
      assert.equal(bytes, data.byteLength);
      assert.ok(turnedAt !== undefined && turnedAt <= 257 * 4096, `the loop turned at ${turnedAt}`);
    } finally {
      await out.abort();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ByteWriter.flush() waits for every write, even with chunks in flight", async () => {
  const got: number[] = [];
  const w = new ByteWriter(async (c) => {
    await new Promise((r) => setTimeout(r, 20));
    got.push(c.byteLength);
  }, { chunkSize: 16, reuseChunks: true });
  w.bytes(new Uint8Array(16));
  w.bytes(new Uint8Array(16));
  w.bytes(new Uint8Array(5));
  await w.flushIfFull(); // two writes in flight: does not wait
  await w.flush();
  assert.deepEqual(got, [16, 16, 5]);
});

Deno.test("ByteWriter reports a failed write from flush() without an unhandled rejection", async () => {
  const w = new ByteWriter(() => Promise.reject(new Error("disk full")), {
    chunkSize: 8,
    reuseChunks: true,
  });
  w.bytes(new Uint8Array(8));
  w.bytes(new Uint8Array(8));
  await assert.rejects(w.flush(), /disk full/);
});
