/**
 * Containers around real QEMU migration streams: compress a real stream with
 * our writers (and with the zstd tool), build a libvirt save image around it,
 * open it again and check the migration stream comes back byte for byte
 * (SHA-256 against the producer's checksums). Everything streams; the
 * compressed copies (a few MB) are kept in memory.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type ByteReader, bytesReader } from "../../src/io/byte_reader.ts";
import { openFileReader } from "../../src/io/file.ts";
import {
  buildLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_ZSTD,
} from "../../src/container/libvirt_save.ts";
import { openContainer } from "../../src/container/open.ts";
import { type ContainerWriterOptions, createContainerWriter } from "../../src/container/write.ts";
import { assertFormatError } from "../_util/assert.ts";
import { concatBytes } from "../_util/chunkings.ts";
import {
  realdata,
  realdataAvailable,
  realdataFacts,
  realdataSharedDir,
} from "../_util/realdata.ts";
import { requireTool, toolAvailable } from "../_util/tools.ts";

const SET = "out-q10";
const FILE = "s0-unplugged.mig"; // 55 MB
const XML =
  "<domain type='kvm'>\n  <name>vmem-test</name>\n  <memory unit='KiB'>262144</memory>\n</domain>\n";
const ignore = !realdataAvailable(SET);

async function sha256Of(reader: ByteReader): Promise<{ hex: string; byteLength: number }> {
  const hash = createHash("sha256");
  let byteLength = 0;
  for (let c; (c = await reader.readChunk(1 << 20)) !== undefined;) {
    hash.update(c);
    byteLength += c.byteLength;
  }
  return { hex: hash.digest("hex"), byteLength };
}

/** Stream the real file through a container writer into memory. */
async function packFile(path: string, options: ContainerWriterOptions): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const writer = createContainerWriter((c) => {
    parts.push(c.slice());
    return Promise.resolve();
  }, options);
  const input = await openFileReader(path);
  try {
    for (let c; (c = await input.reader.readChunk(1 << 20)) !== undefined;) await writer.write(c);
  } finally {
    input.close();
  }
  await writer.close();
  return concatBytes(parts);
}

Deno.test({
  name: "openContainer() decodes real streams packed by createContainerWriter() as zstd and gzip",
  ignore,
  fn: async (t) => {
    const path = await realdata(SET, FILE);
    const want = realdataFacts(SET).sha256[FILE]!;
    const size = (await Deno.stat(path)).size;
    for (const [kind, level] of [["zstd", 3], ["gzip", 1]] as const) {
      await t.step(kind, async () => {
        const packed = await packFile(path, { kind, level });
        assert.ok(packed.length < size / 2, `${kind} output of ${packed.length} bytes`);
        const opened = await openContainer(bytesReader(packed));
        assert.equal(opened.kind, kind);
        const got = await sha256Of(opened.reader);
        assert.equal(got.byteLength, size);
        assert.equal(got.hex, want);
        // truncated halfway: a typed error, never a hang
        await assertFormatError(
          (async () => {
            const cut = await openContainer(bytesReader(packed.subarray(0, packed.length >> 1)));
            await sha256Of(cut.reader);
          })(),
          { name: "UnexpectedEofError", format: "container", maxOffset: packed.length >> 1 },
        );
      });
    }
  },
});

Deno.test({
  name:
    "openContainer() reads a libvirt save image built around a real stream (raw and zstd payloads)",
  ignore,
  fn: async (t) => {
    const path = await realdata(SET, FILE);
    const want = realdataFacts(SET).sha256[FILE]!;
    await t.step("raw payload: image = header || stream, byte for byte", async () => {
      const header = buildLibvirtSaveHeader({
        xml: XML,
        cookie: "<qemu-cookie/>",
        compression: QEMU_SAVE_FORMAT_RAW,
      });
      const image = await packFile(path, { kind: "libvirt-save", libvirt: header });
      assert.deepEqual(image.subarray(0, header.headerBytes.length), header.headerBytes);
      const imageHash = createHash("sha256").update(image).digest("hex");
      const expectedHash = createHash("sha256").update(header.headerBytes)
        .update(await Deno.readFile(path)).digest("hex");
      assert.equal(imageHash, expectedHash);

      const opened = await openContainer(bytesReader(image));
      assert.equal(opened.kind, "libvirt-save");
      assert.equal(opened.innerCompression, "raw");
      assert.equal(opened.libvirt?.xml, XML);
      assert.equal(opened.libvirt?.cookie, "<qemu-cookie/>");
      assert.equal(opened.payloadOffset, header.headerBytes.length);
      assert.equal((await sha256Of(opened.reader)).hex, want);

      // libvirt -> raw -> libvirt with the same header: identical bytes
      const again = await openContainer(bytesReader(image));
      const parts: Uint8Array[] = [];
      const w = createContainerWriter((c) => {
        parts.push(c.slice());
        return Promise.resolve();
      }, { kind: "libvirt-save", libvirt: again.libvirt! });
      for (let c; (c = await again.reader.readChunk(1 << 20)) !== undefined;) await w.write(c);
      await w.close();
      assert.equal(createHash("sha256").update(concatBytes(parts)).digest("hex"), imageHash);
    });
    await t.step("zstd payload, big-endian header", async () => {
      const header = buildLibvirtSaveHeader({
        xml: XML,
        compression: QEMU_SAVE_FORMAT_ZSTD,
        littleEndian: false,
      });
      const image = await packFile(path, { kind: "libvirt-save", libvirt: header, level: 1 });
      const opened = await openContainer(bytesReader(image));
      assert.equal(opened.innerCompression, "zstd");
      assert.equal(opened.libvirt?.littleEndian, false);
      assert.equal((await sha256Of(opened.reader)).hex, want);
    });
  },
});

Deno.test({
  name: "openContainer() decodes a real stream compressed by the zstd tool with --long=30",
  ignore: ignore || !toolAvailable("zstd"),
  fn: async () => {
    const zstd = requireTool("zstd");
    const path = await realdata(SET, FILE);
    const out = await new Deno.Command(zstd, {
      args: ["-q", "-1", "--long=30", "-c", path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const opened = await openContainer(bytesReader(out.stdout));
    assert.equal((await sha256Of(opened.reader)).hex, realdataFacts(SET).sha256[FILE]);
  },
});

Deno.test({
  name:
    "openContainer() opens the shared --long=30 archive (1 GiB window) and names the window when limited",
  ignore,
  fn: async () => {
    const archive = `${realdataSharedDir(SET)}/fixtures.tar.zst`;
    const limited = await openFileReader(archive);
    try {
      await assertFormatError(
        (async () => {
          const o = await openContainer(limited.reader, {
            acceptUnknown: true,
            zstdWindowLogMax: 27,
          });
          await o.reader.read(512);
        })(),
        {
          code: "too-large",
          offset: 0,
          message:
            /needs a 1 GiB window \(window log 30, as written by zstd --long=30\) but the limit is 128 MiB/,
        },
      );
    } finally {
      limited.close();
    }
    const input = await openFileReader(archive);
    try {
      const opened = await openContainer(input.reader);
      assert.equal(opened.kind, "zstd");
      const tarHeader = await opened.reader.read(512);
      assert.equal(new TextDecoder().decode(tarHeader.subarray(257, 262)), "ustar");
      await opened.reader.skip(48 << 20); // decompress a good part with the 1 GiB window
      await opened.reader.cancel();
    } finally {
      input.close();
    }
  },
});
