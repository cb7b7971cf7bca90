/**
 * zstd (and gzip) codec benchmark: the zstd of `node:zlib` against the
 * WebAssembly / JavaScript zstd packages on npm, on a ~100 MB real migration
 * stream, with `cat STREAM | cat > /dev/null` in the same run as the yardstick.
 *
 * Run (the npm candidates come from the global Deno cache, hence the flags):
 *
 * ```sh
 * deno run -A --node-modules-dir=none --no-lock bench/zstd.ts [STREAM.mig] [--runs N] [--json]
 * ```
 *
 * Without a path it uses the real fixture `out-q10/s1-plugged-200M.mig`
 * (110 MB). The `zstd` and `gzip` tools write the compressed inputs into a
 * temporary folder. Each candidate then runs N times in its own child
 * process (so that its peak RSS is its own and a runaway one is stopped after
 * `--timeout` seconds), decompressing a file (output counted, dropped) or
 * compressing the stream held in memory. MB/s counts uncompressed bytes and
 * uses the best of the N runs; "first run" is the cold first run of the
 * process (what one CLI call sees); "× cat" is the best time divided by the
 * time of `cat STREAM | cat > /dev/null`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import * as zlib from "node:zlib";
import { Readable, type Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { openFileReader } from "../src/io/file.ts";
import { openContainer } from "../src/container/open.ts";
import { createContainerWriter } from "../src/container/write.ts";

const MB = 1e6;
const CHUNK = 1 << 20;

/**
 * A candidate: decompressors read the compressed `file`; compressors get the
 * raw stream already in memory as `raw`. Returns the uncompressed byte count.
 */
type Candidate = (file: string, raw: Uint8Array<ArrayBuffer>) => Promise<number>;

function countingSink(count: (n: number) => void): Writable {
  return new Writable({
    write(c: Uint8Array, _e, cb) {
      count(c.byteLength);
      cb();
    },
  });
}

async function* fileChunks(path: string): AsyncGenerator<Uint8Array<ArrayBuffer>> {
  using f = await Deno.open(path);
  for (;;) {
    const buf = new Uint8Array(CHUNK);
    const n = await f.read(buf);
    if (n === null) return;
    yield buf.subarray(0, n);
  }
}

function* memoryChunks(bytes: Uint8Array<ArrayBuffer>): Generator<Uint8Array<ArrayBuffer>> {
  for (let at = 0; at < bytes.byteLength; at += CHUNK) yield bytes.subarray(at, at + CHUNK);
}

async function drainContainer(path: string): Promise<number> {
  const input = await openFileReader(path);
  try {
    const { reader } = await openContainer(input.reader);
    let n = 0;
    for (let c; (c = await reader.readChunk(CHUNK)) !== undefined;) n += c.byteLength;
    return n;
  } finally {
    input.close();
  }
}

async function zstdCodecStreams(): Promise<{
  ZstdDecompressTransform: new () => Transform;
  ZstdCompressTransform: new (level: number) => Transform;
}> {
  // deno-lint-ignore no-import-prefix -- candidates live only in this benchmark
  const mod = await import("npm:zstd-codec@0.1.5/lib/zstd-stream.js");
  return await new Promise((resolve) => mod.default.run(resolve));
}

async function oneIdentity() {
  // deno-lint-ignore no-import-prefix -- candidates live only in this benchmark
  const { ZstdInit } = await import("npm:@oneidentity/zstd-js@1.0.3/wasm/index.cjs.js");
  return await ZstdInit();
}

async function bokuweb() {
  // deno-lint-ignore no-import-prefix -- candidates live only in this benchmark
  const mod = await import("npm:@bokuweb/zstd-wasm@0.0.27");
  await mod.init();
  return mod;
}

/** Decompressors: read a compressed file, return the decompressed byte count. */
const DECOMPRESSORS: Record<string, { note: string; run: Candidate }> = {
  "node:zlib zstd via openContainer (ByteReader)": {
    note: "streaming; the implementation in src/container",
    run: drainContainer,
  },
  "node:zlib createZstdDecompress, bare pipeline": {
    note: "streaming",
    run: async (file) => {
      let n = 0;
      await pipeline(
        Readable.from(fileChunks(file)),
        zlib.createZstdDecompress({
          chunkSize: CHUNK,
          params: { [zlib.constants.ZSTD_d_windowLogMax]: 30 },
        }),
        countingSink((k) => n += k),
      );
      return n;
    },
  },
  "zstd-codec 0.1.5 (wasm) ZstdDecompressTransform": {
    note: "streaming",
    run: async (file) => {
      const streams = await zstdCodecStreams();
      let n = 0;
      await pipeline(
        Readable.from(fileChunks(file)),
        new streams.ZstdDecompressTransform(),
        countingSink((k) => n += k),
      );
      return n;
    },
  },
  "fzstd 0.1.1 (pure JS) Decompress": {
    note: "streaming, decode only",
    run: async (file) => {
      // deno-lint-ignore no-import-prefix -- candidates live only in this benchmark
      const fzstd = await import("npm:fzstd@0.1.1");
      let n = 0;
      const d = new fzstd.Decompress((c: Uint8Array) => {
        n += c.byteLength;
      });
      for await (const c of fileChunks(file)) d.push(c);
      d.push(new Uint8Array(0), true);
      return n;
    },
  },
  "@bokuweb/zstd-wasm 0.0.27 decompress": {
    note: "one-shot: whole input and output in memory",
    run: async (file) => {
      const z = await bokuweb();
      return z.decompress(await Deno.readFile(file)).byteLength;
    },
  },
  "@oneidentity/zstd-js 1.0.3 (wasm) ZstdStream.decompress": {
    note: "one-shot: whole input and output in memory",
    run: async (file) => {
      const z = await oneIdentity();
      return z.ZstdStream.decompress(await Deno.readFile(file)).byteLength;
    },
  },
  "node:zlib gunzip via openContainer (ByteReader)": {
    note: "streaming; the implementation in src/container",
    run: drainContainer,
  },
  'Web DecompressionStream("gzip")': {
    note: "streaming",
    run: async (file) => {
      let n = 0;
      const s = ReadableStream.from(fileChunks(file)).pipeThrough(
        new DecompressionStream("gzip"),
      );
      for await (const c of s) n += c.byteLength;
      return n;
    },
  },
};

/** Compressors: read the raw stream into memory, compress it, return the raw byte count. */
const COMPRESSORS: Record<string, { note: string; run: Candidate }> = {
  "node:zlib zstd via createContainerWriter": {
    note: "streaming; the implementation in src/container",
    run: async (_file, raw) => {
      const w = createContainerWriter(() => Promise.resolve(), { kind: "zstd", level: 3 });
      for (const c of memoryChunks(raw)) await w.write(c);
      await w.close();
      return raw.byteLength;
    },
  },
  "zstd-codec 0.1.5 (wasm) ZstdCompressTransform": {
    note: "streaming",
    run: async (_file, raw) => {
      const streams = await zstdCodecStreams();
      await pipeline(
        Readable.from(memoryChunks(raw)),
        new streams.ZstdCompressTransform(3),
        countingSink(() => {}),
      );
      return raw.byteLength;
    },
  },
  "@bokuweb/zstd-wasm 0.0.27 compress": {
    note: "one-shot: whole input and output in memory",
    run: async (_file, raw) => {
      const z = await bokuweb();
      z.compress(raw, 3);
      return raw.byteLength;
    },
  },
  "@oneidentity/zstd-js 1.0.3 (wasm) ZstdStream.compress": {
    note: "one-shot: whole input and output in memory",
    run: async (_file, raw) => {
      const z = await oneIdentity();
      z.ZstdStream.compress(raw, 3);
      return raw.byteLength;
    },
  },
  "node:zlib gzip via createContainerWriter": {
    note: "streaming; the implementation in src/container",
    run: async (_file, raw) => {
      const w = createContainerWriter(() => Promise.resolve(), { kind: "gzip", level: 6 });
      for (const c of memoryChunks(raw)) await w.write(c);
      await w.close();
      return raw.byteLength;
    },
  },
  'Web CompressionStream("gzip")': {
    note: "streaming, fixed level",
    run: async (_file, raw) => {
      const s = ReadableStream.from(memoryChunks(raw)).pipeThrough(
        new CompressionStream("gzip"),
      );
      for await (const _ of s) { /* drop */ }
      return raw.byteLength;
    },
  },
};

function peakRssMB(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Math.round(Number(m[1]) * 1024 / MB) : NaN;
}

// ------------------------------------------------------------------ child
const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    runs: { type: "string", default: "3" },
    timeout: { type: "string", default: "60" },
    json: { type: "boolean", default: false },
    child: { type: "string" },
    kind: { type: "string" },
  },
});

if (values.child !== undefined) {
  const table = values.kind === "compress" ? COMPRESSORS : DECOMPRESSORS;
  const candidate = table[values.child];
  if (!candidate) throw new Error(`unknown candidate ${values.child}`);
  // Compressors get the raw stream in memory, loaded before the clock starts.
  const raw = values.kind === "compress" ? await Deno.readFile(positionals[0]!) : new Uint8Array(0);
  const times: number[] = [];
  let bytes = 0;
  let laterFailure: string | undefined;
  for (let i = 0; i < Number(values.runs); i++) {
    const t0 = performance.now();
    try {
      bytes = await candidate.run(positionals[0]!, raw);
    } catch (e) {
      if (i === 0) throw e;
      // keep the runs that worked; say that a repeated call broke
      laterFailure = `run ${i + 1} in the same process failed: ${String(e).slice(0, 60)}`;
      break;
    }
    times.push(performance.now() - t0);
  }
  console.log(JSON.stringify({ times, bytes, peakRssMB: peakRssMB(), laterFailure }));
  Deno.exit(0);
}

// ------------------------------------------------------------------ parent
const runs = Number(values.runs);
const timeoutMs = Number(values.timeout) * 1000;
let input = positionals[0];
if (input === undefined) {
  const { realdata } = await import("../tests/_util/realdata.ts");
  input = await realdata("out-q10", "s1-plugged-200M.mig");
}
const rawBytes = (await Deno.stat(input)).size;

const tmp = await Deno.makeTempDir({ prefix: "vmem-bench-zstd-" });
async function sh(script: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script, "bench", ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`${script}: ${new TextDecoder().decode(out.stderr)}`);
}

interface Row {
  operation: string;
  candidate: string;
  /** Best of the runs. */
  ms: number | undefined;
  /** First run in a fresh process (cold). */
  firstMs: number | undefined;
  peakRssMB: number | undefined;
  note: string;
}
const rows: Row[] = [];
const log = (s: string) => {
  if (!values.json) console.error(s);
};

async function timeShell(operation: string, candidate: string, script: string, ...args: string[]) {
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await sh(script, ...args);
    best = Math.min(best, performance.now() - t0);
  }
  rows.push({
    operation,
    candidate,
    ms: best,
    firstMs: undefined,
    peakRssMB: undefined,
    note: "native tool",
  });
  log(`  ${operation} | ${candidate}: ${best.toFixed(0)} ms`);
  return best;
}

async function timeChild(
  operation: string,
  kind: "compress" | "decompress",
  candidate: string,
  file: string,
) {
  const table = kind === "compress" ? COMPRESSORS : DECOMPRESSORS;
  let failure = "";
  let result:
    | { times: number[]; bytes: number; peakRssMB: number; laterFailure?: string }
    | undefined;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--node-modules-dir=none",
      "--no-lock",
      new URL(import.meta.url).pathname,
      "--child",
      candidate,
      "--kind",
      kind,
      "--runs",
      String(runs),
      file,
    ],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  if (out.signal !== null) {
    failure = `no result within ${timeoutMs / 1000} s`;
  } else if (!out.success) {
    // deno-lint-ignore no-control-regex -- strips ANSI colours
    const err = new TextDecoder().decode(out.stderr).replace(/\x1b\[[0-9;]*m/g, "");
    failure = (/error: (?:Uncaught (?:\(in promise\) )?)?(.*)/.exec(err)?.[1] ?? err).slice(0, 70);
  } else {
    result = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    if (result!.bytes !== rawBytes) failure = `wrong size ${result!.bytes}`;
  }
  const row: Row = {
    operation,
    candidate,
    ms: failure ? undefined : Math.min(...result!.times),
    firstMs: failure ? undefined : result!.times[0],
    peakRssMB: failure ? undefined : result!.peakRssMB,
    note: failure
      ? `FAILS: ${failure}`
      : table[candidate]!.note + (result!.laterFailure ? `; ${result!.laterFailure}` : ""),
  };
  rows.push(row);
  log(
    `  ${operation} | ${candidate}: ${
      failure || `${row.ms!.toFixed(0)} ms (first ${row.firstMs!.toFixed(0)}), ${row.peakRssMB} MB`
    }`,
  );
}

const zst = `${tmp}/s.mig.zst`;
const zstLong = `${tmp}/s.long30.mig.zst`;
const gz = `${tmp}/s.mig.gz`;
try {
  await sh('zstd -q -3 -f -o "$2" "$1"', input, zst);
  await sh('zstd -q -3 --long=30 -f -o "$2" "$1"', input, zstLong);
  await sh('gzip -n -6 -c < "$1" > "$2"', input, gz);

  const catMs = await timeShell(
    "yardstick",
    "cat STREAM \\| cat > /dev/null",
    'cat "$1" | cat > /dev/null',
    input,
  );
  const zstdNames = Object.keys(DECOMPRESSORS).filter((n) => !/gunzip|gzip/.test(n));
  for (
    const [label, file] of [["decompress zstd -3", zst], [
      "decompress zstd -3 --long=30",
      zstLong,
    ]] as const
  ) {
    await timeShell(
      label,
      "zstd -dc (native tool)",
      'zstd -q -dc --long=30 "$1" > /dev/null',
      file,
    );
    for (const name of zstdNames) await timeChild(label, "decompress", name, file);
  }
  await timeShell(
    "compress zstd level 3",
    "zstd -3 (native tool)",
    'zstd -q -3 -c "$1" > /dev/null',
    input,
  );
  for (const name of Object.keys(COMPRESSORS).filter((n) => !/gzip/.test(n))) {
    await timeChild("compress zstd level 3", "compress", name, input);
  }
  await timeShell(
    "decompress gzip -6",
    "gzip -dc (native tool)",
    'gzip -dc < "$1" > /dev/null',
    gz,
  );
  for (const name of Object.keys(DECOMPRESSORS).filter((n) => /gunzip|gzip/.test(n))) {
    await timeChild("decompress gzip -6", "decompress", name, gz);
  }
  await timeShell(
    "compress gzip level 6",
    "gzip -6 (native tool)",
    'gzip -n -6 -c < "$1" > /dev/null',
    input,
  );
  for (const name of Object.keys(COMPRESSORS).filter((n) => /gzip/.test(n))) {
    await timeChild("compress gzip level 6", "compress", name, input);
  }

  const compressedMB = {
    "zstd -3": (await Deno.stat(zst)).size / MB,
    "zstd -3 --long=30": (await Deno.stat(zstLong)).size / MB,
    "gzip -6": (await Deno.stat(gz)).size / MB,
  };
  if (values.json) {
    console.log(JSON.stringify({ input, rawBytes, compressedMB, catMs, runs, rows }, null, 2));
  } else {
    const lines = [
      `input: ${input} (${(rawBytes / MB).toFixed(1)} MB); compressed: ${
        Object.entries(compressedMB).map(([k, v]) => `${k} ${v.toFixed(1)} MB`).join(", ")
      }; best of ${runs} runs; Deno ${Deno.version.deno}`,
      "",
      "| operation | candidate | MB/s | × cat | first run MB/s | peak RSS MB | notes |",
      "|---|---|---:|---:|---:|---:|---|",
    ];
    for (const r of rows) {
      const mbs = r.ms === undefined ? "—" : (rawBytes / MB / (r.ms / 1000)).toFixed(0);
      const ratio = r.ms === undefined ? "—" : (r.ms / catMs).toFixed(1);
      const first = r.firstMs === undefined ? "" : (rawBytes / MB / (r.firstMs / 1000)).toFixed(0);
      const rss = r.peakRssMB ?? "";
      lines.push(
        `| ${r.operation} | ${r.candidate} | ${mbs} | ${ratio} | ${first} | ${rss} | ${r.note} |`,
      );
    }
    console.log(lines.join("\n"));
  }
} finally {
  await Deno.remove(tmp, { recursive: true });
}
