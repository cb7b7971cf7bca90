/**
 * Corrupted mapped-ram files, built from a real QEMU 10 file by patching
 * bytes on read (the 400 MB sparse file is never copied): every corruption
 * of a block header, of a MEM_SIZE length, of a bitmap or of the file's
 * length gives a typed error with the offset of the bad field, or a valid
 * result whose verdict is right. Nothing hangs, nothing allocates what a
 * field claims.
 *
 * @module
 */

import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { openPositional, type PositionalReader } from "../../src/io/positional.ts";
import { readMappedRamFile } from "../../src/migration/mapped_ram/file.ts";
import { inspectMappedRam } from "../../src/migration/mapped_ram/inspect.ts";
import { verifyMappedRam } from "../../src/migration/mapped_ram/verify.ts";
import { filterMappedRam } from "../../src/migration/mapped_ram/filter.ts";
import { assertFormatError } from "../_util/assert.ts";
import { seededRandom } from "../_util/chunkings.ts";
import { qemuAvailable, tempDir, VMEM_GPA } from "../_util/qemu.ts";
import {
  BLOCK,
  EVIL_GPAS,
  type IndependentBlock,
  makeMappedRamFile,
  readMappedRamIndependently,
} from "../_util/mapped_ram.ts";

/** `base` with some bytes replaced and, optionally, a shorter length. */
function patched(
  base: PositionalReader,
  patches: Map<number, number>,
  byteLength = base.byteLength,
): PositionalReader {
  return {
    byteLength,
    async readInto(fileOffset, into) {
      const want = Math.max(0, Math.min(into.byteLength, byteLength - fileOffset));
      const n = await base.readInto(fileOffset, into.subarray(0, want));
      for (const [at, value] of patches) {
        if (at >= fileOffset && at < fileOffset + n) into[at - fileOffset] = value;
      }
      return n;
    },
    close() {},
  };
}

/** Patches that write a big-endian u64 at `at`. */
function u64Patch(at: number, value: bigint): Map<number, number> {
  const m = new Map<number, number>();
  for (let i = 0; i < 8; i++) m.set(at + i, Number((value >> BigInt(8 * (7 - i))) & 0xffn));
  return m;
}

/** Run every reader over `file`: a FormatError or a result, never anything else. */
async function runAll(file: PositionalReader): Promise<"ok" | FormatError> {
  try {
    const mr = await readMappedRamFile(file);
    await inspectMappedRam(mr);
    await verifyMappedRam(mr);
    await filterMappedRam(mr, () => Promise.resolve());
    return "ok";
  } catch (e) {
    if (e instanceof FormatError) return e;
    throw e;
  }
}

Deno.test({
  name: "corrupted mapped-ram files from real QEMU 10: typed errors with offsets, exact verdicts",
  ignore: !qemuAvailable("10", "tiny"),
  fn: async (t) => {
    await using tmp = await tempDir("vmem-mapped-ram-corrupt-");
    const path = `${tmp.path}/vm.mig`;
    const { src } = await makeMappedRamFile(path, { multifd: false });
    await src.kill();
    using real = await openPositional(path);
    const blocks: IndependentBlock[] = await readMappedRamIndependently(path);
    const vmem = blocks[0]!;
    const headerOf = (b: IndependentBlock) => b.bitmapOffset - 28;

    await t.step("the file as QEMU wrote it reads clean of errors", async () => {
      assert.equal(await runAll(real), "ok");
    });

    await t.step("header fields QEMU refuses, each at its offset", async () => {
      for (const b of blocks) {
        const h = headerOf(b);
        await assertFormatError(readMappedRamFile(patched(real, new Map([[h + 3, 2]]))), {
          code: "bad-version",
          offset: h,
        });
        await assertFormatError(readMappedRamFile(patched(real, u64Patch(h + 4, 8192n))), {
          code: "bad-mapped-ram",
          offset: h + 4,
        });
        await assertFormatError(readMappedRamFile(patched(real, u64Patch(h + 4, 0n))), {
          code: "bad-mapped-ram",
          offset: h + 4,
        });
        await assertFormatError(
          readMappedRamFile(patched(real, u64Patch(h + 20, BigInt(b.pagesOffset + 512)))),
          { code: "bad-mapped-ram", offset: h + 20 },
        );
        // A bitmap outside the space between header and pages.
        for (const bitmapOffset of [0n, BigInt(h), BigInt(b.pagesOffset), 1n << 52n]) {
          await assertFormatError(
            readMappedRamFile(patched(real, u64Patch(h + 12, bitmapOffset))),
            {
              code: "bad-mapped-ram",
              offset: h + 12,
            },
          );
        }
        // Offsets beyond 2^53 are refused before any use.
        await assertFormatError(readMappedRamFile(patched(real, u64Patch(h + 20, 1n << 60n))), {
          code: "too-large",
          offset: h + 20,
        });
      }
    });

    await t.step(
      "pages beyond the end of the file: a truncation error, nothing allocated",
      async () => {
        const h = headerOf(vmem);
        // Page area moved (aligned) far beyond the file: the stream cannot go on there.
        const far = BigInt(real.byteLength + (1 << 30)) & ~0xfffffn;
        const e = await assertFormatError(
          readMappedRamFile(patched(real, u64Patch(h + 20, far))),
          { name: "UnexpectedEofError", offset: real.byteLength },
        );
        assert.match(e.message, /mapped-ram area/);
        // A used_length claiming 2^52 bytes: the bitmap it implies is never allocated.
        const lenAt = h - 8;
        await assertFormatError(
          readMappedRamFile(patched(real, u64Patch(lenAt, 1n << 52n))),
          { maxOffset: real.byteLength },
        );
        // The same with the MEM_SIZE total made to agree (1 TiB block, a 32 MiB bitmap):
        // the block's area cannot lie inside the file, so nothing of it is read.
        const totalAt = lenAt - vmem.idstr.length - 1 - 8;
        const total = blocks.reduce((a, b) => a + BigInt(b.usedLength), 0n);
        const huge = 1n << 40n;
        const patches = new Map([
          ...u64Patch(totalAt, (total - BigInt(vmem.usedLength) + huge) | 4n),
          ...u64Patch(lenAt, huge),
        ]);
        await assertFormatError(readMappedRamFile(patched(real, patches)), {
          code: "bad-mapped-ram", // the 32 MiB bitmap does not fit before the pages
          offset: h + 12,
        });
        // Pages moved behind such a bitmap: the area runs past the end of the file.
        for (const [at, v] of u64Patch(h + 20, 64n << 20n)) patches.set(at, v);
        await assertFormatError(readMappedRamFile(patched(real, patches)), {
          name: "UnexpectedEofError",
          offset: real.byteLength,
        });
      },
    );

    await t.step("every flipped header byte: a typed error or a result", async () => {
      for (const b of blocks) {
        const h = headerOf(b);
        for (let i = 0; i < 28; i++) {
          for (const value of [0x00, 0xff, 0x10]) {
            const r = await runAll(patched(real, new Map([[h + i, value]])));
            if (r !== "ok") assert.ok(r.offset >= 0 && r.offset <= real.byteLength, r.message);
          }
        }
      }
    });

    await t.step("truncated anywhere: UnexpectedEofError at or before the cut", async () => {
      const cuts = new Set<number>();
      const rnd = seededRandom(7);
      for (const b of blocks) {
        const h = headerOf(b);
        for (let d = -40; d <= 40; d++) cuts.add(h + d);
        cuts.add(b.bitmapOffset + 3);
        cuts.add(b.pagesOffset + Math.floor(rnd() * b.usedLength));
        cuts.add(b.pagesOffset + b.usedLength + 3);
      }
      for (let i = 0; i < 40; i++) cuts.add(Math.floor(rnd() * real.byteLength));
      for (let d = 1; d < 4096; d += 97) cuts.add(real.byteLength - d);
      for (const cut of [...cuts].filter((c) => c > 0 && c < real.byteLength)) {
        await assertFormatError(
          runAll(patched(real, new Map(), cut)).then((r) => {
            if (r !== "ok") throw r;
          }),
          { name: "UnexpectedEofError", maxOffset: cut },
        );
      }
    });

    await t.step("bits set in unplugged blocks: verify reports exactly them", async () => {
      const rnd = seededRandom(11);
      // Unplugged blocks of the tiny guest's shape: 14-63 and 100-127.
      const unplugged = (blockIndex: number) =>
        (blockIndex >= 14 && blockIndex < 64) || blockIndex >= 100;
      for (let round = 0; round < 20; round++) {
        const patches = new Map<number, number>();
        const want = new Set<number>(EVIL_GPAS);
        const bitmapByte = async (at: number) => {
          const one = new Uint8Array(1);
          await real.readInto(at, one);
          return patches.get(at) ?? one[0]!;
        };
        for (let k = 0; k < 1 + Math.floor(rnd() * 6); k++) {
          const page = Math.floor(rnd() * (vmem.usedLength / 4096));
          const at = vmem.bitmapOffset + (page >> 3);
          patches.set(at, (await bitmapByte(at)) | (1 << (page & 7)));
          const gpa = VMEM_GPA + page * 4096;
          if (unplugged(Math.floor(page * 4096 / BLOCK))) want.add(gpa);
        }
        const r = await verifyMappedRam(await readMappedRamFile(patched(real, patches)));
        assert.deepEqual(
          r.violations.map((v) => v.gpa).sort((a, b) => a - b),
          [...want].sort((a, b) => a - b),
        );
        assert.equal(r.violationCount, want.size);
      }
    });
  },
});
