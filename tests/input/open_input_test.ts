import assert from "node:assert/strict";
import { FormatError, UnexpectedEofError } from "../../src/errors.ts";
import { openInput } from "../../src/input/open_input.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import {
  buildLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_RAW,
  QEMU_SAVE_FORMAT_ZSTD,
} from "../../src/container/libvirt_save.ts";
import { buildKdump, flatten } from "../kdump/_builder.ts";
import { tempDir } from "../_util/qemu.ts";
import { runTool, toolAvailable } from "../_util/tools.ts";
import { realdata, realdataAvailable } from "../_util/realdata.ts";

const DEMO = "testdata/migration/q10-s3-malicious.mig.zst";
const RAW_STREAM = "testdata/migration/q72-tiny-unplugged.mig";

/** Every record of a stream, counted by kind, and the bytes read. */
async function census(path: string): Promise<{ counts: Map<string, number>; bytes: number }> {
  using input = await openInput(path);
  const counts = new Map<string, number>();
  for await (const batch of decodeMigrationBatches(input.reader)) {
    for (const r of batch) counts.set(r.kind, (counts.get(r.kind) ?? 0) + 1);
  }
  return { counts, bytes: input.reader.offset };
}

/** Compress `from` into `to` with a real tool. */
async function compress(tool: "zstd" | "gzip", from: string, to: string): Promise<void> {
  const r = await runTool("sh", ["-c", `${tool} -c "$1" > "$2"`, "sh", from, to]);
  assert.ok(r.success, `${tool} failed: ${r.stderr}`);
}

Deno.test("openInput() opens the zstd demo stream as a migration stream", async () => {
  using input = await openInput(DEMO);
  assert.equal(input.kind, "migration");
  assert.equal(input.container, "zstd");
  assert.equal(input.innerCompression, "zstd");
  assert.equal(input.libvirt, undefined);
  assert.equal(input.payloadOffset, 0);
  assert.equal(input.byteLength, (await Deno.stat(DEMO)).size);
  assert.deepEqual(
    new TextDecoder().decode(await input.reader.read(4)),
    "QEVM",
    "the reader starts at the decompressed stream's magic",
  );
});

Deno.test({
  name:
    "openInput() reads the same stream through every container (zstd and gzip tools, libvirt image)",
  ignore: !toolAvailable("zstd", "gzip"),
  fn: async () => {
    await using tmp = await tempDir("vmem-open-input-");
    const raw = await census(RAW_STREAM);
    assert.ok((raw.counts.get("ram-page") ?? 0) > 0);
    await compress("zstd", RAW_STREAM, `${tmp.path}/s.mig.zst`);
    await compress("gzip", RAW_STREAM, `${tmp.path}/s.mig.gz`);
    const stream = await Deno.readFile(RAW_STREAM);
    const header = buildLibvirtSaveHeader({
      xml: "<domain type='kvm'><name>tiny</name></domain>",
      compression: QEMU_SAVE_FORMAT_RAW,
    });
    await Deno.writeFile(`${tmp.path}/s.save`, new Uint8Array([...header.headerBytes, ...stream]));
    const zstdPayload = await Deno.readFile(`${tmp.path}/s.mig.zst`);
    const zstdHeader = buildLibvirtSaveHeader({
      xml: "<domain/>",
      compression: QEMU_SAVE_FORMAT_ZSTD,
    });
    await Deno.writeFile(
      `${tmp.path}/s-zstd.save`,
      new Uint8Array([...zstdHeader.headerBytes, ...zstdPayload]),
    );
    const cases = [
      { file: "s.mig.zst", container: "zstd", inner: "zstd", payloadOffset: 0 },
      { file: "s.mig.gz", container: "gzip", inner: "gzip", payloadOffset: 0 },
      {
        file: "s.save",
        container: "libvirt-save",
        inner: "raw",
        payloadOffset: header.headerBytes.byteLength,
      },
      {
        file: "s-zstd.save",
        container: "libvirt-save",
        inner: "zstd",
        payloadOffset: zstdHeader.headerBytes.byteLength,
      },
    ];
    for (const c of cases) {
      const path = `${tmp.path}/${c.file}`;
      {
        using input = await openInput(path);
        assert.equal(input.kind, "migration", c.file);
        assert.equal(input.container, c.container, c.file);
        assert.equal(input.innerCompression, c.inner, c.file);
        assert.equal(input.payloadOffset, c.payloadOffset, c.file);
        assert.equal(input.libvirt === undefined, c.container !== "libvirt-save", c.file);
      }
      assert.deepEqual(await census(path), raw, `${c.file}: the same records as the raw stream`);
    }
  },
});

Deno.test({
  name: "openInput() tells a real QEMU ELF dump by its magic",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    using input = await openInput(await realdata("out-small", "s0-unplugged.elf"));
    assert.equal(input.kind, "elf");
    assert.equal(input.container, "raw");
  },
});

Deno.test({
  name: "openInput() tells kdump and flattened kdump files, and a compressed ELF",
  ignore: !toolAvailable("gzip"),
  fn: async () => {
    await using tmp = await tempDir("vmem-open-input-");
    const page = new Uint8Array(4096).fill(7);
    const kdump = buildKdump({ maxMapnr: 16, pages: new Map([[3, page]]) }).bytes;
    await Deno.writeFile(`${tmp.path}/d.kdump`, kdump);
    await Deno.writeFile(`${tmp.path}/d.flat`, flatten(kdump, 4096));
    await compress("gzip", "testdata/tinyguest/vmemtiny.elf", `${tmp.path}/e.elf.gz`);
    for (
      const [file, kind, container] of [
        ["d.kdump", "kdump", "raw"],
        ["d.flat", "kdump-flattened", "raw"],
        ["e.elf.gz", "elf", "gzip"],
      ]
    ) {
      using input = await openInput(`${tmp.path}/${file}`);
      assert.equal(input.kind, kind, file);
      assert.equal(input.container, container, file);
    }
  },
});

Deno.test("openInput() refuses an unknown magic with a typed error, or gives kind unknown when asked", async () => {
  await using tmp = await tempDir("vmem-open-input-");
  const path = `${tmp.path}/image.raw`;
  await Deno.writeFile(path, new Uint8Array(8192).fill(0x5a));
  await assert.rejects(openInput(path), (e: unknown) => {
    assert.ok(e instanceof FormatError);
    assert.equal(e.code, "bad-magic");
    assert.equal(e.format, "container");
    assert.equal(e.offset, 0);
    assert.match(e.message, /unknown magic 5a 5a 5a 5a/);
    return true;
  });
  {
    using input = await openInput(path, { allowUnknown: true });
    assert.equal(input.kind, "unknown");
    assert.equal(input.container, "raw");
    assert.equal((await input.reader.read(8192)).byteLength, 8192, "the reader has every byte");
  }
  const empty = `${tmp.path}/empty`;
  await Deno.writeFile(empty, new Uint8Array(0));
  await assert.rejects(openInput(empty), UnexpectedEofError);
  await assert.rejects(openInput(`${tmp.path}/missing`), Deno.errors.NotFound);
});

Deno.test("openInput() reads standard input", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { openInput } from "./src/input/open_input.ts";
       using input = await openInput("-");
       console.log(input.kind, input.container, input.byteLength);`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(await Deno.readFile(DEMO));
  await writer.close();
  const out = await child.output();
  assert.equal(new TextDecoder().decode(out.stderr), "");
  assert.equal(new TextDecoder().decode(out.stdout), "migration zstd undefined\n");
});
