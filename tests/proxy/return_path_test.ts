/**
 * The return path: `ReturnPathDecoder` on every message kind and chunking,
 * and `ProxySession` between a fake source and a fake destination that speak
 * it (the source keeps its connection open until the destination's SHUT, as
 * QEMU does, so a relay that waited for the source to close would hang).
 * Real QEMU: return_path_qemu_test.ts.
 */

import assert from "node:assert/strict";
import { FormatError } from "../../src/errors.ts";
import { parseEndpoint } from "../../src/io/endpoint.ts";
import * as C from "../../src/migration/constants.ts";
import { ReturnPathDecoder, type ReturnPathMessage } from "../../src/migration/return_path.ts";
import type { MigrationRecord } from "../../src/migration/types.ts";
import { ProxyError, type ProxyResult, ProxySession } from "../../src/proxy/session.ts";
import { assertFormatError } from "../_util/assert.ts";
import { BYTE_CHUNKINGS, concatBytes, splitBytes } from "../_util/chunkings.ts";
import { encodeRecords, syntheticRecords } from "./_util.ts";

/** One encoded return-path message. */
function rpMessage(type: number, payload: number[] = []): Uint8Array {
  return new Uint8Array([
    type >> 8,
    type & 0xff,
    payload.length >> 8,
    payload.length & 0xff,
    ...payload,
  ]);
}

const be32 = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

Deno.test("ReturnPathDecoder decodes every message kind under every chunking", async (t) => {
  const parts = [
    rpMessage(C.MIG_RP_MSG_PONG, be32(1)),
    rpMessage(C.MIG_RP_MSG_SWITCHOVER_ACK),
    rpMessage(C.MIG_RP_MSG_REQ_PAGES, [...be32(0), ...be32(0x1000), ...be32(4096)]),
    rpMessage(C.MIG_RP_MSG_REQ_PAGES_ID, [
      ...be32(0),
      ...be32(0),
      ...be32(4096),
      3,
      0x61,
      0x62,
      0x63,
    ]),
    rpMessage(C.MIG_RP_MSG_RECV_BITMAP, [3, 0x61, 0x62, 0x63]),
    rpMessage(C.MIG_RP_MSG_RESUME_ACK, be32(1)),
    rpMessage(C.MIG_RP_MSG_SHUT, be32(0)),
  ];
  const bytes = concatBytes(parts);
  for (const c of BYTE_CHUNKINGS) {
    await t.step(c.name, () => {
      const d = new ReturnPathDecoder();
      const got: ReturnPathMessage[] = [];
      for (const piece of splitBytes(bytes, c)) got.push(...d.push(piece));
      assert.deepEqual(got.map((m) => m.name), [
        "PONG",
        "SWITCHOVER_ACK",
        "REQ_PAGES",
        "REQ_PAGES_ID",
        "RECV_BITMAP",
        "RESUME_ACK",
        "SHUT",
      ]);
      assert.deepEqual(
        got.map((m) => m.value),
        [1, undefined, undefined, undefined, 4, 1, 0].map(
          (v, i) => (i === 4 ? undefined : v),
        ),
      );
      let at = 0;
      for (const [i, m] of got.entries()) {
        assert.equal(m.streamOffset, at);
        assert.equal(m.byteLength, parts[i]!.byteLength);
        at += m.byteLength;
      }
      assert.equal(d.pending, false);
      assert.equal(d.offset, bytes.byteLength);
    });
  }
});

Deno.test("ReturnPathDecoder rejects what a source QEMU rejects, with offsets", async () => {
  const pong = rpMessage(C.MIG_RP_MSG_PONG, be32(7));
  for (
    const [bytes, offset] of [
      [concatBytes([pong, rpMessage(0)]), 8], // INVALID
      [concatBytes([pong, rpMessage(8)]), 8], // beyond SWITCHOVER_ACK
      [concatBytes([pong, rpMessage(C.MIG_RP_MSG_SHUT, [0, 0])]), 10], // SHUT is 4 bytes
      [concatBytes([pong, rpMessage(C.MIG_RP_MSG_SWITCHOVER_ACK, [1])]), 10], // ACK has none
      [concatBytes([pong, new Uint8Array([0, C.MIG_RP_MSG_RECV_BITMAP, 0x02, 0x01])]), 10], // > 512
    ] as const
  ) {
    const d = new ReturnPathDecoder();
    await assertFormatError(() => d.push(bytes), {
      code: "bad-record",
      offset,
    });
  }
  const half = new ReturnPathDecoder();
  half.push(pong.subarray(0, 6));
  assert.equal(half.pending, true);
});

// ---- ProxySession with peers that speak the return path --------------------------------------

/** A synthetic stream that opens the return path and sends PING 1, and where the PING ends. */
async function returnPathStream(): Promise<{ bytes: Uint8Array; pingEnd: number }> {
  const syn = syntheticRecords({ seed: 77, strayRate: 0, pages: 90 });
  const commands: MigrationRecord[] = [
    {
      kind: "command",
      streamOffset: 0,
      command: 1,
      name: "OPEN_RETURN_PATH",
      payload: new Uint8Array(0),
    },
    {
      kind: "command",
      streamOffset: 0,
      command: 2,
      name: "PING",
      payload: new Uint8Array(be32(1)),
    },
  ];
  const head = [...syn.records.slice(0, 2), ...commands];
  const bytes = await encodeRecords([...head, ...syn.records.slice(2)]);
  return { bytes, pingEnd: (await encodeRecords(head)).byteLength };
}

interface Peers {
  /** What the destination sends: `[after this many stream bytes, these bytes]`. */
  answers: [number, Uint8Array][];
  /** The destination closes after this many stream bytes (after its answers), like QEMU after a load. */
  closeAfter: number;
}

/**
 * Run a session between a fake source (sends the stream, then reads the
 * return path until SHUT or the end, then closes, like QEMU) and a fake
 * destination (reads the stream, answers as scripted, reads to the end).
 */
async function runPeers(bytes: Uint8Array, peers: Peers, mode: "pass" | "verify" = "pass") {
  const dir = await Deno.makeTempDir({ prefix: "vmem-rp-" });
  try {
    const dstListener = Deno.listen({ transport: "unix", path: `${dir}/dst.sock` });
    const destination = (async () => {
      const conn = await dstListener.accept();
      dstListener.close();
      const buf = new Uint8Array(1 << 16);
      let got = 0;
      const answers = [...peers.answers];
      const received: Uint8Array[] = [];
      try {
        for (;;) {
          while (answers.length > 0 && got >= answers[0]![0]) await conn.write(answers.shift()![1]);
          if (got >= peers.closeAfter) break;
          const n = await conn.read(buf);
          if (n === null) break;
          received.push(buf.slice(0, n));
          got += n;
        }
      } catch { /* closed */ }
      conn.close();
      return concatBytes(received);
    })();
    const events: string[] = [];
    const session = await ProxySession.listen({
      listen: parseEndpoint(`unix:${dir}/p.sock`),
      connect: parseEndpoint(`unix:${dir}/dst.sock`),
      mode,
      lingerMs: 5_000,
      onEvent: (e) => events.push(e.kind === "return-path-message" ? e.message.name : e.kind),
    });
    const result: Promise<ProxyResult | unknown> = session.run().catch((e) => e);
    const conn = await Deno.connect({ transport: "unix", path: `${dir}/p.sock` });
    let off = 0;
    try {
      while (off < bytes.byteLength) off += await conn.write(bytes.subarray(off));
    } catch { /* the proxy closed the connection */ }
    // Like QEMU with a return path: wait for SHUT before closing.
    const rp: Uint8Array[] = [];
    const decoder = new ReturnPathDecoder();
    const buf = new Uint8Array(4096);
    let shut = false;
    while (!shut) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      rp.push(buf.slice(0, n));
      shut = decoder.push(buf.subarray(0, n)).some((m) => m.type === C.MIG_RP_MSG_SHUT);
    }
    conn.close();
    return {
      result: await result,
      sourceGot: concatBytes(rp),
      destinationGot: await destination,
      events,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("ProxySession relays PONG and SHUT to a source that waits for them, without waiting for it to close first", async () => {
  const { bytes, pingEnd } = await returnPathStream();
  const pong = rpMessage(C.MIG_RP_MSG_PONG, be32(1));
  const ack = rpMessage(C.MIG_RP_MSG_SWITCHOVER_ACK);
  const shut = rpMessage(C.MIG_RP_MSG_SHUT, be32(0));
  for (const mode of ["pass", "verify"] as const) {
    const r = await runPeers(bytes, {
      answers: [[pingEnd, concatBytes([ack, pong])], [bytes.byteLength, shut]],
      closeAfter: bytes.byteLength,
    }, mode);
    assert.ok(!(r.result instanceof Error), String(r.result));
    const result = r.result as ProxyResult;
    assert.deepEqual(r.destinationGot, bytes, "the stream arrives byte for byte");
    assert.deepEqual(
      r.sourceGot,
      concatBytes([ack, pong, shut]),
      "the return path arrives unchanged",
    );
    assert.deepEqual(result.returnPath, {
      opened: true,
      messages: { SWITCHOVER_ACK: 1, PONG: 1, SHUT: 1 },
      shut: 0,
    });
    assert.deepEqual(r.events.filter((e) => /^[A-Z_]+$/.test(e)), [
      "SWITCHOVER_ACK",
      "PONG",
      "SHUT",
    ]);
  }
});

Deno.test("ProxySession refuses return-path messages a precopy destination cannot send", async () => {
  const { bytes, pingEnd } = await returnPathStream();
  const cases: [string, [number, Uint8Array][], RegExp][] = [
    [
      "a PONG for another PING",
      [[pingEnd, rpMessage(C.MIG_RP_MSG_PONG, be32(2))]],
      /PONG 2 answers PING 1/,
    ],
    [
      "a success before EOF",
      [[pingEnd, rpMessage(C.MIG_RP_MSG_SHUT, be32(0))]],
      /before it was sent QEMU_VM_EOF/,
    ],
    [
      "a postcopy page request",
      [[pingEnd, rpMessage(C.MIG_RP_MSG_REQ_PAGES, [...be32(0), ...be32(0), ...be32(4096)])]],
      /postcopy/,
    ],
    ["an unknown message", [[pingEnd, rpMessage(0x55)]], /unknown message type 0x55/],
  ];
  for (const [what, answers, message] of cases) {
    const r = await runPeers(bytes, { answers, closeAfter: bytes.byteLength });
    assert.ok(r.result instanceof FormatError, `${what}: ${r.result}`);
    assert.match(r.result.message, message, what);
    assert.equal(r.sourceGot.byteLength, 0, `${what}: nothing was relayed`);
    assert.ok(
      r.destinationGot.byteLength < bytes.byteLength,
      `${what}: no EOF for the destination`,
    );
  }
});

Deno.test("ProxySession treats a destination that talks without a return path as gone", async () => {
  const syn = syntheticRecords({ seed: 78, strayRate: 0, pages: 90 });
  const bytes = await encodeRecords(syn.records);
  const r = await runPeers(bytes, {
    answers: [[100, rpMessage(C.MIG_RP_MSG_PONG, be32(1))]],
    closeAfter: bytes.byteLength,
  });
  assert.ok(r.result instanceof ProxyError, String(r.result));
  assert.equal(r.result.code, "destination-gone");
  assert.match(r.result.message, /no return path was opened/);
});

Deno.test("ProxySession fails a migration whose destination closes the return path without SHUT", async () => {
  const { bytes, pingEnd } = await returnPathStream();
  // The destination answers the PING, reads everything, then closes without SHUT.
  const r = await runPeers(bytes, {
    answers: [[pingEnd, rpMessage(C.MIG_RP_MSG_PONG, be32(1))]],
    closeAfter: bytes.byteLength,
  });
  assert.ok(r.result instanceof ProxyError, String(r.result));
  assert.match(r.result.message, /without reporting its load/);
});
