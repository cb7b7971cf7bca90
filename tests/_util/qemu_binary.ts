/**
 * The two QEMU builds the tests run: Debian 12's 7.2 (`qemu-system-x86_64` on
 * `PATH`) and 10.0 from bookworm-backports, unpacked into a private prefix by
 * `scripts/provision-qemu10.sh` (it needs `LD_LIBRARY_PATH`,
 * `QEMU_MODULE_DIR` and `-L` firmware folders, which {@linkcode QemuBinary}
 * carries).
 *
 * @module
 */

import { existsSync, withCacheLock } from "./lock.ts";
import { envGet, findTool } from "./tools.ts";

/** QEMU builds the harness can run: Debian 12's 7.2, or 10.0 from bookworm-backports. */
export type QemuVersion = "7.2" | "10";

/** Both builds, oldest first: loop over it to run a test on each. */
export const QEMU_VERSIONS: readonly QemuVersion[] = ["7.2", "10"];

/** How to run one QEMU build. */
export interface QemuBinary {
  /** Which build. */
  version: QemuVersion;
  /** Path of `qemu-system-x86_64`. */
  path: string;
  /** Extra environment (library and module paths for the private QEMU 10 prefix). */
  env: Record<string, string>;
  /** Arguments placed first on the command line (`-L` firmware folders for QEMU 10). */
  args: string[];
}

const REPO_ROOT = new URL("../../", import.meta.url);
const pathOf = (u: URL) => decodeURIComponent(u.pathname);

/** Prefix QEMU 10 is unpacked into (`VMEM_QEMU10_PREFIX`, default `/var/cache/vmemfix/qemu10`). */
export function qemu10Prefix(): string {
  return envGet("VMEM_QEMU10_PREFIX") ?? "/var/cache/vmemfix/qemu10";
}

function qemu10Binary(): QemuBinary {
  const p = qemu10Prefix();
  return {
    version: "10",
    path: `${p}/usr/bin/qemu-system-x86_64`,
    env: {
      LD_LIBRARY_PATH: `${p}/usr/lib/x86_64-linux-gnu:${p}/lib/x86_64-linux-gnu`,
      QEMU_MODULE_DIR: `${p}/usr/lib/x86_64-linux-gnu/qemu`,
    },
    args: ["-L", `${p}/usr/share/qemu`, "-L", `${p}/usr/share/seabios`],
  };
}

/**
 * Why a build cannot run here, or `undefined` when it can (synchronous, for
 * `ignore:` conditions; see `qemuAvailable` in `qemu.ts`).
 *
 * @param version QEMU build.
 * @returns A one-line reason, or `undefined`.
 * @example
 * ```ts ignore
 * const why = qemuMissing("10"); // "QEMU 10 is not provisioned in …" or undefined
 * ```
 */
export function qemuMissing(version: QemuVersion): string | undefined {
  if (version === "7.2" && !findTool("qemu-system-x86_64")) {
    return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
  }
  if (version === "10" && !existsSync(qemu10Binary().path)) {
    return `QEMU 10 is not provisioned in ${qemu10Prefix()} (run scripts/provision-qemu10.sh as root)`;
  }
  return undefined;
}

/**
 * Make sure QEMU 10 is provisioned (running `scripts/provision-qemu10.sh`,
 * which needs root and network, if it is not) and return how to run it.
 *
 * @returns Binary, environment and `-L` arguments.
 * @throws {Error} When provisioning fails.
 * @example
 * ```ts ignore
 * const q10 = await ensureQemu10();
 * new Deno.Command(q10.path, { args: [...q10.args, "--version"], env: q10.env });
 * ```
 */
export async function ensureQemu10(): Promise<QemuBinary> {
  const bin = qemu10Binary();
  if (existsSync(bin.path)) return bin;
  const cache = pathOf(new URL(".cache/", REPO_ROOT));
  Deno.mkdirSync(cache, { recursive: true });
  await withCacheLock(`${cache}qemu10.lock`, () => existsSync(bin.path), async () => {
    const script = pathOf(new URL("scripts/provision-qemu10.sh", REPO_ROOT));
    const out = await new Deno.Command("bash", {
      args: [script, qemu10Prefix()],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `Cannot provision QEMU 10: ${new TextDecoder().decode(out.stderr).trim()}`,
      );
    }
  });
  if (!existsSync(bin.path)) throw new Error(`QEMU 10 missing after provisioning: ${bin.path}`);
  return bin;
}

/**
 * How to run a QEMU build (provisions QEMU 10 if needed).
 *
 * @param version QEMU build.
 * @returns Binary, environment and leading arguments.
 * @throws {Error} When the build is missing and cannot be provisioned.
 * @example
 * ```ts ignore
 * const q = await qemuBinary("7.2");
 * ```
 */
export async function qemuBinary(version: QemuVersion): Promise<QemuBinary> {
  if (version === "10") return await ensureQemu10();
  const path = findTool("qemu-system-x86_64");
  if (!path) {
    throw new Error("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
  }
  return { version, path, env: {}, args: [] };
}
