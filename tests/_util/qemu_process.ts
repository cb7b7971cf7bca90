/**
 * One QEMU process under test, whatever guest it runs: its command line
 * (TCG, one vCPU, one virtio-mem device, serial ports and QMP/gdbstub on unix
 * sockets), its lifecycle, QMP, physical-memory access through the gdbstub,
 * migration (source and destination side) and dumps.
 *
 * What runs inside the VM is a guest driver's business (`guest_driver.ts`,
 * `linux_guest.ts`, `tiny_guest.ts`); `qemu.ts` puts the two together.
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
 * @module
 */

import { GdbStubClient } from "./gdbstub.ts";
import { QmpClient } from "./qmp.ts";
import type { QemuBinary, QemuVersion } from "./qemu_binary.ts";

const MiB = 1 << 20;

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

/** What QEMU boots with `-kernel` (a guest driver provides it). */
export interface BootImage {
  /** `-kernel` path (a Linux bzImage or a multiboot ELF). */
  kernel: string;
  /** `-initrd` path. */
  initrd?: string | undefined;
  /** `-append` command line ("" for none). */
  append: string;
}

/** Process-level options: which QEMU, which machine, which devices. */
export interface QemuOptions {
  /** QEMU build. @default {"7.2"} */
  qemu?: QemuVersion;
  /** Machine type (`-M`). @default {"q35"} (the newest q35 of that build) */
  machine?: string;
  /**
   * Add `-device vmcoreinfo`: a Linux guest (which loads `qemu_fw_cfg`) then
   * publishes its VMCOREINFO, and ELF and kdump dumps carry it as a note.
   * @default {false}
   */
  vmcoreinfo?: boolean;
  /** Memory layout overrides. @default {SMALL_LAYOUT} */
  layout?: Partial<VmemLayout>;
  /** Extra QEMU arguments, appended. @default {[]} */
  extraArgs?: string[];
  /**
   * Start with `-incoming URI` (a destination; `"defer"` for
   * `migrate-incoming` later). The guest is then not waited for.
   * @default {undefined}
   */
  incoming?: string;
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

/**
 * Options for {@linkcode QemuProcess.migrate}.
 *
 * @typeParam V The migrating object handed to `onPreSwitchover` (the caller's own type).
 */
export interface MigrateOptions<V = QemuProcess> {
  /** Stop the VM before migrating (deterministic single pass). @default {true} */
  stopFirst?: boolean;
  /**
   * Run with `pause-before-switchover`; called while the migration waits in
   * `pre-switchover` (VM stopped, final pass not yet sent), e.g. to write
   * EVIL pages with {@linkcode QemuProcess.gdbWritePhys}. Gets the migrating
   * QEMU.
   * @default {undefined}
   */
  onPreSwitchover?: (vm: V) => Promise<void>;
  /** Overall timeout. @default {180000} */
  timeoutMs?: number;
  /** `max-bandwidth` in bytes/s. @default {10 GiB/s} */
  maxBandwidth?: number;
}

/** Options for {@linkcode QemuProcess.dumpGuestMemory}. */
export interface DumpGuestMemoryOptions {
  /** `"elf"` (default), `"kdump-zlib"`, `"kdump-lzo"`, `"kdump-snappy"`, `"kdump-raw-zlib"` (≥ 8.2), … */
  format?: string;
  /** Paging mode (virtual addresses from the guest's page tables). @default {false} */
  paging?: boolean;
  /** QMP timeout. @default {180000} */
  timeoutMs?: number;
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

/** QOM path of the virtio-mem device. */
const VMEM_QOM = "/machine/peripheral/vmem0";

const live = new Set<QemuProcess>();
let unloadHooked = false;
function hookUnload(): void {
  if (unloadHooked) return;
  unloadHooked = true;
  globalThis.addEventListener("unload", () => {
    for (const p of live) p.killNow();
  });
}

/**
 * Quote one word for `sh -c`.
 *
 * @param s Any string.
 * @returns `'s'` with inner quotes escaped.
 */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * Wait `ms` milliseconds.
 *
 * @param ms Milliseconds.
 * @returns Resolves after the delay.
 */
export function sleep(ms: number): Promise<void> {
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

/** What {@linkcode spawnQemu} hands to the {@linkcode QemuProcess} constructor. */
export interface QemuProcessInit {
  /** Private directory (sockets, logs). */
  dir: string;
  /** The build. */
  binary: QemuBinary;
  /** Full argument list. */
  args: string[];
  /** Memory layout. */
  layout: VmemLayout;
  /** The spawned QEMU. */
  child: Deno.ChildProcess;
  /** Its exit status. */
  status: Promise<Deno.CommandStatus>;
  /** Connected QMP client. */
  qmp: QmpClient;
}

/**
 * One running QEMU. Obtain it from `startLinuxGuest`, `startTinyGuest`,
 * `startGuest` or `startDestination` in `qemu.ts` (which add the guest
 * driver); dispose with `await using` (or `stop()` / `kill()`), which also
 * removes its private directory.
 */
export class QemuProcess implements AsyncDisposable {
  /** Private directory holding sockets and logs (`qmp.sock`, `cmd.sock`, `gdb.sock`, `console.log`, `qemu.log`). */
  readonly dir: string;
  /** The QEMU build. */
  readonly binary: QemuBinary;
  /** Full QEMU argument list. */
  readonly args: readonly string[];
  /** Memory layout. */
  readonly layout: Readonly<VmemLayout>;
  /** QMP client (use {@linkcode QemuProcess.qmp} for commands). */
  readonly qmpClient: QmpClient;
  #child: Deno.ChildProcess;
  #status: Promise<Deno.CommandStatus>;
  #exited = false;
  #disposed = false;
  #onClose: (() => void)[] = [];

  /**
   * Internal: use the `start…` functions of `qemu.ts`.
   *
   * @param init The spawned process and its connections ({@linkcode spawnQemu}).
   */
  constructor(init: QemuProcessInit) {
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

  /** Unix socket of the second serial port (ttyS1), where the guests serve their line protocol. */
  get serialSocket(): string {
    return `${this.dir}/cmd.sock`;
  }

  /**
   * Run `fn` when the process is cleaned up (before the directory goes), e.g. to close a guest channel.
   *
   * @param fn Synchronous clean-up.
   */
  onClose(fn: () => void): void {
    this.#onClose.push(fn);
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

  // ------------------------------------------------------------------ QMP

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
   * A property of the virtio-mem device (`qom-get`), e.g. `"size"` or `"requested-size"`.
   *
   * @param property QOM property name.
   * @returns Its value.
   */
  async vmemProperty<T = number>(property: string): Promise<T> {
    return await this.qmp<T>("qom-get", { path: VMEM_QOM, property });
  }

  /**
   * Set the device's `requested-size` (what the host asks the guest to plug).
   * Returns at once; the guest driver decides how the guest reacts.
   *
   * @param byteLength New requested size (multiple of the block size).
   */
  async setRequestedSize(byteLength: number): Promise<void> {
    await this.qmp("qom-set", { path: VMEM_QOM, property: "requested-size", value: byteLength });
  }

  /**
   * Poll the device's plugged `size` until it equals `byteLength`.
   *
   * @param byteLength Plugged bytes to wait for.
   * @param timeoutMs Give up after this long.
   * @throws {Error} When the size is not reached in time.
   */
  async waitPluggedSize(byteLength: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const size = await this.vmemProperty("size");
      if (size === byteLength) return;
      if (Date.now() > deadline) {
        throw new Error(
          `virtio-mem size stayed at ${size}, requested ${byteLength}\n${this.diagnostics()}`,
        );
      }
      await sleep(200);
    }
  }

  /**
   * Which dump formats this build writes (`query-dump-guest-memory-capability`).
   *
   * @returns E.g. `["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy"]`.
   */
  async dumpFormats(): Promise<string[]> {
    const cap = await this.qmp<{ formats: string[] }>("query-dump-guest-memory-capability");
    return cap.formats;
  }

  // ------------------------------------------------------------- gdbstub

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

  // ----------------------------------------------------------- migration

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
    const gone = (cause?: unknown) =>
      new Error(
        `QEMU exited while waiting for migration ${states.join("|")}\n${this.diagnostics()}`,
        cause === undefined ? undefined : { cause },
      );
    for (;;) {
      if (this.#exited) throw gone();
      let info: MigrationInfo;
      try {
        info = await this.qmp<MigrationInfo>("query-migrate", undefined, { timeoutMs: 10_000 });
      } catch (e) {
        if (this.#exited || this.qmpClient.closed) {
          await Promise.race([this.#status, sleep(2_000)]);
          throw gone(e);
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
  async migrate(uri: string, options: MigrateOptions<this> = {}): Promise<MigrationInfo> {
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
   * @param options As for {@linkcode QemuProcess.migrate}.
   * @returns The final `query-migrate` result.
   */
  async migrateToFile(path: string, options: MigrateOptions<this> = {}): Promise<MigrationInfo> {
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

  // --------------------------------------------------------------- dumps

  /**
   * QMP `dump-guest-memory` into a file (synchronous: returns when written).
   *
   * @param path Output file.
   * @param options `format` (`"elf"` default, `"kdump-zlib"`, …), `paging` (default false), `timeoutMs`.
   */
  async dumpGuestMemory(path: string, options: DumpGuestMemoryOptions = {}): Promise<void> {
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

  // ----------------------------------------------------------- lifecycle

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

  /** Quit QEMU politely (QMP `quit`, 10 s), then kill; clean up like {@linkcode QemuProcess.kill}. */
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
    for (const fn of this.#onClose) {
      try {
        fn();
      } catch { /* best effort */ }
    }
    await this.qmpClient.close();
    await this.#status.catch(() => {});
    live.delete(this);
    try {
      await Deno.remove(this.dir, { recursive: true });
    } catch { /* already gone */ }
  }

  /** Same as {@linkcode QemuProcess.kill}: nothing is worth keeping at the end of a test. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

function buildArgs(
  bin: QemuBinary,
  image: BootImage,
  dir: string,
  layout: VmemLayout,
  options: QemuOptions,
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
 * Spawn QEMU with `image` and connect QMP. Does not wait for the guest.
 *
 * @param bin The build ({@linkcode qemuBinary} in `qemu_binary.ts`).
 * @param image What to boot.
 * @param options Machine, layout, vmcoreinfo, incoming, extra arguments.
 * @returns Everything the {@linkcode QemuProcess} constructor needs.
 * @throws {Error} When QEMU does not start or its QMP socket does not answer (log attached).
 */
export async function spawnQemu(
  bin: QemuBinary,
  image: BootImage,
  options: QemuOptions = {},
): Promise<QemuProcessInit> {
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
  try {
    const qmp = await QmpClient.connect(`${dir}/qmp.sock`, {
      timeoutMs: 30_000,
      alive: () => !exited,
    });
    return { dir, binary: bin, args, layout, child, status, qmp };
  } catch (e) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await status.catch(() => {});
    const log = tail(`${dir}/qemu.log`);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`QEMU did not start: ${bin.path} ${args.join(" ")}\n${log}`, { cause: e });
  }
}
