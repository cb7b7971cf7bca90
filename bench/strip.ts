/**
 * Benchmark of `vmem-dump strip` on multi-GiB ELF dumps.
 *
 *   deno run -A bench/strip.ts [--gib 4] [--small-gib 1] [--runs 2] [--dir /tmp]
 *
 * Builds a synthetic dump of a guest with a large virtio-mem region the way
 * QEMU < 6.2 writes it (the whole region in one run of PT_LOADs, classic
 * layout): the notes and pc.ram of a real out-small dump, then the region's
 * pmemsave image repeated to the requested size (or a byte pattern when the
 * real fixtures are not available). The plug map repeats the s2 pattern in
 * every 256 MiB (blocks 0-13 and 64-99 plugged), so 61% of the region is
 * unplugged.
 *
 * Measured, in the same run, on the same input with a warm page cache:
 * `cp` of the file, `vmem-dump strip` removing the unplugged blocks, and
 * `vmem-dump strip` with nothing to remove (a pure layout rewrite, every
 * byte copied). Throughput is input bytes per second of wall time; the
 * ratio compares with `cp`. Peak RSS (`/usr/bin/time` maximum resident set
 * size of the child) is measured at two input sizes to show it does not grow
 * with the input. Everything is deleted afterwards.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type BuildLoad, writeElf } from "../tests/_util/elf_builder.ts";
import { realdata, realdataAvailable } from "../tests/_util/realdata.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    gib: { type: "string", default: "4" },
    "small-gib": { type: "string", default: "1" },
    runs: { type: "string", default: "2" },
    dir: { type: "string" },
  },
  strict: true,
});

const GIB = 1 << 30;
const REGION_GPA = 0x1_0000_0000;
const CHUNK = 0x1000_0000; // 256 MiB: one pmemsave image per repeat
const BLOCK = 0x20_0000;
const CLI = new URL("../cli/main.ts", import.meta.url).pathname;
const dir = Deno.makeTempDirSync({
  prefix: "vmem-bench-strip-",
  ...(values.dir ? { dir: values.dir } : {}),
});

function log(text: string) {
  console.error(text);
}

async function sh(
  cmd: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Run a command under /usr/bin/time; return wall seconds and max RSS in KiB. */
async function timed(
  cmd: string,
  args: string[],
): Promise<{ seconds: number; rssKiB: number | undefined }> {
  const haveTime = (() => {
    try {
      Deno.statSync("/usr/bin/time");
      return true;
    } catch {
      return false;
    }
  })();
  const t0 = performance.now();
  const r = haveTime
    ? await sh("/usr/bin/time", ["-f", "VMEMBENCH %e %M", cmd, ...args])
    : await sh(cmd, args);
  const seconds = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr}`);
  const m = /VMEMBENCH ([\d.]+) (\d+)/.exec(r.stderr);
  return { seconds, rssKiB: m ? Number(m[2]) : undefined };
}

/** The s2 plug pattern repeated over the region. */
function plugMap(regionSize: number): string {
  const plugged: Array<[number, number]> = [];
  for (let base = 0; base < regionSize / BLOCK; base += CHUNK / BLOCK) {
    plugged.push([base, 14], [base + 64, 36]);
  }
  return JSON.stringify({
    version: 1,
    devices: [{
      path: "0000:00:01.0",
      ramblock: "0000:00:01.0/vmem0mem",
      memaddr: REGION_GPA,
      "region-size": regionSize,
      "block-size": BLOCK,
      node: 0,
      size: plugged.reduce((n, [, c]) => n + c * BLOCK, 0),
      plugged,
    }],
  });
}

/** Write the synthetic dump with a region of `regionSize` bytes. */
async function makeDump(path: string, regionSize: number): Promise<number> {
  let notes = new Uint8Array(0);
  const loads: BuildLoad[] = [];
  let regionSource: string;
  if (realdataAvailable("out-small")) {
    const elf = await realdata("out-small", "s2-holes-100M.elf");
    regionSource = await realdata("out-small", "s3-malicious.vmem0.raw");
    const { readPhdrsIndependently } = await import("../tests/_util/elf_builder.ts");
    const phdrs = await readPhdrsIndependently(elf);
    const note = phdrs.find((p) => p.type === 4)!;
    using f = await Deno.open(elf);
    await f.seek(note.offset, Deno.SeekMode.Start);
    notes = new Uint8Array(note.filesz);
    await f.read(notes);
    for (const p of phdrs.filter((p) => p.type === 1 && p.paddr < BigInt(REGION_GPA))) {
      loads.push({
        paddr: p.paddr,
        data: { path: elf, fileOffset: p.offset, byteLength: p.filesz },
      });
    }
  } else {
    log("real fixtures not available: using a synthetic pattern");
    regionSource = `${dir}/pattern.raw`;
    const chunk = new Uint8Array(CHUNK);
    for (let i = 0; i < chunk.length; i += 4096) chunk[i] = (i >>> 12) & 0xff;
    Deno.writeFileSync(regionSource, chunk);
    loads.push({ paddr: 0n, data: chunk.subarray(0, 0x800_0000) });
  }
  for (let at = 0; at < regionSize; at += CHUNK) {
    loads.push({
      paddr: BigInt(REGION_GPA + at),
      data: { path: regionSource, fileOffset: 0, byteLength: CHUNK },
    });
  }
  return await writeElf(path, { layout: "qemu-classic", notes, loads });
}

interface Row {
  size: string;
  what: string;
  seconds: number;
  mbps: number;
  ratio: number | undefined;
  rss: string;
  outBytes: number;
}

async function measure(gib: number, runs: number, withCp: boolean): Promise<Row[]> {
  const regionSize = Math.round(gib * GIB / CHUNK) * CHUNK;
  const input = `${dir}/in-${gib}.elf`;
  const pm = `${dir}/pm-${gib}.json`;
  Deno.writeTextFileSync(pm, plugMap(regionSize));
  log(`building a ${(regionSize / GIB).toFixed(1)} GiB-region dump ...`);
  const size = await makeDump(input, regionSize);
  const emptyPm = `${dir}/pm-empty-${gib}.json`;
  const allPlugged = JSON.parse(plugMap(regionSize));
  allPlugged.devices[0].plugged = [[0, regionSize / BLOCK]];
  allPlugged.devices[0].size = regionSize;
  Deno.writeTextFileSync(emptyPm, JSON.stringify(allPlugged));
  await sh("sync", []);
  await sh("sh", ["-c", `cat '${input}' > /dev/null`]); // warm the page cache for everyone
  const label = `${(size / GIB).toFixed(2)} GiB`;
  const tasks: Array<[string, string, string[]]> = [];
  if (withCp) tasks.push(["cp", "cp", [input, `${dir}/out`]]);
  tasks.push(["strip (61% unplugged)", Deno.execPath(), [
    "run",
    "-A",
    CLI,
    "strip",
    input,
    `${dir}/out`,
    "--plugmap",
    pm,
  ]]);
  if (withCp) {
    tasks.push(["strip (nothing to remove)", Deno.execPath(), [
      "run",
      "-A",
      CLI,
      "strip",
      input,
      `${dir}/out`,
      "--plugmap",
      emptyPm,
    ]]);
  }
  const best = new Map<string, { seconds: number; rssKiB: number | undefined; outBytes: number }>();
  for (let run = 0; run < runs; run++) {
    for (const [name, cmd, args] of tasks) {
      const r = await timed(cmd, args);
      const outBytes = Deno.statSync(`${dir}/out`).size;
      log(`  ${label} ${name}: ${r.seconds.toFixed(2)} s, max RSS ${r.rssKiB ?? "?"} KiB`);
      await sh("sync", []);
      Deno.removeSync(`${dir}/out`);
      const prev = best.get(name);
      if (!prev || r.seconds < prev.seconds) best.set(name, { ...r, outBytes });
      else if (r.rssKiB !== undefined && (prev.rssKiB ?? 0) < r.rssKiB) prev.rssKiB = r.rssKiB;
    }
  }
  Deno.removeSync(input);
  const cp = best.get("cp");
  return [...best.entries()].map(([what, r]) => ({
    size: label,
    what,
    seconds: r.seconds,
    mbps: size / r.seconds / 1e6,
    ratio: cp ? cp.seconds / r.seconds : undefined,
    rss: r.rssKiB === undefined ? "n/a" : `${(r.rssKiB / 1024).toFixed(0)} MiB`,
    outBytes: r.outBytes,
  }));
}

try {
  const runs = Number(values.runs);
  const rows = [
    ...await measure(Number(values.gib), runs, true),
    ...await measure(Number(values["small-gib"]), 1, false),
  ];
  const header = ["input", "command", "best s", "MB/s", "vs cp", "peak RSS", "output"];
  const cells = [
    header,
    ...rows.map((r) => [
      r.size,
      r.what,
      r.seconds.toFixed(2),
      r.mbps.toFixed(0),
      r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}x`,
      r.rss,
      `${(r.outBytes / GIB).toFixed(2)} GiB`,
    ]),
  ];
  const widths = header.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)));
  console.log(cells.map((c) => c.map((x, i) => x.padEnd(widths[i]!)).join("  ")).join("\n"));
  console.log(
    "\nthroughput = input bytes / wall time (best of runs); vs cp = cp time / strip time (>= 0.5 wanted)",
  );
} finally {
  Deno.removeSync(dir, { recursive: true });
}
