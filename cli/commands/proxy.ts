/**
 * `vmem-dump proxy --listen EP --connect EP [--mode pass|filter|verify]`:
 * take one migration from a source QEMU and stream it to a destination QEMU,
 * filtering unplugged pages or verifying plug state on the way. The work is
 * `ProxySession` (src/proxy/session.ts); this file maps arguments, events
 * and outcomes to text and exit codes.
 *
 * @module
 */

import { UnsupportedFeatureError } from "../../src/errors.ts";
import {
  type Endpoint,
  formatEndpoint,
  isLoopbackHost,
  parseEndpoint,
} from "../../src/io/endpoint.ts";
import { type RelayMode, RelayVerificationError } from "../../src/proxy/relay.ts";
import { describeViolation } from "../../src/migration/verify.ts";
import {
  ProxyError,
  type ProxyEvent,
  type ProxyResult,
  ProxySession,
} from "../../src/proxy/session.ts";
import { byteCount, count, formatByteCount, grouped, hex } from "../_format.ts";
import { type ReportFile, reportJson } from "../_report.ts";
import { dropStatsJson, verifyResultJson } from "../_stream_reports.ts";
import type { ChannelSummary } from "../../src/proxy/channel.ts";
import { MultifdChannelHandler, type MultifdChannelSummary } from "../../src/proxy/multifd.ts";
import { type CliIo, UsageError } from "../io.ts";
import { JSON_OPTION, loadPlugMapOption, parseCommandArgs, PLUGMAP_OPTIONS } from "../_args.ts";

const HELP =
  `usage: vmem-dump proxy --listen unix:PATH|tcp:HOST:PORT --connect unix:PATH|tcp:HOST:PORT
                       [--mode pass|filter|verify] [--plugmap FILE | --plugmap-from STREAM]
                       [--allow-remote] [--accept-timeout S] [--connect-timeout S] [--json]

Relay one migration: accept the source QEMU's connection (migrate "unix:PATH"
or "tcp:HOST:PORT"), connect to the destination QEMU (started with -incoming)
and stream the migration to it.

  --mode pass     forward the stream unchanged (default)
  --mode filter   drop RAM records of unplugged virtio-mem blocks
  --mode verify   fail the migration at the first RAM record in an unplugged
                  block (late layout: when the device section shows it); the
                  destination never gets QEMU_VM_EOF, so it never starts the VM
  --plugmap FILE, --plugmap-from STREAM
                  out-of-band plug state (needed to filter a QEMU 7.2 / late
                  layout stream, whose bitmap comes after the RAM)
  --allow-remote  allow non-loopback TCP addresses (plain text: trusted networks only)
  --accept-timeout S   give up when no source connects within S seconds (default: wait)
  --connect-timeout S  keep retrying the destination for S seconds (default 10)
  --json          print the report as JSON on stdout (docs/filter-verify-proxy.md)

multifd migrations (capability multifd) are relayed channel by channel, each
on its own connection; every channel is filtered or verified like the main one.
Compressed multifd channels (multifd-compression zlib, zstd) are verified;
filter refuses to remove a page with data from them (docs/multifd.md).

Unix sockets are created with mode 0600. The return path (capabilities
return-path, switchover-ack) is relayed and checked; with it, a vetoed
migration ends 'failed' on the source, which can resume the VM. Postcopy
and COLO are refused. If the source disconnects early, the destination
connection is closed without EOF; if the destination goes away, the source
connection is closed.

Exit status: 0 relayed, 3 verification failed, 1 error, 2 usage error.
`;

/** Run `proxy`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: {
      listen: { type: "string" },
      connect: { type: "string" },
      mode: { type: "string", default: "pass" },
      ...PLUGMAP_OPTIONS,
      "allow-remote": { type: "boolean" },
      "accept-timeout": { type: "string" },
      "connect-timeout": { type: "string" },
      ...JSON_OPTION,
    },
    help: HELP,
    positionals: 0,
    usage: "proxy takes no positional arguments",
  });
  if (parsed === undefined) return 0;
  const { values } = parsed;
  if (values.listen === undefined || values.connect === undefined) {
    throw new UsageError("proxy needs --listen and --connect");
  }
  const mode = values.mode as RelayMode;
  if (mode !== "pass" && mode !== "filter" && mode !== "verify") {
    throw new UsageError(
      `--mode must be pass, filter or verify, not ${JSON.stringify(values.mode)}`,
    );
  }
  const listenAt = endpointArg(values.listen, "--listen");
  const connectTo = endpointArg(values.connect, "--connect");
  for (const [flag, ep] of [["--listen", listenAt], ["--connect", connectTo]] as const) {
    if (ep.transport === "tcp" && !isLoopbackHost(ep.hostname) && !values["allow-remote"]) {
      throw new UsageError(
        `${flag} ${
          formatEndpoint(ep)
        } is not a loopback address; migration data is plain text, pass --allow-remote to accept that`,
      );
    }
  }
  const acceptTimeout = secondsArg(values["accept-timeout"], "--accept-timeout", 0);
  const connectTimeout = secondsArg(values["connect-timeout"], "--connect-timeout", 10);
  if (mode === "pass" && (values.plugmap !== undefined || values["plugmap-from"] !== undefined)) {
    throw new UsageError("--plugmap and --plugmap-from need --mode filter or verify");
  }
  const plugMap = await loadPlugMapOption(values);

  let lastLine = 0;
  const onEvent = (e: ProxyEvent) => {
    const line = eventLine(e);
    if (line !== undefined) {
      void io.err(line);
      return;
    }
    if (e.kind !== "progress" || !io.stderrIsTerminal) return;
    const now = Date.now();
    if (now - lastLine < 250) return;
    lastLine = now;
    const p = e.progress;
    void io.err(
      `\rproxy: ${formatByteCount(p.bytesIn)} in, ${formatByteCount(p.bytesOut)} out, ${
        count(p.pageRecords, "page")
      }${mode === "filter" ? `, ${grouped(p.droppedRecords)} dropped` : ""}   `,
    );
  };
  let session: ProxySession;
  try {
    session = await ProxySession.listen({
      listen: listenAt,
      connect: connectTo,
      mode,
      ...(plugMap ? { plugMap } : {}),
      acceptTimeoutMs: acceptTimeout * 1000,
      connectTimeoutMs: connectTimeout * 1000,
      onEvent,
      channelHandlers: [new MultifdChannelHandler()],
    });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) throw new UsageError(`--listen: ${e.message}`);
    throw e;
  }
  await io.err(`proxy: listening on ${formatEndpoint(session.endpoint)} (mode ${mode})\n`);
  let result: ProxyResult;
  try {
    result = await session.run();
  } catch (failure) {
    if (io.stderrIsTerminal && lastLine > 0) await io.err("\r\x1b[K");
    if (failure instanceof RelayVerificationError) {
      const vr = failure.result;
      await io.err(
        `proxy: verification failed: ${count(vr.violationCount, "violation")}; ${
          failure.eofForwarded
            ? "found after QEMU_VM_EOF was forwarded: those pages were not forwarded, but the destination may have started the VM"
            : "the destination was not given QEMU_VM_EOF"
        }\n`,
      );
      for (const v of vr.violations.slice(0, 64)) {
        await io.err(`  ${describeViolation(v)} at ${channelOf(v)}offset ${hex(v.streamOffset)}\n`);
      }
      if (values.json) {
        await io.out(reportJson("proxy", {
          input: endpointJson(listenAt, null),
          verdict: "violations",
          output: endpointJson(connectTo, null),
        }, {
          mode,
          filter: null,
          verify: verifyResultJson(values, vr, undefined),
        }));
      }
      return 3;
    }
    if (failure instanceof ProxyError) throw failure;
    if (!(failure instanceof UnsupportedFeatureError)) {
      await io.err(
        session.eofForwarded
          ? "proxy: relay failed after QEMU_VM_EOF was forwarded (the destination may have started the VM); closed both connections\n"
          : "proxy: relay failed; closed both connections without forwarding QEMU_VM_EOF\n",
      );
    }
    throw failure;
  }
  if (io.stderrIsTerminal && lastLine > 0) await io.err("\r\x1b[K");
  await io.err(summaryText(result));
  if (values.json) {
    const pathOf = new Map(result.dropStats?.devices.map((d) => [d.ramBlock, d.devicePath]));
    await io.out(reportJson("proxy", {
      input: endpointJson(listenAt, null),
      verdict: result.verify ? "clean" : "done",
      output: endpointJson(connectTo, result.bytesOut),
    }, {
      mode: result.mode,
      seconds: result.seconds,
      streamByteLength: result.bytesIn,
      pageRecords: result.pageRecords,
      droppedRecords: result.droppedRecords,
      filter: result.dropStats ? dropStatsJson(values, result.dropStats, undefined) : null,
      verify: result.verify ? verifyResultJson(values, result.verify, undefined) : null,
      returnPath: {
        opened: result.returnPath.opened,
        messages: result.returnPath.messages,
        shut: result.returnPath.shut ?? null,
      },
      channels: result.channels.map((c) => channelJson(c, pathOf)),
    }));
  }
  return 0;
}

/**
 * An extra channel's summary in the report (multifd, docs/multifd.md): the
 * glossary's names, `channel` null when the channel never said its id, the
 * removed pages named like the `filter` object's (`path` from the main
 * channel's devices; empty outside filter mode).
 */
function channelJson(
  c: ChannelSummary,
  pathOf: ReadonlyMap<string, string>,
): Record<string, unknown> {
  const m = c as MultifdChannelSummary;
  return {
    label: m.label,
    channel: m.channel ?? null,
    streamByteLength: m.bytesIn,
    forwardedByteLength: m.bytesOut,
    packets: m.packets,
    pages: m.pages,
    zeroPages: m.zeroPages,
    syncPackets: m.syncPackets,
    droppedPages: m.droppedPages,
    droppedByteLength: m.droppedByteLength,
    violationCount: m.violationCount,
    dropped: (m.dropped ?? []).map((d) => ({
      recordKind: d.recordKind,
      path: pathOf.get(d.ramBlock) ?? "",
      ramblock: d.ramBlock,
      ramOffset: d.ramOffset,
      gpa: d.gpa,
      blockIndex: d.blockIndex,
      streamOffset: d.streamOffset,
      byteLength: d.byteLength,
    })),
  };
}

/** Where a violation was found: "stream " (main channel) or "multifd channel N ". */
function channelOf(v: object): string {
  const channel = (v as { channel?: unknown }).channel;
  return typeof channel === "number" ? `multifd channel ${channel} ` : "stream ";
}

/** An endpoint as a report's `input` or `output`: a migration stream on a socket. */
function endpointJson(ep: Endpoint, byteLength: number | null): ReportFile {
  return { path: formatEndpoint(ep), format: "migration", container: "raw", byteLength };
}

/** The log line of an event, or `undefined` for events that are not logged. */
function eventLine(e: ProxyEvent): string | undefined {
  switch (e.kind) {
    case "source-connected":
      return e.channel === "main" ? "proxy: source connected\n" : undefined;
    case "destination-connected":
      return e.channel === "main"
        ? `proxy: connected to the destination ${formatEndpoint(e.endpoint)}\n`
        : undefined;
    case "return-path-opened":
      return "proxy: the source opened the return path; relaying it\n";
    case "return-path-message": {
      const m = e.message;
      if (m.name === "SHUT") {
        return `proxy: the destination ended its return path: SHUT ${m.value} (${
          m.value === 0 ? "loaded" : "failed"
        })\n`;
      }
      return m.name === "SWITCHOVER_ACK"
        ? "proxy: the destination acknowledged switchover\n"
        : undefined;
    }
    case "verification-failed":
      return `proxy: ${
        describeViolation(e.violation)
      }: stopped forwarding, the destination gets no QEMU_VM_EOF\n`;
    case "channel":
      return `proxy: ${e.label}: ${e.message}\n`;
    default:
      return undefined;
  }
}

function summaryText(r: ProxyResult): string {
  let summary = `proxy: relayed ${byteCount(r.bytesIn)} in, ${byteCount(r.bytesOut)} out in ${
    r.seconds.toFixed(2)
  } s`;
  if (r.dropStats) {
    summary += `; dropped ${count(r.dropStats.droppedRecords, "record")} (${
      byteCount(r.dropStats.droppedBytes)
    })`;
  }
  const channels = r.channels as MultifdChannelSummary[];
  const channelPages = channels.reduce((a, c) => a + c.pages + c.zeroPages, 0);
  if (r.verify) {
    summary += `; verified ${count(r.verify.pageRecords + channelPages, "page record")}${
      channels.length > 0
        ? ` (${grouped(channelPages)} in ${count(channels.length, "multifd channel")})`
        : ""
    }, clean`;
  }
  if (r.returnPath.opened) {
    const counts = Object.entries(r.returnPath.messages).map(([k, v]) => `${v} ${k}`);
    summary += `; return path: ${counts.length > 0 ? counts.join(", ") : "no messages"}`;
  }
  let t = summary + "\n";
  if (r.dropStats) {
    for (const d of r.dropStats.dropped.slice(0, 16)) {
      t += `  dropped ${d.recordKind} gpa ${hex(d.gpa)} (${d.ramBlock}+${hex(d.ramOffset)})\n`;
    }
  }
  for (const c of channels) {
    t += `  ${c.label}: ${count(c.packets, "packet")}, ${count(c.pages, "page")}, ${
      count(c.zeroPages, "zero page")
    }, ${count(c.syncPackets, "SYNC packet")}`;
    if (r.dropStats) t += `, dropped ${count(c.droppedPages, "page")}`;
    if (r.verify) t += ", clean";
    t += "\n";
    for (const d of (c.dropped ?? []).slice(0, 16)) {
      t += `    dropped ${d.recordKind} gpa ${hex(d.gpa)} (${d.ramBlock}+${hex(d.ramOffset)})\n`;
    }
  }
  return t;
}

function endpointArg(text: string, flag: string): Endpoint {
  try {
    return parseEndpoint(text);
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}

function secondsArg(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${flag} takes a number of seconds`);
  return n;
}
