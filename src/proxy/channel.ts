/**
 * Extra channels of a proxied migration: the extension point for migrations
 * that use more than the main connection (multifd opens one connection per
 * channel, each starting with its own magic).
 *
 * A {@linkcode ProxySession} accepts every connection on its listen
 * endpoint and reads its first four bytes: `QEVM` is the main channel (the
 * session relays it itself, see `MigrationRelay`); any other value goes to
 * the {@linkcode ChannelHandler} registered for that magic, which opens its
 * own connection to the destination and relays the channel as its own
 * stream with its own stage. A connection no handler claims fails the
 * session (with a message naming the magic).
 *
 * The main channel's `QEMU_VM_EOF` is the destination's signal to finish
 * loading and start the VM, so the session withholds it until every extra
 * channel has agreed ({@linkcode ExtraChannel.agree}): each channel checks
 * everything its source sent before that point and resolves. A channel
 * that finds a violation (verify mode) vetoes at once through
 * {@linkcode ExtraChannelInit.veto}. A failure anywhere aborts every channel.
 *
 * Extra channels connect to the destination only after the main channel
 * did: QEMU 7.2 takes the first connection as the main channel.
 *
 * @module
 */

import type { SocketConnection } from "../io/socket.ts";
import type { RecordStage } from "../migration/stage.ts";
import type { PlugStateViolation } from "../migration/verify.ts";
import type { PlugMap } from "../vmem/plug_map.ts";
import type { RelayMode } from "./relay.ts";

/** What a channel reports when it is done. */
export interface ChannelSummary {
  /** Name for logs and reports, e.g. `multifd 2`. */
  label: string;
  /** Bytes read from the source. */
  bytesIn: number;
  /** Bytes written to the destination. */
  bytesOut: number;
  /** Further counts the channel kind defines. */
  [key: string]: unknown;
}

/** An event a channel reports (the session passes it to its `onEvent`). */
export interface ChannelEvent {
  /** Always `channel`. */
  kind: "channel";
  /** Which channel. */
  label: string;
  /** What happened, for people. */
  message: string;
}

/** What the session hands a {@linkcode ChannelHandler} for one accepted connection. */
export interface ExtraChannelInit {
  /** The accepted source connection. */
  source: SocketConnection;
  /** The bytes already read from it (at least the four magic bytes): the channel's input starts with them. */
  head: Uint8Array;
  /** Open this channel's own connection to the destination (retries while it starts). */
  connectDestination(): Promise<SocketConnection>;
  /** The session's relay mode. */
  mode: RelayMode;
  /** The session's out-of-band plug map, if any. */
  plugMap: PlugMap | undefined;
  /**
   * The main channel's mode stage (`UnpluggedPageDropper`,
   * `PlugStateVerifier` or `PassThroughStage`) once the main channel is
   * relaying, e.g. to share the plug state it learnt from the stream.
   */
  mainStage(): RecordStage | undefined;
  /**
   * Whether the main channel's `QEMU_VM_EOF` was handed to the destination
   * (every channel agreed before that: a destination that closes a channel
   * afterwards may have finished loading).
   */
  eofForwarded(): boolean;
  /** Report something worth logging. */
  emit(event: ChannelEvent): void;
  /**
   * Verify mode: this channel found records in unplugged blocks (call again
   * for more). The first call vetoes the migration at once: the main
   * channel forwards nothing more and its destination connection is closed
   * without `QEMU_VM_EOF`; the violations join the session's report.
   */
  veto(violations: readonly PlugStateViolation[]): void;
}

/** One extra channel, relaying its own stream. */
export interface ExtraChannel {
  /** Name for logs and reports. */
  readonly label: string;
  /** Settles when the channel's source ended and everything was relayed; rejects on an error or a veto. */
  readonly done: Promise<ChannelSummary>;
  /**
   * Called once the main channel is about to forward `QEMU_VM_EOF`: resolve
   * when everything this channel's source sent so far has been checked and
   * forwarded; reject to veto the EOF (verify mode found a violation).
   */
  agree(): Promise<void>;
  /** Close both ends now (a failure elsewhere). */
  abort(reason: unknown): void;
  /**
   * The migration was vetoed: write nothing more to the destination (it is
   * failing), but read the source on, e.g. to report every violation.
   */
  detachOutput?(): void;
}

/** Relays the connections that start with one magic number. */
export interface ChannelHandler {
  /** The big-endian u32 such a connection starts with (multifd: `0x11223344`). */
  readonly magic: number;
  /**
   * A stage the session runs on the main channel before its mode stage, to
   * learn what the channels need from it (multifd: page size, block list,
   * plug state, sync points). It must forward every batch unchanged.
   */
  readonly mainStage?: RecordStage;
  /** Take over one accepted connection. */
  open(init: ExtraChannelInit): ExtraChannel | Promise<ExtraChannel>;
}
