/**
 * The debug vmlinux of the real fixtures' guest kernel, which the `crash`
 * utility needs to open a dump (tests/elf/crash_test.ts).
 *
 * `scripts/fetch-vmlinux-dbg.sh` (run as root by `scripts/install-deps.sh`)
 * puts it at `/var/cache/vmemdbg/usr/lib/debug/boot/vmlinux-<abi>`, taken
 * from Debian's `linux-image-<abi>-dbg` package of exactly the version named
 * in the fixtures' `manifest.json`. Lookup order:
 * 1. `VMEM_VMLINUX` (a path to a vmlinux);
 * 2. `$VMEMDBG_CACHE` (default `/var/cache/vmemdbg`)`/usr/lib/debug/boot/vmlinux-<abi>`;
 * 3. `/usr/lib/debug/boot/vmlinux-<abi>` (the `-dbg` package installed with dpkg).
 *
 * Policy as for tools (tests/_util/tools.ts): outside CI a missing vmlinux
 * skips the test with a loud message; in CI the test runs and fails.
 *
 * @example
 * ```ts ignore
 * import { requireVmlinux, vmlinuxAvailable } from "../_util/vmlinux.ts";
 * Deno.test({
 *   name: "crash reads the stripped dump",
 *   ignore: !vmlinuxAvailable(),
 *   fn: async () => {
 *     const vmlinux = requireVmlinux();
 *     // crash -s <vmlinux> dump.elf -i cmds
 *   },
 * });
 * ```
 *
 * @module
 */

import { envGet, inCi } from "./tools.ts";
import { type RealdataSet, realdataSharedDir } from "./realdata.ts";

const DEFAULT_CACHE = "/var/cache/vmemdbg";

/** The guest kernel of a fixture set, as its manifest records it. */
export interface GuestKernel {
  /** Kernel ABI name (`uname -r`), e.g. `"6.1.0-56-amd64"`. */
  abi: string;
  /** Debian package version, e.g. `"6.1.192-2"`; `undefined` when not recorded. */
  version: string | undefined;
}

function isNonEmptyFile(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && st.size > 0;
  } catch {
    return false;
  }
}

/**
 * The guest kernel the fixtures of `set` booted, from its `manifest.json`
 * (`"kernel": "vmlinuz-<abi>"`, `"linux-image-<abi>=<version>"`).
 *
 * @param set Fixture set. @default {"out-small"}
 * @returns ABI name and package version.
 * @throws {Error} When the manifest is missing or names no kernel.
 * @example
 * ```ts ignore
 * const { abi, version } = fixtureGuestKernel(); // "6.1.0-56-amd64", "6.1.192-2"
 * ```
 */
export function fixtureGuestKernel(set: RealdataSet = "out-small"): GuestKernel {
  const path = `${realdataSharedDir(set)}/manifest.json`;
  const manifest = JSON.parse(Deno.readTextFileSync(path));
  const kernel = manifest?.kernel;
  const m = typeof kernel === "string" ? /^vmlinuz-(\S+)$/.exec(kernel) : null;
  if (!m) throw new Error(`${path} names no guest kernel ("kernel": "vmlinuz-<abi>")`);
  const abi = m[1]!;
  const pkgs: unknown[] = Array.isArray(manifest.debian_packages) ? manifest.debian_packages : [];
  const entry = pkgs.find((p): p is string =>
    typeof p === "string" && p.startsWith(`linux-image-${abi}=`)
  );
  return { abi, version: entry?.slice(`linux-image-${abi}=`.length) };
}

/**
 * Where the debug vmlinux of `abi` is looked for, in order.
 *
 * @param abi Kernel ABI name.
 * @returns Candidate paths.
 * @example
 * ```ts
 * import { vmlinuxCandidates } from "./vmlinux.ts";
 * console.log(vmlinuxCandidates("6.1.0-56-amd64"));
 * ```
 */
export function vmlinuxCandidates(abi: string): string[] {
  const out: string[] = [];
  const explicit = envGet("VMEM_VMLINUX");
  if (explicit) out.push(explicit);
  const cache = envGet("VMEMDBG_CACHE") || DEFAULT_CACHE;
  out.push(`${cache}/usr/lib/debug/boot/vmlinux-${abi}`);
  out.push(`/usr/lib/debug/boot/vmlinux-${abi}`);
  return out;
}

/**
 * The debug vmlinux of a fixture set's guest kernel, or `undefined`.
 * `VMEM_VMLINUX`, when set, is the only candidate that counts if it exists.
 *
 * @param set Fixture set. @default {"out-small"}
 * @returns An existing path, or `undefined` (also when the manifest is missing).
 * @example
 * ```ts ignore
 * const vmlinux = findVmlinux();
 * ```
 */
export function findVmlinux(set: RealdataSet = "out-small"): string | undefined {
  let abi: string;
  try {
    abi = fixtureGuestKernel(set).abi;
  } catch {
    return undefined;
  }
  return vmlinuxCandidates(abi).find(isNonEmptyFile);
}

function missingMessage(set: RealdataSet): string {
  let kernel: GuestKernel | undefined;
  let why: string;
  try {
    kernel = fixtureGuestKernel(set);
    why = `no debug vmlinux of the fixtures' guest kernel ${kernel.abi} ` +
      `(linux-image-${kernel.abi}-dbg ${kernel.version ?? "?"}) in ` +
      vmlinuxCandidates(kernel.abi).join(", ");
  } catch (e) {
    why = `cannot tell the fixtures' guest kernel: ${(e as Error).message}`;
  }
  const cache = envGet("VMEMDBG_CACHE") || DEFAULT_CACHE;
  let note = "";
  if (kernel) {
    try {
      note = "\nscripts/fetch-vmlinux-dbg.sh failed: " +
        Deno.readTextFileSync(`${cache}/FAILED-vmlinux-${kernel.abi}.txt`).trim();
    } catch { /* it did not run or did not fail */ }
  }
  return `${why}. Run as root: sh scripts/fetch-vmlinux-dbg.sh ` +
    `(scripts/install-deps.sh does it), or set VMEM_VMLINUX.${note}`;
}

const warned = new Set<string>();

/**
 * Synchronous check for `Deno.test({ ignore: !vmlinuxAvailable() })`.
 * Outside CI: `false` (with a loud warning once) when the vmlinux is missing.
 * In CI: always `true`, so the test runs and {@linkcode requireVmlinux} fails it.
 *
 * @param set Fixture set. @default {"out-small"}
 * @returns Whether the test may run.
 * @example
 * ```ts ignore
 * Deno.test({ name: "x", ignore: !vmlinuxAvailable(), fn: () => {} });
 * ```
 */
export function vmlinuxAvailable(set: RealdataSet = "out-small"): boolean {
  if (inCi()) return true;
  if (findVmlinux(set) !== undefined) return true;
  if (!warned.has(set)) {
    warned.add(set);
    console.warn(
      `\n!!! SKIPPING tests that need the guest kernel's debug vmlinux: ${
        missingMessage(set)
      } (in CI they would FAIL)\n`,
    );
  }
  return false;
}

/**
 * Path of the debug vmlinux; throws (failing the test) with the reason when
 * it is missing, including why `scripts/fetch-vmlinux-dbg.sh` failed.
 *
 * @param set Fixture set. @default {"out-small"}
 * @returns The absolute path.
 * @throws {Error} When no vmlinux is found.
 * @example
 * ```ts ignore
 * const vmlinux = requireVmlinux();
 * ```
 */
export function requireVmlinux(set: RealdataSet = "out-small"): string {
  const path = findVmlinux(set);
  if (path === undefined) {
    throw new Error(
      `Required debug vmlinux missing: ${missingMessage(set)}` +
        (inCi() ? " (CI must not skip)" : ""),
    );
  }
  return path;
}
