/**
 * Cost of the migration proxy.
 *
 * 1. Wall time of a real loopback migration (QEMU under TCG; the Linux guest
 *    with 200 MiB plugged and `--fill-mib` of pattern data, or the tiny guest
 *    with the s2/s3 plug shape) straight to a destination on a unix socket,
 *    and through `vmem-dump proxy` in each mode, from `migrate` to the
 *    destination's `completed`. Each round migrates once directly and once
 *    per mode, so all modes see the same machine load; the table shows the
 *    median of `--runs` rounds and each mode's added time against the
 *    direct migration (target: at most +10 %).
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
 *
 * `--channels N` migrates with N multifd channels (N > 1): both QEMUs get the
 * `multifd` capability and `multifd-channels` N (see {@linkcode channelSetup},
 * the hook for multi-channel runs). A proxy mode that cannot relay such a
 * migration is reported as failed in its row, not as a time. The proxy runs
 * under /usr/bin/time; each row shows its largest peak RSS.
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
import { printTable } from "./_measure.ts";

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
    channels: { type: "string", default: "1,4" },
    "multifd-channels": { type: "string", default: "4" },
    "multifd-mib": { type: "string", default: "256" },
  },
});
const MiB = 1 << 20;
const main = new URL("../cli/main.ts", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const MODES = ["direct", "pass", "filter", "verify"] as const;

/** Start the proxy CLI (optionally under /usr/bin/time) and wait for its socket. */
async function startProxy(
  listen: string,
  connect: string,
  mode: string,
  rssFile?: string,
  extra: string[] = [],
) {
  const argv = [
    Deno.execPath(),
    "run",
    "-A",
    main,
    "proxy",
    "--listen",
    `unix:${listen}`,
    "--connect",
    `unix:${connect}`,
    "--mode",
    mode,
    ...extra,
  ];
  const cmd = rssFile ? ["/usr/bin/time", "-f", "%M", "-o", rssFile, ...argv] : argv;
  const child = new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "null", stderr: "piped" })
    .spawn();
  const err = new Response(child.stderr).text();
  for (let i = 0; i < 400; i++) {
    try {
      if ((await Deno.lstat(listen)).isSocket) break;
    } catch { /* not yet */ }
    await sleep(25);
  }
  return {
    async done() {
      const st = await child.status;
      return { code: st.code, err: await err };
    },
    kill() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    },
  };
}

/**
 * The multi-channel hook: what a migration with `channels` channels needs on
 * both QEMUs before `migrate` / `migrate-incoming`. One channel: nothing.
 * More: multifd with that many channels (the proxy relays them once it
 * registers a multifd channel handler, issue 10 §2).
 */
async function channelSetup(guest: QemuGuest, channels: number): Promise<void> {
  const on = channels > 1;
  await guest.qmp("migrate-set-capabilities", {
    capabilities: [{ capability: "multifd", state: on }],
  });
  if (on) await guest.qmp("migrate-set-parameters", { "multifd-channels": channels });
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
    const times = new Map<string, number[]>(MODES.map((m) => [m, []]));
    const rssMiB = new Map<string, number>(MODES.map((m) => [m, 0]));
    const failures = new Map<string, string>();
    for (let i = 0; i < runs; i++) {
      for (const mode of MODES) {
        if (failures.has(mode)) continue;
        const dst = `${dir}/${channels}-${mode}-${i}-dst.sock`;
        await using d = await startDestination({ qemu, guest, incoming: "defer" });
        await channelSetup(d, channels);
        await d.migrateIncoming(`unix:${dst}`);
        await channelSetup(src, channels);
        let uri = `unix:${dst}`;
        let proxy: Awaited<ReturnType<typeof startProxy>> | undefined;
        const rss = `${dir}/${channels}-${mode}-${i}.rss`;
        if (mode !== "direct") {
          const listen = `${dir}/${channels}-${mode}-${i}.sock`;
          proxy = await startProxy(listen, dst, mode, rss, mode === "filter" ? plugArgs : []);
          uri = `unix:${listen}`;
        }
        try {
          const t0 = performance.now();
          await src.migrate(uri, { timeoutMs: 120_000 });
          await d.waitIncoming({ timeoutMs: 120_000 });
          times.get(mode)!.push((performance.now() - t0) / 1000);
          if (proxy) {
            const p = await proxy.done();
            if (p.code !== 0) throw new Error(`proxy ${mode} exited ${p.code}: ${p.err}`);
            const kib = Number((await Deno.readTextFile(rss)).trim().split("\n").pop());
            rssMiB.set(mode, Math.max(rssMiB.get(mode)!, kib / 1024));
          }
        } catch (e) {
          if (mode === "direct") throw e;
          failures.set(mode, (e instanceof Error ? e.message : String(e)).split("\n")[0]!);
          proxy?.kill();
        }
      }
    }
    const base = median(times.get("direct")!);
    for (const mode of MODES) {
      const label = `QEMU ${qemu} ${guest} guest, ${(streamBytes / 1e6).toFixed(0)} MB stream, ${
        channels === 1 ? "1 channel" : `${channels} multifd channels`
      }, ${mode}`;
      const failed = failures.get(mode);
      if (failed !== undefined) {
        rows.push([label, "failed", failed.slice(0, 100)]);
        continue;
      }
      const m = median(times.get(mode)!);
      rows.push([
        label,
        m.toFixed(2),
        mode === "direct"
          ? ""
          : `${m >= base ? "+" : ""}${((m / base - 1) * 100).toFixed(0)}%, peak RSS ${
            rssMiB.get(mode)!.toFixed(0)
          } MiB`,
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
  const proxy = await startProxy(listen, dst, mode, rss);
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
  const rssMiB = Number((await Deno.readTextFile(rss)).trim().split("\n").pop()) / 1024;
  return { seconds, rssMiB, received };
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
          `${(size / m.seconds / 1e9).toFixed(2)} GB/s, peak RSS ${m.rssMiB.toFixed(0)} MiB`,
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
