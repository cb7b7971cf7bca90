/**
 * A minimal client for QEMU's gdbstub (gdb remote serial protocol) over a
 * unix socket: physical-memory reads and writes, used to put data into
 * unplugged virtio-mem blocks from the host side (the "malicious" scenarios).
 *
 * QEMU pauses the guest while a debugger is attached; `QemuProcess.gdbWritePhys`
 * in `qemu_process.ts` restores the run state afterwards.
 *
 * @module
 */

/** Largest payload per `M`/`m` packet. */
const PACKET_BYTES = 1024;

function hexOf(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/**
 * gdb remote protocol client. Open with {@linkcode GdbStubClient.connect},
 * then call {@linkcode GdbStubClient.physicalMode} before memory access.
 *
 * @example
 * ```ts ignore
 * const gdb = await GdbStubClient.connect(`${dir}/gdb.sock`);
 * try {
 *   await gdb.physicalMode();
 *   await gdb.writeMemory(0x101c00000, page);
 * } finally {
 *   gdb.close();
 * }
 * ```
 */
export class GdbStubClient {
  #conn: Deno.UnixConn;
  #buf: number[] = [];
  #timeoutMs: number;
  #closed = false;

  private constructor(conn: Deno.UnixConn, timeoutMs: number) {
    this.#conn = conn;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Connect to the gdbstub socket.
   *
   * @param path Socket path (QEMU `-gdb unix:PATH,server=on,wait=off`).
   * @param options `timeoutMs` per packet (default 20 s).
   * @returns The client.
   * @example
   * ```ts ignore
   * const gdb = await GdbStubClient.connect(sock);
   * ```
   */
  static async connect(path: string, options: { timeoutMs?: number } = {}): Promise<GdbStubClient> {
    const conn = await Deno.connect({ transport: "unix", path });
    return new GdbStubClient(conn, options.timeoutMs ?? 20_000);
  }

  async #byte(deadline: number): Promise<number> {
    while (this.#buf.length === 0) {
      const chunk = new Uint8Array(65536);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.#conn.read(chunk),
        new Promise<"timeout">((r) =>
          timer = setTimeout(() => r("timeout"), Math.max(1, deadline - Date.now()))
        ),
      ]).finally(() => clearTimeout(timer));
      if (n === "timeout") {
        this.close();
        throw new Error("gdbstub did not answer in time");
      }
      if (n === null) throw new Error("gdbstub closed the connection");
      for (let i = 0; i < n; i++) this.#buf.push(chunk[i]!);
    }
    return this.#buf.shift()!;
  }

  /**
   * Send one packet and return the reply payload (acks are handled).
   *
   * @param payload Packet body without `$`/`#xx`.
   * @returns Reply body.
   * @example
   * ```ts ignore
   * await gdb.packet("Qqemu.PhyMemMode:1"); // "OK"
   * ```
   */
  async packet(payload: string): Promise<string> {
    if (this.#closed) throw new Error("gdbstub connection is closed");
    const body = new TextEncoder().encode(payload);
    let sum = 0;
    for (const b of body) sum = (sum + b) & 0xff;
    await this.#conn.write(
      new TextEncoder().encode(`$${payload}#${sum.toString(16).padStart(2, "0")}`),
    );
    const deadline = Date.now() + this.#timeoutMs;
    while ((await this.#byte(deadline)) !== 0x24 /* $ */) { /* skip acks and noise */ }
    let reply = "";
    for (;;) {
      const c = await this.#byte(deadline);
      if (c === 0x23 /* # */) break;
      reply += String.fromCharCode(c);
    }
    await this.#byte(deadline);
    await this.#byte(deadline);
    await this.#conn.write(new TextEncoder().encode("+"));
    return reply;
  }

  /**
   * Switch memory accesses to guest-physical addresses (`Qqemu.PhyMemMode:1`).
   *
   * @throws {Error} When QEMU refuses.
   */
  async physicalMode(): Promise<void> {
    const r = await this.packet("Qqemu.PhyMemMode:1");
    if (r !== "OK") throw new Error(`gdbstub refused physical memory mode: ${r}`);
  }

  /**
   * Write bytes at an address (guest-physical after {@linkcode physicalMode}).
   *
   * @param address Start address.
   * @param bytes Data.
   * @throws {Error} When a write is refused.
   */
  async writeMemory(address: number, bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length; at += PACKET_BYTES) {
      const part = bytes.subarray(at, at + PACKET_BYTES);
      const r = await this.packet(
        `M${(address + at).toString(16)},${part.length.toString(16)}:${hexOf(part)}`,
      );
      if (r !== "OK") throw new Error(`gdbstub write at 0x${(address + at).toString(16)}: ${r}`);
    }
  }

  /**
   * Read bytes at an address.
   *
   * @param address Start address.
   * @param byteLength Number of bytes.
   * @returns The bytes.
   * @throws {Error} When a read is refused.
   */
  async readMemory(address: number, byteLength: number): Promise<Uint8Array<ArrayBuffer>> {
    const out = new Uint8Array(byteLength);
    for (let at = 0; at < byteLength; at += PACKET_BYTES) {
      const n = Math.min(PACKET_BYTES, byteLength - at);
      const r = await this.packet(`m${(address + at).toString(16)},${n.toString(16)}`);
      if (r.length !== 2 * n || !/^[0-9a-f]*$/i.test(r)) {
        throw new Error(`gdbstub read at 0x${(address + at).toString(16)}: ${r.slice(0, 16)}`);
      }
      for (let i = 0; i < n; i++) out[at + i] = Number.parseInt(r.slice(2 * i, 2 * i + 2), 16);
    }
    return out;
  }

  /** Close the connection. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}
