/**
 * multifd for the proxy: a {@linkcode ChannelHandler} for the connections
 * that start with `MULTIFD_MAGIC`, and the stage it runs on the main
 * channel to learn what the channels need from it.
 *
 * Each channel is relayed as its own stream, on the thread that owns the
 * sockets: its `MultifdPipeline` (decode, pass/filter/verify, encode)
 * reads the source connection and writes its own destination connection
 * (see `_multifd_channel.ts`). Deno cannot hand a connection to a Worker,
 * and posting every chunk to a Worker and back cost the main thread more
 * than the whole pipeline does (docs/multifd.md, "Measured").
 *
 * What the channels learn from the main channel (through
 * {@linkcode MultifdChannelHandler.mainStage}): the page size (from the
 * configuration section), the block list and the plug state (the
 * `ram-mem-size`, `virtio-mem-early` and `virtio-mem-device` records), the
 * end of the setup phase, and the sync points (one `MULTIFD_FLUSH`, or with
 * older machine types one RAM `EOS`, per SYNC packet of every channel).
 *
 * The EOF gate: before the main channel forwards `QEMU_VM_EOF`, every
 * channel must have checked and forwarded everything up to its SYNC packet
 * for the main channel's last sync point (or have ended), and must have
 * applied every plug-state record the main channel showed (the late layout
 * decides there). A violation in any channel vetoes the migration at once:
 * the session stops the main channel's output and closes the destination's
 * main connection without `QEMU_VM_EOF`.
 *
 * @module
 */

import { MULTIFD_MAGIC, type MultifdDroppedPage } from "../migration/multifd/mod.ts";
import type { RecordStage } from "../migration/stage.ts";
import type { ChannelHandler, ChannelSummary, ExtraChannel, ExtraChannelInit } from "./channel.ts";
import { MultifdProxyChannel } from "./_multifd_channel.ts";
import { MainChannelTap } from "./_multifd_tap.ts";

/** What one multifd channel reports when it is done (a {@linkcode ChannelSummary}). */
export interface MultifdChannelSummary extends ChannelSummary {
  /** Channel id from its initial packet. */
  channel: number | undefined;
  /** RAM packets. */
  packets: number;
  /** Pages with data. */
  pages: number;
  /** Zero pages. */
  zeroPages: number;
  /** SYNC packets. */
  syncPackets: number;
  /** Filter mode: pages removed. */
  droppedPages: number;
  /** Filter mode: bytes removed (the removed pages' data). */
  droppedByteLength: number;
  /** Verify mode: violations found (described in the session's verification result). */
  violationCount: number;
  /** Filter mode: the first removed pages, described. */
  dropped?: MultifdDroppedPage[];
}

/**
 * Relays a migration's multifd channels: give it to `ProxySession` in
 * `channelHandlers`; the session runs {@linkcode MultifdChannelHandler.mainStage}
 * on the main channel.
 *
 * @example
 * ```ts ignore
 * import { MultifdChannelHandler, parseEndpoint, ProxySession } from "@vmem-dump/vmem-dump";
 * const session = await ProxySession.listen({
 *   listen: parseEndpoint("unix:/run/vm/mig.sock"),
 *   connect: parseEndpoint("unix:/run/vm/dst.sock"),
 *   mode: "verify",
 *   channelHandlers: [new MultifdChannelHandler()],
 * });
 * await session.run();
 * ```
 */
export class MultifdChannelHandler implements ChannelHandler {
  /** `MULTIFD_MAGIC`: multifd channels start with it. */
  readonly magic: number = MULTIFD_MAGIC;
  #tap = new MainChannelTap();
  #channels: ExtraChannel[] = [];

  /** The pass-through stage the session runs on the main channel (before its mode stage). */
  get mainStage(): RecordStage {
    return this.#tap;
  }

  /** The channels opened so far. */
  get channels(): readonly ExtraChannel[] {
    return this.#channels;
  }

  /**
   * Take over one multifd connection and relay it.
   *
   * @param init The connection and the session's hooks.
   * @returns The channel.
   */
  open(init: ExtraChannelInit): ExtraChannel {
    const channel = new MultifdProxyChannel(init, this.#tap);
    this.#channels.push(channel);
    return channel;
  }
}
