/**
 * The debug vmlinux of the kernel the Linux test guest boots (the kernel
 * installed on this machine), which `crash` and drgn need to open a dump of
 * that guest. Dumps to open with it come from `kernel_dumps.ts`, made in the
 * test from the same kernel; the shared fixtures' kernel is never needed, so
 * no test depends on a package version the archive may drop.
 *
 * `scripts/fetch-vmlinux-dbg.sh` (run as root by `scripts/install-deps.sh`)
 * puts it at `/var/cache/vmemdbg/usr/lib/debug/boot/vmlinux-<abi>`, taken
 * from Debian's `linux-image-<abi>-dbg` of exactly the installed
 * `linux-image-<abi>` version (a stamp file records that version). Lookup
 * order:
 * 1. `VMEM_VMLINUX` (a path to a vmlinux; the only candidate when set);
 * 2. `$VMEMDBG_CACHE` (default `/var/cache/vmemdbg`)`/usr/lib/debug/boot/vmlinux-<abi>`
 *    when its stamp names the installed package version;
 * 3. `/usr/lib/debug/boot/vmlinux-<abi>` (the `-dbg` package installed with dpkg).
 *
 * Policy as for tools (tests/_util/tools.ts): outside CI a missing vmlinux
 * skips the test with a loud message; in CI the test runs and fails.
 *
 * Deprecated: passing a fixture set (`requireVmlinux("out-small")`) still
 * looks for the vmlinux of that set's kernel, but nothing fetches it any
 * more; move such tests onto `kernel_dumps.ts`.
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

import { kernelWithVirtioMem } from "./guest.ts";
import { type RealdataSet, realdataSharedDir } from "./realdata.ts";
import { envGet, inCi } from "./tools.ts";

const DEFAULT_CACHE = "/var/cache/vmemdbg";

/** A guest kernel: ABI name and Debian package version. */
export interface GuestKernel {
  /** Kernel ABI name (`uname -r`), e.g. `"6.1.0-57-amd64"`. */
  abi: string;
  /** Debian package version of `linux-image-<abi>`, e.g. `"6.1.192-3"`; `undefined` when unknown. */
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

function cacheDir(): string {
  return envGet("VMEMDBG_CACHE") || DEFAULT_CACHE;
}

function packageVersion(pkg: string): string | undefined {
  try {
    const out = new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Version}", pkg],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    const v = new TextDecoder().decode(out.stdout).trim();
    return out.success && v !== "" ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The kernel the Linux test guest boots: the newest installed kernel with a
 * virtio_mem module (`kernelWithVirtioMem()` in `guest.ts`) and its package
 * version.
 *
 * @returns ABI and version.
 * @throws {Error} When no such kernel is installed.
 * @example
 * ```ts ignore
 * const { abi, version } = installedGuestKernel(); // "6.1.0-57-amd64", "6.1.192-3"
 * ```
 */
export function installedGuestKernel(): GuestKernel {
  const abi = kernelWithVirtioMem().version;
  return { abi, version: packageVersion(`linux-image-${abi}`) };
}

/**
 * The guest kernel the shared fixtures of `set` booted, from its
 * `manifest.json` (`"kernel": "vmlinuz-<abi>"`, `"linux-image-<abi>=<version>"`).
 * Informational: no test needs that kernel's debug package (it disappears
 * from the archive once a newer kernel is published).
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
 * console.log(vmlinuxCandidates("6.1.0-57-amd64"));
 * ```
 */
export function vmlinuxCandidates(abi: string): string[] {
  const explicit = envGet("VMEM_VMLINUX");
  if (explicit) return [explicit];
  return [`${cacheDir()}/usr/lib/debug/boot/vmlinux-${abi}`, `/usr/lib/debug/boot/vmlinux-${abi}`];
}

/** A cached copy counts only when its stamp names the package version it must match. */
function stampMatches(path: string, kernel: GuestKernel): boolean {
  const cached = `${cacheDir()}/usr/lib/debug/boot/vmlinux-${kernel.abi}`;
  if (path !== cached || kernel.version === undefined) return true;
  try {
    const stamp = Deno.readTextFileSync(`${cacheDir()}/vmlinux-${kernel.abi}.version`).trim();
    return stamp === kernel.version;
  } catch {
    return false;
  }
}

/** The kernel whose vmlinux is wanted: the installed one, or (deprecated) a fixture set's. */
function wantedKernel(set: RealdataSet | undefined): GuestKernel {
  return set === undefined ? installedGuestKernel() : fixtureGuestKernel(set);
}

/**
 * The debug vmlinux of the installed guest kernel, or `undefined`.
 *
 * @param set Deprecated: the kernel of a fixture set instead (its debug
 *   package disappears from the archive; use `kernel_dumps.ts`, whose dumps
 *   come from the installed kernel).
 * @returns An existing path, or `undefined` (also when no guest kernel is installed).
 * @example
 * ```ts ignore
 * const vmlinux = findVmlinux();
 * ```
 */
export function findVmlinux(set?: RealdataSet): string | undefined {
  let kernel: GuestKernel;
  try {
    kernel = wantedKernel(set);
  } catch {
    return undefined;
  }
  return vmlinuxCandidates(kernel.abi).find((p) => isNonEmptyFile(p) && stampMatches(p, kernel));
}

function missingMessage(set: RealdataSet | undefined): string {
  let kernel: GuestKernel | undefined;
  let why: string;
  try {
    kernel = wantedKernel(set);
    const whose = set === undefined ? "the guest kernel" : `the ${set} fixtures' kernel`;
    why = `no debug vmlinux of ${whose} ${kernel.abi} ` +
      `(linux-image-${kernel.abi}-dbg ${kernel.version ?? "?"}) in ` +
      vmlinuxCandidates(kernel.abi).join(", ");
  } catch (e) {
    why = `no guest kernel: ${(e as Error).message}`;
  }
  let note = "";
  if (kernel) {
    try {
      note = "\nscripts/fetch-vmlinux-dbg.sh failed: " +
        Deno.readTextFileSync(`${cacheDir()}/FAILED-vmlinux-${kernel.abi}.txt`).trim();
    } catch { /* it did not run or did not fail */ }
  }
  if (set !== undefined) {
    return `${why}. Nothing fetches it any more: make the dumps with kernel_dumps.ts ` +
      `and use requireVmlinux() without a fixture set.`;
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
 * @param set Deprecated: a fixture set's kernel instead of the installed one.
 * @returns Whether the test may run.
 * @example
 * ```ts ignore
 * Deno.test({ name: "x", ignore: !vmlinuxAvailable(), fn: () => {} });
 * ```
 */
export function vmlinuxAvailable(set?: RealdataSet): boolean {
  if (inCi()) return true;
  if (findVmlinux(set) !== undefined) return true;
  if (!warned.has(set ?? "")) {
    warned.add(set ?? "");
    console.warn(
      `\n!!! SKIPPING tests that need the guest kernel's debug vmlinux: ${missingMessage(set)} ` +
        `(in CI they would FAIL)\n`,
    );
  }
  return false;
}

/**
 * Path of the debug vmlinux of the installed guest kernel; throws (failing
 * the test) with the reason when it is missing, including why
 * `scripts/fetch-vmlinux-dbg.sh` failed.
 *
 * @param set Deprecated: a fixture set's kernel instead of the installed one.
 * @returns The absolute path.
 * @throws {Error} When no vmlinux is found.
 * @example
 * ```ts ignore
 * const vmlinux = requireVmlinux();
 * ```
 */
export function requireVmlinux(set?: RealdataSet): string {
  const path = findVmlinux(set);
  if (path === undefined) {
    throw new Error(
      `Required debug vmlinux missing: ${missingMessage(set)}` +
        (inCi() ? " (CI must not skip)" : ""),
    );
  }
  return path;
}
