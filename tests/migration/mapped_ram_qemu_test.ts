/**
 * Mapped-ram files written by real QEMU 10.0 (`migrate file:…` with the
 * `mapped-ram` capability, with and without `multifd`) from the tiny guest
 * with plugged blocks, unplugged blocks, and pages written into unplugged
 * blocks over the gdbstub while the migration waited before switchover:
 *
 * - the per-block counts equal QEMU's own count of pages written
 *   (`query-migrate` `ram.normal`) and an independent reading of the bitmaps;
 * - verify flags exactly the pages written into unplugged blocks, and a real
 *   QEMU 10 restoring the file (`migrate-incoming file:…`) does load them;
 * - the filtered file restores in QEMU 10 with memory equal to the source's
 *   and without those pages, and takes less disk space (`du`);
 * - scan reports those pages with the file offsets of their data;
 * - a late-layout file (pc-q35-7.2 machine) inside a libvirt "sparse" save
 *   image written with `file:…,offset=N` reads the same way;
 * - the decoder gives the same records at every read size (structures cut
 *   anywhere, block areas skipped through the buffer or by a seek), reads
 *   a small fraction of the file, and refuses it without `mappedRam`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { UnsupportedFeatureError } from "../../src/errors.ts";
import { openPositional, type PositionalReader } from "../../src/io/positional.ts";
import { positionalByteReader } from "../../src/io/positional_byte_reader.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { readMappedRamFile } from "../../src/migration/mapped_ram/file.ts";
import { inspectMappedRam } from "../../src/migration/mapped_ram/inspect.ts";
import { verifyMappedRam } from "../../src/migration/mapped_ram/verify.ts";
import { filterMappedRam } from "../../src/migration/mapped_ram/filter.ts";
import { scanMappedRam } from "../../src/scan/scan_mapped_ram.ts";
import {
  buildLibvirtSaveHeader,
  QEMU_SAVE_FORMAT_SPARSE,
} from "../../src/container/libvirt_save.ts";
import { loadPlugState } from "../../src/input/load_plug_state.ts";
import { openInput } from "../../src/input/open_input.ts";
import { fileContains } from "../_util/files.ts";
import {
  compareGuestMemory,
  qemuAvailable,
  type QemuGuest,
  startDestination,
  tempDir,
} from "../_util/qemu.ts";
import {
  duKiB,
  EVIL_BLOCKS,
  EVIL_GPAS,
  makeMappedRamFile,
  mappedRamCaps,
  readMappedRamIndependently,
} from "../_util/mapped_ram.ts";

const MiB = 1 << 20;

/**
 * Restore `path` into a fresh QEMU 10 with mapped-ram on; return it loaded
 * (dispose it). With `expectFailure` the load must fail, and QEMU stays up.
 */
async function restore(
  path: string,
  options: { multifd: boolean; machine?: string; offset?: number; expectFailure?: boolean },
): Promise<QemuGuest> {
  const dst = await startDestination({
    qemu: "10",
    guest: "tiny",
    incoming: "defer",
    ...(options.machine ? { machine: options.machine } : {}),
  });
  try {
    await dst.qmp("migrate-set-capabilities", { capabilities: mappedRamCaps(options.multifd) });
    const offset = options.offset ?? 0;
    const uri = `file:${path}${offset ? `,offset=${offset}` : ""}`;
    if (options.expectFailure) {
      await dst.migrateIncoming(uri, { exitOnError: false });
      const info = await dst.waitMigration(["completed", "failed"], 120_000);
      assert.equal(info.status, "failed", "the truncated file does not load");
      return dst;
    }
    await dst.migrateIncoming(uri);
    await dst.waitIncoming({ timeoutMs: 120_000 });
    return dst;
  } catch (e) {
    await dst.kill();
    throw e;
  }
}

/** Whether the 4 KiB page at `gpa` of a running QEMU holds `needle`. */
async function pageHolds(vm: QemuGuest, dir: string, gpa: number, needle: string) {
  const f = `${dir}/page-${gpa.toString(16)}.raw`;
  await vm.pmemsave(gpa, 4096, f);
  return await fileContains(f, needle);
}

/** A sparse copy of `path` cut right after the RAM START section (EOS and footer after the last block). */
async function cutAfterRam(path: string, dir: string, payloadOffset: number): Promise<string> {
  const blocks = await readMappedRamIndependently(path, payloadOffset);
  const last = blocks[blocks.length - 1]!;
  const cut = `${dir}/${path.slice(path.lastIndexOf("/") + 1)}.cut`;
  const cp = await new Deno.Command("cp", { args: ["--sparse=always", path, cut] }).output();
  assert.ok(cp.success);
  await Deno.truncate(cut, last.pagesOffset + last.usedLength + 8 + 5);
  return cut;
}

async function checkFile(
  t: Deno.TestContext,
  dir: string,
  src: QemuGuest,
  ram: Record<string, number>,
  mig: string,
  options: { multifd: boolean; machine?: string; offset?: number; layout: "early" | "late" },
) {
  const payloadOffset = options.offset ?? 0;
  using file = await openPositional(mig);
  const mr = await readMappedRamFile(file, { payloadOffset });
  assert.equal(mr.plugLayout, options.layout);

  await t.step("the decoder: same records at every read size, areas seeked over", async () => {
    // Each record as kind@offset, with the block list's layouts; and the bytes read from the file.
    const decode = async (chunkSize?: number, options = { mappedRam: true }) => {
      let bytesRead = 0;
      const counting: PositionalReader = {
        byteLength: file.byteLength,
        async readInto(fileOffset, into) {
          const n = await file.readInto(fileOffset, into);
          bytesRead += n;
          return n;
        },
        close() {},
      };
      const reader = positionalByteReader(counting, {
        startOffset: payloadOffset,
        ...(chunkSize === undefined ? {} : { chunkSize }),
      });
      const records: unknown[] = [];
      for await (const batch of decodeMigrationBatches(reader, options)) {
        for (const r of batch) {
          records.push(r.kind === "ram-mem-size" ? r.blocks : `${r.kind}@${r.streamOffset}`);
        }
      }
      return { records, bytesRead };
    };
    const base = await decode();
    const blocks = base.records.find(Array.isArray) as { mappedRam?: { areaEnd: number } }[];
    assert.ok(blocks.length > 2 && blocks.every((b) => b.mappedRam !== undefined));
    // The stream parts are small; the pages (most of the file) are never read.
    assert.ok(base.bytesRead < file.byteLength / 50, `${base.bytesRead} of ${file.byteLength}`);
    // 1-byte reads cut every structure (including the mapped-ram headers) at every byte;
    // 4 MiB reads take the small blocks' areas through the buffer instead of seeking.
    for (const chunkSize of [1, 4095, 4 << 20]) {
      const other = await decode(chunkSize);
      assert.deepEqual(other.records, base.records, `chunkSize ${chunkSize}`);
      assert.ok(other.bytesRead < file.byteLength / 10, `chunkSize ${chunkSize}`);
    }
    await assert.rejects(decode(undefined, { mappedRam: false }), (e: unknown) => {
      assert.ok(e instanceof UnsupportedFeatureError, String(e));
      assert.match(e.message, /mapped-ram file/);
      return true;
    });
  });

  await t.step("inspect: per-block pages equal an independent count and QEMU's", async () => {
    const report = await inspectMappedRam(mr);
    const independent = await readMappedRamIndependently(mig, payloadOffset);
    assert.deepEqual(
      report.mappedRam.blocks.map((b) => [b.idstr, b.usedLength, b.bitmapOffset, b.pagesOffset]),
      independent.map((b) => [b.idstr, b.usedLength, b.bitmapOffset, b.pagesOffset]),
    );
    assert.deepEqual(
      report.mappedRam.blocks.map((b) => b.pagesPresent),
      independent.map((b) => b.setBits),
    );
    // The VM was stopped, so QEMU wrote every page once: its count is the bitmaps' count.
    assert.equal(report.mappedRam.pagesPresent, ram.normal);
    assert.ok(report.mappedRam.pagesPresent > 50);
    assert.equal(report.tailMatchesVmdesc, true);
  });

  await t.step("verify flags exactly the pages written into unplugged blocks", async () => {
    const v = await verifyMappedRam(mr);
    assert.equal(v.clean, false);
    assert.deepEqual(v.violations.map((x) => x.gpa), EVIL_GPAS);
    assert.deepEqual(v.violations.map((x) => x.blockIndex), EVIL_BLOCKS);
    assert.equal(v.violationCount, 2);
    const vmem = (await readMappedRamIndependently(mig, payloadOffset))[0]!;
    for (const x of v.violations) {
      assert.equal(x.fileOffset, vmem.pagesOffset + x.ramOffset);
      assert.ok(vmem.pages.includes(x.ramOffset / 4096));
    }
    assert.equal(v.devices[0]!.pluggedBlocks, 50);
  });

  await t.step("QEMU 10 restoring the file loads those pages", async () => {
    // QEMU loads every page of the RAM section, then virtio-mem's post-load
    // discards unplugged memory when the device state arrives at the end. Cut
    // the file after the RAM section: the load fails there, and the pages
    // QEMU wrote into the unplugged blocks are still in its memory.
    const cut = await cutAfterRam(mig, dir, payloadOffset);
    await using partial = await restore(cut, { ...options, expectFailure: true });
    for (const gpa of EVIL_GPAS) assert.ok(await pageHolds(partial, dir, gpa, "EVIL-MIG"));
    // The complete file loads, and then the unplugged memory reads as zero.
    await using dst = await restore(mig, options);
    for (const gpa of EVIL_GPAS) assert.ok(!(await pageHolds(dst, dir, gpa, "EVIL-MIG")));
  });

  await t.step("scan lists those pages with the file offsets of their data", async () => {
    const { report } = await scanMappedRam(mr, { path: mig, plugMap: mr.plugMap });
    assert.equal(report.summary.findings, 2);
    assert.deepEqual(report.warnings, [], "the same plug map given: no warning");
    const pages = report.devices.flatMap((d) => d.blocks.flatMap((b) => b.pages));
    assert.deepEqual(pages.map((p) => p.gpa), EVIL_GPAS);
    for (const p of pages) {
      assert.equal(p.source, "mapped-ram-page");
      const data = new Uint8Array(4096);
      await file.readInto(p.fileOffset!, data);
      assert.match(new TextDecoder().decode(data), /EVIL-MIG/);
    }
  });

  await t.step("the filtered file restores without them, and is smaller on disk", async () => {
    const out = `${dir}/filtered.mig`;
    const r = await filterMappedRam(mr, out);
    assert.equal(r.droppedPages, 2);
    assert.deepEqual(r.dropped.map((d) => d.gpa), EVIL_GPAS);
    assert.equal((await Deno.stat(out)).size, (await Deno.stat(mig)).size);
    assert.ok(
      (await duKiB(out)) < (await duKiB(mig)),
      `du: ${await duKiB(out)} KiB filtered, ${await duKiB(mig)} KiB input`,
    );
    using outFile = await openPositional(out);
    const again = await verifyMappedRam(await readMappedRamFile(outFile, { payloadOffset }));
    assert.equal(again.clean, true);
    assert.equal(again.pagesPresent, ram.normal! - 2);

    // Cut after the RAM section like the input above: now nothing reaches the unplugged blocks.
    const cut = await cutAfterRam(out, dir, payloadOffset);
    await using partial = await restore(cut, { ...options, expectFailure: true });
    for (const gpa of EVIL_GPAS) assert.ok(!(await pageHolds(partial, dir, gpa, "EVIL-MIG")));
    await using dst = await restore(out, options);
    await src.dumpGuestMemory(`${dir}/src.elf`);
    await dst.dumpGuestMemory(`${dir}/dst.elf`);
    const cmp = await compareGuestMemory(`${dir}/src.elf`, `${dir}/dst.elf`);
    assert.ok(
      cmp.equal,
      JSON.stringify({ d: cmp.differences.slice(0, 4), a: cmp.onlyInA, b: cmp.onlyInB }),
    );
    assert.ok(cmp.comparedBytes >= 128 * MiB + 100 * MiB);
    await dst.resume();
    await dst.guestCmd("ping", { timeoutMs: 30_000 });
  });

  await t.step("plugmap reads the plug state from the file's sections", async () => {
    const p = await loadPlugState({ stream: mig, complete: true });
    assert.equal(p.layout, options.layout);
    assert.deepEqual(p.plugMap.blockRuns(p.plugMap.devices[0]!), [[0, 14], [64, 36]]);
    assert.equal(p.mappedRam, true);
  });

  await t.step(
    "openInput tells a mapped-ram file, plain or in a libvirt sparse image",
    async () => {
      using input = await openInput(mig);
      assert.equal(input.kind, "mapped-ram");
      assert.equal(input.container, payloadOffset === 0 ? "raw" : "libvirt-save");
      assert.equal(input.payloadOffset, payloadOffset);
    },
  );
}

for (const multifd of [false, true]) {
  Deno.test({
    name: `mapped-ram${
      multifd ? " + multifd" : ""
    } file from real QEMU 10: counts, verify, QEMU loads the flagged pages, filter output restores without them`,
    ignore: !qemuAvailable("10", "tiny"),
    fn: async (t) => {
      await using tmp = await tempDir("vmem-mapped-ram-");
      const mig = `${tmp.path}/vm.mig`;
      const { src, ram } = await makeMappedRamFile(mig, { multifd });
      await using _src = src;
      if (multifd) assert.ok(ram["multifd-bytes"]! > 0, "the pages went through multifd channels");
      await checkFile(t, tmp.path, src, ram, mig, { multifd, layout: "early" });
    },
  });
}

Deno.test({
  name:
    "mapped-ram file in a libvirt sparse image (file:…,offset=N) from a pc-q35-7.2 machine (late layout) on QEMU 10",
  ignore: !qemuAvailable("10", "tiny"),
  fn: async (t) => {
    await using tmp = await tempDir("vmem-mapped-ram-libvirt-");
    const img = `${tmp.path}/vm.save`;
    const header = buildLibvirtSaveHeader({
      xml: "<domain type='kvm'><name>tiny</name></domain>",
      compression: QEMU_SAVE_FORMAT_SPARSE,
    });
    await Deno.writeFile(img, header.headerBytes);
    const offset = header.headerBytes.byteLength;
    const machine = "pc-q35-7.2";
    const { src, ram } = await makeMappedRamFile(img, { multifd: true, machine, offset });
    await using _src = src;
    await checkFile(t, tmp.path, src, ram, img, {
      multifd: true,
      machine,
      offset,
      layout: "late",
    });
  },
});
