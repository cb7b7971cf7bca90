/**
 * Scan throughput and memory, as ratios against a plain copy of the same file
 * measured in the same run.
 *
 *   deno run -A bench/scan.ts [--gib 4] [--small-gib 1] [--dir DIR] [--keep]
 *
 * (Scanning a migration stream, against `verify` of the same stream and a
 * pipe copy, is in bench/streams.ts with the other streaming commands.)
 *
 * **Dumps**: synthetic inputs, a raw image of one virtio-mem region (2 MiB
 * blocks) whose every 8th block holds pseudo-random data and the rest zeros,
 * with 64 non-zero pages planted in blocks that are unplugged in every plug
 * map; and an ELF core with the same bytes in one PT_LOAD. Plug maps:
 *
 * - `sparse`: only the data blocks plugged (7/8 of the region is read),
 * - `half`: the data blocks and half of the rest plugged.
 *
 * Two region sizes (small and large) show whether peak RSS depends on the
 * input size. Each scan runs in its own process (`--child`), which reports its
 * own time and peak RSS (VmHWM); times are the best of three runs, for `cat`
 * too (page cache warm). "vs cat (same bytes)" compares the scan with `cat`
 * reading as many bytes as the scan read; "vs cat (file)" with `cat` reading
 * the whole file (the scan skips plugged memory).
 */

import { parseArgs } from "node:util";
import { readElfCore } from "../src/elf/reader.ts";
import { openPositional } from "../src/io/positional.ts";
import { scanElfCore } from "../src/scan/scan_elf.ts";
import { scanRawImage } from "../src/scan/scan_raw.ts";
import { PlugMap } from "../src/vmem/plug_map.ts";
import { writeElf } from "../tests/_util/elf_builder.ts";
import { type ChildResult, printTable, ratio, runChild, timeShell } from "./_measure.ts";

const BLOCK = 2 << 20;
const GPA = 0x1_0000_0000;
const PLANTED = 64;
/** Each time is the best of this many runs (the machine is shared). */
const RUNS = 3;

/** Plug map JSON (version 1) for a region of `blocks` blocks. */
function plugMapJson(blocks: number, plugged: (b: number) => boolean) {
  const runs: [number, number][] = [];
  for (let b = 0; b < blocks; b++) {
    if (!plugged(b)) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === b) last[1]++;
    else runs.push([b, 1]);
  }
  const size = runs.reduce((n, r) => n + r[1], 0) * BLOCK;
  return {
    version: 1,
    devices: [{
      path: "bench",
      ramblock: "bench/mem",
      memaddr: GPA,
      "region-size": blocks * BLOCK,
      "block-size": BLOCK,
      node: 0,
      "usable-region-size": null,
      size,
      "requested-size": null,
      plugged: runs,
    }],
  };
}

const isData = (b: number) => b % 8 === 0;
const isPlantBlock = (b: number) => b % 8 === 5; // unplugged in both maps
const MAPS: Record<string, (b: number) => boolean> = {
  sparse: isData,
  half: (b) => isData(b) || (b % 8 !== 5 && b % 2 === 1),
};

/** Write the raw image: data blocks random, planted pages, zeros elsewhere (allocated, not sparse). */
async function writeImage(path: string, blocks: number): Promise<void> {
  const data = new Uint8Array(BLOCK);
  for (let at = 0; at < BLOCK; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
  const zero = new Uint8Array(BLOCK);
  const planted = new Uint8Array(BLOCK);
  const plantBlocks = [...Array(blocks).keys()].filter(isPlantBlock);
  const perBlock = Math.ceil(PLANTED / plantBlocks.length);
  let left = PLANTED;
  using out = await Deno.open(path, { write: true, create: true, truncate: true });
  for (let b = 0; b < blocks; b++) {
    let chunk = isData(b) ? data : zero;
    if (isPlantBlock(b) && left > 0) {
      planted.fill(0);
      for (let i = 0; i < perBlock && left > 0; i++, left--) {
        planted.fill(0x45, i * 8 * 4096 + 100, i * 8 * 4096 + 200);
      }
      chunk = planted;
    }
    let done = 0;
    while (done < chunk.byteLength) done += await out.write(chunk.subarray(done));
  }
}

async function child(kind: string, file: string, mapFile: string): Promise<void> {
  const plugMap = PlugMap.fromJSON(JSON.parse(await Deno.readTextFile(mapFile)));
  const t0 = performance.now();
  const report = kind === "raw"
    ? await (async () => {
      using image = await openPositional(file);
      return await scanRawImage(image, { plugMap, baseGpa: GPA });
    })()
    : await (async () => {
      using core = await readElfCore(file);
      return await scanElfCore(core, { plugMap });
    })();
  const seconds = (performance.now() - t0) / 1000;
  const status = Deno.readTextFileSync("/proc/self/status");
  const peakRssKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  console.error(JSON.stringify({
    bytes: report.coverage!.examinedBytes,
    seconds,
    peakRssKiB,
    findings: report.summary.findings,
  }));
}

if (Deno.args[0] === "--child") {
  await child(Deno.args[1]!, Deno.args[2]!, Deno.args[3]!);
} else {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      gib: { type: "string", default: "4" },
      "small-gib": { type: "string", default: "1" },
      dir: { type: "string" },
      keep: { type: "boolean", default: false },
    },
  });
  const dir = await Deno.makeTempDir({
    prefix: "vmem-bench-scan-",
    ...(values.dir ? { dir: values.dir } : {}),
  });
  const self = new URL(import.meta.url).pathname;
  const rows: (string | number)[][] = [];
  try {
    for (const gib of [Number(values["small-gib"]), Number(values.gib)]) {
      const blocks = Math.round((gib * 2 ** 30) / BLOCK / 8) * 8;
      const raw = `${dir}/image-${gib}.raw`;
      const elf = `${dir}/dump-${gib}.elf`;
      await writeImage(raw, blocks);
      await writeElf(elf, {
        layout: "qemu-classic",
        loads: [{
          paddr: BigInt(GPA),
          data: { path: raw, fileOffset: 0, byteLength: blocks * BLOCK },
        }],
      });
      for (const [name, plugged] of Object.entries(MAPS)) {
        await Deno.writeTextFile(
          `${dir}/${name}-${gib}.json`,
          JSON.stringify(plugMapJson(blocks, plugged)),
        );
      }
      for (const [kind, file] of [["raw", raw], ["elf", elf]] as const) {
        const size = (await Deno.stat(file)).size;
        await timeShell(`cat '${file}' > /dev/null`); // warm the page cache
        let cat = Infinity;
        for (let i = 0; i < RUNS; i++) {
          cat = Math.min(cat, await timeShell(`cat '${file}' > /dev/null`));
        }
        for (const name of Object.keys(MAPS)) {
          let r: ChildResult & { findings: number } | undefined;
          let peakRssKiB = 0;
          for (let i = 0; i < RUNS; i++) {
            const got = await runChild(
              [self, "--child", kind, file, `${dir}/${name}-${gib}.json`],
              "/dev/null",
            ) as
              & ChildResult
              & { findings: number };
            peakRssKiB = Math.max(peakRssKiB, got.peakRssKiB);
            if (r === undefined || got.seconds < r.seconds) r = got;
          }
          if (r === undefined) throw new Error("no run");
          if (r.findings !== PLANTED) {
            throw new Error(`${kind} ${name}: ${r.findings} findings, expected ${PLANTED}`);
          }
          rows.push([
            kind,
            `${(size / 2 ** 30).toFixed(2)} GiB`,
            name,
            `${(r.bytes / 2 ** 30).toFixed(2)} GiB`,
            (size / cat / 1e9).toFixed(2),
            (r.bytes / r.seconds / 1e9).toFixed(2),
            ratio(cat * (r.bytes / size), r.seconds),
            (size / r.seconds / 1e9).toFixed(2),
            ratio(cat, r.seconds),
            (peakRssKiB / 1024).toFixed(0),
          ]);
        }
      }
      if (!values.keep) {
        await Deno.remove(raw);
        await Deno.remove(elf);
      }
    }
    printTable(
      [
        "input",
        "size",
        "plug map",
        "read",
        "cat GB/s",
        "scan GB/s (read)",
        "vs cat (same bytes)",
        "scan GB/s (file)",
        "vs cat (file)",
        "peak RSS MiB",
      ],
      rows,
    );
  } finally {
    if (!values.keep) await Deno.remove(dir, { recursive: true });
    else console.log(`kept ${dir}`);
  }
}
