/**
 * Would an LZO1X-1 codec of our own, in TypeScript, bring `convert --to
 * kdump` near makedumpfile `-l -d 1`? Measured on the real pages of a dump,
 * in one process, against the codecs we use (zstd level 2, zlib level 1,
 * both native through a kept `node:zlib` context):
 *
 *   deno run -A bench/lzo.ts [--input ELF] [--runs 3]
 *
 * Input: the real QEMU 7.2 ELF dump out-small `s1-plugged-200M.elf` unless
 * `--input` names another. Its non-zero pages come from our own
 * `convert --codec none` output; makedumpfile 1.7.2 `-l -d 1` converts a
 * classic-layout copy (it cannot read QEMU's layout), and its LZO pages are
 * decoded with our decoder (`src/kdump/_lzo1x.ts`) and compared with the
 * pages byte for byte (the decoder's speed and an oracle for it). The encoder's output is decoded back and compared
 * too. Reported per codec: µs per page (best of `--runs`), page data bytes,
 * pages stored as they are (compression did not shrink them).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { realdata, realdataAvailable } from "../tests/_util/realdata.ts";
import { readKdump } from "../src/kdump/reader.ts";
import { PageCompressor } from "../src/kdump/compress.ts";
import { DUMP_DH_COMPRESSED_LZO } from "../src/kdump/header.ts";
import { lzoCompress } from "./_lzo1x.ts";
import { decompressLzo1x as lzoDecompress } from "../src/kdump/_lzo1x.ts";
import { printTable } from "./_measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { input: { type: "string" }, runs: { type: "string", default: "3" } },
  strict: true,
});
const CLI = new URL("../cli/main.ts", import.meta.url).pathname;
const B = 4096;

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

const dir = Deno.makeTempDirSync({ prefix: "vmem-bench-lzo-" });
try {
  let input = values.input;
  if (input === undefined) {
    if (!realdataAvailable("out-small")) {
      console.log("bench/lzo.ts: the real fixtures (out-small) are not available; give --input");
      Deno.exit(0);
    }
    input = await realdata("out-small", "s1-plugged-200M.elf");
  }
  const plain = `${dir}/none.kdump`;
  const classic = `${dir}/classic.elf`;
  const lzo = `${dir}/lzo.kdump`;
  const deno = Deno.execPath();
  await run(deno, ["run", "-A", CLI, "convert", input, plain, "--to", "kdump", "--codec", "none"]);
  await run(deno, ["run", "-A", CLI, "convert", input, classic, "--to", "elf"]);
  await run("makedumpfile", ["-l", "-d", "1", classic, lzo]);

  // The non-zero pages, back to back, and their pfns.
  using dump = await readKdump(plain);
  const pfns: number[] = [];
  const chunks: Uint8Array[] = [];
  for await (const batch of dump.iteratePages(0, dump.maxMapnr, { raw: true })) {
    for (const p of batch) {
      if (p.data.some((b) => b !== 0)) {
        pfns.push(p.pfn);
        chunks.push(p.data.slice());
      }
    }
  }
  const n = pfns.length;
  const pages = new Uint8Array(n * B);
  chunks.forEach((c, i) => pages.set(c, i * B));
  chunks.length = 0;

  const out = new Uint8Array(2 * B + 1024);
  const back = new Uint8Array(B);
  const rows: string[][] = [];
  const measure = (name: string, compress: (i: number) => number) => {
    let best = Infinity;
    let bytes = 0;
    let raw = 0;
    for (let r = 0; r < Number(values.runs); r++) {
      bytes = 0;
      raw = 0;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const c = compress(i);
        if (c > 0 && c < B) bytes += c;
        else {
          bytes += B;
          raw++;
        }
      }
      best = Math.min(best, performance.now() - t0);
    }
    rows.push([
      name,
      (best * 1000 / n).toFixed(1),
      (best / 1000).toFixed(3),
      String(bytes),
      String(raw),
    ]);
  };
  measure("LZO1X-1 prototype (TypeScript)", (i) => lzoCompress(pages, i * B, B, out, 0));
  using zstd = new PageCompressor("zstd", 2);
  measure(
    "zstd level 2 (node:zlib, kept context)",
    (i) => zstd.compressInto(pages.subarray(i * B, (i + 1) * B), out, 0),
  );
  using zlib = new PageCompressor("zlib", 1);
  measure(
    "zlib level 1 (node:zlib, kept context)",
    (i) => zlib.compressInto(pages.subarray(i * B, (i + 1) * B), out, 0),
  );

  // Our encoder's output decodes to the page.
  for (let i = 0; i < n; i++) {
    const c = lzoCompress(pages, i * B, B, out, 0);
    if (
      lzoDecompress(out.subarray(0, c), back) !== B || back.some((b, k) => b !== pages[i * B + k])
    ) {
      throw new Error(`LZO round trip failed for pfn 0x${pfns[i]!.toString(16)}`);
    }
  }
  // makedumpfile's LZO pages decode to the same pages (liblzo2's encoder, our decoder).
  using mk = await readKdump(lzo);
  let mkBytes = 0;
  let mkLzo = 0;
  let decodeMs = 0;
  const index = new Map(pfns.map((p, i) => [p, i]));
  const seen = new Set<number>();
  for await (const batch of mk.iteratePages(0, mk.maxMapnr, { raw: true })) {
    for (const p of batch) {
      if (!seen.has(p.desc.fileOffset)) {
        seen.add(p.desc.fileOffset);
        mkBytes += p.desc.byteLength;
      }
      const i = index.get(p.pfn);
      if (p.desc.flags !== DUMP_DH_COMPRESSED_LZO) continue;
      if (i === undefined) {
        throw new Error(`makedumpfile stored pfn 0x${p.pfn.toString(16)} as LZO`);
      }
      mkLzo++;
      const t0 = performance.now();
      const got = lzoDecompress(p.data, back);
      decodeMs += performance.now() - t0;
      if (got !== B || back.some((b, k) => b !== pages[i * B + k])) {
        throw new Error(`makedumpfile's LZO page of pfn 0x${p.pfn.toString(16)} decodes wrong`);
      }
    }
  }
  console.log(`input: ${input}; ${n} non-zero pages of ${B} bytes`);
  printTable(["codec", "µs/page", "seconds", "page data bytes", "stored as is"], rows);
  console.log(
    `makedumpfile -l -d 1 (liblzo2 lzo1x_1): ${
      mkBytes - B
    } page data bytes for the non-zero pages ` +
      `(+ one ${B}-byte zero page); ${mkLzo} LZO pages decoded by src/kdump/_lzo1x.ts: all equal, ` +
      `${(decodeMs * 1000 / mkLzo).toFixed(1)} µs/page`,
  );
} finally {
  Deno.removeSync(dir, { recursive: true });
}
