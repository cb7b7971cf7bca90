/**
 * A mapped-ram file with the x-ignore-shared capability is two files: QEMU
 * >= 10.2 (and our reader) read each MEM_SIZE entry as idstr, used_length,
 * GPA, mapped-ram header; QEMU <= 10.1 reads idstr, used_length, header,
 * taking the GPA for the header's first 8 bytes. Built from the committed
 * QEMU 10.0 fixture: a decoy list that is clean for our reader, and a list
 * only QEMU 10.0 sees that loads a page into an unplugged virtio-mem block.
 * The reader must refuse such a file; real QEMU 10.0 shows the attack.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bytesPositional } from "../../src/io/positional.ts";
import { readMappedRamFile } from "../../src/migration/mapped_ram/file.ts";
import { writeMappedRamHeader } from "../../src/migration/mapped_ram/header.ts";
import { assertFormatError } from "../_util/assert.ts";
import { runCli } from "../_util/cli.ts";
import { fileContains } from "../_util/files.ts";
import { qemuAvailable, startDestination, tempDir } from "../_util/qemu.ts";
import { TINY_REGION, tinyFixture } from "../_util/tiny_fixtures.ts";
import { writeSparse } from "../_util/fuzz/targets/mapped_ram.ts";

const MiB = 1 << 20;
const PAGE = 4096;
/** Page 1 of virtio-mem block 3 of the tiny guest: unplugged in the fixture's plug state. */
const EVIL_PAGE = 3 * 512 + 1;
const EVIL_GPA = TINY_REGION.gpa + EVIL_PAGE * PAGE;
const MARKER = "EVIL-HIDDEN-FROM-VERIFY";

function u64(value: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value));
  return b;
}

function entry(idstr: string, usedLength: number): Uint8Array {
  const name = new TextEncoder().encode(idstr);
  return new Uint8Array([name.length, ...name, ...u64(usedLength)]);
}

/** The crafted file, the file offset of its first GPA field and where QEMU's RAM section ends. */
interface DualParse {
  bytes: Uint8Array;
  firstGpaOffset: number;
  qemuRamEnd: number;
}

/**
 * Re-lay the fixture out with x-ignore-shared. Our view: every entry with a
 * GPA of 0, the virtio-mem bitmap all clear (a clean decoy), the other blocks
 * as in the fixture. QEMU 10.0's view of the first (virtio-mem) entry: the
 * header starts at the GPA, so version 0, page_size 1 (the decoy's version),
 * bitmap at 4096 (the decoy's page size), pages at the decoy's bitmap offset:
 * one bit set there loads a marker page into unplugged block 3. It then goes
 * on at pages + used_length, inside the decoy's (clear) page area, where a
 * hidden entry accounts for the rest of the RAM and jumps to the real tail.
 */
async function dualParseFile(): Promise<DualParse> {
  const fixture = await tinyFixture("q10-tiny.mapped-ram");
  const mr = await readMappedRamFile(bytesPositional(fixture));
  const blocks = mr.loads[0]!.blocks;
  const vmem = blocks[0]!;
  assert.match(vmem.idstr, /vmem0mem$/);
  const out = new Uint8Array(fixture.length);
  const put = (at: number, data: Uint8Array) => out.set(data, at);

  // Header and configuration, with "x-ignore-shared" after "mapped-ram".
  const firstEntry = vmem.mappedRam.headerOffset - 1 - vmem.idstr.length - 8;
  const head = fixture.subarray(0, firstEntry);
  const cap = head.findIndex((_, i) =>
    new TextDecoder().decode(head.subarray(i, i + 11)) === "\x0amapped-ram"
  );
  assert.ok(cap > 4 && head[cap - 1] === 1, "one capability in the fixture");
  put(0, head.subarray(0, cap));
  out[cap - 1] = 2;
  const extra = new TextEncoder().encode("\x0fx-ignore-shared");
  put(cap, head.subarray(cap, cap + 11));
  put(cap + 11, extra);
  put(cap + 11 + extra.length, head.subarray(cap + 11));
  let pos = head.length + extra.length;

  // The virtio-mem entry, read two ways.
  put(pos, entry(vmem.idstr, vmem.usedLength));
  pos += 1 + vmem.idstr.length + 8;
  const firstGpaOffset = pos;
  const decoyBitmap = 2 * PAGE;
  const decoyPages = MiB;
  put(pos, u64(0));
  put(
    pos + 8,
    writeMappedRamHeader({
      version: 1,
      pageSize: PAGE,
      bitmapOffset: decoyBitmap,
      pagesOffset: decoyPages,
    }),
  );
  // QEMU 10.0: bitmap of used_length bits at 4096 (must be clear past the block's pages), pages at decoyBitmap.
  out[PAGE + (EVIL_PAGE >> 3)] = 1 << (EVIL_PAGE & 7);
  put(
    decoyBitmap + EVIL_PAGE * PAGE,
    new TextEncoder().encode(MARKER.repeat(100)).subarray(0, PAGE),
  );
  const hidden = decoyBitmap + vmem.usedLength;
  const rest = blocks.slice(1).reduce((n, b) => n + b.usedLength, 0);
  const qemuTail = hidden + PAGE;
  put(hidden, entry("pc.ram", rest));
  put(
    hidden + 1 + 6 + 8,
    writeMappedRamHeader({
      version: 1,
      pageSize: PAGE,
      bitmapOffset: 3 * PAGE,
      pagesOffset: qemuTail - rest,
    }),
  );
  const lastEnd = blocks[blocks.length - 1]!.mappedRam.areaEnd;
  const tail = fixture.subarray(lastEnd);
  put(qemuTail, tail);
  assert.ok(
    qemuTail + tail.length < decoyPages + vmem.usedLength &&
      EVIL_PAGE * PAGE + decoyBitmap > decoyPages,
  );

  // Our view goes on after the decoy's pages: the other blocks, each with a GPA and its own layout.
  pos = decoyPages + vmem.usedLength;
  for (const b of blocks.slice(1)) {
    put(pos, entry(b.idstr, b.usedLength));
    pos += 1 + b.idstr.length + 8;
    const bitmapOffset = pos + 8 + 28;
    const { bitmapByteLength, pagesOffset: from } = b.mappedRam;
    const pagesOffset = Math.ceil((bitmapOffset + bitmapByteLength) / MiB) * MiB;
    put(pos, u64(0));
    put(pos + 8, writeMappedRamHeader({ version: 1, pageSize: PAGE, bitmapOffset, pagesOffset }));
    put(
      bitmapOffset,
      fixture.subarray(b.mappedRam.bitmapOffset, b.mappedRam.bitmapOffset + bitmapByteLength),
    );
    put(pagesOffset, fixture.subarray(from, from + b.usedLength));
    pos = pagesOffset + b.usedLength;
  }
  assert.equal(pos + tail.length, out.length, "the decoy ends where the fixture ends");
  put(pos, tail);
  return { bytes: out, firstGpaOffset, qemuRamEnd: qemuTail + 8 + 5 };
}

Deno.test("mapped-ram with x-ignore-shared: refused, QEMU 10.0 and 10.2 read different block lists", async (t) => {
  const crafted = await dualParseFile();
  await t.step("the reader refuses it at the first entry's GPA (no clean verdict)", async () => {
    await assertFormatError(readMappedRamFile(bytesPositional(crafted.bytes)), {
      name: "UnsupportedFeatureError",
      offset: crafted.firstGpaOffset,
      message: /x-ignore-shared/,
    });
    await using tmp = await tempDir("vmem-mapped-ram-ignore-shared-");
    const path = `${tmp.path}/dual.mr`;
    await writeSparse(path, crafted.bytes);
    const r = await runCli(["verify", path]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /x-ignore-shared/);
  });

  await t.step({
    name: "QEMU 10.0 restoring it loads the hidden page into unplugged block 3",
    ignore: !qemuAvailable("10", "tiny"),
    fn: async () => {
      // Cut after QEMU's RAM section: the load then fails, and the page it loaded is in memory
      // (the complete file would go on to virtio-mem's post-load, which discards it).
      await using tmp = await tempDir("vmem-mapped-ram-ignore-shared-qemu-");
      const cut = `${tmp.path}/dual.cut`;
      await writeSparse(cut, crafted.bytes.subarray(0, crafted.qemuRamEnd));
      await using dst = await startDestination({ qemu: "10", guest: "tiny", incoming: "defer" });
      await dst.qmp("migrate-set-capabilities", {
        capabilities: [
          { capability: "mapped-ram", state: true },
          { capability: "x-ignore-shared", state: true },
        ],
      });
      await dst.migrateIncoming(`file:${cut}`, { exitOnError: false });
      const info = await dst.waitMigration(["completed", "failed"], 120_000);
      assert.equal(info.status, "failed", "the cut file does not load to the end");
      const page = `${tmp.path}/page.raw`;
      await dst.pmemsave(EVIL_GPA, PAGE, page);
      assert.ok(
        await fileContains(page, MARKER),
        "QEMU 10.0 loaded the page hidden from the decoy",
      );
    },
  });
});
