/**
 * Cost of the migration proxy.
 *
 * 1. Added time of a real loopback migration (QEMU under TCG; the Linux
 *    guest with 200 MiB plugged and `--fill-mib` of pattern data, or the
 *    tiny guest with the s2/s3 plug shape, VM stopped first) straight to a
 *    destination on a unix socket, through two floors that copy bytes
 *    without looking at them (`bench/_relay_floor.ts`, a Deno byte copy,
 *    and `socat` when installed), and through `vmem-dump proxy` in each
 *    mode. Each round migrates once per row (each round starting one row
 *    later), so all rows see the same machine load; the table shows medians
 *    of `--runs` rounds. The time is
 *    QEMU's own: from the source's MIGRATION `setup` event to the
 *    destination's MIGRATION `completed` event (capability `events`; the
 *    timestamps are microseconds, no polling). Beside it: the relay's CPU
 *    seconds during the migration (its start-up excluded: it is measured
 *    once the relay sat idle, as a proxy started ahead of `migrate` does),
 *    both QEMUs' CPU seconds, the relay's peak RSS and the load average
 *    before and after. On a machine whose cores the two QEMUs already
 *    keep busy, the relay's CPU time is added to the migration almost one
 *    for one: compare it with the floors'.
 * 2. Proxy throughput and peak RSS at two stream sizes: a synthetic stream
 *    (real s3 RAM sections repeated, bench/_synth.ts) is sent through the
 *    proxy CLI (run under /usr/bin/time) into a sink that discards it. Peak
 *    RSS should not grow with the stream.
 * 3. The same for a synthetic multifd migration: a small main channel and
 *    `--multifd-channels` channels of `--multifd-mib` MiB each (full packets
 *    of plugged pages), with the proxy's CPU time beside its wall time.
 *
 *   deno run -A bench/proxy.ts [--qemu 7.2|10] [--guest linux|tiny] [--fill-mib 150] [--runs 3]
 *                              [--channels 1,4] [--gib 2.2] [--small-gib 0.25] [--skip-qemu]
 *                              [--skip-throughput] [--multifd-channels 4] [--multifd-mib 256]
 *                              [--before OTHER-CHECKOUT/cli/main.ts]
 *
 * `--channels N` migrates with N multifd channels (N > 1): both QEMUs get the
 * `multifd` capability and `multifd-channels` N (see {@linkcode channelSetup},
 * the hook for multi-channel runs). A proxy mode that cannot relay such a
 * migration is reported as failed in its row, not as a time. The relays run
 * under /usr/bin/time; each row shows the largest peak RSS.
 */

import { parseArgs } from "node:util";
import { realdata } from "../tests/_util/realdata.ts";
import {
  type QemuGuest,
  type QemuVersion,
  startDestination,
  startGuest,
} from "../tests/_util/qemu.ts";
import { synthesizeStream } from "./_synth.ts";
import { concatBytes } from "../tests/_util/chunkings.ts";
import { encodeRecords, syntheticRecords, VMEM_RAMBLOCK } from "../tests/proxy/_util.ts";
import {
  MULTIFD_FLAG_SYNC,
  writeMultifdInit,
  writeMultifdRamPacketHeader,
} from "../src/migration/multifd/mod.ts";
import { median, printTable } from "./_measure.ts";
import type { QmpEvent } from "../tests/_util/qmp.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    qemu: { type: "string", default: "10" },
    runs: { type: "string", default: "3" },
    gib: { type: "string", default: "2.2" },
    "small-gib": { type: "string", default: "0.25" },
    "skip-qemu": { type: "boolean" },
    "skip-throughput": { type: "boolean" },
    guest: { type: "string", default: "linux" },
    "fill-mib": { type: "string", default: "150" },
    before: { type: "string" },
    channels: { type: "string", default: "1,4" },
    "multifd-channels": { type: "string", default: "4" },
    "multifd-mib": { type: "string", default: "256" },
  },
});
const MiB = 1 << 20;
const main = new URL("../cli/main.ts", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PROXY_MODES = ["pass", "filter", "verify"] as const;
const socatPath = ["/usr/bin/socat", "/bin/socat"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});
/**
 * What each round migrates through: nothing (`direct`), the floors (a Deno
 * byte copy, `bench/_relay_floor.ts`, and `socat` when installed), then the
 * proxy in each mode (and with `--before`, another checkout's proxy in each
 * mode, rows `MODE (before)`).
 */
const beforeCli = values.before;
const MODES: readonly string[] = [
  "direct",
  "relay",
  ...(socatPath ? ["socat"] : []),
  ...PROXY_MODES,
  ...(beforeCli ? PROXY_MODES.map((m) => `${m} (before)`) : []),
];
const floorScript = new URL("./_relay_floor.ts", import.meta.url).pathname;
const TICKS = 100; // USER_HZ of /proc/PID/stat

/** The load averages, as `uptime` shows them. */
function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

/** CPU seconds (user + system, threads and waited-for children included) of a live process. */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14-17 (utime stime cutime cstime) are at 11-14 after the name.
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICKS;
}

/** The one child of `pid` (the command /usr/bin/time runs). */
async function childOf(pid: number): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const c = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim();
    if (c !== "") return Number(c.split(" ")[0]);
    await sleep(5);
  }
  throw new Error(`process ${pid} started no child`);
}

/**
 * A relay under /usr/bin/time (for its CPU time and peak RSS): the proxy
 * CLI in a mode, or a floor (`relay`, `socat`). Resolves once the listen
 * socket exists.
 */
async function startRelay(
  listen: string,
  connect: string,
  mode: string,
  timeFile: string,
  extra: string[] = [],
) {
  const argv = mode === "relay"
    ? [Deno.execPath(), "run", "-A", floorScript, listen, connect]
    : mode === "socat"
    ? [socatPath!, "-b", String(1 << 20), `UNIX-LISTEN:${listen},fork`, `UNIX-CONNECT:${connect}`]
    : [
      Deno.execPath(),
      "run",
      "-A",
      mode.endsWith(" (before)") ? beforeCli! : main,
      "proxy",
      "--listen",
      `unix:${listen}`,
      "--connect",
      `unix:${connect}`,
      "--mode",
      mode.replace(" (before)", ""),
      ...extra,
    ];
  const child = new Deno.Command("/usr/bin/time", {
    args: ["-f", "%e %U %S %M", "-o", timeFile, ...argv],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const err = new Response(child.stderr).text();
  const pid = await childOf(child.pid);
  for (let i = 0; i < 400; i++) {
    try {
      if ((await Deno.lstat(listen)).isSocket) break;
    } catch { /* not yet */ }
    await sleep(25);
  }
  // Start-up (module loading, JIT of the CLI, Workers started ahead) is not
  // part of the migration: a proxy is started before the source migrates.
  // Wait until the relay is idle (its CPU time stops growing).
  let cpuAtStart = cpuSeconds(pid);
  for (let i = 0, still = 0; i < 100 && still < 2; i++) {
    await sleep(50);
    const now = cpuSeconds(pid);
    still = now === cpuAtStart ? still + 1 : 0;
    cpuAtStart = now;
  }
  return {
    /** Wait for the proxy to exit (a floor is stopped); its CPU seconds since the start and peak RSS. */
    async done(): Promise<{ code: number; err: string; cpu: number; rssMiB: number }> {
      if (mode === "relay" || mode === "socat") {
        try {
          Deno.kill(pid, "SIGTERM");
        } catch { /* gone */ }
      }
      const st = await child.status;
      const line = (await Deno.readTextFile(timeFile)).trim().split("\n").pop()!;
      const [, user, sys, maxKiB] = line.split(" ").map(Number);
      const code = mode === "relay" || mode === "socat" ? 0 : st.code;
      return { code, err: await err, cpu: user! + sys! - cpuAtStart, rssMiB: maxKiB! / 1024 };
    },
    kill() {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    },
  };
}

/**
 * The multi-channel hook: what a migration with `channels` channels needs on
 * both QEMUs before `migrate` / `migrate-incoming`. One channel: nothing.
 * More: multifd with that many channels (the proxy relays them once it
 * registers a multifd channel handler, issue 10 §2). Both get the `events`
 * capability: the migration is timed by QEMU's own MIGRATION events.
 */
async function channelSetup(guest: QemuGuest, channels: number): Promise<void> {
  const on = channels > 1;
  await guest.qmp("migrate-set-capabilities", {
    capabilities: [{ capability: "multifd", state: on }, { capability: "events", state: true }],
  });
  if (on) await guest.qmp("migrate-set-parameters", { "multifd-channels": channels });
}

/** Seconds of a QMP event's timestamp (CLOCK_REALTIME, microseconds). */
function eventSeconds(e: QmpEvent): number {
  return e.timestamp!.seconds + e.timestamp!.microseconds / 1e6;
}

/** One measured migration of one mode. */
interface Sample {
  seconds: number;
  /** CPU seconds of the relay during the migration (start-up excluded). */
  relayCpu: number;
  /** CPU seconds of both QEMUs during the migration. */
  qemuCpu: number;
  rssMiB: number;
}

async function qemuWallTimes(
  dir: string,
  qemu: QemuVersion,
  runs: number,
  guest: "linux" | "tiny",
  fillMiB: number,
  channelCounts: number[],
): Promise<(string | number)[][]> {
  await using src: QemuGuest = await startGuest({ qemu, guest });
  if (guest === "tiny") {
    await src.plugHolesShape();
  } else {
    await src.plugTo(200 * MiB);
    await src.fill(fillMiB); // pattern data: real page records, not zero pages
  }
  await src.migrateToFile(`${dir}/size.mig`);
  const streamBytes = (await Deno.stat(`${dir}/size.mig`)).size;
  // QEMU 7.2 states the plug bitmap after the RAM: filter mode gets it out of band.
  const plugArgs = qemu === "7.2" ? ["--plugmap-from", `${dir}/size.mig`] : [];
  const rows: (string | number)[][] = [];
  for (const channels of channelCounts) {
    const loadBefore = loadAverage();
    const samples = new Map<string, Sample[]>(MODES.map((m) => [m, []]));
    const failures = new Map<string, string>();
    for (let i = 0; i < runs; i++) {
      // Each round starts one row later, so no row always follows the same one.
      const order = MODES.map((_, k) => MODES[(k + i) % MODES.length]!);
      for (const mode of order) {
        if (failures.has(mode)) continue;
        const name = `${dir}/${channels}-${mode.replace(/\W+/g, "-")}-${i}`;
        const dst = `${name}-dst.sock`;
        await using d = await startDestination({ qemu, guest, incoming: "defer" });
        await channelSetup(d, channels);
        await d.migrateIncoming(`unix:${dst}`);
        await channelSetup(src, channels);
        let uri = `unix:${dst}`;
        let relay: Awaited<ReturnType<typeof startRelay>> | undefined;
        if (mode !== "direct") {
          const listen = `${name}.sock`;
          const time = `${name}.time`;
          relay = await startRelay(
            listen,
            dst,
            mode,
            time,
            mode.startsWith("filter") ? plugArgs : [],
          );
          uri = `unix:${listen}`;
        }
        try {
          src.qmpClient.events.length = 0;
          const qemuCpu0 = cpuSeconds(src.pid) + cpuSeconds(d.pid);
          await src.migrate(uri, { timeoutMs: 120_000 });
          await d.waitIncoming({ timeoutMs: 120_000 });
          const qemuCpu = cpuSeconds(src.pid) + cpuSeconds(d.pid) - qemuCpu0;
          const setup = await src.qmpClient.waitEvent("MIGRATION", {
            match: (e) => e.data?.status === "setup",
            timeoutMs: 5_000,
          });
          const completed = await d.qmpClient.waitEvent("MIGRATION", {
            match: (e) => e.data?.status === "completed",
            timeoutMs: 5_000,
          });
          const sample: Sample = {
            seconds: eventSeconds(completed) - eventSeconds(setup),
            relayCpu: 0,
            qemuCpu,
            rssMiB: 0,
          };
          if (relay) {
            const p = await relay.done();
            if (p.code !== 0) throw new Error(`proxy ${mode} exited ${p.code}: ${p.err}`);
            sample.relayCpu = p.cpu;
            sample.rssMiB = p.rssMiB;
          }
          samples.get(mode)!.push(sample);
        } catch (e) {
          if (mode === "direct") throw e;
          failures.set(mode, (e instanceof Error ? e.message : String(e)).split("\n")[0]!);
          relay?.kill();
        }
      }
    }
    const loadAfter = loadAverage();
    const base = median(samples.get("direct")!.map((s) => s.seconds));
    for (const mode of MODES) {
      const label = `QEMU ${qemu} ${guest} guest, ${(streamBytes / 1e6).toFixed(0)} MB stream, ${
        channels === 1 ? "1 channel" : `${channels} multifd channels`
      }, ${mode === "relay" ? "floor: Deno byte copy" : mode === "socat" ? "floor: socat" : mode}`;
      const failed = failures.get(mode);
      if (failed !== undefined) {
        rows.push([label, "failed", failed.slice(0, 100)]);
        continue;
      }
      const ss = samples.get(mode)!;
      const m = median(ss.map((s) => s.seconds));
      const qemuCpu = `QEMU CPU ${median(ss.map((s) => s.qemuCpu)).toFixed(2)} s`;
      const added = m - base;
      rows.push([
        label,
        m.toFixed(3),
        mode === "direct"
          ? `${qemuCpu}; load ${loadBefore} -> ${loadAfter}`
          : `${added >= 0 ? "+" : ""}${((m / base - 1) * 100).toFixed(0)}% (${
            added >= 0 ? "+" : ""
          }${(added * 1000).toFixed(0)} ms), relay CPU ${
            median(ss.map((s) => s.relayCpu)).toFixed(2)
          } s, ${qemuCpu}, peak RSS ${Math.max(...ss.map((s) => s.rssMiB)).toFixed(0)} MiB`,
      ]);
    }
  }
  return rows;
}

/** Send `file` through the proxy into a discarding destination; return seconds and peak RSS. */
async function proxyThroughput(dir: string, file: string, mode: string) {
  const dst = `${dir}/sink.sock`;
  const listen = `${dir}/p.sock`;
  const rss = `${dir}/rss.txt`;
  const listener = Deno.listen({ transport: "unix", path: dst });
  const sink = (async () => {
    const conn = await listener.accept();
    listener.close();
    const buf = new Uint8Array(1 << 20);
    let n = 0;
    try {
      for (;;) {
        const got = await conn.read(buf);
        if (got === null) break;
        n += got;
      }
    } catch { /* reset */ }
    conn.close();
    return n;
  })();
  const proxy = await startRelay(listen, dst, mode, rss);
  const t0 = performance.now();
  // The source: stream the file into the proxy's socket.
  let conn: Deno.UnixConn | undefined;
  for (let i = 0; i < 200 && conn === undefined; i++) {
    conn = await Deno.connect({ transport: "unix", path: listen }).catch(() => undefined);
    if (conn === undefined) await sleep(25);
  }
  if (conn === undefined) throw new Error("proxy socket did not appear");
  using f = await Deno.open(file);
  const buf = new Uint8Array(1 << 20);
  try {
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      let o = 0;
      while (o < n) o += await conn.write(buf.subarray(o, n));
    }
  } catch { /* verify mode: the proxy may stop reading */ }
  conn.close();
  const p = await proxy.done();
  const received = await sink;
  const seconds = (performance.now() - t0) / 1000;
  await Deno.remove(dst).catch(() => {});
  if (p.code !== 0 && !(mode === "verify" && p.code === 3)) {
    throw new Error(`proxy ${mode} exited ${p.code}: ${p.err}`);
  }
  return { seconds, rssMiB: p.rssMiB, cpu: p.cpu, received };
}

/**
 * A synthetic multifd migration through the proxy into a discarding
 * destination: the main channel of tests/proxy/_util.ts (early layout, its
 * device fully plugged, one MULTIFD_FLUSH) and `channels` channels, each its
 * initial packet, `mib` MiB of full 128-page packets and a SYNC packet. The
 * source connects every channel before it sends, as QEMU does.
 */
async function multifdThroughput(dir: string, channels: number, mib: number, mode: string) {
  const syn = syntheticRecords({ seed: 3, plugged: new Array(16).fill(true), pages: 12 });
  const mainBytes = await encodeRecords(syn.records);
  const offsets = Array.from({ length: 128 }, (_, i) => i * 4096);
  const data = new Uint8Array(128 * 4096).map((_, i) => ((i * 7) & 0xff) | 1);
  const packet = concatBytes([
    writeMultifdRamPacketHeader(
      { flags: 0, normalRamOffsets: offsets, packetNum: 1, ramBlock: VMEM_RAMBLOCK },
      4096,
    ),
    data,
  ]);
  const sync = writeMultifdRamPacketHeader(
    { flags: MULTIFD_FLAG_SYNC, pagesAlloc: 0, normalRamOffsets: [], packetNum: 2, ramBlock: "" },
    4096,
  );
  const packets = Math.ceil((mib << 20) / packet.byteLength);
  const total = mainBytes.byteLength +
    channels * (64 + packets * packet.byteLength + sync.byteLength);
  const dst = `${dir}/mfd-sink.sock`;
  const listen = `${dir}/mfd-${mode}.sock`;
  const timeFile = `${dir}/mfd-time.txt`;
  const listener = Deno.listen({ transport: "unix", path: dst });
  let received = 0;
  const sink = (async () => {
    const reading: Promise<void>[] = [];
    for (let i = 0; i <= channels; i++) {
      const conn = await listener.accept();
      reading.push((async () => {
        const buf = new Uint8Array(1 << 20);
        try {
          for (;;) {
            const got = await conn.read(buf);
            if (got === null) break;
            received += got;
          }
        } catch { /* reset */ }
        conn.close();
      })());
    }
    listener.close();
    await Promise.all(reading);
  })();
  const argv = [Deno.execPath(), "run", "-A", main, "proxy", "--listen", `unix:${listen}`];
  argv.push("--connect", `unix:${dst}`, "--mode", mode);
  const child = new Deno.Command("/usr/bin/time", {
    args: ["-f", "%e %U %S %M", "-o", timeFile, ...argv],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const err = new Response(child.stderr).text();
  for (let i = 0; i < 400; i++) {
    if (await Deno.lstat(listen).then(() => true, () => false)) break;
    await sleep(25);
  }
  const writeAllTo = async (c: Deno.UnixConn, b: Uint8Array) => {
    for (let at = 0; at < b.byteLength;) at += await c.write(b.subarray(at));
  };
  const connect = async (head: Uint8Array) => {
    const c = await Deno.connect({ transport: "unix", path: listen }).catch(async (e) => {
      throw new Error(`cannot connect to the proxy (${e.message}): ${await err}`);
    });
    await writeAllTo(c, head.subarray(0, 64));
    await sleep(20);
    return c;
  };
  const mainConn = await connect(mainBytes);
  const channelConns: Deno.UnixConn[] = [];
  for (let ch = 0; ch < channels; ch++) {
    channelConns.push(await connect(writeMultifdInit({ channelId: ch, uuid: new Uint8Array(16) })));
  }
  const started = performance.now();
  const finish = async (c: Deno.UnixConn) => {
    await c.closeWrite();
    await sleep(100);
    c.close();
  };
  await Promise.all([
    (async () => {
      await writeAllTo(mainConn, mainBytes.subarray(64));
      await finish(mainConn);
    })(),
    ...channelConns.map(async (c) => {
      for (let k = 0; k < packets; k++) await writeAllTo(c, packet);
      await writeAllTo(c, sync);
      await finish(c);
    }),
  ]);
  const status = await child.status;
  await sink;
  const seconds = (performance.now() - started) / 1000;
  if (status.code !== 0) throw new Error(`proxy ${mode} exited ${status.code}: ${await err}`);
  const line = (await Deno.readTextFile(timeFile)).trim().split("\n").pop()!;
  const [, user, sys, maxKiB] = line.split(" ").map(Number);
  await Deno.remove(dst).catch(() => {});
  if (received !== total) throw new Error(`the sink got ${received} of ${total} bytes`);
  return { seconds, cpu: user! + sys!, rssMiB: maxKiB! / 1024, bytes: total };
}

const dir = await Deno.makeTempDir({ prefix: "vmem-bench-proxy-" });
try {
  const rows: (string | number)[][] = [];
  if (!values["skip-qemu"]) {
    rows.push(
      ...await qemuWallTimes(
        dir,
        values.qemu as QemuVersion,
        Number(values.runs),
        values.guest as "linux" | "tiny",
        Number(values["fill-mib"]),
        values.channels.split(",").map(Number),
      ),
    );
  }
  if (!values["skip-throughput"]) {
    const real = await realdata("out-q10", "s3-malicious.mig");
    for (const gib of [Number(values["small-gib"]), Number(values.gib)]) {
      const file = `${dir}/synth-${gib}.mig`;
      const size = await synthesizeStream(real, file, Math.round(gib * 2 ** 30));
      for (const mode of ["pass", "filter", "verify"]) {
        const m = await proxyThroughput(dir, file, mode);
        rows.push([
          `${(size / 1e9).toFixed(2)} GB stream, proxy ${mode}`,
          m.seconds.toFixed(2),
          `${(size / m.seconds / 1e9).toFixed(2)} GB/s, CPU ${m.cpu.toFixed(2)} s (${
            (m.cpu / (size / 1e9)).toFixed(2)
          } s per GB), peak RSS ${m.rssMiB.toFixed(0)} MiB`,
        ]);
      }
      await Deno.remove(file);
    }
  }
  if (!values["skip-throughput"]) {
    const channels = Number(values["multifd-channels"]);
    for (const mode of ["pass", "filter", "verify"]) {
      const m = await multifdThroughput(dir, channels, Number(values["multifd-mib"]), mode);
      rows.push([
        `${(m.bytes / 1e9).toFixed(2)} GB multifd (${channels} channels), proxy ${mode}`,
        m.seconds.toFixed(2),
        `${(m.bytes / m.seconds / 1e9).toFixed(2)} GB/s, CPU ${m.cpu.toFixed(2)} s (${
          (m.cpu / m.seconds).toFixed(2)
        }× wall), peak RSS ${m.rssMiB.toFixed(0)} MiB`,
      ]);
    }
  }
  printTable(["case", "seconds", "notes"], rows);
} finally {
  await Deno.remove(dir, { recursive: true });
}
