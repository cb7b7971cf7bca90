/**
 * Real QEMU for tests: boots the Linux test guest (`guest.ts`) under TCG with
 * one virtio-mem device, drives it through QMP, the guest's command channel
 * and the gdbstub, migrates it to files or sockets, starts destinations with
 * `-incoming defer`, and takes dumps.
 *
 * Rules kept here: every wait has a timeout; every QEMU started is killed at
 * the end (`await using`, plus an `unload` safety net); sockets live in a
 * private `mktemp` directory; no TCP ports are opened.
 *
 * Device layout (the `--small` profile of `shared/realdata/make-fixtures.sh`):
 * `-m 128M,maxmem=384M`, `memory-backend-ram,id=vmem0mem,size=256M`,
 * `virtio-mem-pci,id=vmem0,memdev=vmem0mem,block-size=2M,requested-size=0`;
 * the device sits at GPA 0x100000000 with 128 blocks of 2 MiB.
 *
 * @example Boot, plug, migrate to a file, load it into a destination
 * ```ts ignore
 * await using src = await startGuest({ qemu: "7.2" });
 * await src.plugTo(100 << 20);
 * await src.migrateToFile(`${dir}/s.mig`);
 * await using dst = await startDestination({ qemu: "7.2", incoming: `exec:cat ${dir}/s.mig` });
 * await dst.waitIncoming();
 * ```
 *
 * @module
 */

import {
  buildInitramfs,
  GUEST_KERNEL_CMDLINE,
  GUEST_READY_MARKER,
  GuestChannel,
  guestImageAvailable,
  type GuestReply,
} from "./guest.ts";
import { GdbStubClient } from "./gdbstub.ts";
import { QmpClient } from "./qmp.ts";
import { existsSync, withCacheLock } from "./lock.ts";
import { envGet, findTool, inCi } from "./tools.ts";

export { compareGuestMemory, hashElfLoads, readElfLoads } from "./guest_memory.ts";
export type {
  CompareGuestMemoryOptions,
  ElfLoad,
  GpaRange,
  GuestMemoryComparison,
} from "./guest_memory.ts";

/** Which guest a {@linkcode QemuGuest} runs. */
export type GuestKind = "linux" | "tiny" | "custom";

/** The bare-metal virtio-mem guest (built from `scripts/tinyguest/vmemtiny.c`). */
export const TINY_GUEST_ELF: string = decodeURIComponent(
  new URL("../../testdata/tinyguest/vmemtiny.elf", import.meta.url).pathname,
);

/** QEMU builds the harness can run: Debian 12's 7.2, or 10.0 from bookworm-backports. */
export type QemuVersion = "7.2" | "10";

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
const MiB = 1 << 20;

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
  } else if (version === "7.2" && !findTool("qemu-system-x86_64")) {
    why = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
  } else if (version === "10" && !existsSync(qemu10Binary().path)) {
    why =
      `QEMU 10 is not provisioned in ${qemu10Prefix()} (run scripts/provision-qemu10.sh as root)`;
  }
  if (why === undefined) return true;
  if (!warnedQemu.has(why)) {
    warnedQemu.add(why);
    console.warn(`\n!!! SKIPPING real-QEMU ${version} tests: ${why}\n`);
  }
  return false;
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

/** Memory layout of the VM. */
export interface VmemLayout {
  /** Boot RAM (`-m`). @default {128 MiB} */
  bootRamBytes: number;
  /** virtio-mem region (size of the `memory-backend-ram`). @default {256 MiB} */
  regionBytes: number;
  /** virtio-mem device block size. @default {2 MiB} */
  blockBytes: number;
  /** `requested-size` on the command line. @default {0} */
  requestedBytes: number;
}

/** The default layout: the `--small` profile of the shared fixtures. */
export const SMALL_LAYOUT: Readonly<VmemLayout> = {
  bootRamBytes: 128 * MiB,
  regionBytes: 256 * MiB,
  blockBytes: 2 * MiB,
  requestedBytes: 0,
};

/** GPA of the virtio-mem device with the default machine and layout. */
export const VMEM_GPA = 0x1_0000_0000;

/** Options for {@linkcode startGuest}. */
export interface StartGuestOptions {
  /** QEMU build. @default {"7.2"} */
  qemu?: QemuVersion;
  /** Machine type (`-M`). @default {"q35"} (the newest q35 of that build) */
  machine?: string;
  /** Add `-device vmcoreinfo` (the guest loads `qemu_fw_cfg` anyway). @default {false} */
  vmcoreinfo?: boolean;
  /** Memory layout overrides. @default {SMALL_LAYOUT} */
  layout?: Partial<VmemLayout>;
  /** Extra QEMU arguments, appended. @default {[]} */
  extraArgs?: string[];
  /** Extra guest kernel parameters, appended. @default {""} */
  kernelArgs?: string;
  /** Boot timeout (to the guest's READY). @default {180000} */
  bootTimeoutMs?: number;
  /**
   * Boot another guest instead of the Linux test guest, e.g. the bare-metal
   * `scripts/tinyguest` (multiboot). It must print `VMEM-GUEST: READY` on
   * ttyS0 and speak the same line protocol on ttyS1.
   * @default {undefined} (Linux + `buildInitramfs()`)
   */
  kernel?: { path: string; initrd?: string; append?: string };
  /**
   * Which guest to boot: `"linux"` (Debian kernel + busybox initramfs, boots
   * in ~10 s under TCG, plugs through the Linux virtio-mem driver) or
   * `"tiny"` (the bare-metal `testdata/tinyguest/vmemtiny.elf`, boots in
   * < 1 s; the harness plugs and unplugs explicit device blocks through it,
   * see {@linkcode QemuGuest.plugBlocks}). Ignored when `kernel` is given.
   * @default {"linux"}
   */
  guest?: "linux" | "tiny";
  /**
   * Start with `-incoming defer` (a destination). {@linkcode startDestination}
   * sets it; `startGuest` with `incoming` does not wait for the guest to boot.
   * @default {undefined}
   */
  incoming?: string;
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

/** `query-migrate` result (the fields tests use). */
export interface MigrationInfo {
  /** `completed`, `failed`, `active`, `pre-switchover`, … */
  status?: string;
  /** Error text when failed. */
  "error-desc"?: string;
  /** RAM statistics. */
  ram?: Record<string, number>;
  /** Other fields QEMU reports. */
  [key: string]: unknown;
}

/** Options for {@linkcode QemuGuest.migrate}. */
export interface MigrateOptions {
  /** Stop the VM before migrating (deterministic single pass). @default {true} */
  stopFirst?: boolean;
  /**
   * Run with `pause-before-switchover`; called while the migration waits in
   * `pre-switchover` (VM stopped, final pass not yet sent), e.g. to write
   * EVIL pages with {@linkcode QemuGuest.gdbWritePhys}.
   * @default {undefined}
   */
  onPreSwitchover?: (guest: QemuGuest) => Promise<void>;
  /** Overall timeout. @default {180000} */
  timeoutMs?: number;
  /** `max-bandwidth` in bytes/s. @default {10 GiB/s} */
  maxBandwidth?: number;
}

/** A running memory device (`query-memory-devices` data of `vmem0`). */
export interface VmemDeviceInfo {
  /** Guest-physical base of the device region. */
  memaddr: number;
  /** Plugged bytes. */
  size: number;
  /** Region size. */
  "max-size": number;
  /** Device block size. */
  "block-size": number;
  /** Requested size. */
  "requested-size": number;
  /** NUMA node. */
  node: number;
  /** Device id (`vmem0`). */
  id: string;
  /** Memory backend QOM path. */
  memdev: string;
  /** Other fields QEMU reports. */
  [key: string]: unknown;
}

const live = new Set<QemuGuest>();
let unloadHooked = false;
function hookUnload(): void {
  if (unloadHooked) return;
  unloadHooked = true;
  globalThis.addEventListener("unload", () => {
    for (const g of live) g.killNow();
  });
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tail(path: string, lines = 40): string {
  try {
    const t = Deno.readTextFileSync(path).split("\n");
    return t.slice(-lines).join("\n");
  } catch {
    return "(no file)";
  }
}

/**
 * One running QEMU. Obtain it from {@linkcode startGuest} or
 * {@linkcode startDestination}; dispose with `await using` (or `stop()` /
 * `kill()`), which also removes its private directory.
 */
export class QemuGuest implements AsyncDisposable {
  /** Private directory holding sockets and logs (`qmp.sock`, `cmd.sock`, `gdb.sock`, `console.log`, `qemu.log`). */
  readonly dir: string;
  /** The QEMU build. */
  readonly binary: QemuBinary;
  /** Full QEMU argument list. */
  readonly args: readonly string[];
  /** Memory layout. */
  readonly layout: Readonly<VmemLayout>;
  /** QMP client (use {@linkcode QemuGuest.qmp} for commands). */
  readonly qmpClient: QmpClient;
  #child: Deno.ChildProcess;
  #status: Promise<Deno.CommandStatus>;
  #exited = false;
  #channel: GuestChannel | undefined;
  #disposed = false;
  /** Which guest runs: `"linux"`, `"tiny"` or `"custom"`. */
  readonly kind: GuestKind;
  /** Tiny guest only: plug state as the harness requested it (1 = plugged). */
  #tinyPlugged: Uint8Array;

  /**
   * Internal: use {@linkcode startGuest} or {@linkcode startDestination}.
   *
   * @param init The spawned process and its connections.
   */
  constructor(init: {
    dir: string;
    binary: QemuBinary;
    args: string[];
    layout: VmemLayout;
    child: Deno.ChildProcess;
    status: Promise<Deno.CommandStatus>;
    qmp: QmpClient;
    kind: GuestKind;
  }) {
    this.kind = init.kind;
    this.#tinyPlugged = new Uint8Array(init.layout.regionBytes / init.layout.blockBytes);
    this.dir = init.dir;
    this.binary = init.binary;
    this.args = init.args;
    this.layout = init.layout;
    this.#child = init.child;
    this.#status = init.status;
    this.qmpClient = init.qmp;
    init.status.then(() => (this.#exited = true), () => (this.#exited = true));
    live.add(this);
  }

  /** QEMU's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Whether QEMU has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Resolves with QEMU's exit status. */
  get status(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /** The guest console (ttyS0) so far. */
  consoleLog(): string {
    try {
      return Deno.readTextFileSync(`${this.dir}/console.log`);
    } catch {
      return "";
    }
  }

  /** QEMU's own stdout/stderr so far. */
  qemuLog(): string {
    try {
      return Deno.readTextFileSync(`${this.dir}/qemu.log`);
    } catch {
      return "";
    }
  }

  /** Tails of both logs, for error messages. */
  diagnostics(): string {
    return `--- qemu.log (tail) ---\n${tail(`${this.dir}/qemu.log`, 20)}\n` +
      `--- console.log (tail) ---\n${tail(`${this.dir}/console.log`, 30)}`;
  }

  /**
   * Run a QMP command.
   *
   * @param command Command name.
   * @param args Arguments.
   * @param options `timeoutMs` (default 60 s).
   * @returns The `return` value.
   * @throws {QmpError} On a QMP error.
   */
  qmp<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    return this.qmpClient.execute<T>(command, args, options);
  }

  /**
   * Run an HMP command line (e.g. `"info ramblock"`).
   *
   * @param commandLine HMP command.
   * @returns Its output.
   */
  hmp(commandLine: string): Promise<string> {
    return this.qmpClient.hmp(commandLine);
  }

  /**
   * Send a command to the guest's line protocol (see `guest.ts`).
   *
   * @param line Command, e.g. `"fill 48"`.
   * @param options `timeoutMs` (default 120 s); `allowFailure` returns a non-zero rc instead of throwing.
   * @returns The reply.
   * @throws {Error} On timeout, a closed channel, or rc ≠ 0 without `allowFailure`.
   */
  async guestCmd(
    line: string,
    options: { timeoutMs?: number; allowFailure?: boolean } = {},
  ): Promise<GuestReply> {
    this.#channel ??= await GuestChannel.connect(`${this.dir}/cmd.sock`);
    let reply: GuestReply;
    try {
      reply = await this.#channel.run(line, options.timeoutMs ?? 120_000);
    } catch (e) {
      this.#channel?.close();
      this.#channel = undefined;
      throw new Error(`guest command "${line}" failed\n${this.diagnostics()}`, { cause: e });
    }
    if (reply.rc !== 0 && !options.allowFailure) {
      throw new Error(`guest command "${line}" returned rc=${reply.rc}: ${reply.lines.join("\n")}`);
    }
    return reply;
  }

  /** `query-status` (`{status, running}`). */
  async runState(): Promise<{ status: string; running: boolean }> {
    return await this.qmp("query-status");
  }

  /** QMP `stop` (pause the vCPUs). */
  async pause(): Promise<void> {
    await this.qmp("stop");
  }

  /** QMP `cont` (resume the vCPUs). */
  async resume(): Promise<void> {
    await this.qmp("cont");
  }

  /** The virtio-mem device as `query-memory-devices` reports it. */
  async vmem(): Promise<VmemDeviceInfo> {
    const devices = await this.qmp<{ type: string; data: VmemDeviceInfo }[]>(
      "query-memory-devices",
    );
    const d = devices.find((x) => x.type === "virtio-mem" && x.data.id === "vmem0");
    if (!d) throw new Error("no virtio-mem device vmem0");
    return d.data;
  }

  /**
   * Set `requested-size` and wait until the guest has plugged/unplugged to it
   * (device `size` equals the request).
   *
   * @param byteLength New requested size (multiple of the block size).
   * @param options `timeoutMs` (default 120 s).
   * @throws {Error} When the size is not reached in time.
   */
  async plugTo(byteLength: number, options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.kind === "tiny") {
      await this.#tinyPlugTo(byteLength);
      return;
    }
    await this.qmp("qom-set", {
      path: "/machine/peripheral/vmem0",
      property: "requested-size",
      value: byteLength,
    });
    const deadline = Date.now() + (options.timeoutMs ?? 120_000);
    for (;;) {
      const size = await this.qmp<number>("qom-get", {
        path: "/machine/peripheral/vmem0",
        property: "size",
      });
      if (size === byteLength) return;
      if (Date.now() > deadline) {
        throw new Error(
          `virtio-mem size stayed at ${size}, requested ${byteLength}\n${this.diagnostics()}`,
        );
      }
      await sleep(200);
    }
  }

  async #setRequested(byteLength: number): Promise<void> {
    await this.qmp("qom-set", {
      path: "/machine/peripheral/vmem0",
      property: "requested-size",
      value: byteLength,
    });
  }

  #requireTiny(what: string): void {
    if (this.kind !== "tiny") {
      throw new Error(`${what} needs the tiny guest (startGuest({ guest: "tiny" }))`);
    }
  }

  #runs(value: number): [number, number][] {
    const runs: [number, number][] = [];
    for (let i = 0; i < this.#tinyPlugged.length; i++) {
      if (this.#tinyPlugged[i] !== value) continue;
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === i) last[1]++;
      else runs.push([i, 1]);
    }
    return runs;
  }

  async #tinyPlugTo(byteLength: number): Promise<void> {
    const blocks = byteLength / this.layout.blockBytes;
    if (!Number.isInteger(blocks) || blocks > this.#tinyPlugged.length) {
      throw new RangeError(
        `cannot plug ${byteLength} bytes in ${this.layout.blockBytes}-byte blocks`,
      );
    }
    let have = this.#tinyPlugged.reduce((a, b) => a + b, 0);
    if (blocks > have) {
      await this.#setRequested(byteLength);
      for (const [first, count] of this.#runs(0)) {
        const n = Math.min(count, blocks - have);
        if (n <= 0) break;
        await this.plugBlocks(first, n, { setRequested: false });
        have += n;
      }
    } else if (blocks < have) {
      await this.#setRequested(byteLength);
      for (const [first, count] of this.#runs(1).reverse()) {
        const n = Math.min(count, have - blocks);
        if (n <= 0) break;
        await this.unplugBlocks(first + count - n, n);
        have -= n;
      }
    }
  }

  /**
   * Tiny guest: plug device blocks `first .. first+count-1` (raises
   * `requested-size` first unless `setRequested` is false, since QEMU refuses
   * plugs beyond it).
   *
   * @param first First device block.
   * @param count Number of blocks.
   * @param options `setRequested` (default true).
   * @throws {Error} When the device refuses (NACK).
   */
  async plugBlocks(
    first: number,
    count: number,
    options: { setRequested?: boolean } = {},
  ): Promise<void> {
    this.#requireTiny("plugBlocks()");
    if (options.setRequested ?? true) {
      const after = this.#tinyPlugged.reduce((a, b) => a + b, 0) +
        this.#tinyPlugged.subarray(first, first + count).filter((b) => b === 0).length;
      const requested = await this.qmp<number>("qom-get", {
        path: "/machine/peripheral/vmem0",
        property: "requested-size",
      });
      if (after * this.layout.blockBytes > requested) {
        await this.#setRequested(after * this.layout.blockBytes);
      }
    }
    await this.guestCmd(`plug ${first} ${count}`);
    this.#tinyPlugged.fill(1, first, first + count);
  }

  /**
   * Tiny guest: unplug device blocks `first .. first+count-1`. Does not
   * change `requested-size` (call `qom-set` yourself to mirror a real
   * shrink request).
   *
   * @param first First device block.
   * @param count Number of blocks.
   * @throws {Error} When the device refuses.
   */
  async unplugBlocks(first: number, count: number): Promise<void> {
    this.#requireTiny("unplugBlocks()");
    await this.guestCmd(`unplug ${first} ${count}`);
    this.#tinyPlugged.fill(0, first, first + count);
  }

  /**
   * Tiny guest: the guest itself writes one marker page (64 lines
   * `DATA block=NNN gpa=0x… line=NN ###`) at the start of each device block
   * `first .. first+count-1`; the blocks must be plugged.
   *
   * @param first First device block.
   * @param count Number of blocks.
   */
  async writeBlocks(first: number, count: number): Promise<void> {
    this.#requireTiny("writeBlocks()");
    await this.guestCmd(`write ${first} ${count}`);
  }

  /**
   * Tiny guest: the s2/s3 shape of shared/realdata. Plug 200 MiB, write a
   * marker page into blocks 0-99, set `requested-size` to 100 MiB and unplug
   * blocks 14-63, which leaves blocks 0-13 and 64-99 plugged.
   */
  async plugHolesShape(): Promise<void> {
    await this.plugTo(200 * MiB);
    await this.writeBlocks(0, 100);
    await this.qmp("qom-set", {
      path: "/machine/peripheral/vmem0",
      property: "requested-size",
      value: 100 * MiB,
    });
    await this.unplugBlocks(14, 50);
  }

  /**
   * Tiny guest: the plug bitmap as the harness drove it (index = device block).
   *
   * @returns A copy; 1 = plugged.
   */
  tinyPlugState(): Uint8Array {
    this.#requireTiny("tinyPlugState()");
    return this.#tinyPlugged.slice();
  }

  /**
   * Let the guest write `mib` MiB of pattern data into tmpfs (hot-plugged memory first).
   *
   * @param mib MiB to write.
   * @param name File name in the guest's `/fill`. @default {"data.bin"}
   */
  async fill(mib: number, name = "data.bin"): Promise<GuestReply> {
    if (this.kind === "tiny") throw new Error("fill() needs the Linux guest; use writeBlocks()");
    return await this.guestCmd(`fill ${mib} ${name}`);
  }

  /**
   * Offline Linux memory block `index` of the device (counted from its start).
   *
   * @param index Linux memory block index (128 MiB blocks with the Debian kernel).
   */
  async offlineBlock(index: number): Promise<GuestReply> {
    return await this.guestCmd(`offline ${index}`);
  }

  /**
   * Online Linux memory block `index` of the device as movable memory.
   *
   * @param index Linux memory block index.
   */
  async onlineBlock(index: number): Promise<GuestReply> {
    return await this.guestCmd(`online ${index}`);
  }

  async #withGdb<T>(fn: (gdb: GdbStubClient) => Promise<T>): Promise<T> {
    const before = await this.runState();
    const gdb = await GdbStubClient.connect(`${this.dir}/gdb.sock`);
    try {
      await gdb.physicalMode();
      return await fn(gdb);
    } finally {
      gdb.close();
      // QEMU pauses the guest while a debugger is attached: restore a running guest
      if (before.running) {
        const deadline = Date.now() + 5_000;
        while (!(await this.runState()).running && Date.now() < deadline) {
          try {
            await this.resume();
          } catch { /* not resumable yet */ }
          await sleep(50);
        }
      }
    }
  }

  /**
   * Write bytes at a guest-physical address through the gdbstub
   * (`Qqemu.PhyMemMode:1` + `M` packets) and read them back. Works for
   * unplugged virtio-mem blocks too (TCG). A running guest is resumed after.
   *
   * @param gpa Guest-physical address.
   * @param bytes Data to write.
   * @param options `verify` reads the bytes back (default true).
   * @throws {Error} When the write or the read-back fails.
   */
  async gdbWritePhys(
    gpa: number,
    bytes: Uint8Array,
    options: { verify?: boolean } = {},
  ): Promise<void> {
    await this.#withGdb(async (gdb) => {
      await gdb.writeMemory(gpa, bytes);
      if (options.verify ?? true) {
        const back = await gdb.readMemory(gpa, bytes.length);
        for (let i = 0; i < bytes.length; i++) {
          if (back[i] !== bytes[i]) {
            throw new Error(`gdbstub read-back differs at 0x${(gpa + i).toString(16)}`);
          }
        }
      }
    });
  }

  /**
   * Read guest-physical memory through the gdbstub.
   *
   * @param gpa Guest-physical address.
   * @param byteLength Bytes to read.
   * @returns The bytes.
   */
  async gdbReadPhys(gpa: number, byteLength: number): Promise<Uint8Array> {
    return await this.#withGdb((gdb) => gdb.readMemory(gpa, byteLength));
  }

  /**
   * Poll `query-migrate` until the status is one of `states`.
   *
   * @param states Statuses to wait for.
   * @param timeoutMs Timeout.
   * @returns The `query-migrate` result.
   * @throws {Error} On timeout or when QEMU exits.
   */
  async waitMigration(states: readonly string[], timeoutMs: number): Promise<MigrationInfo> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#exited) {
        throw new Error(
          `QEMU exited while waiting for migration ${states.join("|")}\n${this.diagnostics()}`,
        );
      }
      let info: MigrationInfo;
      try {
        info = await this.qmp<MigrationInfo>("query-migrate", undefined, { timeoutMs: 10_000 });
      } catch (e) {
        if (this.#exited || this.qmpClient.closed) {
          await Promise.race([this.#status, sleep(2_000)]);
          throw new Error(
            `QEMU exited while waiting for migration ${states.join("|")}\n${this.diagnostics()}`,
            {
              cause: e,
            },
          );
        }
        throw e;
      }
      if (info.status !== undefined && states.includes(info.status)) return info;
      if (Date.now() > deadline) {
        throw new Error(
          `migration stayed ${info.status}, wanted ${states.join("|")}\n${this.diagnostics()}`,
        );
      }
      await sleep(50);
    }
  }

  /**
   * Migrate to `uri` (e.g. `"unix:/path"`, `"exec:cat > f"`). By default the
   * VM is stopped first; a VM in `postmigrate` is resumed and stopped again
   * (QEMU refuses a second migration from `postmigrate`; the guest runs for a
   * moment in between).
   *
   * @param uri Migration URI.
   * @param options Stop first, pre-switchover hook, timeout, bandwidth.
   * @returns The final `query-migrate` result (status `completed`).
   * @throws {Error} When the migration fails or times out.
   */
  async migrate(uri: string, options: MigrateOptions = {}): Promise<MigrationInfo> {
    const timeoutMs = options.timeoutMs ?? 180_000;
    let st = await this.runState();
    if (st.status === "postmigrate") {
      await this.resume();
      await this.pause();
      st = await this.runState();
    }
    if (st.running && (options.stopFirst ?? true)) await this.pause();
    await this.qmp("migrate-set-parameters", {
      "max-bandwidth": options.maxBandwidth ?? 10 * 2 ** 30,
    });
    const pauseBefore = options.onPreSwitchover !== undefined;
    await this.qmp("migrate-set-capabilities", {
      capabilities: [{ capability: "pause-before-switchover", state: pauseBefore }],
    });
    try {
      await this.qmp("migrate", { uri });
      if (options.onPreSwitchover) {
        const paused = await this.waitMigration(
          ["pre-switchover", "failed", "cancelled"],
          timeoutMs,
        );
        if (paused.status === "pre-switchover") {
          await options.onPreSwitchover(this);
          await this.qmp("migrate-continue", { state: "pre-switchover" });
        }
      }
      const info = await this.waitMigration(["completed", "failed", "cancelled"], timeoutMs);
      if (info.status !== "completed") {
        throw new Error(
          `migration to ${uri} ${info.status}: ${info["error-desc"] ?? ""}\n${this.diagnostics()}`,
        );
      }
      return info;
    } finally {
      if (pauseBefore && !this.#exited) {
        await this.qmp("migrate-set-capabilities", {
          capabilities: [{ capability: "pause-before-switchover", state: false }],
        }).catch(() => {});
      }
    }
  }

  /**
   * Migrate into a file with `exec:cat > FILE` and wait until `cat` has
   * finished writing (QEMU reaps it when it closes the channel).
   *
   * @param path Output file.
   * @param options As for {@linkcode QemuGuest.migrate}.
   * @returns The final `query-migrate` result.
   */
  async migrateToFile(path: string, options: MigrateOptions = {}): Promise<MigrationInfo> {
    const info = await this.migrate(`exec:cat > ${shellQuote(path)}`, options);
    await this.#waitNoChildren(10_000);
    return info;
  }

  async #waitNoChildren(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      let children = "";
      try {
        for (const t of Deno.readDirSync(`/proc/${this.pid}/task`)) {
          children += Deno.readTextFileSync(`/proc/${this.pid}/task/${t.name}/children`).trim();
        }
      } catch {
        return; // QEMU gone or no /proc: nothing to wait for
      }
      if (children === "") return;
      await sleep(20);
    }
    throw new Error("QEMU's migration helper process did not exit");
  }

  /**
   * Destination side: start loading from `uri` (needs `-incoming defer`).
   *
   * @param uri E.g. `"exec:cat /tmp/x.mig"` or `"unix:/tmp/d/in.sock"`.
   * @param options `exitOnError` (QEMU ≥ 9.1).
   */
  async migrateIncoming(uri: string, options: { exitOnError?: boolean } = {}): Promise<void> {
    const args: Record<string, unknown> = { uri };
    if (options.exitOnError !== undefined) args["exit-on-error"] = options.exitOnError;
    await this.qmp("migrate-incoming", args);
  }

  /**
   * Destination side: wait until the incoming migration completed.
   *
   * @param options `timeoutMs` (default 180 s).
   * @returns The `query-migrate` result.
   * @throws {Error} When loading failed (QEMU exits by default) or timed out.
   */
  async waitIncoming(options: { timeoutMs?: number } = {}): Promise<MigrationInfo> {
    const info = await this.waitMigration(
      ["completed", "failed", "cancelled"],
      options.timeoutMs ?? 180_000,
    );
    if (info.status !== "completed") {
      throw new Error(
        `incoming migration ${info.status}: ${info["error-desc"] ?? ""}\n${this.diagnostics()}`,
      );
    }
    return info;
  }

  /**
   * QMP `dump-guest-memory` into a file.
   *
   * @param path Output file.
   * @param options `format` (`"elf"` default, `"kdump-zlib"`, …), `paging` (default false), `timeoutMs`.
   */
  async dumpGuestMemory(
    path: string,
    options: { format?: string; paging?: boolean; timeoutMs?: number } = {},
  ): Promise<void> {
    const args: Record<string, unknown> = {
      paging: options.paging ?? false,
      protocol: `file:${path}`,
    };
    if (options.format !== undefined) args.format = options.format;
    await this.qmp("dump-guest-memory", args, { timeoutMs: options.timeoutMs ?? 180_000 });
  }

  /**
   * QMP `pmemsave`: raw guest-physical memory into a file.
   *
   * @param gpa Start address.
   * @param byteLength Bytes.
   * @param path Output file.
   */
  async pmemsave(gpa: number, byteLength: number, path: string): Promise<void> {
    await this.qmp("pmemsave", { val: gpa, size: byteLength, filename: path }, {
      timeoutMs: 180_000,
    });
  }

  /** Send SIGKILL right away (sync; used by the `unload` safety net). */
  killNow(): void {
    if (this.#exited) return;
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
  }

  /** Kill QEMU (SIGKILL), wait for it, close connections and remove the private directory. */
  async kill(): Promise<void> {
    this.killNow();
    await this.#finish();
  }

  /** Quit QEMU politely (QMP `quit`, 10 s), then kill; clean up like {@linkcode QemuGuest.kill}. */
  async stop(): Promise<void> {
    if (!this.#exited) {
      try {
        await this.qmp("quit", undefined, { timeoutMs: 5_000 });
      } catch { /* QMP gone: kill below */ }
      await Promise.race([this.#status, sleep(10_000)]);
    }
    this.killNow();
    await this.#finish();
  }

  async #finish(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#channel?.close();
    await this.qmpClient.close();
    await this.#status.catch(() => {});
    live.delete(this);
    try {
      await Deno.remove(this.dir, { recursive: true });
    } catch { /* already gone */ }
  }

  /** Same as {@linkcode QemuGuest.kill}: nothing is worth keeping at the end of a test. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

function buildArgs(
  bin: QemuBinary,
  image: { kernel: string; initrd?: string | undefined; append: string },
  dir: string,
  layout: VmemLayout,
  options: StartGuestOptions,
): string[] {
  const mb = (n: number) => {
    if (n % MiB !== 0) throw new RangeError(`${n} is not a whole number of MiB`);
    return n / MiB;
  };
  const args = [
    ...bin.args,
    "-accel",
    "tcg",
    "-M",
    options.machine ?? "q35",
    "-smp",
    "1",
    "-m",
    `${mb(layout.bootRamBytes)}M,maxmem=${mb(layout.bootRamBytes + layout.regionBytes)}M`,
    "-nodefaults",
    "-display",
    "none",
    "-no-reboot",
    "-object",
    `memory-backend-ram,id=vmem0mem,size=${mb(layout.regionBytes)}M`,
    "-device",
    `virtio-mem-pci,id=vmem0,memdev=vmem0mem,block-size=${mb(layout.blockBytes)}M,` +
    `requested-size=${mb(layout.requestedBytes)}M`,
    "-kernel",
    image.kernel,
    ...(image.initrd !== undefined ? ["-initrd", image.initrd] : []),
    ...(image.append ? ["-append", image.append] : []),
    "-chardev",
    `file,id=con0,path=${dir}/console.log`,
    "-serial",
    "chardev:con0",
    "-chardev",
    `socket,id=cmd0,path=${dir}/cmd.sock,server=on,wait=off`,
    "-serial",
    "chardev:cmd0",
    "-qmp",
    `unix:${dir}/qmp.sock,server=on,wait=off`,
    "-gdb",
    `unix:${dir}/gdb.sock,server=on,wait=off`,
  ];
  if (options.vmcoreinfo) args.push("-device", "vmcoreinfo");
  if (options.incoming !== undefined) args.push("-incoming", options.incoming);
  args.push(...(options.extraArgs ?? []));
  return args;
}

/**
 * Start a QEMU with the test guest and the virtio-mem device. Without
 * `incoming`, waits until the guest is READY and its command channel answers.
 *
 * @param options QEMU build, machine, layout, vmcoreinfo, extra arguments.
 * @returns The running guest; dispose it with `await using`.
 * @throws {Error} When QEMU or the guest does not come up in time (logs attached).
 * @example
 * ```ts ignore
 * await using vm = await startGuest({ qemu: "10" });
 * await vm.plugTo(100 << 20);
 * ```
 */
export async function startGuest(options: StartGuestOptions = {}): Promise<QemuGuest> {
  const bin = await qemuBinary(options.qemu ?? "7.2");
  let image: { kernel: string; initrd?: string | undefined; append: string };
  const kind: GuestKind = options.kernel ? "custom" : options.guest ?? "linux";
  if (options.kernel) {
    image = {
      kernel: options.kernel.path,
      initrd: options.kernel.initrd,
      append: options.kernel.append ?? "",
    };
  } else if (kind === "tiny") {
    image = { kernel: TINY_GUEST_ELF, append: "" };
  } else {
    const linux = await buildInitramfs();
    image = {
      kernel: linux.kernel,
      initrd: linux.initrd,
      append: `${GUEST_KERNEL_CMDLINE}${options.kernelArgs ? " " + options.kernelArgs : ""}`,
    };
  }
  const layout: VmemLayout = { ...SMALL_LAYOUT, ...options.layout };
  const dir = await Deno.makeTempDir({ prefix: "vmem-qemu-" });
  const args = buildArgs(bin, image, dir, layout, options);
  hookUnload();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("bash", {
      // exec: the child pid is QEMU's own; its output goes to a log file, not a pipe
      args: [
        "-c",
        'log=$1; shift; exec "$@" >>"$log" 2>&1',
        "qemu",
        `${dir}/qemu.log`,
        bin.path,
        ...args,
      ],
      env: bin.env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
  const status = child.status;
  let exited = false;
  status.then(() => (exited = true), () => (exited = true));
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(`${dir}/qmp.sock`, { timeoutMs: 30_000, alive: () => !exited });
  } catch (e) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await status.catch(() => {});
    const log = tail(`${dir}/qemu.log`);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`QEMU did not start: ${bin.path} ${args.join(" ")}\n${log}`, { cause: e });
  }
  const guest = new QemuGuest({ dir, binary: bin, args, layout, child, status, qmp, kind });
  if (options.incoming !== undefined) return guest;
  try {
    const deadline = Date.now() + (options.bootTimeoutMs ?? 180_000);
    for (;;) {
      if (guest.consoleLog().includes(GUEST_READY_MARKER)) break;
      if (guest.exited) throw new Error("QEMU exited during boot");
      if (Date.now() > deadline) throw new Error("guest did not become READY in time");
      await sleep(100);
    }
    await guest.guestCmd("ping", { timeoutMs: 30_000 });
  } catch (e) {
    const diag = guest.diagnostics();
    await guest.kill();
    throw new Error(`${e instanceof Error ? e.message : e}\n${diag}`, { cause: e });
  }
  return guest;
}

/**
 * Start a migration destination: the same command line as
 * {@linkcode startGuest} plus `-incoming defer`; unless `incoming` is
 * `"defer"`, `migrate-incoming` is issued right away (call
 * `waitIncoming()` to wait for the load).
 *
 * @param options QEMU build, machine, layout (must match the source), incoming URI.
 * @returns The destination QEMU.
 * @example
 * ```ts ignore
 * await using dst = await startDestination({ qemu: "7.2", incoming: `exec:cat ${file}` });
 * await dst.waitIncoming();
 * ```
 */
export async function startDestination(options: StartDestinationOptions): Promise<QemuGuest> {
  const { incoming, exitOnError, ...rest } = options;
  const guest = await startGuest({ ...rest, incoming: "defer" });
  if (incoming !== "defer") {
    try {
      await guest.migrateIncoming(incoming, exitOnError === undefined ? {} : { exitOnError });
    } catch (e) {
      await guest.kill();
      throw e;
    }
  }
  return guest;
}

/**
 * Free-function form of {@linkcode QemuGuest.dumpGuestMemory}.
 *
 * @param guest Running QEMU.
 * @param path Output ELF file.
 * @param options Format, paging, timeout.
 */
export async function dumpGuestMemory(
  guest: QemuGuest,
  path: string,
  options: { format?: string; paging?: boolean; timeoutMs?: number } = {},
): Promise<void> {
  await guest.dumpGuestMemory(path, options);
}

/**
 * Free-function form of {@linkcode QemuGuest.pmemsave}.
 *
 * @param guest Running QEMU.
 * @param gpa Start address.
 * @param byteLength Bytes.
 * @param path Output file.
 */
export async function pmemsave(
  guest: QemuGuest,
  gpa: number,
  byteLength: number,
  path: string,
): Promise<void> {
  await guest.pmemsave(gpa, byteLength, path);
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
