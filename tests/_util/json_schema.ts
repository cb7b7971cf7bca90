/**
 * A small JSON Schema (2020-12) validator for the report schemas in
 * `schemas/`: the keywords those files use, and an error for any other
 * keyword, so a schema cannot silently rely on one that is not checked.
 * (No npm validator: the repository has no npm dependency besides the
 * toolchain, and the subset is small enough to test here, with negative
 * cases in tests/cli/json_schema_test.ts.)
 *
 * Supported: `$schema`, `$id`, `$defs`, `$ref` (local `#/$defs/…` or
 * `file.schema.json#/$defs/…` next to the schema), `title`,
 * `description`, `$comment`, `type` (string or list; `integer` is a whole
 * number), `properties`, `required`, `additionalProperties` (boolean or
 * schema), `items`, `prefixItems`, `minItems`, `maxItems`, `enum`, `const`,
 * `anyOf`, `oneOf`, `minimum`, `maximum`, `pattern`.
 *
 * @module
 */

/** A schema document or subschema. */
export type Schema = boolean | { [keyword: string]: unknown };

const KNOWN = new Set([
  "$schema",
  "$id",
  "$defs",
  "$ref",
  "$comment",
  "title",
  "description",
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "minimum",
  "maximum",
  "pattern",
]);

/** Loads the schema a `$ref` names by file name. */
export type SchemaLoader = (file: string) => Schema;

/** Schemas from the repository's `schemas/` folder, read once. */
export function schemaFolderLoader(dir: URL): SchemaLoader {
  const cache = new Map<string, Schema>();
  return (file) => {
    let s = cache.get(file);
    if (s === undefined) {
      s = JSON.parse(Deno.readTextFileSync(new URL(file, dir))) as Schema;
      cache.set(file, s);
    }
    return s;
  };
}

/**
 * Validate `value` against the schema in `file`.
 *
 * @param value The JSON value.
 * @param file The schema's file name (loaded through `load`).
 * @param load The loader for `file` and the files `$ref`s name.
 * @returns The violations as `path: problem` lines; empty when valid.
 * @throws {Error} when a schema uses a keyword this validator does not know.
 */
export function validate(value: unknown, file: string, load: SchemaLoader): string[] {
  const errors: string[] = [];
  check(value, load(file), { file, load }, "$", errors);
  return errors;
}

interface Context {
  file: string;
  load: SchemaLoader;
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function matchesType(v: unknown, type: string): boolean {
  const t = typeOf(v);
  return t === type || (type === "number" && t === "integer");
}

function resolve(ref: string, ctx: Context): { schema: Schema; ctx: Context } {
  const [file, pointer = ""] = ref.split("#", 2) as [string, string?];
  const target = file === "" ? ctx : { file, load: ctx.load };
  let node: unknown = target.load(target.file);
  for (const part of pointer.split("/").filter((p) => p !== "")) {
    node = (node as Record<string, unknown>)[part.replace(/~1/g, "/").replace(/~0/g, "~")];
    if (node === undefined) throw new Error(`Schema error: ${ref} does not resolve`);
  }
  return { schema: node as Schema, ctx: target };
}

function check(v: unknown, schema: Schema, ctx: Context, path: string, errors: string[]): void {
  if (schema === true) return;
  if (schema === false) {
    errors.push(`${path}: not allowed`);
    return;
  }
  for (const k of Object.keys(schema)) {
    if (!KNOWN.has(k)) throw new Error(`Schema error: unsupported keyword ${k} in ${ctx.file}`);
  }
  const s = schema as Record<string, unknown>;
  if (typeof s.$ref === "string") {
    const r = resolve(s.$ref, ctx);
    check(v, r.schema, r.ctx, path, errors);
  }
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type as string[] : [s.type as string];
    if (!types.some((t) => matchesType(v, t))) {
      errors.push(`${path}: ${typeOf(v)}, expected ${types.join(" or ")}`);
      return;
    }
  }
  if ("const" in s && JSON.stringify(v) !== JSON.stringify(s.const)) {
    errors.push(`${path}: ${JSON.stringify(v)}, expected ${JSON.stringify(s.const)}`);
  }
  if (Array.isArray(s.enum) && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) {
    errors.push(`${path}: ${JSON.stringify(v)} is not one of ${JSON.stringify(s.enum)}`);
  }
  if (typeof v === "number") {
    if (typeof s.minimum === "number" && v < s.minimum) errors.push(`${path}: below ${s.minimum}`);
    if (typeof s.maximum === "number" && v > s.maximum) errors.push(`${path}: above ${s.maximum}`);
  }
  if (typeof v === "string" && typeof s.pattern === "string" && !new RegExp(s.pattern).test(v)) {
    errors.push(`${path}: ${JSON.stringify(v)} does not match ${s.pattern}`);
  }
  if (Array.isArray(v)) {
    if (typeof s.minItems === "number" && v.length < s.minItems) {
      errors.push(`${path}: fewer than ${s.minItems} items`);
    }
    if (typeof s.maxItems === "number" && v.length > s.maxItems) {
      errors.push(`${path}: more than ${s.maxItems} items`);
    }
    const prefix = Array.isArray(s.prefixItems) ? s.prefixItems as Schema[] : [];
    v.forEach((item, i) => {
      const sub = i < prefix.length ? prefix[i] : s.items as Schema | undefined;
      if (sub !== undefined) check(item, sub, ctx, `${path}[${i}]`, errors);
    });
  }
  if (typeOf(v) === "object") {
    const o = v as Record<string, unknown>;
    const props = (s.properties ?? {}) as Record<string, Schema>;
    for (const r of (s.required ?? []) as string[]) {
      if (!(r in o)) errors.push(`${path}: missing ${r}`);
    }
    for (const [k, item] of Object.entries(o)) {
      if (k in props) check(item, props[k]!, ctx, `${path}.${k}`, errors);
      else if (s.additionalProperties !== undefined) {
        check(item, s.additionalProperties as Schema, ctx, `${path}.${k}`, errors);
      }
    }
  }
  if (Array.isArray(s.anyOf)) {
    const ok = (s.anyOf as Schema[]).some((sub) => {
      const e: string[] = [];
      check(v, sub, ctx, path, e);
      return e.length === 0;
    });
    if (!ok) errors.push(`${path}: matches none of anyOf`);
  }
  if (Array.isArray(s.oneOf)) {
    const results = (s.oneOf as Schema[]).map((sub) => {
      const e: string[] = [];
      check(v, sub, ctx, path, e);
      return e;
    });
    const n = results.filter((e) => e.length === 0).length;
    if (n !== 1) {
      errors.push(
        `${path}: matches ${n} of oneOf` +
          (n === 0 ? ` (${results.map((e) => e[0]).join(" | ")})` : ""),
      );
    }
  }
}
