/**
 * The architecture's import rules, checked on every module under src/
 * (static imports, re-exports, dynamic `import()` and `new URL(…,
 * import.meta.url)` worker modules; JSDoc examples are comments and do not
 * count):
 *
 * - shared floors: `src/errors.ts` and `src/version.ts` import nothing from
 *   src/; `src/io` imports only itself and `src/errors.ts`; `src/vmem` only
 *   itself and `src/io`, `src/errors.ts`: it knows no file format;
 * - formats (`src/migration`, `src/elf`, `src/kdump`, `src/container`,
 *   `src/raw`) import only themselves and the shared floors, never another
 *   format and never a floor above;
 * - the floors above the formats (`src/dumps`, `src/scan`, `src/proxy`,
 *   `src/input`) may import formats, shared floors and each other;
 * - a private module (`_name.ts`) is imported only from inside its own
 *   top-level folder;
 * - nothing in src/ imports cli/, tests/ or bench/;
 * - every folder and top-level file of src/ is in one of these lists, so a
 *   new one must be placed before it can be used.
 */

import assert from "node:assert/strict";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);

/** Shared floors, below the formats (folders, or single files ending in `.ts`). */
const SHARED = ["errors.ts", "version.ts", "io", "vmem"] as const;
/** Format folders: each knows one family of formats. */
const FORMATS = ["migration", "elf", "kdump", "container", "raw"] as const;
/** Floors above the formats: they combine formats for a job. */
const ABOVE = ["dumps", "scan", "proxy", "input"] as const;

/** What each shared floor may import besides itself. */
const SHARED_ALLOWED: Record<(typeof SHARED)[number], readonly string[]> = {
  "errors.ts": [],
  "version.ts": [],
  io: ["errors.ts"],
  vmem: ["io", "errors.ts"],
};

type Layer = "shared" | "format" | "above";

function layerOf(unit: string): Layer | undefined {
  if ((SHARED as readonly string[]).includes(unit)) return "shared";
  if ((FORMATS as readonly string[]).includes(unit)) return "format";
  if ((ABOVE as readonly string[]).includes(unit)) return "above";
  return undefined;
}

/** `src/<unit>/…` → unit (a folder name, or a top-level file name). */
function unitOf(srcRelative: string): string {
  const slash = srcRelative.indexOf("/");
  return slash < 0 ? srcRelative : srcRelative.slice(0, slash);
}

function listTs(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const rel = prefix + e.name;
    if (e.isDirectory) out.push(...listTs(`${dir}/${e.name}`, `${rel}/`));
    else if (e.name.endsWith(".ts")) out.push(rel);
  }
  return out.sort();
}

/**
 * The source with comments blanked (strings kept), so that examples in
 * JSDoc blocks are not taken for imports.
 */
function stripComments(source: string): string {
  let out = "";
  let i = 0;
  const n = source.length;
  while (i < n) {
    const c = source[i]!;
    const next = source[i + 1];
    if (c === "/" && next === "/") {
      while (i < n && source[i] !== "\n") i++;
      continue;
    }
    if (c === "/" && next === "*") {
      const end = source.indexOf("*/", i + 2);
      const stop = end < 0 ? n : end + 2;
      out += source.slice(i, stop).replace(/[^\n]/g, " ");
      i = stop;
      continue;
    }
    if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < n && source[j] !== c) j += source[j] === "\\" ? 2 : 1;
      out += source.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

/** Every module specifier a source file loads. */
function specifiersOf(source: string): string[] {
  const code = stripComments(source);
  const found: string[] = [];
  const patterns = [
    /\bfrom\s*["']([^"']+)["']/g,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
    /\bnew\s+URL\(\s*["']([^"']+)["']\s*,\s*import\.meta\.url/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) found.push(m[1]!);
  return found;
}

/** Where a specifier in `fromFile` (repo-relative) points, repo-relative; `undefined` for a package. */
function resolve(fromFile: string, specifier: string): string | undefined {
  if (!specifier.startsWith(".")) return undefined;
  const url = new URL(specifier, `file:///${fromFile}`);
  return decodeURIComponent(url.pathname.slice(1));
}

/**
 * The rule that importing `specifier` from `file` (both repo-relative)
 * breaks, `"unplaced"` when a folder is in none of the lists, or `undefined`.
 */
function brokenRule(file: string, specifier: string): string | undefined {
  const target = resolve(file, specifier);
  if (target === undefined) return undefined; // node:, npm: and other packages
  if (!target.startsWith("src/")) return "src/ imports nothing outside src/";
  const unit = unitOf(file.slice(4));
  const targetUnit = unitOf(target.slice(4));
  const layer = layerOf(unit);
  const targetLayer = layerOf(targetUnit);
  if (layer === undefined || targetLayer === undefined) return "unplaced";
  const base = target.slice(target.lastIndexOf("/") + 1);
  if (base.startsWith("_") && targetUnit !== unit) {
    return `a private module is imported only from inside src/${targetUnit}`;
  }
  if (targetUnit === unit) return undefined;
  if (layer === "shared") {
    const allowed = SHARED_ALLOWED[unit as (typeof SHARED)[number]];
    if (allowed.includes(targetUnit)) return undefined;
    return unit === "vmem"
      ? "src/vmem knows no file format: it imports only src/io and src/errors.ts"
      : `src/${unit} imports only ${allowed.map((a) => `src/${a}`).join(", ") || "itself"}`;
  }
  if (layer === "format") {
    if (targetLayer === "format") return "a format folder never imports another format folder";
    if (targetLayer === "above") return "a format folder never imports a floor above it";
  }
  return undefined;
}

/** Every import under src/ that breaks a rule, the folders no list places, and the imports seen. */
function check(): { violations: string[]; unplaced: string[]; imports: number } {
  const violations: string[] = [];
  const unplaced = new Set<string>();
  let imports = 0;
  for (const rel of listTs(`${ROOT}src`)) {
    const file = `src/${rel}`;
    if (layerOf(unitOf(rel)) === undefined) unplaced.add(unitOf(rel));
    for (const specifier of specifiersOf(Deno.readTextFileSync(`${ROOT}${file}`))) {
      imports++;
      const rule = brokenRule(file, specifier);
      if (rule === "unplaced") unplaced.add(unitOf(resolve(file, specifier)!.slice(4)));
      else if (rule !== undefined) violations.push(`${file} imports ${specifier}: ${rule}`);
    }
  }
  return { violations, unplaced: [...unplaced], imports };
}

Deno.test("src/ follows the import rules: vmem knows no format, formats never import each other", () => {
  const { violations, unplaced, imports } = check();
  assert.ok(imports > 300, `only ${imports} imports found: the scanner is broken`);
  assert.deepEqual(
    unplaced,
    [],
    "every folder of src/ is listed as a shared floor, a format or a floor above the formats",
  );
  assert.deepEqual(violations, []);
});

Deno.test("the import scanner sees every kind of import and skips comments", () => {
  const source = [
    '/** @example\n * import { x } from "../elf/mod.ts";\n */',
    'import { a } from "./a.ts";',
    'import type { B } from "../io/b.ts";',
    'export * from "./c.ts";',
    'export { d } from "./d.ts";',
    'import "./side.ts";',
    'const m = await import("../kdump/m.ts");',
    'new Worker(new URL("./_w.ts", import.meta.url).href);',
    '// import { y } from "../raw/y.ts";',
    'const s = "// not a comment"; import { z } from "./z.ts";',
  ].join("\n");
  assert.deepEqual(specifiersOf(source).sort(), [
    "../io/b.ts",
    "../kdump/m.ts",
    "./_w.ts",
    "./a.ts",
    "./c.ts",
    "./d.ts",
    "./side.ts",
    "./z.ts",
  ]);
});

Deno.test("the import rules fail on a format importing another format and vmem importing a format", () => {
  const cases: [string, string, boolean][] = [
    ["src/vmem/x.ts", "../migration/types.ts", false],
    ["src/vmem/x.ts", "../container/open.ts", false],
    ["src/vmem/x.ts", "../input/mod.ts", false],
    ["src/vmem/x.ts", "../io/bits.ts", true],
    ["src/vmem/x.ts", "../errors.ts", true],
    ["src/elf/x.ts", "../kdump/header.ts", false],
    ["src/container/x.ts", "../migration/types.ts", false],
    ["src/elf/x.ts", "../vmem/ranges.ts", true],
    ["src/migration/mapped_ram/x.ts", "../../scan/findings.ts", false],
    ["src/migration/mapped_ram/x.ts", "../_parser.ts", true],
    ["src/io/x.ts", "../vmem/plug_map.ts", false],
    ["src/errors.ts", "./io/text.ts", false],
    ["src/scan/x.ts", "../migration/_plug_state_collector.ts", false],
    ["src/scan/x.ts", "../migration/types.ts", true],
    ["src/input/x.ts", "../dumps/detect.ts", true],
    ["src/input/x.ts", "../../cli/main.ts", false],
    ["src/elf/x.ts", "node:fs", true],
  ];
  for (const [file, specifier, ok] of cases) {
    assert.equal(brokenRule(file, specifier) === undefined, ok, `${file} → ${specifier}`);
  }
  assert.equal(brokenRule("src/newfolder/x.ts", "../io/bits.ts"), "unplaced");
});
