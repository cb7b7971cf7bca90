/**
 * Campaign target `plugmap`: mutated plug maps in the three input formats
 * (JSON version 1, a QMP `query-memory-devices` reply plus runs, a plugged
 * range list), read by `parsePlugMapSource` and by `plugmap --plugmap FILE`.
 *
 * Seeds are real: the JSON and range-list forms of the plug state of the
 * committed QEMU 7.2 and 10.0 streams, and the QMP record of the shared
 * fixtures' `s3-malicious` scenario (QEMU's own `query-memory-devices`
 * reply) with its plugged runs.
 *
 * Mutations work on text: numbers (decimal or hex) replaced by boundary
 * values, JSON restructured (keys removed or added, array elements
 * duplicated or removed, values of another type), and byte mutations.
 *
 * Oracles: a typed error or a map; a map survives its own round trips (JSON
 * version 1 and range list, read back to the same JSON); the command agrees
 * with the library (same success, same JSON).
 *
 * @module
 */

import {
  formatPlugMapJson,
  formatRangeList,
  parsePlugMapSource,
} from "../../../../src/vmem/mod.ts";
import type { PlugMap } from "../../../../src/vmem/mod.ts";
import { bytesReader } from "../../../../src/io/byte_reader.ts";
import { decodeMigration, extractPlugMap } from "../../../../src/migration/mod.ts";
import { runCommand } from "../commands.ts";
import { mutate, type Mutated, type Rng } from "../mutate.ts";
import { agree, typedErrorLabel } from "../oracle.ts";
import type { CaseContext, FuzzTarget, SeedInput } from "../target.ts";
import { realdataSharedDir } from "../../realdata.ts";
import { migrationSeeds } from "./migration_cli.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Line starts as spans, so byte mutations can duplicate, swap and drop lines. */
function lineSpans(text: string) {
  const spans = [];
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\n") {
      spans.push({ start, end: i + 1, name: `line at ${start}` });
      start = i + 1;
    }
  }
  return spans;
}

function seedOf(name: string, text: string): SeedInput {
  return { name, bytes: encoder.encode(text), anatomy: { fields: [], spans: lineSpans(text) } };
}

/** Real plug maps: of the committed streams, and QEMU's QMP record of the shared fixtures. */
async function plugmapSeeds(): Promise<SeedInput[]> {
  const seeds: SeedInput[] = [];
  for (
    const s of await migrationSeeds([
      "migration/q72-s3-malicious.mig.zst",
      "migration/q10-s3-malicious.mig.zst",
    ])
  ) {
    const map = await extractPlugMap(decodeMigration(bytesReader(s.bytes)), { complete: true });
    seeds.push(seedOf(`${s.name} plug map (JSON v1)`, formatPlugMapJson(map)));
    seeds.push(seedOf(`${s.name} plug map (range list)`, formatRangeList(map)));
  }
  const record = JSON.parse(
    await Deno.readTextFile(`${realdataSharedDir("out-q10")}/s3-malicious.qmp.json`),
  );
  const qmp = { "query-memory-devices": record["query-memory-devices"] };
  seeds.push(seedOf(
    "out-q10 s3-malicious QMP reply + runs",
    JSON.stringify({ qmp, plugged: [[0, 14], [64, 36]], path: "0000:00:01.0" }, null, 1) + "\n",
  ));
  seeds.push(seedOf(
    "out-q10 s3-malicious QMP reply, runs inside",
    JSON.stringify({
      return: record["query-memory-devices"].map((e: { type: string; data: object }) => ({
        ...e,
        data: { ...e.data, plugged: [[0, 14], [64, 36]], ramblock: "0000:00:01.0/vmem0mem" },
      })),
    }) + "\n",
  ));
  seeds.push(seedOf(
    "/proc/iomem-style range list",
    "# from the guest\n100000000-101bfffff : System RAM (virtio_mem)\n" +
      "108000000-10c7fffff : System RAM (virtio_mem)\n",
  ));
  return seeds;
}

const NUMBER = /0x[0-9a-fA-F]+|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

function numberValues(token: string, rng: Rng): string {
  const hex = token.startsWith("0x");
  const asNumber = Number(token);
  const n = hex ? BigInt(token) : Number.isFinite(asNumber) ? BigInt(Math.trunc(asNumber)) : 0n;
  const choices: (bigint | string)[] = [
    0n,
    1n,
    n + 1n,
    n - 1n,
    n * 2n,
    n / 2n,
    n + 0x100000n,
    n + 0x200000n,
    1n << 31n,
    (1n << 32n) - 1n,
    1n << 53n,
    (1n << 53n) + 1n,
    1n << 63n,
    1n << 64n,
    -1n,
    "1.5",
    "1e21",
    "1e309",
    "-0",
  ];
  const v = rng.pick(choices);
  if (typeof v === "string") return v;
  return hex && v >= 0n ? `0x${v.toString(16)}` : v.toString();
}

/** Replace one number token of the text by a boundary value. */
function mutateNumber(text: string, rng: Rng): { text: string; what: string } | undefined {
  const tokens = [...text.matchAll(NUMBER)];
  if (tokens.length === 0) return undefined;
  const t = rng.pick(tokens);
  const v = numberValues(t[0], rng);
  return {
    text: text.slice(0, t.index) + v + text.slice(t.index! + t[0].length),
    what: `number at ${t.index}: ${t[0]} -> ${v}`,
  };
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every container (object or array) of a JSON value, with its path. */
function containers(
  v: Json,
  path: string,
  out: { v: Json[] | { [k: string]: Json }; path: string }[],
) {
  if (Array.isArray(v)) {
    out.push({ v, path });
    v.forEach((x, i) => containers(x, `${path}[${i}]`, out));
  } else if (v !== null && typeof v === "object") {
    out.push({ v, path });
    for (const [k, x] of Object.entries(v)) containers(x, `${path}.${k}`, out);
  }
}

const OTHER_VALUES: Json[] = [null, "", "0x100000000", true, [], {}, [[0, 1]], -1, 1.5, "plugged"];

/** Restructure a JSON text: remove, duplicate or retype a member. */
function mutateJson(text: string, rng: Rng): { text: string; what: string } | undefined {
  let root: Json;
  try {
    root = JSON.parse(text);
  } catch {
    return undefined;
  }
  const all: { v: Json[] | { [k: string]: Json }; path: string }[] = [];
  containers(root, "$", all);
  if (all.length === 0) return undefined;
  const c = rng.pick(all);
  let what: string;
  if (Array.isArray(c.v)) {
    const op = rng.int(4);
    if (c.v.length === 0 || op === 0) {
      c.v.push(rng.pick(OTHER_VALUES));
      what = `append to ${c.path}`;
    } else if (op === 1) {
      const i = rng.int(c.v.length);
      c.v.splice(i, 0, structuredClone(c.v[i]!));
      what = `duplicate ${c.path}[${i}]`;
    } else if (op === 2) {
      const i = rng.int(c.v.length);
      c.v.splice(i, 1);
      what = `remove ${c.path}[${i}]`;
    } else {
      const i = rng.int(c.v.length);
      c.v[i] = rng.pick(OTHER_VALUES);
      what = `retype ${c.path}[${i}]`;
    }
  } else {
    const keys = Object.keys(c.v);
    const op = rng.int(3);
    if (keys.length === 0 || op === 0) {
      const k = rng.pick(["version", "devices", "plugged", "path", "ramblock", "extra", "return"]);
      c.v[k] = rng.pick(OTHER_VALUES);
      what = `set ${c.path}.${k}`;
    } else if (op === 1) {
      const k = rng.pick(keys);
      delete c.v[k];
      what = `delete ${c.path}.${k}`;
    } else {
      const k = rng.pick(keys);
      c.v[k] = rng.pick(OTHER_VALUES);
      what = `retype ${c.path}.${k}`;
    }
  }
  return { text: JSON.stringify(root), what };
}

/** Mutate a plug map's text. */
function mutatePlugmap(seed: SeedInput, rng: Rng): Mutated {
  let text = decoder.decode(seed.bytes);
  const mutations: string[] = [];
  const stack = rng.chance(0.7) ? 1 : rng.range(2, 3);
  for (let i = 0; i < stack; i++) {
    const r = rng.float();
    const m = r < 0.45 ? mutateNumber(text, rng) : r < 0.75 ? mutateJson(text, rng) : undefined;
    if (m !== undefined) {
      text = m.text;
      mutations.push(m.what);
      continue;
    }
    const b = mutate(encoder.encode(text), { fields: [], spans: lineSpans(text) }, rng, {
      maxStack: 1,
      maxSplice: 16,
    });
    text = decoder.decode(b.bytes);
    mutations.push(...b.mutations);
  }
  return { bytes: encoder.encode(text), mutations };
}

/** The round trips a valid map must survive. */
function roundTrips(map: PlugMap): void {
  const json = formatPlugMapJson(map);
  const again = formatPlugMapJson(parsePlugMapSource(json).map);
  agree(again === json, `JSON round trip changed the map:\n${json}\n${again}`);
  if (map.devices.every((d) => d.ramBlock !== "" || d.path !== "")) {
    const list = formatRangeList(map);
    const fromList = parsePlugMapSource(list).map;
    const a = JSON.stringify(map.pluggedGpaRanges());
    const b = JSON.stringify(fromList.pluggedGpaRanges());
    agree(a === b, `range-list round trip changed the plugged ranges: ${a} vs ${b}`);
  }
  map.unpluggedGpaRanges();
}

async function runPlugmap(input: Uint8Array, context: CaseContext): Promise<string> {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(input);
  let label: string;
  let map: PlugMap | undefined;
  try {
    const r = parsePlugMapSource(text);
    map = r.map;
    label = `read ${r.format}`;
  } catch (e) {
    label = typedErrorLabel(e);
  }
  if (map !== undefined) roundTrips(map);
  const path = `${context.workDir}/plugmap.txt`;
  await Deno.writeFile(path, input);
  const cli = await runCommand("plugmap", ["--plugmap", path]);
  let valid = true;
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(input);
  } catch {
    valid = false; // the command refuses what is not UTF-8; the library got replacement characters
  }
  if (valid) {
    agree(
      (cli.code === 0) === (map !== undefined),
      `parsePlugMapSource: ${label}; plugmap --plugmap: ${
        cli.error ?? cli.label
      } ${cli.err.trim()}`,
    );
    if (map !== undefined) {
      agree(
        cli.out === formatPlugMapJson(map),
        `plugmap --plugmap printed another map than the library`,
      );
    }
  }
  return label;
}

/** The target. */
export const plugmapTarget: FuzzTarget = {
  name: "plugmap",
  description:
    "plug maps (JSON v1, QMP reply + runs, range list): parsePlugMapSource and plugmap --plugmap; " +
    "round trips, library and command agree",
  timeoutMs: 10_000,
  seeds: plugmapSeeds,
  mutate: mutatePlugmap,
  run: runPlugmap,
};
