/**
 * `vmem-dump proxy` with multifd channels over real unix sockets, without
 * QEMU: a synthetic main channel (tests/proxy/_util.ts) and synthetic
 * channels built with the library's own packet writer, sent by a fake
 * source to the proxy, which relays them to a fake destination that records
 * every connection. Real QEMU migrations are in multifd_qemu_*_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bytesReader } from "../../mod.ts";
import {
  decodeMultifdChannel,
  MULTIFD_FLAG_SYNC,
  MULTIFD_FLAG_ZSTD,
  type MultifdRamPacketRecord,
  writeMultifdInit,
  writeMultifdRamPacketHeader,
} from "../../src/migration/mod.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { encodeRecords, syntheticRecords, VMEM_BLOCK, VMEM_GPA, VMEM_RAMBLOCK } from "./_util.ts";
import { startProxy } from "./_qemu.ts";

const PAGE = 4096;

/** One packet of a synthetic channel. */
interface PacketSpec {
  sync?: boolean;
  flags?: number;
  ramBlock?: string;
  normal?: number[];
  zero?: number[];
  /** Replace the packet's header bytes (corruption). */
  corrupt?: (header: Uint8Array) => void;
}

/** A channel: initial packet, then the packets (page data: the page's offset repeated). */
function channel(id: number, packets: PacketSpec[]): Uint8Array {
  const parts: Uint8Array[] = [writeMultifdInit({ channelId: id, uuid: new Uint8Array(16) })];
  let num = id;
  for (const p of packets) {
    const normal = p.normal ?? [];
    const header = writeMultifdRamPacketHeader({
      flags: (p.flags ?? 0) | (p.sync ? MULTIFD_FLAG_SYNC : 0),
      pagesAlloc: normal.length + (p.zero?.length ?? 0) > 0 ? 128 : 0,
      normalRamOffsets: normal,
      zeroRamOffsets: p.zero ?? [],
      packetNum: num,
      ramBlock: normal.length + (p.zero?.length ?? 0) > 0 ? p.ramBlock ?? VMEM_RAMBLOCK : "",
      ...(p.flags ? { nextPacketSize: normal.length > 0 ? 64 : 0 } : {}),
    }, PAGE);
    p.corrupt?.(header);
    parts.push(header);
    if (p.flags) {
      if (normal.length > 0) parts.push(new Uint8Array(64).fill(0xcc)); // "compressed" payload
    } else {
      for (const o of normal) parts.push(new Uint8Array(PAGE).fill((o >>> 12) & 0xff | 1));
    }
    num += 2;
  }
  return concatBytes(parts);
}

/** The synthetic main channel: blocks 0-3 and 8-11 of the 16 MiB device plugged. */
async function mainChannel() {
  const plugged = Array.from({ length: 16 }, (_, i) => (i >> 2) % 2 === 0);
  const syn = syntheticRecords({ seed: 7, plugged, pages: 12, strayRate: 0 });
  return { bytes: await encodeRecords(syn.records), plugged };
}

const pluggedPage = (block: number, page = 1) => block * VMEM_BLOCK + page * PAGE;

/**
 * A destination that takes every connection and records what arrives on each, in order.
 * With `hold`, it keeps every connection open until `hold` resolves (as QEMU keeps its main
 * channel open while it waits for multifd channels).
 */
function fakeDestination(path: string, hold?: Promise<void>, closeChannels = false) {
  const listener = Deno.listen({ transport: "unix", path });
  const conns: { conn?: Deno.Conn; bytes: Uint8Array[]; closed: Promise<void> }[] = [];
  const accepting = (async () => {
    for await (const c of listener) {
      if (closeChannels && conns.length > 0) {
        // A destination whose multifd channel broke off: it closes at once.
        c.close();
        conns.push({ bytes: [], closed: Promise.resolve() });
        continue;
      }
      const bytes: Uint8Array[] = [];
      const closed = (async () => {
        const buf = new Uint8Array(1 << 16);
        try {
          for (;;) {
            const n = await c.read(buf);
            if (n === null) break;
            bytes.push(buf.slice(0, n));
          }
        } catch { /* reset */ }
        await hold;
        try {
          c.close();
        } catch { /* closed */ }
      })();
      conns.push({ conn: c, bytes, closed });
    }
  })();
  return {
    /**
     * Close every connection but the first (the main channel), as QEMU 7.2 does once its load
     * is done (`multifd_load_cleanup`). Resolves once their reads have ended: only then is the
     * socket really closed (a pending read keeps it open).
     */
    async closeChannels(): Promise<void> {
      const channels = conns.slice(1);
      for (const c of channels) {
        try {
          c.conn?.close();
        } catch { /* closed */ }
      }
      await Promise.all(channels.map((c) => c.closed));
    },
    /** Bytes received so far on the connection accepted `i`-th. */
    byteLength(i: number): number {
      return conns[i]?.bytes.reduce((a, b) => a + b.byteLength, 0) ?? 0;
    },
    async received(): Promise<Uint8Array[]> {
      await Promise.all(conns.map((c) => c.closed));
      return conns.map((c) => concatBytes(c.bytes));
    },
    async close() {
      listener.close();
      await accepting.catch(() => {});
      await Promise.all(conns.map((c) => c.closed));
    },
  };
}

/** Write the streams into the proxy's socket: `order` gives the connection order (0 = main). */
async function fakeSource(path: string, streams: Uint8Array[], order: number[]): Promise<void> {
  const conns: Deno.Conn[] = [];
  for (const i of order) {
    for (let k = 0; k < 200; k++) {
      try {
        conns[i] = await Deno.connect({ transport: "unix", path });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    // Each connection's first bytes go out before the next connects (the order is seen).
    await conns[i]!.write(streams[i]!.subarray(0, 64));
    await new Promise((r) => setTimeout(r, 30));
  }
  await Promise.all(streams.map(async (bytes, i) => {
    const c = conns[i]!;
    try {
      for (let at = 64; at < bytes.byteLength;) at += await c.write(bytes.subarray(at));
      await c.closeWrite();
    } catch { /* the proxy closed it */ }
  }));
  await new Promise((r) => setTimeout(r, 200));
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed */ }
  }
}

async function runProxy(
  streams: Uint8Array[],
  options: { mode: string; order?: number[]; extra?: string[]; closeChannels?: boolean },
) {
  const dir = await Deno.makeTempDir({ prefix: "vmem-multifd-proxy-" });
  try {
    const dest = fakeDestination(`${dir}/p-dst.sock`, undefined, options.closeChannels);
    // A process, as users run it: `deno test` would type-check each Worker's modules on load.
    const proxy = await startProxy(dir, "p", ["--mode", options.mode, ...(options.extra ?? [])]);
    await fakeSource(`${dir}/p.sock`, streams, options.order ?? streams.map((_, i) => i));
    const { code, err, json } = await proxy.done();
    await dest.close();
    return { code, err, json, received: await dest.received() };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function packets(bytes: Uint8Array): Promise<MultifdRamPacketRecord[]> {
  const out: MultifdRamPacketRecord[] = [];
  for await (const batch of decodeMultifdChannel(bytesReader(bytes))) {
    for (const r of batch) {
      if (r.kind === "multifd-ram-packet") out.push({ ...r, data: r.data.slice() });
    }
  }
  return out;
}

const QEVM = [0x51, 0x45, 0x56, 0x4d];
const startsWith = (b: Uint8Array, head: number[]) => head.every((x, i) => b[i] === x);

Deno.test("proxy relays a main channel and two multifd channels unchanged, the main one connected first", async () => {
  const { bytes: mainBytes } = await mainChannel();
  const ch0 = channel(0, [
    { normal: [pluggedPage(0), pluggedPage(1)], zero: [pluggedPage(8)] },
    { sync: true },
  ]);
  const ch1 = channel(1, [
    { ramBlock: "pc.ram", normal: [0x5000], zero: [0x6000, 0x7000] },
    { sync: true },
  ]);
  // The channels connect before the main channel does.
  const r = await runProxy([mainBytes, ch0, ch1], { mode: "pass", order: [1, 2, 0] });
  assert.equal(r.code, 0, r.err);
  assert.ok(
    startsWith(r.received[0]!, QEVM),
    "the destination's first connection is the main channel",
  );
  assert.deepEqual(r.received[0], mainBytes);
  const channels = r.received.slice(1).toSorted((a, b) => a[24]! - b[24]!);
  assert.deepEqual(channels, [ch0, ch1]);
  const summaries = (r.json as { channels: { label: string; pages: number; zeroPages: number }[] })
    .channels;
  assert.deepEqual(
    summaries.map((c) => [c.label, c.pages, c.zeroPages]).toSorted(),
    [["multifd channel 0", 2, 1], ["multifd channel 1", 1, 2]],
  );
});

Deno.test("proxy --mode verify vetoes a multifd page in an unplugged block: exit 3, no EOF, the channel goes on without pages", async () => {
  const { bytes: mainBytes } = await mainChannel();
  const stray = pluggedPage(5, 3); // block 5 is unplugged
  const ch0 = channel(0, [{ normal: [pluggedPage(0)] }, { sync: true }]);
  const ch1 = channel(1, [
    { normal: [pluggedPage(1), stray], zero: [pluggedPage(9)] },
    { normal: [pluggedPage(2)] },
    { sync: true },
  ]);
  const r = await runProxy([mainBytes, ch0, ch1], { mode: "verify" });
  assert.equal(r.code, 3, r.err);
  assert.match(r.err, /multifd channel 1 offset 0x/);
  const verify = (r.json as {
    verify: { violations: { gpa: number; channel?: number; streamOffset: number }[] };
  }).verify;
  assert.deepEqual(verify.violations.map((v) => [v.gpa, v.channel]), [[VMEM_GPA + stray, 1]]);
  // The offset of the page's slot in the channel: after the initial packet, slot 1 at 320 + 8.
  assert.equal(verify.violations[0]!.streamOffset, 64 + 320 + 8);
  // The destination never got QEMU_VM_EOF: its main channel is cut short.
  assert.ok(r.received[0]!.byteLength < mainBytes.byteLength);
  // Channel 1 went on: every packet, none with pages from the violating one on.
  const dst1 = r.received.slice(1).find((b) => b[24] === 1)!;
  const got = await packets(dst1);
  assert.deepEqual(got.map((p) => [p.sync, p.normalRamOffsets.length + p.zeroRamOffsets.length]), [
    [false, 0],
    [false, 0],
    [true, 0],
  ]);
});

Deno.test("proxy --mode filter removes unplugged pages from multifd packets, counts and data included", async () => {
  const { bytes: mainBytes } = await mainChannel();
  const ch0 = channel(0, [
    {
      normal: [pluggedPage(0), pluggedPage(6), pluggedPage(8)],
      zero: [pluggedPage(7), pluggedPage(9)],
    },
    { sync: true },
  ]);
  const r = await runProxy([mainBytes, ch0], { mode: "filter" });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.received[0], mainBytes);
  const [pkt, sync] = await packets(r.received[1]!);
  assert.ok(sync!.sync && !pkt!.sync);
  assert.deepEqual(pkt!.normalRamOffsets, [pluggedPage(0), pluggedPage(8)]);
  assert.deepEqual(pkt!.zeroRamOffsets, [pluggedPage(9)]);
  assert.equal(pkt!.nextPacketSize, 2 * PAGE);
  const input = (await packets(ch0))[0]!;
  assert.deepEqual(
    pkt!.data,
    concatBytes([input.data.subarray(0, PAGE), input.data.subarray(2 * PAGE)]),
  );
  assert.equal(r.received[1]!.byteLength, ch0.byteLength - PAGE);
  const summary = (r.json as {
    channels: {
      droppedPages: number;
      droppedByteLength: number;
      dropped: { gpa: number; recordKind: string; path: string }[];
    }[];
  }).channels[0]!;
  assert.equal(summary.droppedPages, 2);
  assert.equal(summary.droppedByteLength, PAGE);
  for (const d of summary.dropped) assert.notEqual(d.path, "");
  assert.deepEqual(summary.dropped.map((d) => [d.recordKind, d.gpa]), [
    ["ram-page", VMEM_GPA + pluggedPage(6)],
    ["ram-zero-page", VMEM_GPA + pluggedPage(7)],
  ]);
});

Deno.test("proxy --mode filter refuses to remove a page with data from a compressed multifd packet", async () => {
  const { bytes: mainBytes } = await mainChannel();
  const ch0 = channel(0, [
    { flags: MULTIFD_FLAG_ZSTD, normal: [pluggedPage(0)], zero: [pluggedPage(6, 2)] },
    { flags: MULTIFD_FLAG_ZSTD, normal: [pluggedPage(6)] },
    { sync: true },
  ]);
  const r = await runProxy([mainBytes, ch0], { mode: "filter" });
  assert.equal(r.code, 1);
  assert.match(
    r.err,
    /multifd channel 0: Cannot filter multifd channel 0: page 0x601000 .* zstd-compressed packet.* at offset 0x/,
  );
  assert.ok(r.received[0]!.byteLength < mainBytes.byteLength, "no EOF reached the destination");
});

Deno.test("proxy fails a corrupt or truncated multifd channel with a typed error naming the channel and offset", async (t) => {
  const { bytes: mainBytes } = await mainChannel();
  await t.step("bad magic in the second packet", async () => {
    const ch1 = channel(1, [
      { normal: [pluggedPage(0)] },
      { normal: [pluggedPage(1)], corrupt: (h) => (h[0] = 0x99) },
      { sync: true },
    ]);
    const r = await runProxy([mainBytes, channel(0, [{ sync: true }]), ch1], {
      mode: "pass",
    });
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /multifd channel 1: Cannot decode multifd channel: packet magic 0x99223344 is not 0x11223344 at offset 0x1580\b/,
    );
    assert.ok(
      r.received[0]!.byteLength < mainBytes.byteLength,
      "no EOF reached the destination: " + r.err + "",
    );
  });
  await t.step("more pages than slots", async () => {
    const ch0 = channel(0, [
      { normal: [pluggedPage(0)], corrupt: (h) => new DataView(h.buffer).setUint32(12, 129) },
      { sync: true },
    ]);
    const r = await runProxy([mainBytes, ch0], { mode: "verify" });
    assert.equal(r.code, 1);
    assert.match(r.err, /packet allocates 129 pages, more than the 128 .* at offset 0x4c\b/);
  });
  await t.step("a channel that ends inside a packet", async () => {
    const ch0 = channel(0, [{ normal: [pluggedPage(0)] }, { sync: true }]);
    const r = await runProxy([mainBytes, ch0.subarray(0, ch0.byteLength - 100)], { mode: "pass" });
    assert.equal(r.code, 1);
    assert.match(r.err, /multifd channel 0: Cannot read .* input ended/);
    assert.ok(r.received[0]!.byteLength < mainBytes.byteLength, "no EOF reached the destination");
  });
  await t.step("a page beyond its block", async () => {
    const ch0 = channel(0, [{ ramBlock: "pc.ram", normal: [16 << 20] }, { sync: true }]);
    const r = await runProxy([mainBytes, ch0], { mode: "verify" });
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /page offset 0x1000000 in \\?"pc\.ram\\?" lies beyond the block's 0x1000000 bytes at offset 0x180\b/,
    );
  });
});

Deno.test("proxy fails with destination-gone, naming the channel, when the destination closes a multifd channel", async () => {
  const { bytes: mainBytes } = await mainChannel();
  // Enough pages that the channel's writes outlast the destination's close.
  const pages = Array.from({ length: 64 }, (_, i) => pluggedPage(i % 2 === 0 ? 0 : 1, i >> 1));
  const ch0 = channel(0, [{ normal: pages }, { normal: pages }, { sync: true }]);
  const r = await runProxy([mainBytes, ch0], { mode: "pass", closeChannels: true });
  assert.equal(r.code, 1, r.err);
  const error = errorOf(r.err);
  assert.equal(error.code, "destination-gone", r.err);
  assert.match(error.message, /^multifd channel 0: writing to the destination failed: /);
  assert.ok(r.received[0]!.byteLength < mainBytes.byteLength, "no EOF reached the destination");
});

// ---- Red team: a hostile source's channels (docs/security.md, "multifd") ----

/** Bytes of a RAM packet header with 4 KiB pages: 320 + 128 offset slots. */
const HEADER = 320 + 128 * 8;

async function connectTo(path: string): Promise<Deno.UnixConn> {
  for (let k = 0;; k++) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (e) {
      if (k >= 200) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

async function writeAll(c: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.byteLength;) at += await c.write(bytes.subarray(at));
}

async function until(what: string, condition: () => boolean): Promise<void> {
  for (let i = 0; !condition(); i++) {
    if (i > 2400) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

Deno.test("red team: verify checks every page QEMU loads from a packet, SYNC packets and zero pages included", async (t) => {
  const { bytes: mainBytes } = await mainChannel();
  const stray = pluggedPage(5, 3); // block 5 is unplugged
  // QEMU loads the pages of a SYNC packet: 7.2's receive thread calls recv_pages whenever
  // normal_num > 0, whatever the flags; 10.0 sets has_data = normal_num || zero_num for SYNC
  // packets too (upstream b93d897ea2, "Fix compat with QEMU < 9.0": sources before 9.0 send
  // pages with SYNC). Only 9.2.0 skipped them (see docs/security.md).
  await t.step("a SYNC packet carrying a page into an unplugged block", async () => {
    const ch1 = channel(1, [{ normal: [pluggedPage(1)] }, { sync: true, normal: [stray] }]);
    const r = await runProxy([mainBytes, channel(0, [{ sync: true }]), ch1], { mode: "verify" });
    assert.equal(r.code, 3, r.err);
    const v = (r.json as { verify: { violations: { gpa: number; streamOffset: number }[] } })
      .verify.violations;
    assert.deepEqual(v.map((x) => [x.gpa, x.streamOffset]), [
      [VMEM_GPA + stray, 64 + HEADER + PAGE + 320],
    ]);
    assert.ok(r.received[0]!.byteLength < mainBytes.byteLength, "no EOF reached the destination");
    const dst1 = r.received.slice(1).find((b) => b[24] === 1)!;
    const got = await packets(dst1);
    assert.deepEqual(
      got.map((p) => [p.sync, p.normalRamOffsets.length + p.zeroRamOffsets.length]),
      [[false, 1], [true, 0]],
    );
  });
  // 10.0 writes (or, for pages it never received, marks) zero pages: multifd_recv_zero_page_process.
  await t.step("a packet whose only page is a zero page in an unplugged block", async () => {
    const ch0 = channel(0, [{ zero: [stray] }, { sync: true }]);
    const r = await runProxy([mainBytes, ch0], { mode: "verify" });
    assert.equal(r.code, 3, r.err);
    const v = (r.json as { verify: { violations: { gpa: number; recordKind: string }[] } })
      .verify.violations;
    assert.deepEqual(v.map((x) => [x.gpa, x.recordKind]), [[VMEM_GPA + stray, "ram-zero-page"]]);
  });
  // QEMU forces ramblock[255] to NUL and resolves the name with strcmp (qemu_ram_block_by_name):
  // what follows the first NUL is ignored, by QEMU and by the decoder alike.
  await t.step("the virtio-mem block's name followed by a NUL and other bytes", async () => {
    const ch0 = channel(0, [
      {
        normal: [stray],
        corrupt: (h) => h.fill(0x41, 64 + VMEM_RAMBLOCK.length + 1, 64 + 256),
      },
      { sync: true },
    ]);
    const r = await runProxy([mainBytes, ch0], { mode: "verify" });
    assert.equal(r.code, 3, r.err);
    const v = (r.json as { verify: { violations: { gpa: number }[] } }).verify.violations;
    assert.deepEqual(v.map((x) => x.gpa), [VMEM_GPA + stray]);
  });
  // QEMU checks only offset <= used_length - page size; an unaligned page would straddle two
  // device blocks. No sender writes one: refused, and nothing of the packet is forwarded.
  await t.step("a page offset that is not page aligned", async () => {
    const ch0 = channel(0, [{ normal: [pluggedPage(4) - 2048] }, { sync: true }]);
    const r = await runProxy([mainBytes, ch0], { mode: "verify" });
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /is not a multiple of the page size 0x1000 at offset 0x180\b/);
    assert.ok(r.received[0]!.byteLength < mainBytes.byteLength, "no EOF reached the destination");
    assert.ok((r.received[1]?.byteLength ?? 0) <= 64, "the packet was not forwarded");
  });
});

/**
 * Relay the synthetic main channel and one multifd channel `ch0` whose first `cut` bytes go
 * before the main channel's end; the rest goes once the destination has the whole main channel
 * (its EOF) and `channelBytes` bytes of the channel (when given). With `closeChannels`, the
 * destination then closes its multifd connections first, as QEMU does once its load is complete.
 */
async function relayAfterEof(options: {
  mode: string;
  ch0: Uint8Array;
  cut: number;
  channelBytes?: number;
  closeChannels?: boolean;
}) {
  const { bytes: mainBytes } = await mainChannel();
  const { ch0, cut } = options;
  const dir = await Deno.makeTempDir({ prefix: "vmem-multifd-after-eof-" });
  const dest = fakeDestination(`${dir}/p-dst.sock`);
  let closed = false;
  try {
    const proxy = await startProxy(dir, "p", ["--mode", options.mode]);
    const main = await connectTo(`${dir}/p.sock`);
    await writeAll(main, mainBytes.subarray(0, 64));
    await new Promise((r) => setTimeout(r, 30));
    const c0 = await connectTo(`${dir}/p.sock`);
    await writeAll(c0, ch0.subarray(0, cut));
    await writeAll(main, mainBytes.subarray(64));
    await main.closeWrite();
    await until(
      "the destination has the main channel's EOF (and the channel's bytes asked for)",
      () =>
        dest.byteLength(0) === mainBytes.byteLength &&
        (options.channelBytes === undefined || dest.byteLength(1) === options.channelBytes),
    );
    if (options.closeChannels) await dest.closeChannels();
    await writeAll(c0, ch0.subarray(cut));
    await c0.closeWrite();
    const { code, err, json } = await proxy.done();
    main.close();
    c0.close();
    await dest.close();
    closed = true;
    return { code, err, json, mainBytes, received: await dest.received() };
  } finally {
    if (!closed) await dest.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The JSON error object on the last line of a failed run's stderr. */
const errorOf = (err: string) => JSON.parse(err.trim().split("\n").at(-1)!).error;

Deno.test("red team: a page sent after the channel's last SYNC, once the destination had its EOF, is checked and not forwarded (exit 3)", async () => {
  const stray = pluggedPage(5, 3);
  // The SYNC the main channel's only sync point waits for comes first, so the EOF gate opens;
  // the page comes only after the destination has the whole main channel.
  const r = await relayAfterEof({
    mode: "verify",
    ch0: channel(0, [{ sync: true }, { normal: [stray] }]),
    cut: 64 + HEADER,
  });
  assert.equal(r.code, 3, r.err);
  assert.match(r.err, /EOF/);
  const v = (r.json as { verify: { violations: { gpa: number; channel: number }[] } }).verify
    .violations;
  assert.deepEqual(v.map((x) => [x.gpa, x.channel]), [[VMEM_GPA + stray, 0]]);
  assert.deepEqual(r.received[0], r.mainBytes);
  const got = await packets(r.received[1]!);
  assert.deepEqual(
    got.map((p) => [p.sync, p.normalRamOffsets.length + p.zeroRamOffsets.length]),
    [[true, 0], [false, 0]],
    "the page never reached the destination",
  );
});

Deno.test("proxy --mode filter: QEMU 7.2's empty packet after a channel's last SYNC, written after the destination's load closed the channel, is not a failure", async () => {
  // QEMU < 9.0 (upstream f5f48a7891, "Separate SYNC request with normal jobs"): when the
  // migration thread queues the last pages and the SYNC before the channel's thread wakes up,
  // that thread sends one packet with the pages and the SYNC flag, then an empty packet with
  // flags 0. The destination needs nothing of it: once it has QEMU_VM_EOF it finishes loading
  // and closes its multifd connections, maybe before the proxy relays that packet.
  const cut = 64 + 2 * HEADER + PAGE + 2 * PAGE;
  const r = await relayAfterEof({
    mode: "filter",
    ch0: channel(0, [
      { normal: [pluggedPage(0)] },
      { sync: true, normal: [pluggedPage(1), pluggedPage(6)] }, // block 6 is unplugged
      {},
    ]),
    cut,
    // The destination loads once it has the SYNC packet (less the unplugged page) and the EOF.
    channelBytes: cut - PAGE,
    closeChannels: true,
  });
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /multifd channel 0: the destination closed the channel after its load/);
  const summary = (r.json as { channels: { droppedPages: number; packets: number }[] })
    .channels[0]!;
  assert.deepEqual([summary.droppedPages, summary.packets], [1, 3]);
  assert.deepEqual(r.received[0], r.mainBytes);
  const got = await packets(r.received[1]!);
  assert.deepEqual(got.map((p) => [p.sync, p.normalRamOffsets]), [
    [false, [pluggedPage(0)]],
    [true, [pluggedPage(1)]],
  ]);
});

Deno.test("proxy fails with destination-gone when the destination closed a channel after its load and more than an empty packet follows the channel's last SYNC", async (t) => {
  const cut = 64 + HEADER;
  const cases: [string, PacketSpec[], RegExp][] = [
    [
      // No QEMU sends a page after a channel's last SYNC; the destination never waits for one.
      "a page",
      [{ sync: true }, { normal: [pluggedPage(1)] }],
      /closed the channel after QEMU_VM_EOF, before 1 page .* after its last SYNC/,
    ],
    [
      // The main channel has one sync point; a second SYNC is one the destination never waits for.
      "a SYNC after the main channel's last sync point",
      [{ sync: true }, {}, { sync: true }],
      /closed the channel after QEMU_VM_EOF, but the channel sent 1 SYNC packet after its sync points/,
    ],
  ];
  for (const [name, specs, message] of cases) {
    await t.step(name, async () => {
      const r = await relayAfterEof({
        mode: "pass",
        ch0: channel(0, specs),
        cut,
        channelBytes: cut,
        closeChannels: true,
      });
      assert.equal(r.code, 1, r.err);
      const error = errorOf(r.err);
      assert.equal(error.code, "destination-gone", r.err);
      assert.match(error.message, new RegExp(`^multifd channel 0: .*${message.source}`));
    });
  }
});

Deno.test("proxy says the EOF was forwarded when a channel fails after the destination had it", async () => {
  const r = await relayAfterEof({
    mode: "pass",
    ch0: channel(0, [{ sync: true }, { corrupt: (h) => (h[0] = 0x99) }]),
    cut: 64 + HEADER,
  });
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /multifd channel 0: Cannot decode multifd channel: packet magic 0x99223344/);
  assert.match(r.err, /relay failed after QEMU_VM_EOF was forwarded/);
  assert.doesNotMatch(r.err, /without forwarding QEMU_VM_EOF/);
});

Deno.test("red team: a channel that connects after the destination had its EOF is checked before anything of it is forwarded (exit 3)", async () => {
  const { bytes: mainBytes } = await mainChannel();
  const stray = pluggedPage(5, 3);
  const ch0 = channel(0, [{ sync: true }]);
  const ch1 = channel(1, [{ normal: [pluggedPage(0), stray] }, { sync: true }]);
  const dir = await Deno.makeTempDir({ prefix: "vmem-multifd-redteam-" });
  let release!: () => void;
  // QEMU keeps its main channel open until every channel is there (it loads nothing before).
  const dest = fakeDestination(`${dir}/p-dst.sock`, new Promise((r) => (release = r)));
  try {
    const proxy = await startProxy(dir, "p", ["--mode", "verify"]);
    const main = await connectTo(`${dir}/p.sock`);
    await writeAll(main, mainBytes.subarray(0, 64));
    await new Promise((r) => setTimeout(r, 30));
    const c0 = await connectTo(`${dir}/p.sock`);
    await writeAll(c0, ch0);
    await c0.closeWrite();
    await writeAll(main, mainBytes.subarray(64));
    await main.closeWrite();
    await until(
      "the destination has the main channel's EOF",
      () => dest.byteLength(0) === mainBytes.byteLength,
    );
    const c1 = await connectTo(`${dir}/p.sock`);
    await writeAll(c1, ch1);
    await c1.closeWrite();
    await until("the late channel is relayed", () => dest.byteLength(2) >= 64 + 2 * HEADER);
    release();
    const { code, err, json } = await proxy.done();
    main.close();
    c0.close();
    c1.close();
    assert.equal(code, 3, err);
    const v = (json as { verify: { violations: { gpa: number; channel: number }[] } }).verify
      .violations;
    assert.deepEqual(v.map((x) => [x.gpa, x.channel]), [[VMEM_GPA + stray, 1]]);
    const received = await dest.received();
    const got = await packets(received[2]!);
    assert.deepEqual(
      got.map((p) => [p.sync, p.normalRamOffsets.length + p.zeroRamOffsets.length]),
      [[false, 0], [true, 0]],
      "no page of the violating packet reached the destination",
    );
  } finally {
    release();
    await dest.close();
    await Deno.remove(dir, { recursive: true });
  }
});
