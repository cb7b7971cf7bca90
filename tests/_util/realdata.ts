/**
 * Real QEMU fixtures for tests: unpacks the read-only archives in
 * `shared/realdata/<set>/fixtures.tar.zst` (beside the checkout) once into
 * `<repo>/.cache/realdata/<set>/` and hands out verified file paths.
 *
 * Sets:
 * - `out-small`: QEMU 7.2, small profile, ELF dumps with VMCOREINFO (2.3 GB unpacked).
 * - `out-q10`: QEMU 10.0, small profile, early virtio-mem migration layout (2.3 GB unpacked).
 * - `out`: QEMU 7.2, default profile (6.7 GB unpacked). Only used when `VMEM_FULL=1`.
 *
 * The shared folder is found at `<repo>/../shared/realdata/`, or through the
 * environment variable `VMEM_SHARED` (the `shared` folder or its `realdata`
 * subfolder).
 *
 * @module
 */

import { sha256File } from "./hashing.ts";
import { existsSync, withCacheLock } from "./lock.ts";
import { envGet, inCi } from "./tools.ts";

export { sha256File };

/** Names of the real fixture sets. */
export type RealdataSet = "out-small" | "out-q10" | "out";

/** Every known set, smallest first. */
export const REALDATA_SETS: readonly RealdataSet[] = ["out-small", "out-q10", "out"];

/** Scenario names inside each set (file stems before `.mig`, `.elf`, `.vmem0.raw`, `.qmp.json`). */
export const REALDATA_SCENARIOS: Readonly<Record<RealdataSet, readonly string[]>> = {
  "out-small": ["s0-unplugged", "s1-plugged-200M", "s2-holes-100M", "s3-malicious"],
  "out-q10": ["s0-unplugged", "s1-plugged-200M", "s2-holes-100M", "s3-malicious"],
  "out": ["s0-unplugged", "s1-plugged-300M", "s2-holes-148M", "s3-malicious"],
};

const REPO_ROOT = new URL("../../", import.meta.url);
const CACHE_ROOT = new URL(".cache/realdata/", REPO_ROOT);
const COMPLETE_MARKER = ".complete";
const VERIFIED_DIR = ".verified";

function pathOf(url: URL): string {
  return decodeURIComponent(url.pathname);
}

/**
 * The folder holding `<set>/fixtures.tar.zst`, i.e. `shared/realdata`.
 *
 * @returns An absolute path without a trailing slash.
 * @example
 * ```ts ignore
 * console.log(realdataSharedRoot()); // "/work/shared/realdata"
 * ```
 */
export function realdataSharedRoot(): string {
  const override = envGet("VMEM_SHARED");
  if (override) {
    const base = override.replace(/\/+$/, "");
    return existsSync(`${base}/realdata`) ? `${base}/realdata` : base;
  }
  return pathOf(new URL("../shared/realdata", REPO_ROOT));
}

/**
 * The folder of one set inside the shared folder (archive, manifest, analysis, QMP records).
 *
 * @param set Fixture set.
 * @returns An absolute path.
 * @example
 * ```ts ignore
 * const manifest = `${realdataSharedDir("out-q10")}/manifest.json`;
 * ```
 */
export function realdataSharedDir(set: RealdataSet): string {
  return `${realdataSharedRoot()}/${set}`;
}

/**
 * The folder a set is unpacked into: `<repo>/.cache/realdata/<set>`.
 *
 * @param set Fixture set.
 * @returns An absolute path.
 * @example
 * ```ts ignore
 * console.log(realdataCacheDir("out-small"));
 * ```
 */
export function realdataCacheDir(set: RealdataSet): string {
  return pathOf(new URL(set, CACHE_ROOT));
}

/** Whether `VMEM_FULL=1` asks for the 6.7 GB `out` set. */
export function fullRealdataEnabled(): boolean {
  return envGet("VMEM_FULL") === "1";
}

/** Whether the tests run in CI (`CI=true` or `CI=1`). */
export const isCi: () => boolean = inCi;

/**
 * Synchronous check for `Deno.test({ ignore })`: can this set be used here?
 *
 * - `out` needs `VMEM_FULL=1` and its archive.
 * - `out-small` and `out-q10` need their archive; in CI they are never
 *   ignored (a missing archive then fails the test in {@linkcode realdata}).
 *
 * @param set Fixture set.
 * @returns `true` when tests using the set should run.
 * @example
 * ```ts ignore
 * Deno.test({ name: "x", ignore: !realdataAvailable("out-q10"), fn: async () => {} });
 * ```
 */
export function realdataAvailable(set: RealdataSet): boolean {
  if (set === "out") {
    return fullRealdataEnabled() &&
      (existsSync(`${realdataCacheDir(set)}/${COMPLETE_MARKER}`) ||
        existsSync(`${realdataSharedDir(set)}/fixtures.tar.zst`));
  }
  if (isCi()) return true;
  const ok = existsSync(`${realdataCacheDir(set)}/${COMPLETE_MARKER}`) ||
    existsSync(`${realdataSharedDir(set)}/fixtures.tar.zst`);
  if (!ok) {
    console.warn(
      `SKIPPING real-data tests of ${set}: no ${realdataSharedDir(set)}/fixtures.tar.zst ` +
        `(set VMEM_SHARED to the shared folder)`,
    );
  }
  return ok;
}

// ---------------------------------------------------------------- unpacking

const unpacking = new Map<RealdataSet, Promise<string>>();
const verified = new Map<string, Promise<void>>();

async function unpackSet(set: RealdataSet): Promise<string> {
  const dir = realdataCacheDir(set);
  const marker = `${dir}/${COMPLETE_MARKER}`;
  if (existsSync(marker)) return dir;
  const archive = `${realdataSharedDir(set)}/fixtures.tar.zst`;
  if (!existsSync(archive)) {
    throw new Error(
      `Real fixture archive missing: ${archive} (set VMEM_SHARED to the shared folder)`,
    );
  }
  Deno.mkdirSync(pathOf(CACHE_ROOT), { recursive: true });
  await withCacheLock(`${dir}.lock`, () => existsSync(marker), async () => {
    // leftovers of an interrupted unpack (we hold the lock, so nobody is using them)
    for (const e of Deno.readDirSync(pathOf(CACHE_ROOT))) {
      if (e.name.startsWith(`${set}.tmp-`)) {
        Deno.removeSync(`${pathOf(CACHE_ROOT)}${e.name}`, { recursive: true });
      }
    }
    // unpack into a private folder, then rename: a half-unpacked set is never visible
    const tmp = `${dir}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    Deno.mkdirSync(tmp, { recursive: true });
    try {
      const t0 = performance.now();
      const out = await new Deno.Command("bash", {
        args: [
          "-c",
          'set -o pipefail; zstd -q -d --long=30 -c -- "$1" | tar -xf - -C "$2"',
          "unpack",
          archive,
          tmp,
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        throw new Error(
          `Cannot unpack ${archive}: ${new TextDecoder().decode(out.stderr).trim()}` +
            " (is zstd installed?)",
        );
      }
      Deno.writeTextFileSync(
        `${tmp}/${COMPLETE_MARKER}`,
        JSON.stringify({ archive, seconds: (performance.now() - t0) / 1000 }) + "\n",
      );
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* not there */ }
      Deno.renameSync(tmp, dir);
    } catch (e) {
      try {
        Deno.removeSync(tmp, { recursive: true });
      } catch { /* best effort */ }
      throw e;
    }
  });
  return dir;
}

/**
 * Unpack a whole set (once, shared by all test processes) and return its folder.
 *
 * @param set Fixture set.
 * @returns The absolute path of `<repo>/.cache/realdata/<set>`.
 * @throws {Error} When the archive is missing or zstd/tar fail.
 * @example
 * ```ts ignore
 * const dir = await realdataDir("out-q10");
 * ```
 */
export function realdataDir(set: RealdataSet): Promise<string> {
  if (set === "out" && !fullRealdataEnabled()) {
    return Promise.reject(new Error("The 6.7 GB set `out` is used only with VMEM_FULL=1"));
  }
  let p = unpacking.get(set);
  if (!p) {
    p = unpackSet(set);
    unpacking.set(set, p);
    p.catch(() => unpacking.delete(set));
  }
  return p;
}

function expectedSha256(set: RealdataSet, file: string): string | undefined {
  const sums = Deno.readTextFileSync(`${realdataSharedDir(set)}/SHA256SUMS.payload`);
  for (const line of sums.split("\n")) {
    const m = /^([0-9a-f]{64})\s+\*?(.+)$/.exec(line.trim());
    if (m && m[2] === file) return m[1];
  }
  return undefined;
}

async function verifyFile(set: RealdataSet, dir: string, file: string): Promise<void> {
  const want = expectedSha256(set, file);
  if (want === undefined) return; // not a payload file: nothing to check
  const stamp = `${dir}/${VERIFIED_DIR}/${file}`;
  try {
    if (Deno.readTextFileSync(stamp).trim() === want) return;
  } catch { /* not verified yet */ }
  const got = await sha256File(`${dir}/${file}`);
  if (got !== want) {
    throw new Error(`Real fixture ${set}/${file} is corrupt: sha256 ${got}, expected ${want}`);
  }
  Deno.mkdirSync(`${dir}/${VERIFIED_DIR}`, { recursive: true });
  const tmp = `${stamp}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  Deno.writeTextFileSync(tmp, want + "\n");
  Deno.renameSync(tmp, stamp);
}

/**
 * Path of one unpacked, checksum-verified real fixture file.
 *
 * The set is unpacked on first use (a cross-process lock keeps parallel test
 * files from unpacking twice); the file is checked against
 * `SHA256SUMS.payload` once and the result remembered in `.verified/`.
 * Small files that live beside the archive (`manifest.json`, `*.qmp.json`,
 * `analysis.json` …) are returned from the shared folder directly.
 *
 * @param set Fixture set: `out-small`, `out-q10`, or `out` (only with `VMEM_FULL=1`).
 * @param file File name, e.g. `"s3-malicious.mig"`.
 * @returns Absolute path of the file (read-only use).
 * @throws {Error} When the archive or the file is missing, or the checksum differs.
 * @example
 * ```ts ignore
 * const mig = await realdata("out-q10", "s3-malicious.mig");
 * using f = await Deno.open(mig);
 * ```
 */
export async function realdata(set: RealdataSet, file: string): Promise<string> {
  if (file.includes("/") || file.startsWith(".")) {
    throw new TypeError(`Not a fixture file name: ${file}`);
  }
  if (!/\.(mig|elf|raw)$/.test(file)) {
    const side = `${realdataSharedDir(set)}/${file}`;
    if (existsSync(side)) return side;
  }
  const dir = await realdataDir(set);
  const path = `${dir}/${file}`;
  if (!existsSync(path)) throw new Error(`No real fixture ${set}/${file} in ${dir}`);
  const key = `${set}/${file}`;
  let v = verified.get(key);
  if (!v) {
    v = verifyFile(set, dir, file);
    verified.set(key, v);
    v.catch(() => verified.delete(key));
  }
  await v;
  return path;
}

/** Parsed small files of a set: what the producer recorded about each scenario. */
export interface RealdataFacts {
  /** The set. */
  set: RealdataSet;
  /** Folder in `shared/realdata` with the small files. */
  sharedDir: string;
  /** `manifest.json`: QEMU version, command line, virtio-mem properties, EVIL writes. */
  // deno-lint-ignore no-explicit-any
  manifest: any;
  /** `analysis.json`: the producer's own stream/ELF analysis per scenario. */
  // deno-lint-ignore no-explicit-any
  analysis: any;
  /** `<scenario>.qmp.json` keyed by scenario name (e.g. `"s3-malicious"`). */
  // deno-lint-ignore no-explicit-any
  qmp: Record<string, any>;
  /** Scenario names, in order. */
  scenarios: readonly string[];
  /** `SHA256SUMS.payload` as a map from file name to hex digest. */
  sha256: Record<string, string>;
}

const factsCache = new Map<RealdataSet, RealdataFacts>();

/**
 * Parsed `manifest.json`, `analysis.json`, `*.qmp.json` and payload checksums of a set.
 * These small files sit beside the archive, so no unpacking happens.
 *
 * @param set Fixture set.
 * @returns The parsed facts (cached; treat as read-only).
 * @example
 * ```ts ignore
 * const facts = realdataFacts("out-q10");
 * const evil = facts.manifest.malicious_writes.during_migration;
 * ```
 */
export function realdataFacts(set: RealdataSet): RealdataFacts {
  const cached = factsCache.get(set);
  if (cached) return cached;
  const sharedDir = realdataSharedDir(set);
  const readJson = (name: string) => JSON.parse(Deno.readTextFileSync(`${sharedDir}/${name}`));
  const scenarios = REALDATA_SCENARIOS[set];
  const qmp: Record<string, unknown> = {};
  for (const s of scenarios) qmp[s] = readJson(`${s}.qmp.json`);
  const sha256: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`${sharedDir}/SHA256SUMS.payload`).split("\n")) {
    const m = /^([0-9a-f]{64})\s+\*?(.+)$/.exec(line.trim());
    if (m) sha256[m[2]!] = m[1]!;
  }
  const facts: RealdataFacts = {
    set,
    sharedDir,
    manifest: readJson("manifest.json"),
    analysis: readJson("analysis.json"),
    qmp,
    scenarios,
    sha256,
  };
  factsCache.set(set, facts);
  return facts;
}
