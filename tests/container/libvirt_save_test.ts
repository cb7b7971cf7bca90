import assert from "node:assert/strict";
import { bytesReader } from "../../src/io/byte_reader.ts";
import {
  buildLibvirtSaveHeader,
  LIBVIRT_MAX_DATA_LENGTH,
  LIBVIRT_SAVE_HEADER_SIZE,
  libvirtCompressionName,
  parseLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_ZSTD,
  readLibvirtSaveFixedHeader,
  readLibvirtSaveHeader,
  withLibvirtCompression,
} from "../../src/container/libvirt_save.ts";
import { openContainer } from "../../src/container/open.ts";
import { assertBytesEqual, assertFormatError } from "../_util/assert.ts";
import { BYTE_CHUNKINGS, concatBytes, ONE_BYTE } from "../_util/chunkings.ts";
import { chunkedReader, drain, fakeStream, gzip, zstd } from "./_helpers.ts";

const XML = "<domain type='kvm'>\n  <name>guest</name>\n</domain>\n";
const COOKIE = "<cookie>\n  <cpu mode='custom'/>\n</cookie>\n";

/** Lay out a header by hand, independently of buildLibvirtSaveHeader. */
function handHeader(options: {
  littleEndian: boolean;
  version?: number;
  dataLength: number;
  compression: number;
  cookieOffset?: number;
  data?: Uint8Array;
  magic?: string;
}): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(LIBVIRT_SAVE_HEADER_SIZE + (options.data?.length ?? 0));
  out.set(new TextEncoder().encode(options.magic ?? "LibvirtQemudSave"));
  const v = new DataView(out.buffer);
  v.setUint32(16, options.version ?? 2, options.littleEndian);
  v.setUint32(20, options.dataLength, options.littleEndian);
  v.setUint32(24, 1, options.littleEndian);
  v.setUint32(28, options.compression, options.littleEndian);
  v.setUint32(32, options.cookieOffset ?? 0, options.littleEndian);
  if (options.data) out.set(options.data, LIBVIRT_SAVE_HEADER_SIZE);
  return out;
}

/** XML + NUL + cookie + NUL + zero padding, like libvirt. */
function dataArea(xml: string, cookie: string | undefined, padding: number) {
  const enc = new TextEncoder();
  const parts = [enc.encode(xml), new Uint8Array(1)];
  if (cookie !== undefined) parts.push(enc.encode(cookie), new Uint8Array(1));
  parts.push(new Uint8Array(padding));
  return {
    bytes: concatBytes(parts),
    cookieOffset: cookie === undefined ? 0 : enc.encode(xml).length + 1,
  };
}

Deno.test("readLibvirtSaveHeader() reads a little-endian header with XML and cookie", async () => {
  const { bytes, cookieOffset } = dataArea(XML, COOKIE, 100);
  const image = handHeader({
    littleEndian: true,
    dataLength: bytes.length,
    compression: QEMU_SAVE_FORMAT_RAW,
    cookieOffset,
    data: bytes,
  });
  const h = await readLibvirtSaveHeader(bytesReader(image));
  assert.equal(h.magic, "LibvirtQemudSave");
  assert.equal(h.version, 2);
  assert.equal(h.littleEndian, true);
  assert.equal(h.dataLength, bytes.length);
  assert.equal(h.wasRunning, 1);
  assert.equal(h.compression, 0);
  assert.equal(h.cookieOffset, cookieOffset);
  assert.equal(h.xml, XML);
  assert.equal(h.cookie, COOKIE);
  assertBytesEqual(h.headerBytes, image);
});

Deno.test("readLibvirtSaveHeader() byte-swaps a big-endian header (version reads > 2)", async () => {
  const { bytes, cookieOffset } = dataArea(XML, COOKIE, 7);
  const image = handHeader({
    littleEndian: false,
    dataLength: bytes.length,
    compression: QEMU_SAVE_FORMAT_ZSTD,
    cookieOffset,
    data: bytes,
  });
  const h = await readLibvirtSaveHeader(bytesReader(image));
  assert.equal(h.littleEndian, false);
  assert.equal(h.version, 2);
  assert.equal(h.dataLength, bytes.length);
  assert.equal(h.compression, QEMU_SAVE_FORMAT_ZSTD);
  assert.equal(h.cookie, COOKIE);
  assert.equal(h.xml, XML);
});

Deno.test("readLibvirtSaveHeader() reads the XML alone when cookieOffset is 0", async () => {
  const { bytes } = dataArea(XML, undefined, 65536);
  const image = handHeader({
    littleEndian: true,
    dataLength: bytes.length,
    compression: 0,
    data: bytes,
  });
  const h = await readLibvirtSaveHeader(bytesReader(image));
  assert.equal(h.xml, XML);
  assert.equal(h.cookie, undefined);
  assert.equal(h.headerBytes.length, 92 + bytes.length);
});

Deno.test("readLibvirtSaveFixedHeader() rejects data_len above 64 MiB without allocating", () => {
  const image = handHeader({ littleEndian: true, dataLength: 0xffff_fff0, compression: 0 });
  assert.throws(() => readLibvirtSaveFixedHeader(image), (e: unknown) => {
    assert.ok(e instanceof Error && e.name === "FormatError");
    const fe = e as unknown as { code: string; offset: number };
    assert.equal(fe.code, "too-large");
    assert.equal(fe.offset, 20);
    assert.match(e.message, /data_len 0xfffffff0 exceeds/);
    return true;
  });
  // exactly at the limit is accepted by the fixed-header check
  const atLimit = handHeader({
    littleEndian: true,
    dataLength: LIBVIRT_MAX_DATA_LENGTH,
    compression: 0,
  });
  assert.equal(readLibvirtSaveFixedHeader(atLimit).dataLength, LIBVIRT_MAX_DATA_LENGTH);
});

Deno.test("openContainer() fails with UnexpectedEofError when data_len runs past the input", async () => {
  const image = handHeader({ littleEndian: true, dataLength: 60 << 20, compression: 0 });
  await assertFormatError(openContainer(bytesReader(image)), {
    name: "UnexpectedEofError",
    maxOffset: image.length,
  });
});

Deno.test("readLibvirtSaveFixedHeader() checks magic, version, data_len and cookieOffset", async () => {
  await assertFormatError(
    () =>
      readLibvirtSaveFixedHeader(
        handHeader({
          littleEndian: true,
          dataLength: 1,
          compression: 0,
          magic: "LibvirtQemudXXXX",
        }),
      ),
    { code: "bad-magic", offset: 0 },
  );
  await assertFormatError(
    () =>
      readLibvirtSaveFixedHeader(
        handHeader({ littleEndian: true, version: 3, dataLength: 1, compression: 0 }),
      ),
    { code: "bad-version", offset: 16 },
  );
  await assertFormatError(
    () =>
      readLibvirtSaveFixedHeader(handHeader({ littleEndian: true, dataLength: 0, compression: 0 })),
    { code: "bad-header", offset: 20 },
  );
  await assertFormatError(
    () =>
      readLibvirtSaveFixedHeader(
        handHeader({ littleEndian: true, dataLength: 10, compression: 0, cookieOffset: 11 }),
      ),
    { code: "out-of-range", offset: 32 },
  );
  await assertFormatError(
    () =>
      readLibvirtSaveFixedHeader(
        handHeader({
          littleEndian: true,
          dataLength: 1,
          compression: 0,
          magic: "LibvirtQemudPart",
        }),
      ),
    { name: "UnsupportedFeatureError", code: "unsupported", message: /incomplete/ },
  );
});

Deno.test("openContainer() rejects LibvirtQemudPart images with a clear UnsupportedFeatureError", async () => {
  const { bytes } = dataArea(XML, undefined, 10);
  const image = handHeader({
    littleEndian: true,
    dataLength: bytes.length,
    compression: 0,
    data: bytes,
    magic: "LibvirtQemudPart",
  });
  await assertFormatError(openContainer(bytesReader(image)), {
    name: "UnsupportedFeatureError",
    message: "LibvirtQemudPart",
    offset: 0,
  });
});

Deno.test("openContainer() opens a sparse (mapped-ram) payload as such, with its payload offset", async () => {
  const { bytes } = dataArea(XML, undefined, 16);
  const payload = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
  const header = handHeader({
    littleEndian: true,
    dataLength: bytes.length,
    compression: 6,
    data: bytes,
  });
  const opened = await openContainer(bytesReader(concatBytes([header, payload])));
  assert.equal(opened.kind, "libvirt-save");
  assert.equal(opened.sparse, true);
  assert.equal(opened.innerCompression, "raw");
  assert.equal(opened.payloadOffset, header.length);
  assert.deepEqual(await opened.reader.read(8), payload);
});

Deno.test("openContainer() names bzip2, xz and lzop payloads as unsupported", async (t) => {
  for (const [format, name] of [[2, "bzip2"], [3, "xz"], [4, "lzop"]] as const) {
    await t.step(name, async () => {
      const { bytes } = dataArea(XML, undefined, 16);
      const image = concatBytes([
        handHeader({
          littleEndian: true,
          dataLength: bytes.length,
          compression: format,
          data: bytes,
        }),
        new Uint8Array(64),
      ]);
      const e = await assertFormatError(openContainer(bytesReader(image)), {
        name: "UnsupportedFeatureError",
        format: "container",
        offset: 28,
        message: name,
      });
      assert.match(e.message, new RegExp(`format ${format}`));
    });
  }
  await t.step("unknown format 9", async () => {
    const { bytes } = dataArea(XML, undefined, 16);
    const image = handHeader({
      littleEndian: false,
      dataLength: bytes.length,
      compression: 9,
      data: bytes,
    });
    await assertFormatError(openContainer(bytesReader(image)), {
      name: "FormatError",
      code: "bad-header",
      offset: 28,
      message: "unknown compression format 9",
    });
  });
});

Deno.test("openContainer() opens libvirt images with raw, gzip and zstd payloads in both byte orders", async (t) => {
  const big = fakeStream(100_000);
  const small = fakeStream(3_000); // for 1-byte chunks
  for (const littleEndian of [true, false]) {
    for (
      const [compression, compress, inner] of [
        [QEMU_SAVE_FORMAT_RAW, (s: Uint8Array) => s, "raw"],
        [QEMU_SAVE_FORMAT_GZIP, gzip, "gzip"],
        [QEMU_SAVE_FORMAT_ZSTD, zstd, "zstd"],
      ] as const
    ) {
      for (const chunking of BYTE_CHUNKINGS) {
        const stream = chunking === ONE_BYTE ? small : big;
        const payload = compress(stream);
        await t.step(`${inner} ${littleEndian ? "LE" : "BE"} ${chunking.name}`, async () => {
          const { bytes, cookieOffset } = dataArea(XML, COOKIE, 333);
          const header = handHeader({
            littleEndian,
            dataLength: bytes.length,
            compression,
            cookieOffset,
            data: bytes,
          });
          const image = concatBytes([header, payload]);
          const opened = await openContainer(chunkedReader(image, chunking));
          assert.equal(opened.kind, "libvirt-save");
          assert.equal(opened.innerCompression, inner);
          assert.equal(opened.payloadOffset, header.length);
          assert.equal(opened.libvirt?.xml, XML);
          assert.equal(opened.libvirt?.cookie, COOKIE);
          assert.equal(opened.libvirt?.littleEndian, littleEndian);
          assertBytesEqual(opened.libvirt!.headerBytes, header);
          assert.equal(opened.reader.offset, 0);
          assertBytesEqual(await drain(opened.reader), stream);
          assert.equal(opened.reader.offset, stream.length);
        });
      }
    }
  }
});

Deno.test("openContainer() treats a version 1 image as raw whatever its format field says", async () => {
  const stream = fakeStream(5000);
  const { bytes } = dataArea(XML, undefined, 0);
  const image = concatBytes([
    handHeader({
      littleEndian: true,
      version: 1,
      dataLength: bytes.length,
      compression: 5,
      data: bytes,
    }),
    stream,
  ]);
  const opened = await openContainer(bytesReader(image));
  assert.equal(opened.libvirt?.version, 1);
  assert.equal(opened.innerCompression, "raw");
  assertBytesEqual(await drain(opened.reader), stream);
});

Deno.test("buildLibvirtSaveHeader() lays out the header like libvirt (64 KiB slack, cookie offset)", () => {
  const h = buildLibvirtSaveHeader({
    xml: XML,
    cookie: COOKIE,
    compression: QEMU_SAVE_FORMAT_ZSTD,
  });
  const { bytes, cookieOffset } = dataArea(XML, COOKIE, 65536);
  const expected = handHeader({
    littleEndian: true,
    dataLength: bytes.length,
    compression: QEMU_SAVE_FORMAT_ZSTD,
    cookieOffset,
    data: bytes,
  });
  assertBytesEqual(h.headerBytes, expected);
  const parsed = parseLibvirtSaveHeader(h.headerBytes);
  assert.deepEqual({ ...parsed, headerBytes: undefined }, { ...h, headerBytes: undefined });
  assert.throws(
    () => buildLibvirtSaveHeader({ xml: XML, compression: 0, dataLength: 10 }),
    RangeError,
  );
});

Deno.test("withLibvirtCompression() changes only the format field, in the header's byte order", () => {
  for (const littleEndian of [true, false]) {
    const h = buildLibvirtSaveHeader({ xml: XML, compression: 0, littleEndian });
    const changed = withLibvirtCompression(h, QEMU_SAVE_FORMAT_GZIP);
    const diff = [...changed].flatMap((b, i) => (b === h.headerBytes[i] ? [] : [i]));
    assert.deepEqual(diff, [littleEndian ? 28 : 31]);
    assert.equal(parseLibvirtSaveHeader(changed).compression, QEMU_SAVE_FORMAT_GZIP);
  }
  assert.equal(libvirtCompressionName(5), "zstd");
  assert.equal(libvirtCompressionName(42), "format 42");
});

Deno.test("openContainer() never fails with anything but a FormatError on a corrupted libvirt header", async () => {
  const stream = fakeStream(2000);
  const base = concatBytes([
    buildLibvirtSaveHeader({ xml: XML, compression: 0, dataLength: 400 }).headerBytes,
    stream,
  ]);
  for (let at = 0; at < 92; at++) {
    for (const flip of [0x01, 0x80, 0xff]) {
      const image = base.slice();
      image[at] = image[at]! ^ flip;
      try {
        const opened = await openContainer(bytesReader(image));
        await drain(opened.reader);
      } catch (e) {
        assert.ok(
          e instanceof Error && /Error$/.test(e.name) && "code" in e,
          `byte ${at} ^ ${flip}: ${e instanceof Error ? e.stack : e}`,
        );
      }
    }
  }
});
