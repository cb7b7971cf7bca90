import assert from "node:assert/strict";
import { gunzipSync, zstdDecompressSync } from "node:zlib";
import { bytesReader } from "../../src/io/byte_reader.ts";
import {
  buildLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_ZSTD,
} from "../../src/container/libvirt_save.ts";
import {
  type ContainerKind,
  type InnerCompression,
  openContainer,
} from "../../src/container/open.ts";
import { createContainerWriter } from "../../src/container/write.ts";
import { ZstdFrameScanner } from "../../src/container/zstd_frames.ts";
import { assertBytesEqual } from "../_util/assert.ts";
import { concatBytes, ODD_4095, splitBytes } from "../_util/chunkings.ts";
import { drain, fakeStream, memorySink } from "./_helpers.ts";

const XML = "<domain type='kvm'><name>g</name></domain>";

async function pack(
  stream: Uint8Array,
  options: Parameters<typeof createContainerWriter>[1],
): Promise<Uint8Array> {
  const out = memorySink();
  const writer = createContainerWriter(out.sink, options);
  for (const chunk of splitBytes(stream, ODD_4095)) await writer.write(chunk);
  await writer.close();
  return out.bytes();
}

Deno.test("createContainerWriter() writes raw, gzip and zstd that openContainer() reads back", async () => {
  const stream = fakeStream(400_000);
  for (const kind of ["raw", "gzip", "zstd"] as const) {
    const packed = await pack(stream, { kind, level: 1 });
    const opened = await openContainer(bytesReader(packed));
    assert.equal(opened.kind, kind);
    assertBytesEqual(await drain(opened.reader), stream, kind);
  }
  assertBytesEqual(new Uint8Array(gunzipSync(await pack(stream, { kind: "gzip" }))), stream);
  const z = await pack(stream, { kind: "zstd", level: 3 });
  assertBytesEqual(new Uint8Array(zstdDecompressSync(z)), stream);
  const scanner = new ZstdFrameScanner({
    onFrame: (f) => assert.equal(f.checksum, true, "the zstd tool's default: a content checksum"),
  });
  scanner.push(z);
  scanner.finish();
});

Deno.test("createContainerWriter() writes a libvirt image whose header is byte-identical", async () => {
  const stream = fakeStream(100_000);
  for (
    const [inner, code] of [
      ["raw", QEMU_SAVE_FORMAT_RAW],
      ["gzip", QEMU_SAVE_FORMAT_GZIP],
      ["zstd", QEMU_SAVE_FORMAT_ZSTD],
    ] as const
  ) {
    for (const littleEndian of [true, false]) {
      const header = buildLibvirtSaveHeader({
        xml: XML,
        cookie: "<c/>",
        compression: code,
        littleEndian,
      });
      const image = await pack(stream, { kind: "libvirt-save", libvirt: header });
      assertBytesEqual(image.subarray(0, header.headerBytes.length), header.headerBytes);
      const opened = await openContainer(bytesReader(image));
      assert.equal(opened.innerCompression, inner);
      assert.equal(opened.libvirt?.littleEndian, littleEndian);
      assertBytesEqual(await drain(opened.reader), stream);
      if (inner === "raw") assertBytesEqual(image, concatBytes([header.headerBytes, stream]));
    }
  }
});

Deno.test("createContainerWriter() rewrites only the format field when the compression changes", async () => {
  const stream = fakeStream(50_000);
  const header = buildLibvirtSaveHeader({ xml: XML, compression: QEMU_SAVE_FORMAT_RAW });
  const image = await pack(stream, { kind: "libvirt-save", libvirt: header, compression: "zstd" });
  const opened = await openContainer(bytesReader(image));
  assert.equal(opened.libvirt?.compression, QEMU_SAVE_FORMAT_ZSTD);
  assert.equal(opened.innerCompression, "zstd");
  const expected = header.headerBytes.slice();
  expected[28] = QEMU_SAVE_FORMAT_ZSTD;
  assertBytesEqual(opened.libvirt!.headerBytes, expected);
  assertBytesEqual(await drain(opened.reader), stream);
});

Deno.test("createContainerWriter() round-trips a libvirt image through raw byte for byte", async () => {
  const stream = fakeStream(123_457);
  const header = buildLibvirtSaveHeader({
    xml: XML,
    cookie: "<cookie/>",
    compression: QEMU_SAVE_FORMAT_RAW,
  });
  const image = concatBytes([header.headerBytes, stream]);
  const opened = await openContainer(bytesReader(image));
  const raw = await pack(await drain(opened.reader), { kind: "raw" });
  assertBytesEqual(raw, stream);
  const again = await pack(raw, { kind: "libvirt-save", libvirt: opened.libvirt! });
  assertBytesEqual(again, image);
});

Deno.test("createContainerWriter() rejects contradicting options with TypeError", () => {
  const header = buildLibvirtSaveHeader({ xml: XML, compression: 0 });
  const sink = () => Promise.resolve();
  assert.throws(() => createContainerWriter(sink, { kind: "libvirt-save" }), TypeError);
  assert.throws(
    () => createContainerWriter(sink, { kind: "gzip", compression: "zstd" }),
    TypeError,
  );
  assert.throws(() => createContainerWriter(sink, { kind: "raw", libvirt: header }), TypeError);
  const cases: [ContainerKind, InnerCompression][] = [["zstd", "zstd"], ["gzip", "gzip"], [
    "raw",
    "raw",
  ]];
  for (const [kind, compression] of cases) createContainerWriter(sink, { kind, compression });
});

Deno.test("createContainerWriter() passes sink failures to the caller", async () => {
  for (const kind of ["raw", "gzip", "zstd"] as const) {
    const writer = createContainerWriter(() => Promise.reject(new Error("disk full")), { kind });
    await assert.rejects(
      (async () => {
        for (let i = 0; i < 64; i++) await writer.write(fakeStream(1 << 20, i));
        await writer.close();
      })(),
      /disk full/,
      kind,
    );
  }
});
