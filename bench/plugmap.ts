/**
 * How much it costs to get the virtio-mem plug map out of a stream.
 *
 *   deno run -A bench/plugmap.ts [--gib 2]
 *
 * - Early layout (out-q10, QEMU 10.0): extraction stops after the early
 *   section; reports the stream bytes decoded and the bytes read from disk.
 * - Late layout (out-small, QEMU 7.2, and a synthetic late-layout stream of
 *   `--gib` GiB built from it): the vmdesc shortcut (tail + device section
 *   only) against decoding the whole stream once, and against `cat FILE >
 *   /dev/null` of the same file in the same run (page cache warm).
 */

import { parseArgs } from "node:util";
import { openFileReader, readFileRange } from "../src/io/file.ts";
import { PullByteReader } from "../src/io/byte_reader.ts";
import {
  extractPlugStateFromFile,
  extractPlugStateFromReader,
} from "../src/migration/plug_state.ts";
import { realdata, realdataFacts } from "../tests/_util/realdata.ts";
import { printTable, timeShell } from "./_measure.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { gib: { type: "string", default: "2" } },
});

/** A range reader that counts the bytes it reads from disk. */
function countingReader(path: string): { reader: PullByteReader; diskBytes: () => number } {
  let fileOffset = 0;
  let size = 1 << 16;
  let disk = 0;
  const reader = new PullByteReader(async () => {
    const chunk = await readFileRange(path, fileOffset, size);
    fileOffset += chunk.byteLength;
    disk += chunk.byteLength;
    size = Math.min(size * 2, 4 << 20);
    return chunk.byteLength > 0 ? chunk : undefined;
  });
  return { reader, diskBytes: () => disk };
}

/**
 * A big late-layout stream: the real stream with its `ram` PART sections
 * repeated (each starts with a record naming its block, and the original
 * last PART stays last before END, so CONTINUE flags stay valid).
 */
async function repeatRamParts(
  set: "out-small",
  scenario: string,
  out: string,
  targetBytes: number,
): Promise<void> {
  const path = await realdata(set, `${scenario}.mig`);
  // deno-lint-ignore no-explicit-any
  const sections: any[] = realdataFacts(set).analysis.scenarios[scenario].migration.sections;
  const firstPart = sections.find((x) => x.type === "PART").offset as number;
  const end = sections.find((x) => x.type === "END").offset as number;
  const size = (await Deno.stat(path)).size;
  const copies = Math.max(
    1,
    Math.ceil((targetBytes - (size - (end - firstPart))) / (end - firstPart)),
  );
  await timeShell(
    `{ head -c ${firstPart} '${path}'; for i in $(seq ${copies}); do tail -c +${
      firstPart + 1
    } '${path}' | head -c ${end - firstPart}; done; ` +
      `tail -c +${end + 1} '${path}'; } > '${out}'`,
  );
}

async function best<T>(n: number, fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  let seconds = Infinity;
  let value: T | undefined;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    value = await fn();
    seconds = Math.min(seconds, (performance.now() - t0) / 1000);
  }
  return { seconds, value: value! };
}

const ms = (s: number) => (s * 1000).toFixed(1) + " ms";
const rows: (string | number)[][] = [];

// Early layout: stop after the early section.
for (const name of ["s1-plugged-200M.mig", "s2-holes-100M.mig"]) {
  const path = await realdata("out-q10", name);
  const size = (await Deno.stat(path)).size;
  const r = await best(5, async () => {
    const c = countingReader(path);
    const res = await extractPlugStateFromReader(c.reader, {});
    return { res, disk: c.diskBytes() };
  });
  const cat = await best(3, () => timeShell(`cat '${path}' > /dev/null`));
  rows.push([
    `q10 ${name}`,
    (size / 1e6).toFixed(1) + " MB",
    r.value.res.method,
    `${r.value.res.streamBytes} B decoded, ${r.value.disk} B read`,
    ms(r.seconds),
    ms(cat.value),
  ]);
}

async function lateRows(label: string, path: string): Promise<void> {
  const size = (await Deno.stat(path)).size;
  await timeShell(`cat '${path}' > /dev/null`); // warm the cache
  const cat = await best(3, () => timeShell(`cat '${path}' > /dev/null`));
  const viaVmdesc = await best(5, () => extractPlugStateFromFile(path));
  const v = viaVmdesc.value;
  rows.push([
    label,
    (size / 1e6).toFixed(1) + " MB",
    v.method,
    `${v.streamBytes} B decoded + ${v.extraBytes} B at the end`,
    ms(viaVmdesc.seconds),
    ms(cat.value),
  ]);
  // Streaming once: what a pipe or a vmdesc that does not fit costs (read-ahead file reader, batches).
  const streamed = await best(2, async () => {
    const input = await openFileReader(path);
    try {
      return (await extractPlugStateFromReader(input.reader)).streamBytes;
    } finally {
      input.close();
    }
  });
  rows.push([
    label,
    (size / 1e6).toFixed(1) + " MB",
    "stream once",
    `${streamed.value} B read`,
    ms(streamed.seconds),
    ms(cat.value),
  ]);
}

await lateRows("7.2 s2-holes-100M.mig", await realdata("out-small", "s2-holes-100M.mig"));
const dir = await Deno.makeTempDir({ prefix: "vmem-bench-plugmap-" });
try {
  const synth = `${dir}/late.mig`;
  await repeatRamParts(
    "out-small",
    "s2-holes-100M",
    synth,
    Math.round(Number(values.gib) * 2 ** 30),
  );
  await lateRows(`7.2 synthetic ${values.gib} GiB`, synth);
} finally {
  await Deno.remove(dir, { recursive: true });
}

printTable(["stream", "size", "method", "bytes", "extract", "cat > /dev/null"], rows);
