/**
 * Migration proxy building blocks: relay one precopy stream from a source
 * to a destination (pass, filter unplugged pages, or verify plug state), and
 * the `unix:`/`tcp:` endpoints the CLI listens on and connects to.
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

export { type Endpoint, formatEndpoint, isLoopbackHost, parseEndpoint } from "./endpoint.ts";
export {
  formatByteCount,
  type OrderedSink,
  orderedSink,
  relayMigration,
  type RelayMode,
  type RelayOptions,
  type RelayProgress,
  type RelayResult,
  RelayVerificationError,
} from "./relay.ts";
