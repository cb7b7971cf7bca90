/**
 * Mutations of real inputs for the mutation campaign: byte and bit flips,
 * truncations, insertions and deletions, field-aware writes of boundary
 * values into length, count and offset fields, and duplicated, swapped,
 * moved or removed sections. Every mutation is drawn from a seeded PRNG, so
 * a case seed reproduces the exact bytes.
 *
 * Each seed input comes with its {@linkcode Anatomy}: where its integer
 * fields are (offset, width, byte order) and which byte ranges are sections.
 * The anatomy is found once per seed input by a walker of its format
 * (`targets/*.ts`); mutations are biased towards it, because flipping bytes
 * of page data mostly exercises nothing.
 *
 * @module
 */

import { seededRandom } from "../chunkings.ts";

/** What a field means: boundary values are chosen by role. */
export type FieldRole = "length" | "count" | "offset" | "address" | "id" | "flags" | "other";

/** One integer field of a seed input. */
export interface Field {
  /** Byte offset in the input. */
  offset: number;
  /** Width in bytes. */
  width: 1 | 2 | 4 | 8;
  /** Byte order. */
  littleEndian: boolean;
  /** Name for the mutation log (`e_phoff`, `ram-page[17].addr`). */
  name: string;
  /** What it holds. */
  role: FieldRole;
  /** Values worth trying besides the generic boundary values (e.g. a page address in an unplugged block). */
  values?: readonly bigint[];
}

/** A byte range of a seed input that forms a unit (a section, a segment, a frame, a record). */
export interface Span {
  /** First byte. */
  start: number;
  /** One past the last byte. */
  end: number;
  /** Name for the mutation log. */
  name: string;
}

/** A decimal number written as text inside a binary input (a size in the vmdesc JSON). */
export interface TextNumber {
  /** Offset of its first digit. */
  offset: number;
  /** Its digits. */
  length: number;
  /** Name for the mutation log. */
  name: string;
  /** A length field that counts the text it is in: kept in step when the number's length changes. */
  lengthField?: Field;
}

/** The structure of one seed input, as far as mutations need it. */
export interface Anatomy {
  /** Integer fields. */
  fields: Field[];
  /** Units that can be duplicated, swapped, moved or removed. */
  spans: Span[];
  /** Numbers written as text (JSON inside a binary format). @default {[]} */
  numbers?: TextNumber[];
}

/** A mutated input and what was done to it. */
export interface Mutated {
  /** The bytes. */
  bytes: Uint8Array<ArrayBuffer>;
  /** One line per mutation applied, in order. */
  mutations: string[];
}

/** Limits of {@linkcode mutate}. */
export interface MutateOptions {
  /** Most mutations stacked on one input. @default {3} */
  maxStack?: number;
  /** Largest insertion or deletion of random bytes. @default {64} */
  maxSplice?: number;
  /** Weights of the mutation kinds (0 disables one). @default {DEFAULT_WEIGHTS} */
  weights?: Partial<Record<MutationKind, number>>;
}

/** The mutation kinds. */
export type MutationKind =
  | "bit-flip"
  | "byte-set"
  | "truncate"
  | "insert"
  | "delete"
  | "field"
  | "span-duplicate"
  | "span-swap"
  | "span-move"
  | "span-delete"
  | "number";

/** How often each kind is drawn (relative). */
export const DEFAULT_WEIGHTS: Readonly<Record<MutationKind, number>> = {
  "bit-flip": 3,
  "byte-set": 2,
  "truncate": 1,
  "insert": 1,
  "delete": 1,
  "field": 6,
  "span-duplicate": 1,
  "span-swap": 1,
  "span-move": 1,
  "span-delete": 1,
  "number": 2,
};

/** A PRNG with the helpers mutations need. */
export class Rng {
  #next: () => number;

  /**
   * Seed it.
   *
   * @param seed A 32-bit integer.
   */
  constructor(seed: number) {
    this.#next = seededRandom(seed);
  }

  /** A float in `[0, 1)`. */
  float(): number {
    return this.#next();
  }

  /** An integer in `[0, n)` (0 when `n <= 0`). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor(this.#next() * n);
  }

  /** An integer in `[lo, hi]`. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.#next() < p;
  }

  /** One element (the array must not be empty). */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** A key drawn by weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = (Object.entries(weights) as [K, number][]).filter(([, w]) => w > 0);
    let total = 0;
    for (const [, w] of entries) total += w;
    let x = this.#next() * total;
    for (const [k, w] of entries) {
      x -= w;
      if (x < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }
}

/**
 * Derive the seed of one case from the campaign seed, the target and the
 * case index (FNV-1a over the three, then a final mix), so that any case can
 * be replayed alone.
 *
 * @param campaignSeed The campaign's seed.
 * @param target Target name.
 * @param index Case number.
 * @returns A 32-bit case seed.
 */
export function caseSeedOf(campaignSeed: number, target: string, index: number): number {
  let h = 0x811c9dc5;
  const mix = (x: number) => {
    h ^= x & 0xff;
    h = Math.imul(h, 0x01000193);
  };
  for (const x of [campaignSeed, index]) {
    for (let s = 0; s < 32; s += 8) mix(x >>> s);
  }
  for (let i = 0; i < target.length; i++) mix(target.charCodeAt(i));
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h >>> 0;
}

const TWO = (n: number) => 1n << BigInt(n);

/** Generic boundary values for a field of `width` bytes holding `current`, in an input of `inputLength` bytes. */
export function boundaryValues(field: Field, current: bigint, inputLength: number): bigint[] {
  const bits = field.width * 8;
  const max = TWO(bits) - 1n;
  const size = BigInt(inputLength);
  const values = [
    0n,
    1n,
    max,
    max - 1n,
    TWO(bits - 1),
    TWO(bits - 1) - 1n,
    current + 1n,
    current - 1n,
    current * 2n,
    current ^ TWO(bits - 1),
  ];
  if (bits >= 32) values.push(TWO(31), TWO(31) - 1n, TWO(32) - 1n, TWO(32));
  if (bits >= 64) values.push(TWO(53), TWO(53) + 1n, TWO(53) - 1n, TWO(62), TWO(63));
  if (field.role === "length" || field.role === "offset" || field.role === "count") {
    values.push(size, size - 1n, size + 1n, size + 4096n, size * 2n, current + size);
  }
  if (field.role === "length" || field.role === "count") values.push(current + 4096n, 2n, 3n);
  if (field.role === "address" || field.role === "offset") {
    values.push(current + 4096n, current - 4096n, current + TWO(20), current | 1n);
  }
  if (field.values) values.push(...field.values);
  return values.filter((v) => v >= 0n && v <= max);
}

/** Read a field's value. */
export function readField(bytes: Uint8Array, field: Field): bigint {
  let v = 0n;
  for (let i = 0; i < field.width; i++) {
    const b = bytes[field.offset + (field.littleEndian ? field.width - 1 - i : i)] ?? 0;
    v = (v << 8n) | BigInt(b);
  }
  return v;
}

/** Write a field's value (truncated to its width). */
export function writeField(bytes: Uint8Array, field: Field, value: bigint): void {
  let v = value;
  for (let i = 0; i < field.width; i++) {
    const at = field.offset + (field.littleEndian ? i : field.width - 1 - i);
    if (at < bytes.length) bytes[at] = Number(v & 0xffn);
    v >>= 8n;
  }
}

/** A position biased towards the structure: a field, a span boundary, or anywhere. */
function position(rng: Rng, bytes: Uint8Array, anatomy: Anatomy): number {
  const n = bytes.length;
  if (n === 0) return 0;
  const r = rng.float();
  if (r < 0.35 && anatomy.fields.length > 0) {
    const f = rng.pick(anatomy.fields);
    return Math.min(n - 1, f.offset + rng.int(f.width));
  }
  if (r < 0.6 && anatomy.spans.length > 0) {
    const s = rng.pick(anatomy.spans);
    const edge = rng.chance(0.5) ? s.start : s.end;
    return Math.max(0, Math.min(n - 1, edge + rng.range(-8, 8)));
  }
  return rng.int(n);
}

function splice(bytes: Uint8Array, at: number, remove: number, insert: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length - remove + insert.length);
  out.set(bytes.subarray(0, at), 0);
  out.set(insert, at);
  out.set(bytes.subarray(at + remove), at + insert.length);
  return out;
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const style = rng.int(3);
  for (let i = 0; i < n; i++) out[i] = style === 0 ? 0 : style === 1 ? 0xff : rng.int(256);
  return out;
}

const hex = (n: number | bigint) => `0x${n.toString(16)}`;

/**
 * Apply one mutation of `kind` to `bytes`. Spans and fields refer to the
 * seed input, so they are only used on the first mutation of a stack (later
 * ones fall back to positions by length).
 *
 * @returns The new bytes and a description, or `undefined` when the kind does not apply.
 */
function applyOne(
  kind: MutationKind,
  bytes: Uint8Array,
  anatomy: Anatomy,
  rng: Rng,
  maxSplice: number,
): { bytes: Uint8Array; what: string } | undefined {
  const n = bytes.length;
  switch (kind) {
    case "bit-flip": {
      const count = rng.chance(0.7) ? 1 : rng.range(2, 8);
      const out = bytes.slice();
      const at: number[] = [];
      for (let i = 0; i < count && n > 0; i++) {
        const p = position(rng, out, anatomy);
        const bit = rng.int(8);
        out[p] = out[p]! ^ (1 << bit);
        at.push(p * 8 + bit);
      }
      return { bytes: out, what: `bit-flip bits ${at.map((b) => `${hex(b >> 3)}.${b & 7}`)}` };
    }
    case "byte-set": {
      if (n === 0) return undefined;
      const out = bytes.slice();
      const p = position(rng, out, anatomy);
      const v = rng.pick([0, 0xff, 0x7f, 0x80, 1, rng.int(256)]);
      const old = out[p]!;
      out[p] = v === old ? old ^ 0xff : v;
      return { bytes: out, what: `byte-set ${hex(p)}: ${hex(old)} -> ${hex(out[p]!)}` };
    }
    case "truncate": {
      if (n === 0) return undefined;
      const p = rng.chance(0.3) ? rng.int(n) : position(rng, bytes, anatomy);
      return { bytes: bytes.slice(0, p), what: `truncate at ${hex(p)} (of ${hex(n)})` };
    }
    case "insert": {
      const p = rng.chance(0.2) ? n : position(rng, bytes, anatomy);
      const add = randomBytes(rng, rng.range(1, maxSplice));
      return { bytes: splice(bytes, p, 0, add), what: `insert ${add.length} bytes at ${hex(p)}` };
    }
    case "delete": {
      if (n === 0) return undefined;
      const p = position(rng, bytes, anatomy);
      const k = Math.min(n - p, rng.range(1, maxSplice));
      return {
        bytes: splice(bytes, p, k, new Uint8Array(0)),
        what: `delete ${k} bytes at ${hex(p)}`,
      };
    }
    case "field": {
      const fields = anatomy.fields.filter((f) => f.offset + f.width <= n);
      if (fields.length === 0) return undefined;
      const f = rng.pick(fields);
      const old = readField(bytes, f);
      const value = rng.pick(boundaryValues(f, old, n));
      const out = bytes.slice();
      writeField(out, f, value);
      return {
        bytes: out,
        what: `field ${f.name} at ${hex(f.offset)}: ${hex(old)} -> ${hex(value)}`,
      };
    }
    case "number": {
      const numbers = (anatomy.numbers ?? []).filter((t) => t.offset + t.length <= n);
      if (numbers.length === 0) return undefined;
      const t = rng.pick(numbers);
      const old = new TextDecoder().decode(bytes.subarray(t.offset, t.offset + t.length));
      if (!/^\d+$/.test(old)) return undefined; // an earlier mutation of the stack moved it
      const v = BigInt(old);
      const same = rng.chance(0.5);
      const choices = same
        ? [v + 1n, v - 1n, 0n, 10n ** BigInt(t.length) - 1n, v ^ 1n]
          .filter((x) => x >= 0n)
          .map((x) => x.toString().padStart(t.length, "0").slice(-t.length))
        : [0n, 1n, v * 2n, v + 1000n, 1n << 31n, 1n << 32n, 1n << 53n, (1n << 53n) + 1n, 10n ** 30n]
          .map((x) => x.toString());
      const text = rng.pick(choices);
      const out = splice(bytes, t.offset, t.length, new TextEncoder().encode(text));
      const delta = text.length - t.length;
      if (
        delta !== 0 && t.lengthField && t.lengthField.offset + t.lengthField.width <= out.length
      ) {
        writeField(out, t.lengthField, readField(out, t.lengthField) + BigInt(delta));
      }
      return { bytes: out, what: `number ${t.name} at ${hex(t.offset)}: ${old} -> ${text}` };
    }
    case "span-duplicate":
    case "span-swap":
    case "span-move":
    case "span-delete": {
      const spans = anatomy.spans.filter((s) => s.end <= n && s.end > s.start);
      if (spans.length === 0) return undefined;
      const a = rng.pick(spans);
      const piece = bytes.slice(a.start, a.end);
      if (kind === "span-delete") {
        return {
          bytes: splice(bytes, a.start, a.end - a.start, new Uint8Array(0)),
          what: `span-delete ${a.name} [${hex(a.start)}, ${hex(a.end)})`,
        };
      }
      if (kind === "span-duplicate") {
        const at = rng.chance(0.5) ? a.end : rng.pick(spans).start;
        return {
          bytes: splice(bytes, at, 0, piece),
          what: `span-duplicate ${a.name} [${hex(a.start)}, ${hex(a.end)}) at ${hex(at)}`,
        };
      }
      const b = rng.pick(spans);
      if (b.start < a.end && a.start < b.end) return undefined; // overlapping (or the same)
      const [first, second] = a.start < b.start ? [a, b] : [b, a];
      if (kind === "span-swap") {
        const out = new Uint8Array(bytes.length);
        let at = 0;
        for (
          const part of [
            bytes.subarray(0, first.start),
            bytes.subarray(second.start, second.end),
            bytes.subarray(first.end, second.start),
            bytes.subarray(first.start, first.end),
            bytes.subarray(second.end),
          ]
        ) {
          out.set(part, at);
          at += part.length;
        }
        return {
          bytes: out,
          what:
            `span-swap ${first.name} [${hex(first.start)}, ${
              hex(first.end)
            }) with ${second.name} ` +
            `[${hex(second.start)}, ${hex(second.end)})`,
        };
      }
      // span-move: a to just after b
      const without = splice(bytes, a.start, a.end - a.start, new Uint8Array(0));
      const to = b.start > a.start ? b.end - (a.end - a.start) : b.end;
      return {
        bytes: splice(without, to, 0, piece),
        what: `span-move ${a.name} [${hex(a.start)}, ${hex(a.end)}) after ${b.name}`,
      };
    }
  }
}

/**
 * Mutate a seed input: one to `maxStack` mutations (mostly one), each drawn
 * by weight. The first mutation uses the anatomy of the seed; stacked ones
 * use what still lies at the same offsets.
 *
 * @param input The seed input (not modified).
 * @param anatomy Its fields and spans.
 * @param rng The case's PRNG.
 * @param options Stack depth, splice size, weights.
 * @returns The mutated bytes and the mutation log.
 */
export function mutate(
  input: Uint8Array,
  anatomy: Anatomy,
  rng: Rng,
  options: MutateOptions = {},
): Mutated {
  const weights = { ...DEFAULT_WEIGHTS, ...options.weights };
  const maxStack = options.maxStack ?? 3;
  const stack = rng.chance(0.7) ? 1 : rng.range(2, Math.max(2, maxStack));
  let bytes: Uint8Array = input;
  const mutations: string[] = [];
  for (let i = 0; i < stack; i++) {
    for (let attempt = 0; attempt < 8; attempt++) {
      const kind = rng.weighted(weights);
      const r = applyOne(kind, bytes, anatomy, rng, options.maxSplice ?? 64);
      if (r === undefined) continue;
      bytes = r.bytes;
      mutations.push(r.what);
      break;
    }
  }
  if (mutations.length === 0) {
    const r = applyOne("bit-flip", bytes, anatomy, rng, 1)!;
    bytes = r.bytes;
    mutations.push(r.what);
  }
  const out = bytes === input ? input.slice() : bytes;
  return {
    bytes: new Uint8Array(out.buffer as ArrayBuffer, out.byteOffset, out.byteLength),
    mutations,
  };
}
