import assert from "node:assert/strict";
import { assertReport } from "../_util/report_schema.ts";
import { run } from "../../cli/commands/convert.ts";
import type { CliIo } from "../../cli/io.ts";
import { main } from "../../cli/main.ts";
import { bytesReader } from "../../src/io/byte_reader.ts";
import {
  buildLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_GZIP,
  QEMU_SAVE_FORMAT_RAW,
} from "../../src/container/libvirt_save.ts";
import { openContainer } from "../../src/container/open.ts";
import { FormatError } from "../../src/errors.ts";
import { tinyFixture } from "../_util/tiny_fixtures.ts";
import { assertBytesEqual } from "../_util/assert.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { drain, fakeStream, zstd } from "../container/_helpers.ts";

function memoryIo(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (t) => {
      stdout.push(t);
      return Promise.resolve();
    },
    err: (t) => {
      stderr.push(t);
      return Promise.resolve();
    },
    stderrIsTerminal: false,
  };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vmem-convert-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const XML = "<domain type='kvm'><name>convert</name></domain>";

Deno.test("convert run() re-packs raw -> zstd -> gzip -> raw with the stream unchanged", async () => {
  await withTempDir(async (dir) => {
    const stream = fakeStream(700_000);
    await Deno.writeFile(`${dir}/a.mig`, stream);
    const io = memoryIo();
    assert.equal(await run([`${dir}/a.mig`, `${dir}/b.mig.zst`], io), 0);
    assert.equal(await run([`${dir}/b.mig.zst`, `${dir}/c.mig.gz`, "--level", "1"], io), 0);
    assert.equal(await run([`${dir}/c.mig.gz`, `${dir}/d.mig`], io), 0);
    const zst = await Deno.readFile(`${dir}/b.mig.zst`);
    assert.deepEqual([...zst.subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd]);
    const gz = await Deno.readFile(`${dir}/c.mig.gz`);
    assert.deepEqual([...gz.subarray(0, 2)], [0x1f, 0x8b]);
    assertBytesEqual(await Deno.readFile(`${dir}/d.mig`), stream);
    // One summary line per run on stderr, terminal or not (cron logs keep a trace).
    assert.equal(io.stderr.length, 3);
    for (const line of io.stderr) {
      assert.match(
        line,
        /^convert: \S+ \((raw|zstd|gzip)\) -> \S+ \((raw|zstd|gzip)\): [\d,]+ bytes in /,
      );
      assert.match(line, /; 700,000 bytes of stream, [\d,]+ bytes written\n$/);
    }
  });
});

Deno.test("convert run() turns a libvirt image into raw and back into the identical image", async () => {
  await withTempDir(async (dir) => {
    const stream = fakeStream(300_001);
    const header = buildLibvirtSaveHeader({
      xml: XML,
      cookie: "<c/>",
      compression: QEMU_SAVE_FORMAT_RAW,
    });
    const image = concatBytes([header.headerBytes, stream]);
    await Deno.writeFile(`${dir}/g.save`, image);
    const io = memoryIo();
    assert.equal(await run([`${dir}/g.save`, `${dir}/g.mig`, "--json"], io), 0);
    assertBytesEqual(await Deno.readFile(`${dir}/g.mig`), stream);
    // deno-lint-ignore no-explicit-any
    const report = assertReport(io.stdout.join(""), "convert") as any;
    assert.equal(report.input.container, "libvirt-save");
    assert.equal(report.input.libvirt.hasCookie, true);
    assert.equal(report.output.container, "raw");
    assert.equal(report.streamByteLength, stream.length);

    assert.equal(
      await run([`${dir}/g.mig`, `${dir}/g2.save`, "--header-from", `${dir}/g.save`], io),
      0,
    );
    assertBytesEqual(await Deno.readFile(`${dir}/g2.save`), image);
    // a zstd payload inside a libvirt image, then back to a raw payload
    assert.equal(await run([`${dir}/g.save`, `${dir}/gz.save`, "--compression", "zstd"], io), 0);
    const opened = await openContainer(bytesReader(await Deno.readFile(`${dir}/gz.save`)));
    assert.equal(opened.innerCompression, "zstd");
    assertBytesEqual(await drain(opened.reader), stream);
    assert.equal(await run([`${dir}/gz.save`, `${dir}/g3.save`, "--compression", "raw"], io), 0);
    assertBytesEqual(await Deno.readFile(`${dir}/g3.save`), image);
  });
});

Deno.test("convert run() builds a libvirt header from --xml and --cookie", async () => {
  await withTempDir(async (dir) => {
    const stream = fakeStream(10_000);
    await Deno.writeFile(`${dir}/s.mig.zst`, zstd(stream));
    await Deno.writeTextFile(`${dir}/dom.xml`, XML);
    await Deno.writeTextFile(`${dir}/cookie.xml`, "<cookie/>");
    const io = memoryIo();
    const code = await run([
      `${dir}/s.mig.zst`,
      `${dir}/out.img`,
      "--to",
      "libvirt",
      "--xml",
      `${dir}/dom.xml`,
      "--cookie",
      `${dir}/cookie.xml`,
      "--compression",
      "gzip",
    ], io);
    assert.equal(code, 0);
    const opened = await openContainer(bytesReader(await Deno.readFile(`${dir}/out.img`)));
    assert.equal(opened.libvirt?.xml, XML);
    assert.equal(opened.libvirt?.cookie, "<cookie/>");
    assert.equal(opened.libvirt?.compression, QEMU_SAVE_FORMAT_GZIP);
    assertBytesEqual(await drain(opened.reader), stream);
  });
});

Deno.test("vmem-dump convert maps usage mistakes to 2 and bad input to 1 without leaving output", async () => {
  await withTempDir(async (dir) => {
    const stream = fakeStream(50_000);
    await Deno.writeFile(`${dir}/a.mig`, stream);
    const z = zstd(stream);
    await Deno.writeFile(`${dir}/cut.zst`, z.subarray(0, z.length - 10));
    const io = memoryIo();
    assert.equal(await main(["convert", `${dir}/a.mig`], io), 2);
    assert.equal(await main(["convert", `${dir}/a.mig`, `${dir}/x`, "--to", "bzip2"], io), 2);
    assert.equal(await main(["convert", `${dir}/a.mig`, `${dir}/x.save`], io), 2); // no header
    assert.equal(await main(["convert", `${dir}/a.mig`, `${dir}/x.mig`, "--level", "3"], io), 2);
    assert.equal(await main(["convert", `${dir}/a.mig`, `${dir}/x.gz`, "--level", "12"], io), 2);
    io.stderr.length = 0;
    assert.equal(await main(["convert", `${dir}/cut.zst`, `${dir}/out.mig`], io), 1);
    assert.match(
      io.stderr.join(""),
      /error: Cannot decompress zstd data: input ended inside the frame/,
    );
    // A dump conversion of a file that is no dump (here a zstd stream): a bad input with its
    // offset, not a TypeError (found by the mutation campaign); openInput says what it is, and a
    // cut one is cut.
    await Deno.writeFile(`${dir}/a.zst`, z);
    io.stderr.length = 0;
    assert.equal(
      await main(["convert", `${dir}/a.zst`, `${dir}/out.kdump`, "--to", "kdump"], io),
      1,
    );
    assert.match(
      io.stderr.join(""),
      /^error: Cannot convert \S+a.zst: it is a migration stream, not a dump \(filter and verify read streams; scan reads both\) at offset 0x0\n$/,
    );
    await assert.rejects(
      run([`${dir}/a.zst`, `${dir}/out.elf`, "--to", "elf"], io),
      (e: unknown) => e instanceof FormatError && e.code === "bad-magic" && e.offset === 0,
    );
    io.stderr.length = 0;
    assert.equal(
      await main(["convert", `${dir}/cut.zst`, `${dir}/out.kdump`, "--to", "kdump"], io),
      1,
    );
    assert.match(io.stderr.join(""), /^error: Cannot decompress zstd data: input ended inside/);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, ["a.mig", "a.zst", "cut.zst"]);
  });
});

Deno.test("vmem-dump convert runs as a process: a gzip pipe from stdin to zstd on stdout", async () => {
  const stream = fakeStream(200_000);
  const gz = new Uint8Array(
    await new Response(
      new Blob([stream]).stream().pipeThrough(new CompressionStream("gzip")),
    ).arrayBuffer(),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../../cli/main.ts", import.meta.url).pathname,
      "convert",
      "-",
      "-",
      "--to",
      "zstd",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(gz);
  await writer.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const opened = await openContainer(bytesReader(out.stdout));
  assert.equal(opened.kind, "zstd");
  assertBytesEqual(await drain(opened.reader), stream);
});

Deno.test("convert --to kdump refuses an ELF whose p_memsz describes 1 TiB beyond its file data, at once", async () => {
  // Found by the mutation campaign: one flipped bit in p_memsz of a real QEMU dump made
  // convert --to kdump write gigabytes of page descriptors for zero-fill memory (a hang).
  await withTempDir(async (dir) => {
    const elf = await tinyFixture("q72-tiny.elf");
    const v = new DataView(elf.buffer);
    const phoff = Number(v.getBigUint64(32, true));
    const last = phoff + 4 * 56; // PT_LOAD 4 (of NOTE + 4 PT_LOADs)
    assert.equal(v.getUint32(last, true), 1);
    v.setBigUint64(last + 40, 1n << 40n, true);
    await Deno.writeFile(`${dir}/in.elf`, elf);
    const t0 = performance.now();
    await assert.rejects(
      run([`${dir}/in.elf`, `${dir}/out.kdump`, "--to", "kdump"], memoryIo()),
      (e: unknown) =>
        e instanceof FormatError && e.code === "too-large" && e.offset === last + 40 &&
        /beyond their file data/.test(e.message),
    );
    assert.ok(performance.now() - t0 < 20_000);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["in.elf"]);
    // A zero-fill tail within the cap still converts: its pages read as zeros.
    v.setBigUint64(last + 40, 0x400000n + 0x200000n, true);
    await Deno.writeFile(`${dir}/in.elf`, elf);
    const io = memoryIo();
    assert.equal(await run([`${dir}/in.elf`, `${dir}/out.kdump`, "--to", "kdump"], io), 0);
  });
});

Deno.test("convert refuses a kdump input to kdump, or to ELF with a plug map, as usage errors before any work", async () => {
  // Found by the campaign: both reached the library's TypeError, an `internal` JSON error (exit 1).
  await withTempDir(async (dir) => {
    for (const name of ["q72-tiny.kdump", "q72-tiny.kdump-zlib"]) { // plain, flattened (real QEMU 7.2)
      const path = `${dir}/${name}`;
      await Deno.writeFile(path, await tinyFixture(name));
      const cases: [string[], RegExp][] = [
        [["--to", "kdump"], /is a kdump dump already: convert --to kdump does not apply/],
        [["--to", "kdump", "--flattened", "--plugmap", `${dir}/none.json`], /kdump dump already/],
        // The plug map file does not exist: refused before it is read.
        [["--to", "elf", "--plugmap", `${dir}/none.json`], /takes no plug map \(strip it first/],
        [["--to", "elf", "--plugmap-from", `${dir}/none.mig`], /takes no plug map/],
      ];
      for (const [opts, message] of cases) {
        const io = memoryIo();
        const code = await main(["convert", path, `${dir}/out`, ...opts, "--json"], io);
        assert.equal(code, 2, `${name} ${opts.join(" ")}: ${io.stderr.join("")}`);
        assert.equal(io.stdout.join(""), "");
        const lines = io.stderr.join("").trimEnd().split("\n");
        assert.equal(lines.length, 1);
        const error = JSON.parse(lines[0]!).error;
        assert.equal(error.code, "usage");
        assert.match(error.message, message);
      }
      // Without the plug map, kdump -> ELF converts.
      const io = memoryIo();
      assert.equal(await main(["convert", path, `${dir}/out`, "--to", "elf"], io), 0);
      await Deno.remove(`${dir}/out`);
      await Deno.remove(path);
    }
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("convert --to kdump refuses an ELF whose PT_LOAD lies beyond 2 TiB of guest-physical space, before any allocation", async () => {
  // Found by the mutation campaign (seed 777, elf case seed 1171810485): one flipped bit of
  // p_paddr in a real dump put a PT_LOAD near 2 TiB, and convert --to kdump allocated kdump's
  // bitmaps (a bit for every pfn from 0) by it: 64 MiB each, and more for higher bits.
  await withTempDir(async (dir) => {
    const elf = await tinyFixture("q72-tiny.elf");
    const v = new DataView(elf.buffer);
    const phoff = Number(v.getBigUint64(32, true));
    const last = phoff + 4 * 56; // PT_LOAD 4 (of NOTE + 4 PT_LOADs)
    assert.equal(v.getUint32(last, true), 1);
    v.setBigUint64(last + 24, 1n << 41n, true); // p_paddr: 2 TiB
    await Deno.writeFile(`${dir}/in.elf`, elf);
    await assert.rejects(
      run([`${dir}/in.elf`, `${dir}/out.kdump`, "--to", "kdump", "--workers", "0"], memoryIo()),
      (e: unknown) =>
        e instanceof FormatError && e.code === "too-large" && e.offset === last + 24 &&
        /beyond the 2 TiB a converted dump may span/.test(e.message),
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["in.elf"]);
  });
});
