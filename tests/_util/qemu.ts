/**
 * Real QEMU for tests: starts a QEMU process (`qemu_process.ts`: lifecycle,
 * QMP, gdbstub memory access, migration, dumps) with a guest inside, driven
 * through a guest driver (`guest_driver.ts`):
 *
 * - {@linkcode startLinuxGuest}: the Debian kernel installed on the host plus
 *   a busybox initramfs (`linux_guest.ts`, `guest.ts`), ~10 s to boot under
 *   TCG; Linux plugs and unplugs virtio-mem memory itself.
 * - {@linkcode startTinyGuest}: the bare-metal `vmemtiny.elf`
 *   (`tiny_guest.ts`), < 1 s to boot; the host names the blocks to plug.
 * - {@linkcode startVm}: any {@linkcode GuestSpec}, e.g. `customGuestSpec()`.
 * - {@linkcode startDestination}: the same command line with `-incoming`.
 *
 * The VM object is the QEMU process with its driver in `vm.guest`.
 * {@linkcode startGuest} and the guest-specific methods on
 * {@linkcode QemuGuest} (`fill`, `plugBlocks`, `plugHolesShape`,
 * `tinyPlugState`, …) are the earlier one-class interface, kept working and
 * marked deprecated.
 *
 * For ready-made dumps of a Linux guest with VMCOREINFO and unplugged
 * memory (crash, drgn, makedumpfile tests) see `kernel_dumps.ts`.
 *
 * Device layout (the `--small` profile of `shared/realdata/make-fixtures.sh`):
 * `-m 128M,maxmem=384M`, `memory-backend-ram,id=vmem0mem,size=256M`,
 * `virtio-mem-pci,id=vmem0,memdev=vmem0mem,block-size=2M,requested-size=0`;
 * the device sits at GPA 0x100000000 with 128 blocks of 2 MiB.
 *
 * @example Boot, plug, migrate to a file, load it into a destination
 * ```ts ignore
 * await using src = await startLinuxGuest({ qemu: "7.2" });
 * await src.guest.plugTo(100 << 20);
 * await src.guest.fill(8);
 * await src.migrateToFile(`${dir}/s.mig`);
 * await using dst = await startDestination({ qemu: "7.2", incoming: `exec:cat ${dir}/s.mig` });
 * await dst.waitIncoming();
 * ```
 *
 * @module
 */

import { guestImageAvailable } from "./guest.ts";
import {
  customGuestSpec,
  type GuestDriver,
  type GuestKind,
  type GuestReply,
  type GuestSpec,
} from "./guest_driver.ts";
import { type LinuxGuest, linuxGuestSpec } from "./linux_guest.ts";
import { existsSync } from "./lock.ts";
import { qemuBinary, qemuMissing, type QemuVersion } from "./qemu_binary.ts";
import {
  type DumpGuestMemoryOptions,
  type MigrateOptions as ProcessMigrateOptions,
  type QemuOptions,
  QemuProcess,
  spawnQemu,
} from "./qemu_process.ts";
import { TINY_GUEST_ELF, TinyGuest, tinyGuestSpec } from "./tiny_guest.ts";
import { inCi } from "./tools.ts";

export { compareGuestMemory, hashElfLoads, readElfLoads } from "./guest_memory.ts";
export type {
  CompareGuestMemoryOptions,
  ElfLoad,
  GpaRange,
  GuestMemoryComparison,
} from "./guest_memory.ts";
export {
  ensureQemu10,
  qemu10Prefix,
  QEMU_VERSIONS,
  type QemuBinary,
  qemuBinary,
  type QemuVersion,
} from "./qemu_binary.ts";
export {
  type BootImage,
  type DumpGuestMemoryOptions,
  type MigrationInfo,
  type QemuOptions,
  QemuProcess,
  SMALL_LAYOUT,
  VMEM_GPA,
  type VmemDeviceInfo,
  type VmemLayout,
} from "./qemu_process.ts";
export {
  ChannelGuest,
  customGuestSpec,
  type GuestDriver,
  type GuestKind,
  type GuestSpec,
} from "./guest_driver.ts";
export { LinuxGuest, linuxGuestSpec } from "./linux_guest.ts";
export { TINY_GUEST_ELF, TinyGuest, tinyGuestSpec } from "./tiny_guest.ts";

/** Options for {@linkcode QemuGuest.migrate}: `onPreSwitchover` gets the migrating {@linkcode QemuGuest}. */
export type MigrateOptions = ProcessMigrateOptions<QemuGuest>;

const warnedQemu = new Set<string>();

/**
 * Synchronous check for `Deno.test({ ignore: !qemuAvailable("10") })`. In CI
 * always `true` (a missing QEMU then fails the test). Outside CI, `false`
 * with a loud warning when QEMU, the guest kernel or busybox is missing, or
 * when QEMU 10 is not provisioned (`scripts/provision-qemu10.sh`).
 *
 * @param version QEMU build.
 * @param guest Which guest the test boots (`"tiny"` needs no kernel or busybox).
 * @returns Whether real-QEMU tests with that build should run.
 * @example
 * ```ts ignore
 * Deno.test({ name: "…", ignore: !qemuAvailable("7.2"), fn: async () => {} });
 * ```
 */
export function qemuAvailable(
  version: QemuVersion = "7.2",
  guest: "linux" | "tiny" = "linux",
): boolean {
  if (inCi()) return true;
  let why: string | undefined;
  if (guest === "linux" && !guestImageAvailable()) {
    why = "no guest kernel with virtio_mem, /bin/busybox or cpio (apt-get install " +
      "linux-image-amd64 busybox-static cpio)";
  } else if (guest === "tiny" && !existsSync(TINY_GUEST_ELF)) {
    why = `${TINY_GUEST_ELF} is missing (deno run -A scripts/make-demo-stream.ts builds it)`;
  } else {
    why = qemuMissing(version);
  }
  if (why === undefined) return true;
  if (!warnedQemu.has(why)) {
    warnedQemu.add(why);
    console.warn(`\n!!! SKIPPING real-QEMU ${version} tests: ${why}\n`);
  }
  return false;
}

/**
 * One running QEMU and the guest inside it. Everything about the process
 * (QMP, gdbstub, migration, dumps, lifecycle) is {@linkcode QemuProcess}'s;
 * guest-specific actions are on {@linkcode QemuGuest.guest}, typed by the
 * start function (`startLinuxGuest()` gives a {@linkcode LinuxGuest}).
 * Dispose with `await using`.
 *
 * @typeParam G The guest driver.
 */
export class QemuGuest<G extends GuestDriver = GuestDriver> extends QemuProcess {
  /** The guest driver. */
  readonly guest: G;

  /**
   * Internal: use {@linkcode startVm} and friends.
   *
   * @param init The spawned process.
   * @param spec Which guest it boots.
   */
  constructor(init: ConstructorParameters<typeof QemuProcess>[0], spec: GuestSpec<G>) {
    super(init);
    this.guest = spec.attach(this);
  }

  /** Which guest runs: `"linux"`, `"tiny"` or `"custom"`. */
  get kind(): GuestKind {
    return this.guest.kind;
  }

  /**
   * Plug or unplug to `byteLength` the way the guest does it and wait until
   * the device reports it (`vm.guest.plugTo()`).
   *
   * @param byteLength Plugged bytes wanted (multiple of the block size).
   * @param options `timeoutMs` (default 120 s).
   */
  async plugTo(byteLength: number, options: { timeoutMs?: number } = {}): Promise<void> {
    await this.guest.plugTo(byteLength, options);
  }

  /**
   * Send a command to the guest's line protocol (`vm.guest.command()`).
   *
   * @param line Command, e.g. `"ping"`.
   * @param options `timeoutMs` (default 120 s); `allowFailure` returns a non-zero rc instead of throwing.
   * @returns The reply.
   */
  async guestCmd(
    line: string,
    options: { timeoutMs?: number; allowFailure?: boolean } = {},
  ): Promise<GuestReply> {
    return await this.guest.command(line, options);
  }

  #tiny(what: string): TinyGuest {
    if (!(this.guest instanceof TinyGuest)) {
      throw new Error(`${what} needs the tiny guest (startTinyGuest())`);
    }
    return this.guest;
  }

  #notTiny(what: string): void {
    if (this.guest instanceof TinyGuest) {
      throw new Error(`${what} needs the Linux guest; use writeBlocks()`);
    }
  }

  /**
   * @deprecated Use `startLinuxGuest()` and `vm.guest.fill()`.
   * @param mib MiB to write.
   * @param name File name in the guest's `/fill`. @default {"data.bin"}
   * @returns The guest's reply.
   */
  async fill(mib: number, name = "data.bin"): Promise<GuestReply> {
    this.#notTiny("fill()");
    return await this.guestCmd(`fill ${mib} ${name}`);
  }

  /**
   * @deprecated Use `startLinuxGuest()` and `vm.guest.offlineBlock()`.
   * @param index Linux memory block index.
   * @returns The guest's reply.
   */
  async offlineBlock(index: number): Promise<GuestReply> {
    this.#notTiny("offlineBlock()");
    return await this.guestCmd(`offline ${index}`);
  }

  /**
   * @deprecated Use `startLinuxGuest()` and `vm.guest.onlineBlock()`.
   * @param index Linux memory block index.
   * @returns The guest's reply.
   */
  async onlineBlock(index: number): Promise<GuestReply> {
    this.#notTiny("onlineBlock()");
    return await this.guestCmd(`online ${index}`);
  }

  /**
   * @deprecated Use `startTinyGuest()` and `vm.guest.plugBlocks()`.
   * @param first First device block.
   * @param count Number of blocks.
   * @param options `setRequested` (default true).
   */
  async plugBlocks(
    first: number,
    count: number,
    options: { setRequested?: boolean } = {},
  ): Promise<void> {
    await this.#tiny("plugBlocks()").plugBlocks(first, count, options);
  }

  /**
   * @deprecated Use `startTinyGuest()` and `vm.guest.unplugBlocks()`.
   * @param first First device block.
   * @param count Number of blocks.
   */
  async unplugBlocks(first: number, count: number): Promise<void> {
    await this.#tiny("unplugBlocks()").unplugBlocks(first, count);
  }

  /**
   * @deprecated Use `startTinyGuest()` and `vm.guest.writeBlocks()`.
   * @param first First device block.
   * @param count Number of blocks.
   */
  async writeBlocks(first: number, count: number): Promise<void> {
    await this.#tiny("writeBlocks()").writeBlocks(first, count);
  }

  /** @deprecated Use `startTinyGuest()` and `vm.guest.plugHolesShape()`. */
  async plugHolesShape(): Promise<void> {
    await this.#tiny("plugHolesShape()").plugHolesShape();
  }

  /**
   * @deprecated Use `startTinyGuest()` and `vm.guest.plugState()`.
   * @returns A copy of the plug bitmap; 1 = plugged.
   */
  tinyPlugState(): Uint8Array {
    return this.#tiny("tinyPlugState()").plugState();
  }
}

/** Options for starting a VM: the process options plus the boot timeout. */
export interface StartVmOptions extends QemuOptions {
  /** Boot timeout (to the guest's READY). Not used with `incoming`. @default {180000} */
  bootTimeoutMs?: number;
}

/**
 * Start QEMU booting `spec`'s guest. Without `incoming`, waits until the
 * guest is READY and answers `ping`.
 *
 * @param spec Which guest (`linuxGuestSpec()`, `tinyGuestSpec()`, `customGuestSpec()`).
 * @param options QEMU build, machine, layout, vmcoreinfo, incoming, extra arguments.
 * @returns The VM; its driver is `vm.guest`. Dispose with `await using`.
 * @throws {Error} When QEMU or the guest does not come up in time (logs attached).
 * @example
 * ```ts ignore
 * await using vm = await startVm(tinyGuestSpec(), { qemu: "10" });
 * ```
 */
export async function startVm<G extends GuestDriver>(
  spec: GuestSpec<G>,
  options: StartVmOptions = {},
): Promise<QemuGuest<G>> {
  const bin = await qemuBinary(options.qemu ?? "7.2");
  const init = await spawnQemu(bin, await spec.image(), options);
  const vm = new QemuGuest(init, spec);
  if (options.incoming !== undefined) return vm;
  try {
    await vm.guest.waitReady(options.bootTimeoutMs ?? 180_000);
  } catch (e) {
    const diag = vm.diagnostics();
    await vm.kill();
    throw new Error(`${e instanceof Error ? e.message : e}\n${diag}`, { cause: e });
  }
  return vm;
}

/**
 * Start the Linux test guest (installed Debian kernel, busybox initramfs).
 *
 * @param options As for {@linkcode startVm}, plus `kernelArgs` appended to the command line.
 * @returns The VM; `vm.guest` is a {@linkcode LinuxGuest}.
 * @example
 * ```ts ignore
 * await using vm = await startLinuxGuest({ qemu: "7.2", vmcoreinfo: true });
 * await vm.guest.plugTo(200 << 20);
 * ```
 */
export async function startLinuxGuest(
  options: StartVmOptions & { kernelArgs?: string } = {},
): Promise<QemuGuest<LinuxGuest>> {
  const { kernelArgs, ...rest } = options;
  return await startVm(linuxGuestSpec(kernelArgs), rest);
}

/**
 * Start the bare-metal tiny guest.
 *
 * @param options As for {@linkcode startVm}.
 * @returns The VM; `vm.guest` is a {@linkcode TinyGuest}.
 * @example
 * ```ts ignore
 * await using vm = await startTinyGuest({ qemu: "10" });
 * await vm.guest.plugBlocks(0, 4);
 * ```
 */
export async function startTinyGuest(
  options: StartVmOptions = {},
): Promise<QemuGuest<TinyGuest>> {
  return await startVm(tinyGuestSpec(), options);
}

/** Options for {@linkcode startGuest} (the one-call form that picks the guest by option). */
export interface StartGuestOptions extends StartVmOptions {
  /** Extra guest kernel parameters, appended (Linux guest). @default {""} */
  kernelArgs?: string;
  /**
   * Boot another image instead of the Linux test guest, e.g. a fresh build
   * of `scripts/tinyguest` (multiboot). It must print `VMEM-GUEST: READY` on
   * ttyS0 and speak the line protocol on ttyS1.
   * @default {undefined} (Linux + `buildInitramfs()`)
   */
  kernel?: { path: string; initrd?: string; append?: string };
  /**
   * Which guest to boot: `"linux"` (see {@linkcode startLinuxGuest}) or
   * `"tiny"` (see {@linkcode startTinyGuest}). Ignored when `kernel` is given.
   * @default {"linux"}
   */
  guest?: "linux" | "tiny";
}

function specFor(options: StartGuestOptions): GuestSpec<GuestDriver> {
  if (options.kernel) {
    return customGuestSpec({
      kernel: options.kernel.path,
      initrd: options.kernel.initrd,
      append: options.kernel.append ?? "",
    });
  }
  return options.guest === "tiny" ? tinyGuestSpec() : linuxGuestSpec(options.kernelArgs);
}

/**
 * Start a QEMU with the guest chosen by `options.guest` / `options.kernel`.
 * Prefer {@linkcode startLinuxGuest} / {@linkcode startTinyGuest}, whose
 * `vm.guest` is typed; this form stays for tests that choose the guest at
 * run time.
 *
 * @param options QEMU build, guest, machine, layout, vmcoreinfo, extra arguments.
 * @returns The running VM; dispose it with `await using`.
 * @throws {Error} When QEMU or the guest does not come up in time (logs attached).
 * @example
 * ```ts ignore
 * await using vm = await startGuest({ qemu: "10", guest: "tiny" });
 * ```
 */
export async function startGuest(options: StartGuestOptions = {}): Promise<QemuGuest> {
  const { kernel: _k, guest: _g, kernelArgs: _a, ...rest } = options;
  return await startVm(specFor(options), rest);
}

/** Options for {@linkcode startDestination}. */
export interface StartDestinationOptions extends Omit<StartGuestOptions, "incoming"> {
  /**
   * `"defer"`: only start with `-incoming defer` (call `migrateIncoming` later).
   * Anything else is a URI passed to `migrate-incoming` right away, e.g.
   * `"exec:cat /tmp/x.mig"` or `"unix:/tmp/x/in.sock"`.
   */
  incoming: string;
  /**
   * QEMU ≥ 9.1 only: `exit-on-error` of `migrate-incoming`. `false` keeps a
   * destination whose load failed alive, so `query-migrate` shows the error.
   * @default {undefined} (QEMU's default: exit on error)
   */
  exitOnError?: boolean;
}

/**
 * Start a migration destination: the same command line as
 * {@linkcode startGuest} plus `-incoming defer`; unless `incoming` is
 * `"defer"`, `migrate-incoming` is issued right away (call
 * `waitIncoming()` to wait for the load).
 *
 * @param options QEMU build, guest, machine, layout (must match the source), incoming URI.
 * @returns The destination QEMU.
 * @example
 * ```ts ignore
 * await using dst = await startDestination({ qemu: "7.2", incoming: `exec:cat ${file}` });
 * await dst.waitIncoming();
 * ```
 */
export async function startDestination(options: StartDestinationOptions): Promise<QemuGuest> {
  const { incoming, exitOnError, ...rest } = options;
  const vm = await startGuest({ ...rest, incoming: "defer" });
  if (incoming !== "defer") {
    try {
      await vm.migrateIncoming(incoming, exitOnError === undefined ? {} : { exitOnError });
    } catch (e) {
      await vm.kill();
      throw e;
    }
  }
  return vm;
}

/**
 * Free-function form of {@linkcode QemuProcess.dumpGuestMemory}.
 *
 * @param vm Running QEMU.
 * @param path Output ELF file.
 * @param options Format, paging, timeout.
 */
export async function dumpGuestMemory(
  vm: QemuProcess,
  path: string,
  options: DumpGuestMemoryOptions = {},
): Promise<void> {
  await vm.dumpGuestMemory(path, options);
}

/**
 * Free-function form of {@linkcode QemuProcess.pmemsave}.
 *
 * @param vm Running QEMU.
 * @param gpa Start address.
 * @param byteLength Bytes.
 * @param path Output file.
 */
export async function pmemsave(
  vm: QemuProcess,
  gpa: number,
  byteLength: number,
  path: string,
): Promise<void> {
  await vm.pmemsave(gpa, byteLength, path);
}

/**
 * A private temporary directory removed at the end of the scope.
 *
 * @param prefix Name prefix.
 * @returns `{ path }`, disposable with `await using`.
 * @example
 * ```ts ignore
 * await using tmp = await tempDir();
 * const file = `${tmp.path}/s.mig`;
 * ```
 */
export async function tempDir(prefix = "vmem-test-"): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}
