/**
 * kdumpToElf names the machine: from utsname.machine, else (QEMU 10 writes
 * "Unknown") from the size of the NT_PRSTATUS notes; with neither it refuses
 * rather than write an ELF of machine 0 that crash and gdb reject.
 */
import assert from "node:assert/strict";
import { kdumpToElf } from "../../src/dumps/kdump_to_elf.ts";
import { UnsupportedFeatureError } from "../../src/errors.ts";
import { EM_X86_64 } from "../../src/elf/constants.ts";
import { encodeNote } from "../../src/elf/note.ts";
import { readElfCore } from "../../src/elf/reader.ts";
import { bytesPositional } from "../../src/io/positional.ts";
import { KdumpWriter, readKdump } from "../../src/kdump/mod.ts";
import { concatBytes } from "../_util/chunkings.ts";

const B = 4096;

async function kdumpWith(machine: string, prstatusBytes: number | undefined): Promise<Uint8Array> {
  const file = new Uint8Array(1 << 20);
  let size = 0;
  const notes = prstatusBytes === undefined
    ? new Uint8Array(0)
    : encodeNote({ name: "CORE", type: 1, desc: new Uint8Array(prstatusBytes) }, true);
  const w = new KdumpWriter({
    writeAt(at, b) {
      file.set(b, at);
      size = Math.max(size, at + b.byteLength);
      return Promise.resolve();
    },
  }, {
    blockSize: B,
    maxMapnr: 8,
    present: new Uint8Array([0b11]),
    maxPageCount: 2,
    status: 0,
    notes,
    utsname: { sysname: "", nodename: "", release: "", version: "", machine, domainname: "" },
  });
  w.addPage(0, new Uint8Array(B).fill(1), 0);
  w.addPage(1, new Uint8Array(B).fill(2), 0);
  await w.finish();
  return file.slice(0, size);
}

async function toElf(bytes: Uint8Array): Promise<Uint8Array> {
  using dump = await readKdump(bytesPositional(bytes));
  const parts: Uint8Array[] = [];
  await kdumpToElf(dump, (c) => {
    parts.push(c.slice());
    return Promise.resolve();
  });
  return concatBytes(parts);
}

Deno.test("kdumpToElf takes the machine from utsname, else from the NT_PRSTATUS size, else refuses", async () => {
  for (const [machine, prstatus] of [["x86_64", undefined], ["Unknown", 336], ["", 336]] as const) {
    const elf = await toElf(await kdumpWith(machine, prstatus));
    using core = await readElfCore(bytesPositional(elf));
    assert.equal(core.ehdr.machine, EM_X86_64, `${machine} / ${prstatus}`);
    assert.equal(core.loads.length, 1);
  }
  for (const prstatus of [undefined, 100]) {
    await assert.rejects(
      toElf(await kdumpWith("Unknown", prstatus)),
      (e) => e instanceof UnsupportedFeatureError && /name a machine we know/.test(e.message),
    );
  }
});
