/**
 * The migration proxy: {@linkcode ProxySession} relays one migration from a
 * source QEMU to a destination QEMU (pass, filter unplugged pages, or verify
 * plug state), with its return path; {@linkcode MigrationRelay} is its main
 * channel over any byte reader and sink; `channel.ts` is the extension point
 * for extra channels (multifd).
 *
 * @example Relay a stream between two byte channels
 * ```ts ignore
 * import { openInput, relayMigration } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s2.mig");
 * const out = await Deno.create("copy.mig");
 * await relayMigration(input.reader, async (c) => { await out.write(c); }, { mode: "verify" });
 * ```
 *
 * @module
 */

export type {
  ChannelEvent,
  ChannelHandler,
  ChannelSummary,
  ExtraChannel,
  ExtraChannelInit,
} from "./channel.ts";
export {
  MigrationRelay,
  relayMigration,
  type RelayMode,
  type RelayOptions,
  type RelayProgress,
  type RelayResult,
  RelayVerificationError,
} from "./relay.ts";
export {
  ProxyError,
  type ProxyErrorCode,
  type ProxyEvent,
  type ProxyResult,
  ProxySession,
  type ProxySessionOptions,
  ProxyState,
  type ReturnPathSummary,
} from "./session.ts";
