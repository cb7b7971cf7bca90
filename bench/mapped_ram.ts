/**
 * Mapped-ram commands against `cat FILE > /dev/null` of the same file, whole
 * processes (start-up included), page cache warm, best of three.
 *
 *   deno run -A bench/mapped_ram.ts [--boot-mib 512] [--region-mib 2048] [--keep DIR]
 *
 * The file is real QEMU 10 output made dense: the tiny guest (boot RAM and a
 * virtio-mem region of the given sizes, 2 MiB blocks) plugs 3/4 of its
 * blocks, unplugs a stretch, and QEMU writes a mapped-ram file (with two
 * pages written into unplugged blocks during pause-before-switchover). Then
 * every page of pc.ram and of the plugged blocks gets pseudo-random data and
 * its bitmap bit set, as if the guest had filled its memory: the layout,
 * headers, stream and device state stay QEMU's.
 *
 * `cat` reads the whole logical file, holes included (they read as zeros);
 * our commands read the stream parts, the bitmaps, and for scan/filter the
 * pages that matter. `filter FILE -` writes the whole logical output (holes
 * as zeros) to /dev/null; `filter FILE OUT` writes a sparse file and is also
 * compared with `cp --sparse=always` (both are bound by the disk's write-back).
 */

import { parseArgs } from "node:util";
import { evilPage } from "../tests/_util/guest.ts";
import { startGuest, tempDir, VMEM_GPA } from "../tests/_util/qemu.ts";
import { mappedRamCaps, readMappedRamIndependently } from "../tests/_util/mapped_ram.ts";
import { printTable, ratio, timeShell } from "./_measure.ts";

const MiB = 1 << 20;
const BLOCK = 2 * MiB;
const RUNS = 3;
const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "boot-mib": { type: "string", default: "512" },
    "region-mib": { type: "string", default: "2048" },
    keep: { type: "string" },
  },
});
const bootBytes = Number(values["boot-mib"]) * MiB;
const regionBytes = Number(values["region-mib"]) * MiB;
const blocks = regionBytes / BLOCK;

/** Best wall time of RUNS runs of a shell command. */
async function best(command: string): Promise<number> {
  let t = Infinity;
  for (let i = 0; i < RUNS; i++) t = Math.min(t, await timeShell(command));
  return t;
}

async function make(path: string): Promise<number[]> {
  await using vm = await startGuest({
    qemu: "10",
    guest: "tiny",
    layout: { bootRamBytes: bootBytes, regionBytes, blockBytes: BLOCK },
  });
  const plugged = Math.floor(blocks * 3 / 4);
  await vm.plugBlocks(0, plugged);
  const hole = [Math.floor(plugged / 4), Math.floor(plugged / 8)] as const;
  await vm.qmp("qom-set", {
    path: "/machine/peripheral/vmem0",
    property: "requested-size",
    value: (plugged - hole[1]) * BLOCK,
  });
  await vm.unplugBlocks(hole[0], hole[1]);
  await vm.pause();
  await vm.qmp("migrate-set-capabilities", { capabilities: mappedRamCaps(true) });
  await vm.migrate(`file:${path}`, {
    onPreSwitchover: async (g) => {
      for (const b of [hole[0], hole[0] + 1]) {
        const gpa = VMEM_GPA + b * BLOCK + 0x1000;
        await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
      }
    },
  });
  return [...Array(blocks).keys()].filter((b) =>
    b < plugged && (b < hole[0] || b >= hole[0] + hole[1])
  );
}

/** Fill every page of pc.ram and of the plugged device blocks, and set its bit. */
async function densify(path: string, pluggedBlocks: number[]): Promise<number> {
  const blocksInFile = await readMappedRamIndependently(path);
  using f = await Deno.open(path, { read: true, write: true });
  const chunk = new Uint8Array(BLOCK);
  for (let at = 0; at < BLOCK; at += 65536) crypto.getRandomValues(chunk.subarray(at, at + 65536));
  let data = 0;
  const fill = async (b: (typeof blocksInFile)[number], ramOffset: number, byteLength: number) => {
    await f.seek(b.pagesOffset + ramOffset, Deno.SeekMode.Start);
    for (let done = 0; done < byteLength; done += BLOCK) {
      chunk[0] = (ramOffset + done) >> 21; // no two blocks alike
      await f.write(chunk.subarray(0, Math.min(BLOCK, byteLength - done)));
    }
    data += byteLength;
    // Set the bits: whole bytes, the ranges are 32 KiB-aligned.
    await f.seek(b.bitmapOffset + ramOffset / 4096 / 8, Deno.SeekMode.Start);
    await f.write(new Uint8Array(byteLength / 4096 / 8).fill(0xff));
  };
  const vmem = blocksInFile.find((b) => b.idstr.endsWith("/vmem0mem"))!;
  const ram = blocksInFile.find((b) => b.idstr === "pc.ram")!;
  await fill(ram, 0, ram.usedLength);
  for (const b of pluggedBlocks) await fill(vmem, b * BLOCK, BLOCK);
  return data;
}

await using tmp = await tempDir("vmem-bench-mapped-ram-");
const dir = values.keep ?? tmp.path;
const file = `${dir}/vm.mapped`;
const plugged = await make(file);
const data = await densify(file, plugged);
const size = (await Deno.stat(file)).size;
const vmd = (args: string) => `'${Deno.execPath()}' run -A '${MAIN}' ${args}`;

await timeShell(`cat '${file}' > /dev/null`);
const cat = await best(`cat '${file}' > /dev/null`);
const cp = await best(`rm -f '${dir}/cp.out'; sync; cp --sparse=always '${file}' '${dir}/cp.out'`);
const rows: (string | number)[][] = [];
const row = (name: string, t: number, base = cat) =>
  rows.push([name, t.toFixed(2), ratio(base, t), (data / t / 1e9).toFixed(2)]);
row("cat FILE > /dev/null", cat);
row("cp --sparse=always", cp);
row("inspect", await best(`${vmd(`inspect '${file}'`)} > /dev/null`));
row("verify", await best(`${vmd(`verify '${file}'`)} > /dev/null; test $? = 3`));
row("scan", await best(`${vmd(`scan '${file}'`)} > /dev/null; test $? = 3`));
row(
  "filter FILE - > /dev/null",
  await best(`${vmd(`filter '${file}' -`)} > /dev/null 2> /dev/null`),
);
row(
  "filter FILE OUT",
  await best(`rm -f '${dir}/f.out'; sync; ${vmd(`filter '${file}' '${dir}/f.out'`)} 2> /dev/null`),
);
row(
  "filter (vs cp)",
  await best(`rm -f '${dir}/f.out'; sync; ${vmd(`filter '${file}' '${dir}/f.out'`)} 2> /dev/null`),
  cp,
);
console.log(
  `file ${(size / 1e9).toFixed(2)} GB logical, ${(data / 1e9).toFixed(2)} GB of page data ` +
    `(${blocks} device blocks, ${plugged.length} plugged)`,
);
printTable(["command", "seconds", "vs baseline", "page data GB/s"], rows);
