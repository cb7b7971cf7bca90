/**
 * One proxied migration as a library object: listen for the source QEMU,
 * connect to the destination QEMU, relay the main channel (pass, filter or
 * verify), relay the return path back, and finish or fail both sides
 * cleanly. `vmem-dump proxy` is a thin wrapper around it.
 *
 * ## Lifecycle ({@linkcode ProxyState})
 * `listening` (bound; waiting for the main channel) → `connecting` (to the
 * destination) → `relaying` → `completing` (the stream is complete: the
 * source and the destination finish their ends) → `completed`, or `failed`
 * from any state.
 *
 * ## Channels
 * Every connection to the listen endpoint is classified by its first four
 * bytes. `QEVM` is the main channel; other magics go to the
 * {@linkcode ChannelHandler}s given in the options (multifd registers one
 * for its channels, see `channel.ts`). The main channel's `QEMU_VM_EOF` is
 * withheld until every extra channel has agreed.
 *
 * ## The return path
 * When the source sends `OPEN_RETURN_PATH` (capability `return-path`, which
 * `switchover-ack` needs), the destination answers on the same connection
 * (`PONG`, `SWITCHOVER_ACK`, and `SHUT` when it is done). The session
 * decodes every message, checks it (known type and length; a PONG answers a
 * forwarded PING; postcopy messages are refused; a `SHUT` that reports
 * success before the EOF was forwarded is impossible; nothing after `SHUT`)
 * and relays it unchanged to the source. Before `OPEN_RETURN_PATH`, any
 * byte from the destination means it went away.
 *
 * A source with a return path waits for the destination's `SHUT` before it
 * closes its connection, so the relay treats the stream as complete at its
 * vmdesc (see `MigrationPipeline`), not at the source's end.
 *
 * ## Verify mode: the veto
 * At the first violation the destination's sending side is shut down
 * without `QEMU_VM_EOF`: its load fails and it never starts the VM (QEMU
 * 10.0 then sends `SHUT` with its error flag, which is relayed). The source
 * is read to the end of its stream to report every violation, then its
 * connection is closed. A source with a return path waits for a `SHUT`, so
 * it sees a failed or closed return path: its migration ends `failed` and
 * its VM stays there (`cont` resumes it). Without a return path the source
 * cannot be told: it reports `completed` although the destination never
 * started (see docs/filter-verify-proxy.md).
 *
 * @module
 */

import { FormatError, UnsupportedFeatureError } from "../errors.ts";
import { type Endpoint, formatEndpoint } from "../io/endpoint.ts";
import {
  connectSocket,
  listenSocket,
  SocketClosedError,
  type SocketConnection,
  type SocketListener,
} from "../io/socket.ts";
import { QEMU_VM_FILE_MAGIC } from "../migration/constants.ts";
import * as C from "../migration/constants.ts";
import { ReturnPathDecoder, type ReturnPathMessage } from "../migration/return_path.ts";
import type { PlugStateViolation, VerifyResult } from "../migration/verify.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import type { ChannelEvent, ChannelHandler, ChannelSummary, ExtraChannel } from "./channel.ts";
import {
  MigrationRelay,
  type RelayMode,
  type RelayProgress,
  type RelayResult,
  RelayVerificationError,
} from "./relay.ts";

/** Where a {@linkcode ProxySession} is in its life. */
export enum ProxyState {
  /** Bound; waiting for the source's main channel. */
  Listening = "listening",
  /** The source connected; connecting to the destination. */
  Connecting = "connecting",
  /** Relaying the migration. */
  Relaying = "relaying",
  /** The stream is complete; the source and the destination finish their ends. */
  Completing = "completing",
  /** Done: the destination has the whole stream. */
  Completed = "completed",
  /** Failed (verification, a malformed stream, a peer gone). */
  Failed = "failed",
}

/** Something a session reports while it runs (for logs and progress lines). */
export type ProxyEvent =
  | { kind: "state"; state: ProxyState }
  | { kind: "source-connected"; channel: string }
  | { kind: "destination-connected"; channel: string; endpoint: Endpoint }
  | { kind: "return-path-opened" }
  | { kind: "return-path-message"; message: ReturnPathMessage }
  | { kind: "verification-failed"; violation: PlugStateViolation }
  | { kind: "progress"; progress: RelayProgress }
  | ChannelEvent;

/** Why a session failed on a connection (not on the stream's content). */
export type ProxyErrorCode =
  | "accept-timeout"
  | "connect-failed"
  | "destination-gone"
  | "unexpected-connection";

/**
 * A session failed because of a connection: no source came, the
 * destination could not be reached or went away, or a connection arrived
 * that the session cannot take.
 *
 * @example
 * ```ts
 * import { ProxyError } from "@vmem-dump/vmem-dump/proxy";
 * const e = new ProxyError("the destination closed the connection", "destination-gone");
 * console.log(e.code); // destination-gone
 * ```
 */
export class ProxyError extends Error {
  /** Always `"ProxyError"`. */
  override name = "ProxyError";
  /** What went wrong. */
  readonly code: ProxyErrorCode;

  /**
   * Construct it.
   *
   * @param message What happened, for people.
   * @param code What happened, for programs.
   * @param options Standard error options, e.g. `{ cause }`.
   */
  constructor(message: string, code: ProxyErrorCode, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** Options for {@linkcode ProxySession.listen}. */
export interface ProxySessionOptions {
  /** Where the source connects (`migrate` URI). */
  listen: Endpoint;
  /** Where the destination listens (`-incoming`). */
  connect: Endpoint;
  /** What the relay does to the stream. @default {"pass"} */
  mode?: RelayMode;
  /** Out-of-band plug state for `filter` and `verify`. @default {undefined} */
  plugMap?: PlugMap;
  /** Give up when no main channel arrived within this time; 0 waits forever. @default {0} */
  acceptTimeoutMs?: number;
  /** Keep retrying the destination this long. @default {10000} */
  connectTimeoutMs?: number;
  /** After a clean relay, how long to wait for the destination to close. @default {30000} */
  lingerMs?: number;
  /** Minimum time between `progress` events. @default {500} */
  progressIntervalMs?: number;
  /** Receives every event. @default {undefined} */
  onEvent?: (event: ProxyEvent) => void;
  /** Handlers for connections that are not the main channel (multifd). @default {[]} */
  channelHandlers?: readonly ChannelHandler[];
}

/** What the return path carried. */
export interface ReturnPathSummary {
  /** Whether the source opened it. */
  opened: boolean;
  /** Messages relayed, by name. */
  messages: Record<string, number>;
  /** The destination's `SHUT` error flag (0: loaded fine), if it sent one. */
  shut: number | undefined;
}

/** Outcome of a session. */
export interface ProxyResult extends RelayResult {
  /** The relay mode. */
  mode: RelayMode;
  /** Wall time from the main channel's arrival to the end. */
  seconds: number;
  /** The return path. */
  returnPath: ReturnPathSummary;
  /** Extra channels, in arrival order. */
  channels: ChannelSummary[];
}

const QEVM = QEMU_VM_FILE_MAGIC;

/** Messages only postcopy sends; the proxy refuses postcopy. */
const POSTCOPY_RP = new Set([
  C.MIG_RP_MSG_REQ_PAGES,
  C.MIG_RP_MSG_REQ_PAGES_ID,
  C.MIG_RP_MSG_RECV_BITMAP,
  C.MIG_RP_MSG_RESUME_ACK,
]);

/**
 * One proxied migration. Create it with {@linkcode ProxySession.listen}
 * (it binds at once, so the caller can print the endpoint), then
 * {@linkcode ProxySession.run} it.
 *
 * @example Relay one migration in verify mode
 * ```ts ignore
 * import { parseEndpoint, ProxySession } from "@vmem-dump/vmem-dump";
 * const session = await ProxySession.listen({
 *   listen: parseEndpoint("unix:/run/vm/mig.sock"),
 *   connect: parseEndpoint("unix:/run/vm/dst.sock"),
 *   mode: "verify",
 *   onEvent: (e) => console.error(e.kind),
 * });
 * const result = await session.run(); // throws a RelayVerificationError on a violation
 * console.log(result.verify?.clean, result.returnPath.messages);
 * ```
 */
export class ProxySession {
  #options: ProxySessionOptions;
  #listener: SocketListener;
  #state = ProxyState.Listening;
  #started = false;
  #failure: unknown;
  #source: SocketConnection | undefined;
  #destination: SocketConnection | undefined;
  #relay: MigrationRelay | undefined;
  #channels: ExtraChannel[] = [];
  #pendingChannels: Promise<unknown>[] = [];
  #connections: SocketConnection[] = [];
  #vetoed = false;
  #acceptTimer: ReturnType<typeof setTimeout> | undefined;
  /** Violations the extra channels reported (verify mode). */
  #channelViolations: PlugStateViolation[] = [];
  #mainConnected!: () => void;
  /** Resolves once the main channel is connected to the destination (extra channels connect after it). */
  #mainDestination: Promise<void> = new Promise((resolve) => (this.#mainConnected = resolve));
  #returnPath: ReturnPathSummary = { opened: false, messages: {}, shut: undefined };
  #mainArrived!: (arrival: { conn: SocketConnection; head: Uint8Array }) => void;
  #mainFailed!: (error: unknown) => void;
  #main: Promise<{ conn: SocketConnection; head: Uint8Array }>;

  private constructor(options: ProxySessionOptions, listener: SocketListener) {
    this.#options = options;
    this.#listener = listener;
    this.#main = new Promise((resolve, reject) => {
      this.#mainArrived = resolve;
      this.#mainFailed = reject;
    });
    this.#main.catch(() => {});
  }

  /**
   * Bind the listen endpoint (a unix socket with mode 0600) and return the
   * session, ready to {@linkcode ProxySession.run}.
   *
   * @param options Endpoints, mode, plug map, timeouts, hooks.
   * @returns The session.
   * @throws {Deno.errors.AlreadyExists} when a unix socket path already exists.
   */
  static async listen(options: ProxySessionOptions): Promise<ProxySession> {
    return new ProxySession(options, await listenSocket(options.listen));
  }

  /** Where the session listens (a `tcp:` port 0 resolved). */
  get endpoint(): Endpoint {
    return this.#listener.endpoint;
  }

  /** The current state. */
  get state(): ProxyState {
    return this.#state;
  }

  /**
   * Whether the main channel's `QEMU_VM_EOF` was handed to the destination
   * (after a failure: whether the destination may have loaded and started
   * the VM).
   */
  get eofForwarded(): boolean {
    return this.#relay?.eofForwarded ?? false;
  }

  #emit(event: ProxyEvent): void {
    this.#options.onEvent?.(event);
  }

  #setState(state: ProxyState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit({ kind: "state", state });
  }

  /** Record the first failure and close everything, so every pending read and write ends. */
  #fail(error: unknown): void {
    if (this.#failure === undefined) this.#failure = error;
    this.#closeAll(error);
  }

  #closeAll(reason: unknown): void {
    void this.#listener.close();
    for (const c of this.#connections) c.close();
    for (const ch of this.#channels) ch.abort(reason);
    this.#mainFailed(reason);
  }

  /**
   * Relay one migration: wait for the source, connect to the destination,
   * relay to the end, finish both sides.
   *
   * @returns Counts, the filter/verify outcome and the return path's messages.
   * @throws {RelayVerificationError} in verify mode when a record touched an unplugged block.
   * @throws {ProxyError} when no source came, the destination could not be reached or went away.
   * @throws {UnsupportedFeatureError} for postcopy, COLO and connections no handler takes.
   * @throws {FormatError} for a malformed or truncated stream or return path.
   */
  async run(): Promise<ProxyResult> {
    if (this.#started) throw new TypeError("ProxySession.run() was already called");
    this.#started = true;
    const options = this.#options;
    const acceptTimeoutMs = options.acceptTimeoutMs ?? 0;
    if (acceptTimeoutMs > 0) {
      this.#acceptTimer = setTimeout(() => {
        this.#fail(
          new ProxyError(
            `no source connected to ${formatEndpoint(this.endpoint)} within ${
              acceptTimeoutMs / 1000
            } s`,
            "accept-timeout",
          ),
        );
      }, acceptTimeoutMs);
    }
    const accepting = this.#acceptLoop();
    try {
      const result = await this.#runMain();
      this.#setState(ProxyState.Completed);
      return result;
    } catch (e) {
      this.#setState(ProxyState.Failed);
      this.#fail(e);
      throw this.#failure;
    } finally {
      clearTimeout(this.#acceptTimer);
      await this.#listener.close();
      await accepting;
      await Promise.allSettled(this.#pendingChannels);
    }
  }

  /** Close the listener and every connection (for a caller that gives up without `run`). */
  async close(): Promise<void> {
    this.#closeAll(new ProxyError("the session was closed", "destination-gone"));
    await this.#listener.close();
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: SocketConnection;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // the listener was closed
      }
      if (this.#failure !== undefined || this.#state === ProxyState.Completed) {
        conn.close();
        continue;
      }
      this.#connections.push(conn);
      const classified = this.#classify(conn).catch((e) => this.#fail(e));
      this.#pendingChannels.push(classified);
    }
  }

  /** Read a connection's first four bytes and hand it to the main channel or a handler. */
  async #classify(conn: SocketConnection): Promise<void> {
    const head = await conn.readHead(4);
    if (head.byteLength < 4) {
      // A connection that closes before saying anything is not a channel.
      conn.close();
      return;
    }
    const magic = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
    if (magic === QEVM) {
      if (this.#source !== undefined) {
        throw new ProxyError(
          "a second migration stream connected while one is being relayed",
          "unexpected-connection",
        );
      }
      this.#source = conn;
      this.#mainArrived({ conn, head });
      return;
    }
    const handler = this.#options.channelHandlers?.find((h) => h.magic === magic);
    if (handler === undefined) {
      const what = magic === 0x11223344 ? " (a multifd channel)" : "";
      throw new UnsupportedFeatureError(
        `Cannot relay migration: a connection started with 0x${
          magic.toString(16).padStart(8, "0")
        }${what}, which the proxy does not relay; turn off multifd on the source`,
        "migration",
        0,
      );
    }
    const channel = await handler.open({
      source: conn,
      head,
      connectDestination: async () => {
        await this.#mainDestination;
        const d = await this.#connectDestination();
        this.#connections.push(d);
        return d;
      },
      mode: this.#options.mode ?? "pass",
      plugMap: this.#options.plugMap,
      mainStage: () => this.#relay?.stage,
      eofForwarded: () => this.#relay?.eofForwarded ?? false,
      emit: (e) => this.#emit(e),
      veto: (violations) => this.#channelVeto(violations),
    });
    this.#channels.push(channel);
    if (this.#failure !== undefined) channel.abort(this.#failure);
    if (this.#vetoed) channel.detachOutput?.();
    // After a veto the destination fails, so channels lose it: not a failure of the session.
    channel.done.catch((e) => {
      if (this.#vetoed) return;
      this.#fail(
        e instanceof SocketClosedError
          ? new ProxyError(
            `${channel.label}: writing to the destination failed: ${e.message}; closed both connections`,
            "destination-gone",
            { cause: e },
          )
          : e,
      );
    });
  }

  /** The veto: no EOF ever; the destination reads the end of its main channel and fails. */
  #veto(first: PlugStateViolation): void {
    if (this.#vetoed) return;
    this.#vetoed = true;
    this.#emit({ kind: "verification-failed", violation: first });
    this.#relay?.detachOutput();
    void this.#destination?.closeWrite();
    for (const c of this.#channels) c.detachOutput?.();
  }

  #channelVeto(violations: readonly PlugStateViolation[]): void {
    this.#channelViolations.push(...violations);
    if (violations.length > 0) this.#veto(violations[0]!);
  }

  /**
   * The verification outcome with the extra channels' violations added, once
   * the channels have read their sources to the end (or 10 s passed).
   */
  async #verificationError(main: VerifyResult | undefined): Promise<RelayVerificationError> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled(this.#channels.map((c) => c.done)),
      new Promise((r) => (timer = setTimeout(r, 10_000))),
    ]);
    clearTimeout(timer);
    const base = main ?? this.#relay?.verifyResult ?? {
      clean: true,
      layout: "none" as const,
      pageRecords: 0,
      violationCount: 0,
      violatingRecords: 0,
      violations: [],
      devices: [],
    };
    const extra = this.#channelViolations;
    return new RelayVerificationError({
      ...base,
      clean: false,
      violationCount: base.violationCount + extra.length,
      violatingRecords: base.violatingRecords + extra.reduce((a, v) => a + v.records, 0),
      violations: [...base.violations, ...extra],
    }, this.#relay?.eofForwarded ?? false);
  }

  async #connectDestination(): Promise<SocketConnection> {
    try {
      return await connectSocket(this.#options.connect, {
        timeoutMs: this.#options.connectTimeoutMs ?? 10_000,
      });
    } catch (e) {
      throw new ProxyError(
        `${(e as Error).message}; closed the source connection`,
        "connect-failed",
        { cause: e },
      );
    }
  }

  async #runMain(): Promise<ProxyResult> {
    const options = this.#options;
    const mode = options.mode ?? "pass";
    const { conn: source, head } = await this.#main;
    clearTimeout(this.#acceptTimer); // the timeout is for the source's arrival only
    const started = performance.now();
    this.#emit({ kind: "source-connected", channel: "main" });
    this.#setState(ProxyState.Connecting);
    const destination = await this.#connectDestination();
    this.#connections.push(destination);
    this.#destination = destination;
    this.#mainConnected();
    this.#emit({ kind: "destination-connected", channel: "main", endpoint: options.connect });
    this.#setState(ProxyState.Relaying);

    const relay: MigrationRelay = new MigrationRelay(
      source.byteReader({ head, beforeRead: () => relay.sendBuffered() }),
      (chunk) => destination.write(chunk),
      {
        mode,
        ...(options.plugMap ? { plugMap: options.plugMap } : {}),
        ...(options.progressIntervalMs !== undefined
          ? { progressIntervalMs: options.progressIntervalMs }
          : {}),
        onProgress: (progress) => this.#emit({ kind: "progress", progress }),
        allowReturnPath: true,
        onReturnPathOpened: () => {
          this.#returnPath.opened = true;
          this.#emit({ kind: "return-path-opened" });
        },
        onVerificationFailure: (violation) => this.#veto(violation),
        observers: (options.channelHandlers ?? []).flatMap((h) => h.mainStage ? [h.mainStage] : []),
        beforeEof: async () => {
          // Every accepted connection first becomes a channel (or fails), then every channel agrees.
          await Promise.all(this.#pendingChannels);
          await Promise.all(this.#channels.map((c) => c.agree()));
        },
        onComplete: () => {
          this.#setState(ProxyState.Completing);
          if (!this.#vetoed) return;
          // After a veto the source learns it from the destination's SHUT (relayed)
          // or from its closed connection: give the destination a moment to answer
          // (QEMU 10.0 sends SHUT 1, 7.2 just exits), then close.
          if (destinationEnded) source.close();
          else vetoTimer = setTimeout(() => source.close(), options.lingerMs ?? 30_000);
        },
      },
    );
    this.#relay = relay;
    if (this.#vetoed) {
      // An extra channel vetoed before the main channel was relaying.
      relay.detachOutput();
      void destination.closeWrite();
    }
    let destinationEnded = false;
    let vetoTimer: ReturnType<typeof setTimeout> | undefined;
    const watcher = this.#watchDestination(destination, source, relay).finally(() => {
      destinationEnded = true;
      clearTimeout(vetoTimer);
    });

    let result: RelayResult;
    try {
      result = await relay.run();
    } catch (e) {
      clearTimeout(vetoTimer);
      if (e instanceof RelayVerificationError || this.#vetoed) {
        // After a veto the destination fails, so a write to it may fail too: the verdict stands.
        source.close();
        destination.close();
        await watcher;
        if (e instanceof RelayVerificationError && this.#channelViolations.length === 0) throw e;
        throw await this.#verificationError(
          e instanceof RelayVerificationError ? e.result : relay.verifyResult,
        );
      }
      if (
        this.#failure === undefined &&
        e instanceof SocketClosedError
      ) {
        // Writing to the destination failed: it went away.
        this.#fail(
          new ProxyError(
            `writing to the destination failed: ${e.message}; closed the source connection`,
            "destination-gone",
            { cause: e },
          ),
        );
      }
      // The first failure is the cause (a destination that went away, not the truncated source).
      this.#fail(e);
      await watcher;
      throw this.#failure;
    }
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#channelViolations.length > 0) {
      // An extra channel vetoed: the main channel was clean but its EOF was withheld.
      source.close();
      destination.close();
      await watcher;
      throw await this.#verificationError(result.verify);
    }
    // The source is done; let the destination finish reading, then close.
    source.close();
    await destination.closeWrite();
    let lingerTimer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      watcher,
      new Promise((r) => (lingerTimer = setTimeout(r, options.lingerMs ?? 30_000))),
    ]);
    clearTimeout(lingerTimer);
    destination.close();
    await watcher;
    if (this.#failure !== undefined) throw this.#failure;
    const channels = await Promise.all(this.#channels.map((c) => c.done));
    // A channel may still find a page after the main channel's last sync point (a
    // source QEMU never sends one): it was not forwarded, but the EOF was.
    if (this.#channelViolations.length > 0) throw await this.#verificationError(result.verify);
    return {
      ...result,
      mode,
      seconds: (performance.now() - started) / 1000,
      returnPath: this.#returnPath,
      channels,
    };
  }

  /**
   * Read what the destination sends: return-path messages (checked, then
   * relayed to the source unchanged) or, without a return path, nothing
   * until it closes. A destination that closes or talks out of turn before
   * the stream is complete went away: the source connection is closed.
   */
  async #watchDestination(
    destination: SocketConnection,
    source: SocketConnection,
    relay: MigrationRelay,
  ): Promise<void> {
    const buf = new Uint8Array(4096);
    const decoder = new ReturnPathDecoder();
    let shut = false;
    const gone = (why: string) => {
      if (this.#vetoed || destination.closed) return;
      this.#fail(new ProxyError(`${why}; closed the source connection`, "destination-gone"));
    };
    for (;;) {
      let n: number | null;
      try {
        n = await destination.read(buf);
      } catch (e) {
        gone(`the destination connection failed: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
      if (n === null) {
        if (this.#vetoed) {
          // The destination gave up (7.2 exits without a word): make sure the
          // source learns it too, once its stream has been read.
          if (relay.complete) source.close();
        } else if (decoder.pending) {
          this.#fail(
            new FormatError("Cannot relay the return path: it ended inside a message", {
              format: "migration",
              code: "unexpected-eof",
              offset: decoder.offset,
            }),
          );
        } else if (!relay.complete) {
          if (!shut) gone("the destination closed the connection");
        } else if (relay.returnPathOpened && !shut) {
          // The source waits for SHUT; it must not report success on our word.
          gone("the destination closed the return path without reporting its load (no SHUT)");
        }
        return;
      }
      if (!relay.returnPathOpened) {
        gone("the destination sent data although no return path was opened");
        return;
      }
      let messages: ReturnPathMessage[];
      try {
        messages = decoder.push(buf.subarray(0, n));
        for (const m of messages) {
          if (shut) {
            throw new FormatError(
              `Cannot relay the return path: ${m.name} after SHUT`,
              { format: "migration", code: "bad-record", offset: m.streamOffset },
            );
          }
          this.#checkReturnPath(m, relay);
          if (m.type === C.MIG_RP_MSG_SHUT) {
            shut = true;
            this.#returnPath.shut = m.value;
          }
        }
      } catch (e) {
        this.#fail(e);
        return;
      }
      for (const m of messages) {
        this.#returnPath.messages[m.name] = (this.#returnPath.messages[m.name] ?? 0) + 1;
        this.#emit({ kind: "return-path-message", message: m });
        const bytes = new Uint8Array(m.byteLength);
        const v = new DataView(bytes.buffer);
        v.setUint16(0, m.type);
        v.setUint16(2, m.payload.byteLength);
        bytes.set(m.payload, 4);
        try {
          await source.write(bytes);
        } catch { /* the source is gone: its relay ends on its own */ }
      }
    }
  }

  /** What a precopy destination may say, and when. */
  #checkReturnPath(m: ReturnPathMessage, relay: MigrationRelay): void {
    const bad = (why: string) =>
      new FormatError(`Cannot relay the return path: ${why}`, {
        format: "migration",
        code: "bad-record",
        offset: m.streamOffset,
      });
    if (POSTCOPY_RP.has(m.type)) throw bad(`${m.name} belongs to postcopy, which is refused`);
    if (m.type === C.MIG_RP_MSG_PONG) {
      const want = relay.pendingPings.shift();
      if (want === undefined) throw bad(`PONG ${m.value} answers no PING`);
      if (want !== m.value) throw bad(`PONG ${m.value} answers PING ${want}`);
    }
    if (m.type === C.MIG_RP_MSG_SHUT && m.value === 0 && !relay.eofForwarded) {
      throw bad("the destination reported a complete load before it was sent QEMU_VM_EOF");
    }
  }
}
