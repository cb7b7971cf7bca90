/**
 * A minimal QMP (QEMU Machine Protocol) client over a unix socket, for
 * real-QEMU tests. Commands carry an `id`, so several may be in flight;
 * asynchronous events are kept in `events`.
 *
 * @module
 */

/** A QMP error reply turned into an exception. */
export class QmpError extends Error {
  /** Always `"QmpError"`. */
  override name = "QmpError";
  /** QMP error class, e.g. `"GenericError"`. */
  readonly errorClass: string;
  /** The command that failed. */
  readonly command: string;

  /**
   * Build the error from a QMP error reply.
   *
   * @param command Command name.
   * @param errorClass QMP `error.class`.
   * @param desc QMP `error.desc`.
   */
  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.command = command;
    this.errorClass = errorClass;
  }
}

/** One asynchronous QMP event. */
export interface QmpEvent {
  /** Event name, e.g. `"MIGRATION"`. */
  event: string;
  /** Event data. */
  data?: Record<string, unknown>;
  /** Timestamp from QEMU. */
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(reason: unknown): void;
}

/**
 * QMP client. Connect with {@linkcode QmpClient.connect}; close with `close()`
 * (or `using`).
 *
 * @example
 * ```ts ignore
 * using qmp = await QmpClient.connect("/tmp/x/qmp.sock");
 * const status = await qmp.execute("query-status");
 * ```
 */
export class QmpClient implements Disposable {
  /** The greeting QEMU sent on connect (`{QMP: {version, capabilities}}`). */
  readonly greeting: Record<string, unknown>;
  /** Events received so far, oldest first. */
  readonly events: QmpEvent[] = [];
  #conn: Deno.UnixConn;
  #pending = new Map<string, Pending>();
  #nextId = 1;
  #closed = false;
  #closeReason: Error | undefined;
  #readLoop: Promise<void>;
  #eventWaiters = new Set<() => void>();

  private constructor(conn: Deno.UnixConn, greeting: Record<string, unknown>, rest: string) {
    this.#conn = conn;
    this.greeting = greeting;
    this.#readLoop = this.#loop(rest);
  }

  /**
   * Connect to a QMP unix socket, read the greeting and enter command mode
   * (`qmp_capabilities`). Retries until the socket exists.
   *
   * @param path Socket path.
   * @param options `timeoutMs` for the whole connect (default 30 s); `alive()`
   *   is polled between retries and aborts the wait when it returns false.
   * @returns A ready client.
   * @throws {Error} On timeout or when `alive()` turns false.
   * @example
   * ```ts ignore
   * const qmp = await QmpClient.connect(sock, { timeoutMs: 10_000 });
   * ```
   */
  static async connect(
    path: string,
    options: { timeoutMs?: number; alive?: () => boolean } = {},
  ): Promise<QmpClient> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    let conn: Deno.UnixConn | undefined;
    for (;;) {
      try {
        conn = await Deno.connect({ transport: "unix", path });
        break;
      } catch (e) {
        if (options.alive && !options.alive()) {
          throw new Error(`QEMU exited before its QMP socket ${path} accepted`, { cause: e });
        }
        if (Date.now() > deadline) throw new Error(`QMP socket ${path} not ready`, { cause: e });
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    // read the greeting line synchronously here, then hand the rest to the loop
    const dec = new TextDecoder();
    let text = "";
    const buf = new Uint8Array(65536);
    try {
      while (!text.includes("\n")) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const n = await Promise.race([
          conn.read(buf),
          new Promise<"timeout">((r) =>
            timer = setTimeout(() => r("timeout"), Math.max(1, deadline - Date.now()))
          ),
        ]).finally(() => clearTimeout(timer));
        if (n === "timeout") throw new Error(`no QMP greeting on ${path}`);
        if (n === null) throw new Error(`QMP socket ${path} closed before the greeting`);
        text += dec.decode(buf.subarray(0, n), { stream: true });
      }
    } catch (e) {
      conn.close();
      throw e;
    }
    const nl = text.indexOf("\n");
    const greeting = JSON.parse(text.slice(0, nl));
    const client = new QmpClient(conn, greeting, text.slice(nl + 1));
    try {
      await client.execute("qmp_capabilities", undefined, { timeoutMs: 10_000 });
    } catch (e) {
      await client.close();
      throw e;
    }
    return client;
  }

  async #loop(initial: string): Promise<void> {
    const dec = new TextDecoder();
    let text = initial;
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        let nl: number;
        while ((nl = text.indexOf("\n")) >= 0) {
          const line = text.slice(0, nl).trim();
          text = text.slice(nl + 1);
          if (line) this.#dispatch(line);
        }
        const n = await this.#conn.read(buf);
        if (n === null) break;
        text += dec.decode(buf.subarray(0, n), { stream: true });
      }
      this.#closeReason ??= new Error("QMP connection closed by QEMU");
    } catch (e) {
      this.#closeReason ??= new Error("QMP connection failed", { cause: e });
    }
    this.#closed = true;
    for (const p of this.#pending.values()) p.reject(this.#closeReason);
    this.#pending.clear();
    for (const w of this.#eventWaiters) w();
  }

  #dispatch(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // not JSON: ignore
    }
    if (typeof msg.event === "string") {
      this.events.push(msg as unknown as QmpEvent);
      for (const w of this.#eventWaiters) w();
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const p = id === undefined ? undefined : this.#pending.get(id);
    if (!p || id === undefined) return;
    this.#pending.delete(id);
    if ("error" in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, err.class ?? "?", err.desc ?? "?"));
    } else {
      p.resolve(msg.return);
    }
  }

  /** Whether the connection is closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Run one QMP command.
   *
   * @param command Command name, e.g. `"query-status"`.
   * @param args Arguments object.
   * @param options `timeoutMs` (default 60 s).
   * @returns The `return` value.
   * @throws {QmpError} When QEMU answers with an error.
   * @example
   * ```ts ignore
   * await qmp.execute("qom-set", { path: "/machine/peripheral/vmem0", property: "requested-size", value: 100 << 20 });
   * ```
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.#closed) {
      return Promise.reject(this.#closeReason ?? new Error("QMP connection is closed"));
    }
    const id = `c${this.#nextId++}`;
    const timeoutMs = options.timeoutMs ?? 60_000;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg.arguments = args;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`QMP ${command} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#conn.write(new TextEncoder().encode(JSON.stringify(msg) + "\n")).catch((e) => {
        const p = this.#pending.get(id);
        this.#pending.delete(id);
        p?.reject(new Error(`Cannot send QMP ${command}`, { cause: e }));
      });
    });
  }

  /**
   * Run a human monitor (HMP) command line, e.g. `"info ramblock"`.
   *
   * @param commandLine The HMP command.
   * @returns Its text output.
   * @example
   * ```ts ignore
   * console.log(await qmp.hmp("info mtree -f"));
   * ```
   */
  hmp(commandLine: string): Promise<string> {
    return this.execute<string>("human-monitor-command", { "command-line": commandLine });
  }

  /**
   * Wait for an event (already received ones count; they are consumed).
   *
   * @param name Event name.
   * @param options `timeoutMs` (default 60 s) and a `match` predicate on the data.
   * @returns The event.
   * @throws {Error} On timeout or a closed connection.
   * @example
   * ```ts ignore
   * await qmp.waitEvent("STOP");
   * ```
   */
  async waitEvent(
    name: string,
    options: { timeoutMs?: number; match?: (e: QmpEvent) => boolean } = {},
  ): Promise<QmpEvent> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    for (;;) {
      const i = this.events.findIndex((e) =>
        e.event === name && (options.match === undefined || options.match(e))
      );
      if (i >= 0) return this.events.splice(i, 1)[0]!;
      if (this.#closed) throw this.#closeReason ?? new Error("QMP connection is closed");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`QMP event ${name} did not arrive`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      let waiter: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        waiter = resolve;
        this.#eventWaiters.add(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      if (waiter) this.#eventWaiters.delete(waiter);
    }
  }

  /** Close the connection and wait for the reader to finish. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closeReason ??= new Error("QMP connection closed by the test");
      this.#closed = true;
      try {
        this.#conn.close();
      } catch { /* already closed */ }
    }
    await this.#readLoop;
  }

  /** Synchronous close for `using`; the read loop ends on its own. */
  [Symbol.dispose](): void {
    if (!this.#closed) {
      this.#closeReason ??= new Error("QMP connection closed by the test");
      this.#closed = true;
      try {
        this.#conn.close();
      } catch { /* already closed */ }
    }
  }
}
