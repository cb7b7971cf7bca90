/**
 * `vmem-dump proxy --listen EP --connect EP [--mode pass|filter|verify]`:
 * take one migration from a source QEMU and stream it to a destination QEMU,
 * filtering unplugged pages or verifying plug state on the way.
 *
 * @module
 */

import { UnsupportedFeatureError } from "../../src/errors.ts";
import { PullByteReader } from "../../src/io/byte_reader.ts";
import { writeAll } from "../../src/io/file.ts";
import {
  type Endpoint,
  formatEndpoint,
  isLoopbackHost,
  parseEndpoint,
} from "../../src/proxy/endpoint.ts";
import {
  formatByteCount,
  relayMigration,
  type RelayMode,
  type RelayResult,
  RelayVerificationError,
} from "../../src/proxy/relay.ts";
import { grouped, hex, json } from "../_format.ts";
import { type CliIo, UsageError } from "../io.ts";
import {
  checkPlugMapOptions,
  JSON_OPTION,
  loadPlugMapOption,
  parseCommandArgs,
  PLUGMAP_OPTIONS,
} from "../_args.ts";

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
  --json          print the outcome as JSON on stdout

Unix sockets are created with mode 0600. The return path and postcopy are not
supported: the proxy fails when the stream asks for them. If the source
disconnects early, the destination connection is closed without EOF; if the
destination goes away, the source connection is closed.

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
  checkPlugMapOptions(values);
  if (mode === "pass" && (values.plugmap !== undefined || values["plugmap-from"] !== undefined)) {
    throw new UsageError("--plugmap and --plugmap-from need --mode filter or verify");
  }
  const plugMap = await loadPlugMapOption(values);

  const listener = await listenOn(listenAt);
  await io.err(`proxy: listening on ${formatEndpoint(listener.endpoint)} (mode ${mode})\n`);
  let source: Deno.Conn;
  try {
    source = await acceptOne(listener.listener, acceptTimeout);
  } catch (e) {
    await io.err(`error: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await listener.close();
  }
  await io.err("proxy: source connected\n");
  let destination: Deno.Conn;
  try {
    destination = await connectWithRetry(connectTo, connectTimeout);
  } catch (e) {
    source.close();
    await io.err(`error: ${(e as Error).message}; closed the source connection\n`);
    return 1;
  }
  await io.err(`proxy: connected to the destination ${formatEndpoint(connectTo)}\n`);

  // Watch the destination: it sends nothing without a return path, so data
  // or an early close means it went away (load failed); then close the source.
  let relayDone = false;
  let droppedDestination = false; // we closed it (verification failure or relay error)
  let destinationGone: string | undefined;
  let sourceClosed = false;
  const closeSource = () => {
    if (!sourceClosed) {
      sourceClosed = true;
      try {
        source.close();
      } catch { /* already closed */ }
    }
  };
  const watcher = (async () => {
    const buf = new Uint8Array(4096);
    let why: string;
    try {
      const n = await destination.read(buf);
      why = n === null
        ? "the destination closed the connection"
        : "the destination sent data (return path?)";
    } catch (e) {
      why = `the destination connection failed: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (droppedDestination) return;
    destinationGone = why;
    if (!relayDone) closeSource();
  })();

  const started = performance.now();
  let lastLine = 0;
  let result: RelayResult | undefined;
  let failure: unknown;
  try {
    result = await relayMigration(connReader(source), (chunk) => writeAll(destination, chunk), {
      mode,
      ...(plugMap ? { plugMap } : {}),
      onVerificationFailure(v) {
        // Drop the destination now, without EOF; read the source on to report every violation.
        droppedDestination = true;
        closeQuietly(destination);
        void io.err(
          `proxy: RAM record in unplugged block (gpa ${
            hex(v.gpa)
          }): closed the destination without QEMU_VM_EOF\n`,
        );
      },
      onProgress(p) {
        if (!io.stderrIsTerminal) return;
        const now = Date.now();
        if (now - lastLine < 250) return;
        lastLine = now;
        void io.err(
          `\rproxy: ${formatByteCount(p.bytesIn)} in, ${formatByteCount(p.bytesOut)} out, ${
            grouped(p.pageRecords)
          } pages` +
            `${mode === "filter" ? `, ${grouped(p.droppedRecords)} dropped` : ""}   `,
        );
      },
    });
    relayDone = true;
  } catch (e) {
    failure = e;
  }
  if (io.stderrIsTerminal && lastLine > 0) await io.err("\r\x1b[K");

  if (failure !== undefined) {
    // Never flush or finish anything on failure: close both sides.
    relayDone = true;
    droppedDestination = true;
    closeQuietly(destination);
    closeSource();
    await watcher;
    if (failure instanceof RelayVerificationError) {
      const vr = failure.result;
      await io.err(
        `proxy: verification failed: ${vr.violatingRecords} RAM record(s) in unplugged blocks; the destination was not given QEMU_VM_EOF\n`,
      );
      for (const v of vr.violations.slice(0, 64)) {
        await io.err(
          `  ${v.recordKind} gpa ${hex(v.gpa)} (${v.ramBlock}+${
            hex(v.ramOffset)
          }, block ${v.blockIndex}) at stream offset ${hex(v.streamOffset)}\n`,
        );
      }
      if (values.json) await io.out(json({ ok: false, mode, verify: vr }));
      return 3;
    }
    if (
      destinationGone === undefined &&
      (failure instanceof Deno.errors.BrokenPipe || failure instanceof Deno.errors.ConnectionReset)
    ) destinationGone = `writing to the destination failed: ${failure.message}`;
    if (destinationGone !== undefined && !(failure instanceof UnsupportedFeatureError)) {
      await io.err(`error: ${destinationGone}; closed the source connection\n`);
      return 1;
    }
    await io.err("proxy: relay failed; closed both connections without forwarding QEMU_VM_EOF\n");
    throw failure;
  }
  // Success: the source is done; let the destination finish reading, then close.
  closeSource();
  try {
    await destination.closeWrite();
  } catch { /* the destination may already be gone */ }
  let lingerTimer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([watcher, new Promise((r) => (lingerTimer = setTimeout(r, 30_000)))]);
  clearTimeout(lingerTimer);
  closeQuietly(destination);
  await watcher;
  const r = result!;
  const seconds = (performance.now() - started) / 1000;
  let summary = `proxy: relayed ${grouped(r.bytesIn)} bytes in, ${
    grouped(r.bytesOut)
  } bytes out in ${seconds.toFixed(2)} s`;
  if (r.dropStats) {
    summary += `; dropped ${grouped(r.dropStats.droppedRecords)} records (${
      grouped(r.dropStats.droppedBytes)
    } bytes)`;
  }
  if (r.verify) summary += `; verified ${grouped(r.verify.pageRecords)} page records, clean`;
  await io.err(summary + "\n");
  if (r.dropStats) {
    for (const d of r.dropStats.dropped.slice(0, 16)) {
      await io.err(
        `  dropped ${d.recordKind} gpa ${hex(d.gpa)} (${d.ramBlock}+${hex(d.ramOffset)})\n`,
      );
    }
  }
  if (values.json) {
    await io.out(json({ ok: true, mode, seconds, ...r }));
  }
  return 0;
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

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

/**
 * A reader over a connection: each pull returns what one read gives, so data
 * moves on promptly. Reads land in an 8 MiB arena that is reused round-robin
 * (fresh buffers per read would make memory grow with the stream until the
 * garbage collector catches up). A view stays valid until 7 MiB more input
 * were read: the relay encodes (copies) every batch before it pulls again,
 * and the decoder copies what it keeps (the tail window, the vmdesc).
 */
function connReader(conn: Deno.Conn): PullByteReader {
  const ARENA = 8 << 20;
  const READ = 1 << 20;
  const arena = new Uint8Array(ARENA);
  let at = 0;
  return new PullByteReader(async () => {
    if (at + READ > ARENA) at = 0;
    let n: number | null;
    try {
      n = await conn.read(arena.subarray(at, at + READ));
    } catch (e) {
      // A closed or reset connection is the end of the input: the decoder then
      // reports a truncated stream if it was not complete.
      if (
        e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted ||
        e instanceof Deno.errors.ConnectionReset
      ) return undefined;
      throw e;
    }
    if (n === null) return undefined;
    const view = arena.subarray(at, at + n);
    at += n;
    return view;
  });
}

interface OpenListener {
  listener: Deno.Listener;
  endpoint: Endpoint;
  close(): Promise<void>;
}

/** Listen on an endpoint; a unix socket gets mode 0600 before it appears under its name. */
async function listenOn(ep: Endpoint): Promise<OpenListener> {
  if (ep.transport === "tcp") {
    const listener = Deno.listen({ transport: "tcp", hostname: ep.hostname, port: ep.port });
    const addr = listener.addr as Deno.NetAddr;
    return {
      listener,
      endpoint: { transport: "tcp", hostname: addr.hostname, port: addr.port },
      close: () => Promise.resolve(closeListener(listener)),
    };
  }
  const path = ep.path;
  const cut = path.lastIndexOf("/");
  const tmp = `${cut >= 0 ? path.slice(0, cut + 1) : ""}.${path.slice(cut + 1)}.tmp-${Deno.pid}`;
  const listener = Deno.listen({ transport: "unix", path: tmp });
  try {
    await Deno.chmod(tmp, 0o600);
    // link() fails if the name exists: never replace someone else's file.
    await Deno.link(tmp, path);
  } catch (e) {
    closeListener(listener);
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new UsageError(`--listen: ${path} already exists`);
    }
    throw e;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return {
    listener,
    endpoint: ep,
    async close() {
      closeListener(listener);
      await Deno.remove(path).catch(() => {});
    },
  };
}

function closeListener(l: Deno.Listener): void {
  try {
    l.close();
  } catch { /* already closed */ }
}

async function acceptOne(listener: Deno.Listener, timeoutSeconds: number): Promise<Deno.Conn> {
  if (timeoutSeconds <= 0) return await listener.accept();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      closeListener(listener);
      reject(new Error(`no source connected within ${timeoutSeconds} s`));
    }, timeoutSeconds * 1000);
  });
  const accepting = listener.accept();
  accepting.catch(() => {});
  try {
    return await Promise.race([accepting, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function connectWithRetry(ep: Endpoint, timeoutSeconds: number): Promise<Deno.Conn> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (;;) {
    try {
      return ep.transport === "unix"
        ? await Deno.connect({ transport: "unix", path: ep.path })
        : await Deno.connect({ transport: "tcp", hostname: ep.hostname, port: ep.port });
    } catch (e) {
      const retry = e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.NotFound;
      if (!retry || Date.now() >= deadline) {
        throw new Error(
          `Cannot connect to the destination ${formatEndpoint(ep)}: ${(e as Error).message}`,
          { cause: e },
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
