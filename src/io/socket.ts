/**
 * Stream sockets for the migration proxy: listen on and connect to
 * `unix:`/`tcp:` endpoints, and read a connection through a
 * {@linkcode ByteReader}. Beside `file.ts`, the only module of `src/` that
 * touches `Deno.*`.
 *
 * - A unix socket is created with mode 0600: bound under a temporary name,
 *   chmod-ed, then hard-linked into place, so it is never reachable with
 *   looser permissions and never replaces an existing file.
 * - TCP connections send without Nagle's delay (`TCP_NODELAY`): the relay
 *   writes what it read at once, so a burst's last segment never waits for
 *   an acknowledgement.
 * - Connection reads land in a reused arena (fresh buffers per read would
 *   make memory grow with the stream until the garbage collector catches
 *   up), so views handed out stay valid only for a while: see
 *   {@linkcode SocketConnection.byteReader}.
 *
 * @module
 */

import { PullByteReader } from "./byte_reader.ts";
import { type Endpoint, formatEndpoint } from "./endpoint.ts";

/**
 * Writing failed because the peer closed the connection (or reset it, or
 * this side was closed).
 *
 * @example
 * ```ts
 * import { SocketClosedError } from "./socket.ts";
 * console.log(new SocketClosedError("Broken pipe").name); // SocketClosedError
 * ```
 */
export class SocketClosedError extends Error {
  /** Always `"SocketClosedError"`. */
  override name = "SocketClosedError";
}

/** An accepted or connected stream socket. */
export class SocketConnection {
  #conn: Deno.Conn;
  #closed = false;
  #writeClosed = false;

  /**
   * Wrap a connection.
   *
   * @param conn The Deno connection.
   */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    // A relay writes what it read at once (it coalesces into large writes itself):
    // Nagle's algorithm could only hold a burst's last segment back for an ACK.
    if (conn.remoteAddr.transport === "tcp") {
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch { /* the connection is already gone: its reads and writes say so */ }
    }
  }

  /** Whether {@linkcode SocketConnection.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Read what arrives next into `buffer`.
   *
   * @param buffer Where to read to.
   * @returns The byte count, or `null` when the peer closed its side (or
   * this side was closed, or the connection was reset).
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    try {
      return await this.#conn.read(buffer);
    } catch (e) {
      if (isClosedError(e)) return null;
      throw e;
    }
  }

  /**
   * Write every byte of `chunk`.
   *
   * @param chunk The bytes (not kept after the promise resolves).
   * @throws {SocketClosedError} when the peer closed or reset the connection.
   */
  async write(chunk: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < chunk.byteLength) done += await this.#conn.write(chunk.subarray(done));
    } catch (e) {
      if (isClosedError(e)) throw new SocketClosedError((e as Error).message, { cause: e });
      throw e;
    }
  }

  /** Shut the sending side down (the peer reads the end); reading goes on. Never throws. */
  async closeWrite(): Promise<void> {
    if (this.#writeClosed || this.#closed) return;
    this.#writeClosed = true;
    try {
      await this.#conn.closeWrite();
    } catch { /* the peer may already be gone */ }
  }

  /** Close both directions; pending reads end. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  /**
   * Read until at least `n` bytes arrived (to classify a connection by its
   * first bytes); give them back to {@linkcode SocketConnection.byteReader}
   * as `head`.
   *
   * @param n Bytes wanted.
   * @returns What was read (at least `n` bytes unless the peer closed first).
   */
  async readHead(n: number): Promise<Uint8Array<ArrayBuffer>> {
    const buf = new Uint8Array(Math.max(n, 4096));
    let have = 0;
    while (have < n) {
      const got = await this.read(buf.subarray(have));
      if (got === null) break;
      have += got;
    }
    return buf.slice(0, have);
  }

  /**
   * A reader over what arrives. Each pull returns what one read gives, so
   * data moves on promptly. Reads land in a reused arena of `arenaSize`
   * bytes, so the reader's `viewLifetime` is `"until-refill"` (in fact a
   * view stays valid until `arenaSize - readSize` more bytes were read), which covers one decoded batch of a pipeline (it encodes, i.e.
   * copies, every batch before it pulls again; the decoder copies what it
   * keeps). A closed or reset connection is the end of the input.
   *
   * @param options `head`: bytes already read (from `readHead`); `beforeRead`:
   * called before every read (a relay pushes out what it buffered);
   * `arenaSize`, `readSize`: defaults 8 MiB and 1 MiB; `reuseStitchBuffers`:
   * see `PullByteReaderOptions` (for records larger than a read), and reads
   * that span chunks are then read into place (`readInto`).
   * @returns The reader.
   */
  byteReader(
    options: {
      head?: Uint8Array;
      beforeRead?: () => void;
      arenaSize?: number;
      readSize?: number;
      reuseStitchBuffers?: boolean;
    } = {},
  ): PullByteReader {
    const arenaSize = options.arenaSize ?? 8 << 20;
    const readSize = options.readSize ?? 1 << 20;
    const arena = new Uint8Array(arenaSize);
    let at = 0;
    let head = options.head;
    const beforeRead = options.beforeRead;
    return new PullByteReader(async () => {
      if (head !== undefined) {
        const h = head;
        head = undefined;
        if (h.byteLength > 0) return h;
      }
      beforeRead?.();
      if (at + readSize > arenaSize) at = 0;
      const n = await this.read(arena.subarray(at, at + readSize));
      if (n === null) return undefined;
      const view = arena.subarray(at, at + n);
      at += n;
      return view;
    }, {
      viewLifetime: "until-refill",
      ...(options.reuseStitchBuffers
        ? {
          reuseStitchBuffers: true,
          // Joined reads fill their buffer from the socket directly.
          readInto: (buffer: Uint8Array) => {
            beforeRead?.();
            return this.read(buffer);
          },
        }
        : {}),
    });
  }
}

function isClosedError(e: unknown): boolean {
  return e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted ||
    e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe ||
    e instanceof Deno.errors.NotConnected;
}

/** A listening socket. */
export interface SocketListener {
  /** Where it listens (a `tcp:` port 0 resolved to the real port). */
  readonly endpoint: Endpoint;
  /**
   * Accept the next connection.
   *
   * @param options `timeoutMs`: give up (and reject) after this long; 0 waits forever.
   * @returns The connection.
   * @throws {Deno.errors.TimedOut} when the timeout passed.
   * @throws {Deno.errors.BadResource} when the listener was closed.
   */
  accept(options?: { timeoutMs?: number }): Promise<SocketConnection>;
  /** Stop listening and remove a unix socket's name. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Listen on an endpoint. A unix socket gets mode 0600 before it appears
 * under its name, and never replaces an existing file.
 *
 * @param endpoint Where to listen.
 * @returns The listener.
 * @throws {Deno.errors.AlreadyExists} when a unix socket path already exists.
 *
 * @example
 * ```ts ignore
 * import { listenSocket } from "./socket.ts";
 * import { parseEndpoint } from "@vmem-dump/vmem-dump";
 * const listener = await listenSocket(parseEndpoint("unix:/run/vm/mig.sock"));
 * const conn = await listener.accept();
 * await listener.close();
 * ```
 */
export async function listenSocket(endpoint: Endpoint): Promise<SocketListener> {
  if (endpoint.transport === "tcp") {
    const listener = Deno.listen({
      transport: "tcp",
      hostname: endpoint.hostname,
      port: endpoint.port,
    });
    const addr = listener.addr as Deno.NetAddr;
    return wrapListener(
      listener,
      { transport: "tcp", hostname: addr.hostname, port: addr.port },
      () => Promise.resolve(),
    );
  }
  const path = endpoint.path;
  const cut = path.lastIndexOf("/");
  const tmp = `${cut >= 0 ? path.slice(0, cut + 1) : ""}.${path.slice(cut + 1)}.tmp-${Deno.pid}`;
  const listener = Deno.listen({ transport: "unix", path: tmp });
  try {
    await Deno.chmod(tmp, 0o600);
    // link() fails if the name exists: never replace someone else's file.
    await Deno.link(tmp, path);
  } catch (e) {
    closeListener(listener);
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new Deno.errors.AlreadyExists(`${path} already exists`);
    }
    throw e;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return wrapListener(listener, endpoint, () => Deno.remove(path).catch(() => {}));
}

function wrapListener(
  listener: Deno.Listener,
  endpoint: Endpoint,
  removeName: () => Promise<void>,
): SocketListener {
  let closed = false;
  return {
    endpoint,
    async accept(options = {}) {
      const timeoutMs = options.timeoutMs ?? 0;
      const accepting = listener.accept();
      if (timeoutMs <= 0) return new SocketConnection(await accepting);
      accepting.catch(() => {});
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(
            new Deno.errors.TimedOut(
              `no connection on ${formatEndpoint(endpoint)} within ${timeoutMs / 1000} s`,
            ),
          );
        }, timeoutMs);
      });
      try {
        return new SocketConnection(await Promise.race([accepting, timeout]));
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      closeListener(listener);
      await removeName();
    },
  };
}

function closeListener(l: Deno.Listener): void {
  try {
    l.close();
  } catch { /* already closed */ }
}

/**
 * Connect to an endpoint, retrying while nobody listens yet (a destination
 * QEMU that is still starting).
 *
 * @param endpoint Where to connect.
 * @param options `timeoutMs`: how long to keep retrying (default 10 s);
 * `retryIntervalMs` (default 100).
 * @returns The connection.
 * @throws {Error} naming the endpoint when it cannot be reached in time.
 *
 * @example
 * ```ts ignore
 * import { connectSocket } from "./socket.ts";
 * import { parseEndpoint } from "@vmem-dump/vmem-dump";
 * const conn = await connectSocket(parseEndpoint("unix:/run/vm/dst.sock"), { timeoutMs: 5000 });
 * ```
 */
export async function connectSocket(
  endpoint: Endpoint,
  options: { timeoutMs?: number; retryIntervalMs?: number } = {},
): Promise<SocketConnection> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    try {
      const conn = endpoint.transport === "unix"
        ? await Deno.connect({ transport: "unix", path: endpoint.path })
        : await Deno.connect({
          transport: "tcp",
          hostname: endpoint.hostname,
          port: endpoint.port,
        });
      return new SocketConnection(conn);
    } catch (e) {
      const retry = e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.NotFound;
      if (!retry || Date.now() >= deadline) {
        throw new Error(
          `Cannot connect to ${formatEndpoint(endpoint)}: ${(e as Error).message}`,
          { cause: e },
        );
      }
      await new Promise((r) => setTimeout(r, options.retryIntervalMs ?? 100));
    }
  }
}
