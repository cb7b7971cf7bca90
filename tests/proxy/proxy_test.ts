import assert from "node:assert/strict";
import { assertJsonError, assertReport } from "../_util/report_schema.ts";
import { concatBytes } from "../_util/chunkings.ts";
import { createHash } from "node:crypto";
import { UnexpectedEofError, UnsupportedFeatureError } from "../../src/errors.ts";
import { bytesReader, PullByteReader } from "../../src/io/byte_reader.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { MigrationEncoder } from "../../src/migration/encoder.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { formatEndpoint, isLoopbackHost, parseEndpoint } from "../../src/io/endpoint.ts";
import { relayMigration, RelayVerificationError } from "../../src/proxy/relay.ts";
import { run as runProxy } from "../../cli/commands/proxy.ts";
import { main } from "../../cli/main.ts";
import { ProxyError } from "../../src/proxy/session.ts";
import { realdata, realdataAvailable, realdataFacts } from "../_util/realdata.ts";
import { encodeRecords, fileReader, memoryIo, syntheticRecords } from "./_util.ts";

Deno.test("parseEndpoint() reads unix and tcp endpoints and rejects others", () => {
  assert.deepEqual(parseEndpoint("unix:/tmp/a.sock"), { transport: "unix", path: "/tmp/a.sock" });
  assert.deepEqual(parseEndpoint("tcp:127.0.0.1:4444"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 4444,
  });
  assert.deepEqual(parseEndpoint("tcp:[::1]:0"), { transport: "tcp", hostname: "::1", port: 0 });
  assert.deepEqual(parseEndpoint("tcp::5555"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 5555,
  });
  for (
    const bad of ["unix:", "tcp:host", "tcp:a:99999", "tcp:::1:4", "exec:cat", "file:/x", "/tmp/a"]
  ) {
    assert.throws(() => parseEndpoint(bad), TypeError, bad);
  }
  assert.equal(formatEndpoint(parseEndpoint("tcp:[::1]:7")), "tcp:[::1]:7");
});

Deno.test("isLoopbackHost() accepts only loopback addresses", () => {
  for (const h of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopbackHost(h), h);
  }
  for (const h of ["0.0.0.0", "10.0.0.1", "::", "example.com", "128.0.0.1", "127.0.0.256"]) {
    assert.ok(!isLoopbackHost(h), h);
  }
});

/** Collect what a relay sends into memory (and a hash). */
function memorySink(keep = true) {
  const chunks: Uint8Array[] = [];
  let n = 0;
  const hash = createHash("sha256");
  return {
    sink: (c: Uint8Array) => {
      if (keep) chunks.push(c.slice());
      hash.update(c);
      n += c.byteLength;
    },
    get byteLength() {
      return n;
    },
    chunks,
    digest: () => hash.digest("hex"),
  };
}

Deno.test({
  name: "relayMigration() passes, filters and verifies a real q10 s3 stream",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const path = await realdata("out-q10", "s3-malicious.mig");
    const size = (await Deno.stat(path)).size;
    const pass = memorySink(false);
    const r1 = await relayMigration(await fileReader(path), pass.sink, { mode: "pass" });
    assert.equal(r1.bytesOut, size);
    assert.equal(pass.digest(), realdataFacts("out-q10").sha256["s3-malicious.mig"]);
    const filter = memorySink(false);
    const r2 = await relayMigration(await fileReader(path), filter.sink, { mode: "filter" });
    assert.equal(r2.droppedRecords, 2);
    assert.equal(filter.byteLength, size - 8230);
    const verify = memorySink(false);
    let first: number | undefined;
    const e = await relayMigration(await fileReader(path), verify.sink, {
      mode: "verify",
      onVerificationFailure: (v) => (first = v.gpa ?? undefined),
    }).then(() => undefined, (x) => x);
    assert.ok(e instanceof RelayVerificationError, String(e));
    assert.equal(first, 0x104e01000);
    assert.deepEqual(e.result.violations.map((v) => v.gpa), [0x104e01000, 0x106a01000]);
    assert.ok(verify.byteLength <= 110305743, "nothing from the first offending record on");
  },
});

/** A synthetic stream with a command inserted after the configuration. */
async function streamWithCommand(
  command: number,
  name: string,
  payload: Uint8Array,
): Promise<Uint8Array> {
  const syn = syntheticRecords({ seed: 90, strayRate: 0 });
  const records: MigrationRecord[] = [...syn.records];
  records.splice(2, 0, { kind: "command", streamOffset: 0, command, name, payload });
  return await encodeRecords(records);
}

Deno.test("relayMigration() refuses postcopy and COLO before forwarding them, and OPEN_RETURN_PATH unless allowed", async () => {
  for (
    const [cmd, name, payload] of [[3, "POSTCOPY_ADVISE", 16], [3, "POSTCOPY_ADVISE", 0], [
      8,
      "ENABLE_COLO",
      0,
    ]] as const
  ) {
    const bytes = await streamWithCommand(cmd, name, new Uint8Array(payload));
    const out = memorySink();
    const e = await relayMigration(bytesReader(bytes), out.sink).then(() => undefined, (x) => x);
    assert.ok(e instanceof UnsupportedFeatureError, String(e));
    assert.match(e.message, cmd === 8 ? /COLO/ : /postcopy/);
    // Only header + configuration could have been handed on; the command was not.
    const got = concatBytes(out.chunks);
    assert.ok(got.byteLength < 30);
    assert.ok(!got.includes(0x08));
  }
  const bytes = await streamWithCommand(1, "OPEN_RETURN_PATH", new Uint8Array(0));
  const refused = await relayMigration(bytesReader(bytes), memorySink().sink).catch((x) => x);
  assert.ok(refused instanceof UnsupportedFeatureError, String(refused));
  assert.match(refused.message, /return path/);
  const out = memorySink();
  let opened = 0;
  await relayMigration(bytesReader(bytes), out.sink, {
    allowReturnPath: true,
    onReturnPathOpened: () => opened++,
  });
  assert.equal(opened, 1);
  assert.deepEqual(concatBytes(out.chunks), bytes);
});

Deno.test("relayMigration() never forwards an EOF for a truncated source", async () => {
  const syn = syntheticRecords({ seed: 91, strayRate: 0, pages: 60 });
  const bytes = await encodeRecords(syn.records);
  for (const mode of ["pass", "filter", "verify"] as const) {
    for (
      const cut of [
        100,
        Math.floor(bytes.byteLength / 2),
        bytes.byteLength - 300,
        bytes.byteLength - 1,
      ]
    ) {
      const out = memorySink();
      const e = await relayMigration(bytesReader(bytes.subarray(0, cut)), out.sink, { mode }).then(
        () => undefined,
        (x) => x,
      );
      assert.ok(e instanceof UnexpectedEofError, `${mode} ${cut}: ${e}`);
      const got = concatBytes(out.chunks);
      assert.ok(got.byteLength <= cut);
      assert.deepEqual(got, bytes.subarray(0, got.byteLength), "a prefix of the input");
      const eofAt = bytes.byteLength -
        (syn.records.at(-1) as { json: Uint8Array }).json.byteLength - 5 - 1;
      assert.ok(got.byteLength <= eofAt, "the EOF byte was not forwarded");
    }
  }
});

Deno.test("relayMigration() reads no further ahead than a slow destination allows", async () => {
  // ~48 MiB stream generated on the fly: pages of pc.ram in many PART sections.
  const pageCount = 12_000;
  const header = await encodeRecords(syntheticRecords({ seed: 1, pages: 0 }).records.slice(0, 6));
  let produced = 0;
  const gen = (function* () {
    yield header;
    const chunks: Uint8Array[] = [];
    const enc = new MigrationEncoder(
      new ByteWriter((c) => {
        chunks.push(c);
      }, { chunkSize: 1 << 20 }),
    );
    const data = new Uint8Array(4096).fill(7);
    for (let i = 0; i < pageCount; i++) {
      if (i % 1000 === 0) {
        if (i > 0) {
          enc.write({ kind: "ram-eos", streamOffset: 0 }),
            enc.write({ kind: "section-footer", streamOffset: 0, sectionId: 2 });
        }
        enc.write({
          kind: "section-part",
          streamOffset: 0,
          sectionId: 2,
          idstr: "ram",
          instanceId: 0,
          versionId: 4,
        });
      }
      enc.write({
        kind: "ram-page",
        streamOffset: 0,
        ramBlock: "pc.ram",
        ramOffset: (i % 4096) * 4096,
        continued: i % 1000 !== 0,
        data,
      });
      while (chunks.length) yield chunks.shift()!;
    }
    enc.write({ kind: "ram-eos", streamOffset: 0 });
    enc.write({ kind: "section-footer", streamOffset: 0, sectionId: 2 });
    enc.write({ kind: "eof", streamOffset: 0 });
    void enc.flush();
    while (chunks.length) yield chunks.shift()!;
  })();
  const source = new PullByteReader(() => {
    const n = gen.next();
    if (n.done) return Promise.resolve(undefined);
    produced += n.value.byteLength;
    return Promise.resolve(n.value);
  });
  let received = 0;
  let maxLag = 0;
  await relayMigration(source, async (c) => {
    maxLag = Math.max(maxLag, produced - received);
    await new Promise((r) => setTimeout(r, 2));
    received += c.byteLength;
  }, { mode: "filter", plugMap: syntheticRecords({ seed: 1 }).plugMap });
  assert.ok(received > 48_000_000);
  assert.ok(maxLag < 8 << 20, `read ${maxLag} bytes ahead of the destination`);
});

// ---- The CLI over real sockets ---------------------------------------------------------------

/** A fake destination: accepts one connection and reads everything. */
function fakeDestination(path: string, options: { closeAtOnce?: boolean } = {}) {
  const listener = Deno.listen({ transport: "unix", path });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    const hash = createHash("sha256");
    let n = 0;
    let last = -1;
    if (options.closeAtOnce) {
      conn.close();
      return { byteLength: 0, sha256: "", last };
    }
    const buf = new Uint8Array(1 << 20);
    try {
      for (;;) {
        const got = await conn.read(buf);
        if (got === null) break;
        hash.update(buf.subarray(0, got));
        n += got;
        last = buf[got - 1]!;
      }
    } catch { /* reset */ }
    conn.close();
    return { byteLength: n, sha256: hash.digest("hex"), last };
  })();
  return { done };
}

/** A fake source: connects (retrying) and sends a file, or its first `limit` bytes. */
async function fakeSource(
  path: string,
  file: string,
  options: { limit?: number; pauseMs?: number; readSize?: number } = {},
) {
  let conn: Deno.UnixConn | undefined;
  for (let i = 0; i < 200 && conn === undefined; i++) {
    try {
      conn = await Deno.connect({ transport: "unix", path });
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  assert.ok(conn, "proxy socket did not appear");
  let sent = 0;
  let writeError: unknown;
  using f = await Deno.open(file);
  const buf = new Uint8Array(options.readSize ?? 1 << 20);
  try {
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      const m = options.limit === undefined ? n : Math.min(n, options.limit - sent);
      let off = 0;
      while (off < m) off += await conn.write(buf.subarray(off, m));
      sent += m;
      if (options.limit !== undefined && sent >= options.limit) break;
      if (options.pauseMs !== undefined) await new Promise((r) => setTimeout(r, options.pauseMs));
    }
  } catch (e) {
    writeError = e;
  }
  conn.close();
  return { sent, writeError };
}

/**
 * Start `vmem-dump proxy` listening on `${dir}/p.sock` and relaying to a fake
 * destination on `${dir}/dst.sock`, with `extra` arguments.
 */
function proxyInDir(
  dir: string,
  extra: string[] = [],
  destOptions: { closeAtOnce?: boolean } = {},
) {
  const dest = fakeDestination(`${dir}/dst.sock`, destOptions);
  const m = memoryIo();
  const proxy = runProxy(
    ["--listen", `unix:${dir}/p.sock`, "--connect", `unix:${dir}/dst.sock`, ...extra],
    m.io,
  );
  return { dest, m, proxy };
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "vmem-proxy-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "vmem-dump proxy filters a real stream between unix sockets (mode 0600)",
  ignore: !realdataAvailable("out-q10"),
  fn: () =>
    withDir(async (dir) => {
      const file = await realdata("out-q10", "s3-malicious.mig");
      const { dest, m, proxy } = proxyInDir(dir, ["--mode", "filter", "--json"]);
      // Wait for the socket and check its mode before the source connects.
      for (let i = 0; i < 200; i++) {
        try {
          if ((await Deno.lstat(`${dir}/p.sock`)).isSocket) break;
        } catch { /* not yet */ }
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal((await Deno.lstat(`${dir}/p.sock`)).mode! & 0o777, 0o600);
      const src = await fakeSource(`${dir}/p.sock`, file);
      assert.equal(await proxy, 0, m.err());
      const got = await dest.done;
      assert.equal(got.byteLength, src.sent - 8230);
      // deno-lint-ignore no-explicit-any
      const report = assertReport(m.out(), "proxy") as any;
      assert.equal(report.verdict, "done");
      assert.equal(report.filter.droppedRecords, 2);
      assert.equal(report.output.byteLength, got.byteLength);
      assert.match(m.err(), /dropped 2 records/);
      assert.ok(
        ![...Deno.readDirSync(dir)].some((e) =>
          e.name.startsWith("p.sock") || e.name.includes(".tmp")
        ),
      );
    }),
});

Deno.test({
  name: "vmem-dump proxy in verify mode never gives the destination an EOF for a bad stream",
  ignore: !realdataAvailable("out-small"),
  fn: () =>
    withDir(async (dir) => {
      const file = await realdata("out-small", "s3-malicious.mig");
      const { dest, m, proxy } = proxyInDir(dir, ["--mode", "verify", "--json"]);
      await fakeSource(`${dir}/p.sock`, file);
      assert.equal(await proxy, 3, m.err());
      const got = await dest.done;
      // Late layout: the RAM went through, the device section and EOF did not.
      assert.ok(got.byteLength > 100_000_000 && got.byteLength < 110_449_197);
      // deno-lint-ignore no-explicit-any
      const report = assertReport(m.out(), "proxy") as any;
      assert.equal(report.verdict, "violations");
      assert.deepEqual(report.verify.violations.map((v: { gpa: number }) => v.gpa), [
        0x104e01000,
        0x106a01000,
      ]);
      assert.match(m.err(), /gpa 0x104e01000/);
    }),
});

Deno.test({
  name: "vmem-dump proxy closes the destination without EOF when the source disconnects",
  ignore: !realdataAvailable("out-q10"),
  fn: () =>
    withDir(async (dir) => {
      const file = await realdata("out-q10", "s2-holes-100M.mig");
      const started = proxyInDir(dir);
      const { dest, m } = started;
      const proxy = started.proxy.catch((e) => e);
      await fakeSource(`${dir}/p.sock`, file, { limit: 5_000_000 });
      const code = await proxy;
      assert.ok(code instanceof UnexpectedEofError, String(code));
      const got = await dest.done;
      assert.ok(got.byteLength <= 5_000_000);
      assert.match(m.err(), /without forwarding QEMU_VM_EOF/);
    }),
});

Deno.test({
  name: "vmem-dump proxy closes the source when the destination goes away",
  ignore: !realdataAvailable("out-q10"),
  fn: () =>
    withDir(async (dir) => {
      const file = await realdata("out-q10", "s2-holes-100M.mig");
      const { dest, m, proxy } = proxyInDir(dir, [], { closeAtOnce: true });
      // A connection failure is a ProxyError (main() prints it and exits 1).
      const outcome = proxy.then((code) => code, (thrown: unknown) => thrown);
      const src = await fakeSource(`${dir}/p.sock`, file);
      const e = await outcome;
      assert.ok(e instanceof ProxyError, `${e} ${m.err()}`);
      assert.equal(e.code, "destination-gone");
      assert.match(e.message, /destination/);
      await dest.done;
      assert.ok(
        src.writeError !== undefined || src.sent < 110_431_069,
        "the source could not send everything",
      );
    }),
});

Deno.test("vmem-dump proxy refuses a stream that asks for postcopy", () =>
  withDir(async (dir) => {
    const bytes = await streamWithCommand(3, "POSTCOPY_ADVISE", new Uint8Array(16));
    await Deno.writeFile(`${dir}/pc.mig`, bytes);
    const started = proxyInDir(dir);
    const { dest } = started;
    const proxy = started.proxy.catch((e) => e);
    await fakeSource(`${dir}/p.sock`, `${dir}/pc.mig`);
    const e = await proxy;
    assert.ok(e instanceof UnsupportedFeatureError, String(e));
    assert.match(e.message, /does not support postcopy/);
    assert.ok((await dest.done).byteLength < 30);
  }));

Deno.test("vmem-dump proxy relays over loopback TCP and refuses other addresses without --allow-remote", async () => {
  for (const ep of ["tcp:0.0.0.0:4444", "tcp:10.1.2.3:4444"]) {
    const m = memoryIo();
    assert.equal(await main(["proxy", "--listen", ep, "--connect", "unix:/nonexistent"], m.io), 2);
    assert.match(m.err(), /--allow-remote/);
  }
  for (
    const args of [["proxy"], ["proxy", "--listen", "unix:/x"], [
      "proxy",
      "--listen",
      "x",
      "--connect",
      "unix:/y",
    ], [
      "proxy",
      "--listen",
      "unix:/x",
      "--connect",
      "unix:/y",
      "--mode",
      "drop",
    ]]
  ) {
    const m = memoryIo();
    assert.equal(await main(args, m.io), 2, args.join(" "));
  }
  await withDir(async (dir) => {
    const syn = syntheticRecords({ seed: 92, strayRate: 0.3 });
    const bytes = await encodeRecords(syn.records);
    const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (free.addr as Deno.NetAddr).port;
    free.close();
    const dest = fakeDestination(`${dir}/dst.sock`);
    const m = memoryIo();
    const proxy = runProxy([
      "--listen",
      `tcp:127.0.0.1:${port}`,
      "--connect",
      `unix:${dir}/dst.sock`,
      "--mode",
      "filter",
    ], m.io);
    let conn: Deno.TcpConn | undefined;
    for (let i = 0; i < 200 && !conn; i++) {
      conn = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => undefined);
      if (!conn) await new Promise((r) => setTimeout(r, 25));
    }
    let off = 0;
    while (off < bytes.byteLength) off += await conn!.write(bytes.subarray(off));
    conn!.close();
    assert.equal(await proxy, 0, m.err());
    const got = await dest.done;
    assert.ok(got.byteLength < bytes.byteLength && got.byteLength > 0);
    assert.equal(got.last, 0x7d, "ends with the vmdesc JSON");
  });
});

Deno.test("vmem-dump proxy --accept-timeout bounds the wait for the source, not the migration", () =>
  withDir(async (dir) => {
    // Nobody connects: exit 1 after the timeout (the destination is never needed).
    const idle = memoryIo();
    const code = await main([
      "proxy",
      "--listen",
      `unix:${dir}/idle.sock`,
      "--connect",
      `unix:${dir}/nobody.sock`,
      "--accept-timeout",
      "0.2",
      "--json",
    ], idle.io);
    assert.equal(code, 1, idle.err());
    const error = assertJsonError(idle.err());
    assert.equal(error.code, "accept-timeout");
    assert.match(error.message, /no source connected .* within 0.2 s/);
    // A source that connects at once and takes longer than the timeout to send: relayed.
    const syn = syntheticRecords({ seed: 93, strayRate: 0, pages: 60 });
    const bytes = await encodeRecords(syn.records);
    await Deno.writeFile(`${dir}/slow.mig`, bytes);
    const slow = proxyInDir(dir, ["--accept-timeout", "0.2"]);
    const src = await fakeSource(`${dir}/p.sock`, `${dir}/slow.mig`, {
      readSize: Math.ceil(bytes.byteLength / 8),
      pauseMs: 60,
    });
    assert.equal(src.writeError, undefined);
    assert.equal(await slow.proxy, 0, slow.m.err());
    assert.equal((await slow.dest.done).byteLength, bytes.byteLength);
  }));
