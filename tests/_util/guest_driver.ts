/**
 * What runs inside a test VM, seen from the host: the guest-driver interface
 * and the line protocol both test guests serve on their second serial port
 * (ttyS1, a unix socket of {@linkcode QemuProcess}).
 *
 * Protocol: the host sends one line `COMMAND [ARGS]`; the guest answers with
 * zero or more output lines and then `DONE COMMAND rc=N`; when it is up, the
 * guest prints `VMEM-GUEST: READY` on its console (ttyS0). Every guest knows
 * `ping`; the rest is the guest's own (see `linux_guest.ts`, `tiny_guest.ts`).
 *
 * A driver is attached to one {@linkcode QemuProcess}: it waits for the guest
 * to come up, runs its commands, and plugs virtio-mem memory the way that
 * guest does it (the Linux driver follows `requested-size` by itself; the
 * tiny guest plugs exactly the blocks the host names).
 *
 * @module
 */

import { type BootImage, type QemuProcess, sleep } from "./qemu_process.ts";

/** Marker a test guest prints on its console when its command channel is ready. */
export const GUEST_READY_MARKER = "VMEM-GUEST: READY";

/** Which guest a VM runs: the Debian kernel + busybox, the bare-metal tiny guest, or any other image. */
export type GuestKind = "linux" | "tiny" | "custom";

/** A guest's answer on the command channel. */
export interface GuestReply {
  /** The command word. */
  command: string;
  /** Exit status reported by the guest. */
  rc: number;
  /** Output lines before the `DONE` line. */
  lines: string[];
}

/**
 * Client for the guest's ttyS1 line protocol over QEMU's unix socket chardev.
 * A {@linkcode ChannelGuest} owns one; use its `command()`.
 */
export class GuestChannel {
  #conn: Deno.UnixConn;
  #buf = "";
  #decoder = new TextDecoder();
  #closed = false;

  /**
   * Wrap a connected socket; prefer {@linkcode GuestChannel.connect}.
   *
   * @param conn Connected unix socket to the `cmd` chardev.
   */
  constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  /**
   * Connect to the chardev socket.
   *
   * @param path Socket path.
   * @returns The channel.
   * @example
   * ```ts ignore
   * const ch = await GuestChannel.connect(`${dir}/cmd.sock`);
   * ```
   */
  static async connect(path: string): Promise<GuestChannel> {
    return new GuestChannel(await Deno.connect({ transport: "unix", path }));
  }

  /**
   * Send one command and wait for its `DONE` line.
   *
   * @param line Command line, e.g. `"fill 48"`.
   * @param timeoutMs Give up after this long.
   * @returns The reply.
   * @throws {Error} On timeout or a closed channel.
   * @example
   * ```ts ignore
   * const reply = await ch.run("ping", 10_000);
   * ```
   */
  async run(line: string, timeoutMs: number): Promise<GuestReply> {
    if (this.#closed) throw new Error("guest channel is closed");
    if (line.includes("\n")) throw new TypeError("guest command must be one line");
    const command = line.trim().split(/\s+/)[0] ?? "";
    await this.#conn.write(new TextEncoder().encode(line + "\n"));
    const lines: string[] = [];
    const deadline = Date.now() + timeoutMs;
    const buf = new Uint8Array(4096);
    for (;;) {
      let nl: number;
      while ((nl = this.#buf.indexOf("\n")) >= 0) {
        const l = this.#buf.slice(0, nl).replace(/\r$/, "");
        this.#buf = this.#buf.slice(nl + 1);
        const m = /^DONE (\S+) rc=(\d+)$/.exec(l);
        if (m && m[1] === command) return { command, rc: Number(m[2]), lines };
        lines.push(l);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`guest command "${line}" timed out after ${timeoutMs} ms`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.#conn.read(buf),
        new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), left))),
      ]).finally(() => clearTimeout(timer));
      if (n === "timeout") {
        // the read stays pending; close so it settles, then report
        this.close();
        throw new Error(`guest command "${line}" timed out after ${timeoutMs} ms`);
      }
      if (n === null) throw new Error(`guest channel closed during "${line}"`);
      this.#buf += this.#decoder.decode(buf.subarray(0, n), { stream: true });
    }
  }

  /** Close the socket. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

/** The host side of a guest running in one {@linkcode QemuProcess}. */
export interface GuestDriver {
  /** Which guest. */
  readonly kind: GuestKind;
  /** The QEMU it runs in. */
  readonly vm: QemuProcess;
  /**
   * Wait until the guest is up (console marker, then `ping`).
   *
   * @param timeoutMs Give up after this long.
   */
  waitReady(timeoutMs: number): Promise<void>;
  /**
   * Run one protocol command.
   *
   * @param line Command line, e.g. `"ping"`.
   * @param options `timeoutMs` (default 120 s); `allowFailure` returns a non-zero rc instead of throwing.
   */
  command(line: string, options?: CommandOptions): Promise<GuestReply>;
  /**
   * Set the virtio-mem device's plugged size and return when the device reports it.
   *
   * @param byteLength Plugged bytes wanted (multiple of the block size).
   * @param options `timeoutMs` (default 120 s).
   */
  plugTo(byteLength: number, options?: { timeoutMs?: number }): Promise<void>;
}

/** Options for {@linkcode GuestDriver.command}. */
export interface CommandOptions {
  /** Give up after this long. @default {120000} */
  timeoutMs?: number;
  /** Return a non-zero rc instead of throwing. @default {false} */
  allowFailure?: boolean;
}

/**
 * A guest that speaks the line protocol and follows `requested-size` by
 * itself (a Linux guest does; so may a custom image). The base of the Linux
 * and tiny drivers, and the driver of custom images.
 */
export class ChannelGuest implements GuestDriver {
  /** Which guest. */
  readonly kind: GuestKind;
  /** The QEMU it runs in. */
  readonly vm: QemuProcess;
  #channel: GuestChannel | undefined;

  /**
   * Attach to a spawned QEMU (the channel connects on the first command).
   *
   * @param vm The QEMU.
   * @param kind Which guest. @default {"custom"}
   */
  constructor(vm: QemuProcess, kind: GuestKind = "custom") {
    this.vm = vm;
    this.kind = kind;
    vm.onClose(() => this.close());
  }

  /**
   * Wait for `VMEM-GUEST: READY` on the console, then for an answer to `ping`.
   *
   * @param timeoutMs Give up after this long.
   * @throws {Error} When QEMU exits or the guest is not up in time.
   */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.vm.consoleLog().includes(GUEST_READY_MARKER)) break;
      if (this.vm.exited) throw new Error("QEMU exited during boot");
      if (Date.now() > deadline) throw new Error("guest did not become READY in time");
      await sleep(100);
    }
    await this.command("ping", { timeoutMs: 30_000 });
  }

  /**
   * Send one command to the guest's line protocol.
   *
   * @param line Command, e.g. `"fill 48"`.
   * @param options `timeoutMs` (default 120 s); `allowFailure` returns a non-zero rc instead of throwing.
   * @returns The reply.
   * @throws {Error} On timeout, a closed channel, or rc ≠ 0 without `allowFailure`.
   */
  async command(line: string, options: CommandOptions = {}): Promise<GuestReply> {
    this.#channel ??= await GuestChannel.connect(this.vm.serialSocket);
    let reply: GuestReply;
    try {
      reply = await this.#channel.run(line, options.timeoutMs ?? 120_000);
    } catch (e) {
      this.close();
      throw new Error(`guest command "${line}" failed\n${this.vm.diagnostics()}`, { cause: e });
    }
    if (reply.rc !== 0 && !options.allowFailure) {
      throw new Error(`guest command "${line}" returned rc=${reply.rc}: ${reply.lines.join("\n")}`);
    }
    return reply;
  }

  /**
   * Set `requested-size` and wait until the guest has plugged or unplugged
   * to it (the device's `size` equals the request).
   *
   * @param byteLength New requested size (multiple of the block size).
   * @param options `timeoutMs` (default 120 s).
   * @throws {Error} When the size is not reached in time.
   */
  async plugTo(byteLength: number, options: { timeoutMs?: number } = {}): Promise<void> {
    await this.vm.setRequestedSize(byteLength);
    await this.vm.waitPluggedSize(byteLength, options.timeoutMs ?? 120_000);
  }

  /** Close the command channel (it reconnects on the next command). */
  close(): void {
    this.#channel?.close();
    this.#channel = undefined;
  }
}

/**
 * How to boot one kind of guest and drive it: the recipe `qemu.ts` starts
 * VMs from (`startVm(linuxGuestSpec(), …)`).
 *
 * @typeParam G The driver type.
 */
export interface GuestSpec<G extends GuestDriver> {
  /** Which guest. */
  readonly kind: GuestKind;
  /** Kernel, initrd and command line (built on first use, cached). */
  image(): Promise<BootImage>;
  /**
   * The driver for a QEMU booted from {@linkcode GuestSpec.image}.
   *
   * @param vm The spawned QEMU.
   */
  attach(vm: QemuProcess): G;
}

/**
 * A custom image that speaks the line protocol (e.g. a fresh build of the
 * tiny guest before it is committed).
 *
 * @param image Kernel, optional initrd and command line.
 * @returns The spec; its driver is a plain {@linkcode ChannelGuest}.
 * @example
 * ```ts ignore
 * await using vm = await startVm(customGuestSpec({ kernel: elf, append: "" }), { qemu: "10" });
 * ```
 */
export function customGuestSpec(
  image: BootImage,
): GuestSpec<ChannelGuest> {
  return {
    kind: "custom",
    image: () => Promise.resolve(image),
    attach: (vm) => new ChannelGuest(vm, "custom"),
  };
}
