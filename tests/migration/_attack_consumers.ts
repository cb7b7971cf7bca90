/**
 * What the attack tests check of a crafted stream: what real QEMU does with
 * it (loads the injected page, loads the stream, or refuses it), and the
 * verdict of every consumer (`verify` single- and two-pass, from a file and
 * from a pipe; `filter`; the proxy's verify mode, which must not forward
 * QEMU_VM_EOF; `scan` of the stream; `inspect`; `plugmap` from a file, a
 * pipe with `--complete` and a pipe without). Shared by
 * `device_state_attack_test.ts` and the `redteam_*_test.ts` files.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bytesReader, StreamByteReader } from "../../src/io/byte_reader.ts";
import { decodeMigration } from "../../src/migration/decoder.ts";
import { FormatError } from "../../src/errors.ts";
import { relayMigration } from "../../src/proxy/relay.ts";
import { execCli, runCli } from "../_util/cli.ts";
import { type QemuVersion, startDestination } from "../_util/qemu.ts";
import { ATTACK_PAGE_GPA, attackPage } from "./_device_state_attacks.ts";

const MiB = 1 << 20;

/** What QEMU does with an attack: loads the injected page, loads the stream, or refuses it. */
export type QemuOutcome =
  | { loads: "page"; tag: string }
  | { loads: "stream"; size?: number; page?: { gpa: number; startsWith: string } }
  | { loads: "refused" };

/** What `inspect --json` says, as far as the checks below look. */
export interface InspectJson {
  tailMatchesVmdesc?: boolean;
  sections: { afterDeviceState?: boolean }[];
  virtioMem: { section: string }[];
}

/** Exit codes every consumer must give, and what QEMU does, per attack and QEMU version. */
export interface Expectation {
  qemu: QemuOutcome;
  /** `verify` (all forms): 0 clean, 3 violations, 1 cannot be proven. */
  verify: 0 | 1 | 3;
  /**
   * `plugmap FILE` and `plugmap - --complete` (both read the device state at
   * the end): 0 the sections' plug state, 1 none can be trusted.
   */
  plugmap: 0 | 1;
  /**
   * `plugmap -` without `--complete`: in the early layout (QEMU 10) it stops
   * after the early sections, before the tail an attack changes; in the
   * late layout (QEMU 7.2) it reads to the end like `plugmap`.
   */
  plugmapPipe: 0 | 1;
  /** `scan` of the stream itself: 0 clean, 3 findings, 1 error. */
  scan: 0 | 1 | 3;
  /** `inspect` (it describes; only an input it cannot hold is an error). */
  inspect: 0 | 1;
  /** With `verify: 3`: the reason every run must report, and at which gpa if it is a page. */
  violation?: { reason: string; gpa?: number };
  /**
   * With `inspect: 0` and a failing verdict: how `inspect --json` shows the
   * anomaly. @default {the tail disagrees with the vmdesc, a section after
   * device state, or a second early section}
   */
  inspectShows?: (report: InspectJson) => boolean;
}

/** What QEMU and every consumer do with an honest stream: it loads, and everything says clean. */
export const HONEST: Expectation = {
  qemu: { loads: "stream" },
  verify: 0,
  plugmap: 0,
  plugmapPipe: 0,
  scan: 0,
  inspect: 0,
};

/**
 * The decoder's verdict on a stream (prove mode): `clean`, or the
 * `FormatError`'s code, offset and message (any other error fails).
 *
 * @param stream The stream's bytes, chunked as the test wants.
 * @returns `clean` or `code@offset: message`.
 */
export async function decoderVerdict(stream: ReadableStream<Uint8Array>): Promise<string> {
  try {
    for await (const _ of decodeMigration(new StreamByteReader(stream))) { /* decode */ }
    return "clean";
  } catch (e) {
    assert.ok(e instanceof FormatError, String(e));
    return `${e.code}@${e.offset}: ${e.message}`;
  }
}

function tailAnomaly(report: InspectJson): boolean {
  return report.tailMatchesVmdesc === false ||
    report.sections.some((s) => s.afterDeviceState) ||
    report.virtioMem.filter((v) => v.section === "early").length > 1;
}

/**
 * Load `path` into a real destination QEMU of version `qemu` (tiny guest)
 * and check what it does against `want`: it refuses, or it completes and the
 * injected page is in the destination's memory (read over the gdbstub), or
 * the device ends with the plug state `want` names (QMP `size`).
 *
 * @param qemu QEMU version of the destination (the stream's source).
 * @param path The crafted stream.
 * @param want What QEMU must do.
 * @param what Name for messages.
 */
export async function assertQemuOutcome(
  qemu: QemuVersion,
  path: string,
  want: QemuOutcome,
  what: string,
): Promise<void> {
  await using dst = await startDestination({
    qemu,
    guest: "tiny",
    incoming: `exec:cat ${path}`,
    ...(qemu === "10" ? { exitOnError: false } : {}),
  });
  let status: string;
  try {
    const info = await dst.waitMigration(["completed", "failed", "cancelled"], 120_000);
    status = info.status ?? "";
  } catch (x) {
    // QEMU 7.2 exits when a load fails.
    status = /exited/.test(String(x)) ? "failed" : `error ${x}`;
  }
  if (want.loads === "refused") {
    assert.equal(status, "failed", `${what}: QEMU ${qemu} refuses it`);
  } else {
    assert.equal(status, "completed", `${what}: QEMU ${qemu} loads it\n${dst.diagnostics()}`);
    if (want.loads === "page") {
      const page = await dst.gdbReadPhys(ATTACK_PAGE_GPA, 4096);
      assert.deepEqual(page, attackPage(want.tag), `${what}: the page landed`);
      // … in a block the destination holds unplugged.
      assert.equal((await dst.vmem()).size, 100 * MiB);
    } else {
      if (want.size !== undefined) {
        assert.equal((await dst.vmem()).size, want.size, `${what}: the device's size`);
      }
      if (want.page !== undefined) {
        const page = await dst.gdbReadPhys(want.page.gpa, 4096);
        const text = new TextDecoder().decode(page.subarray(0, want.page.startsWith.length));
        assert.equal(
          text,
          want.page.startsWith,
          `${what}: the page at 0x${want.page.gpa.toString(16)}`,
        );
      }
    }
  }
  await dst.kill();
}

/**
 * Run every consumer on `path` (whose bytes are `bytes`) and check its verdict.
 *
 * @param path The stream's file.
 * @param bytes Its bytes (for the proxy, which reads from memory).
 * @param e The verdicts wanted.
 * @param what Name for messages.
 */
export async function assertConsumers(
  path: string,
  bytes: Uint8Array,
  e: Expectation,
  what: string,
): Promise<void> {
  for (const args of [["verify", "--single-pass", path], ["verify", path]]) {
    const r = await runCli(args);
    assert.equal(r.code, e.verify, `${what}: ${args.join(" ")}: ${r.out}${r.err}`);
  }
  const piped = await execCli(["verify", "-"], { stdinFile: path });
  assert.equal(piped.code, e.verify, `${what}: verify - < file: ${piped.out}${piped.err}`);

  const out = `${path}.filtered`;
  const filtered = await runCli(["filter", path, out]);
  if (e.verify === 0) assert.equal(filtered.code, 0, `${what}: filter: ${filtered.err}`);
  else if (e.verify === 1 || e.violation?.reason !== "unplugged-block") {
    assert.equal(filtered.code, 1, `${what}: filter refuses: ${filtered.err}`);
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound, `${what}: no filter output`);
  } else {
    // Pages in unplugged blocks are what filter drops: its output verifies clean.
    assert.equal(filtered.code, 0, `${what}: filter: ${filtered.err}`);
    const again = await runCli(["verify", out]);
    assert.equal(again.code, 0, `${what}: the filtered stream verifies clean: ${again.out}`);
    await Deno.remove(out);
  }

  // The proxy in verify mode never hands QEMU_VM_EOF to the destination.
  const written: Uint8Array[] = [];
  const relayed = await relayMigration(bytesReader(bytes), (c) => {
    written.push(c.slice());
    return Promise.resolve();
  }, { mode: "verify" }).then(() => undefined, (x: unknown) => x);
  if (e.verify === 0) assert.equal(relayed, undefined, `${what}: proxy verify passes`);
  else {
    assert.ok(relayed instanceof FormatError, `${what}: proxy verify fails: ${relayed}`);
    const sent = written.reduce((n, c) => n + c.byteLength, 0);
    const eofAt = bytes.lastIndexOf(0x06) - 1;
    assert.ok(
      sent <= Math.max(0, eofAt),
      `${what}: the proxy forwarded ${sent} bytes, EOF at ${eofAt}`,
    );
  }

  const scan = await runCli(["scan", path, "--json"]);
  assert.equal(scan.code, e.scan, `${what}: scan: ${scan.err}`);

  const inspect = await runCli(["inspect", "--json", path]);
  assert.equal(inspect.code, e.inspect, `${what}: inspect: ${inspect.err}`);
  if (inspect.code === 0 && e.verify !== 0) {
    const report = JSON.parse(inspect.out) as InspectJson;
    assert.ok(
      (e.inspectShows ?? tailAnomaly)(report),
      `${what}: inspect shows the anomaly: ${inspect.out.slice(0, 600)}`,
    );
  }

  // The file shortcut (a jump to the device state through the vmdesc) and a full read agree.
  const plugmap = await runCli(["plugmap", path]);
  assert.equal(plugmap.code, e.plugmap, `${what}: plugmap: ${plugmap.err}`);
  const streamed = await execCli(["plugmap", "-", "--complete"], { stdinFile: path });
  assert.equal(
    streamed.code,
    plugmap.code,
    `${what}: plugmap - --complete < file: ${streamed.err}`,
  );
  if (plugmap.code === 0) {
    const map = JSON.parse(plugmap.out);
    assert.equal(map.devices.length, 1, `${what}: plugmap finds the device`);
    assert.equal(map.devices[0].size, 100 * MiB, `${what}: plugmap's size`);
    assert.deepEqual(JSON.parse(streamed.out), map, `${what}: same map from a pipe`);
  }
  // Without --complete a pipe stops after the early sections (early layout).
  const head = await execCli(["plugmap", "-"], { stdinFile: path });
  assert.equal(head.code, e.plugmapPipe, `${what}: plugmap - < file: ${head.err}`);
  if (head.code === 0) {
    const map = JSON.parse(head.out);
    assert.equal(map.devices.length, 1, `${what}: plugmap - finds the device`);
    assert.equal(map.devices[0].size, 100 * MiB, `${what}: plugmap -'s size`);
    assert.deepEqual(map.devices[0].plugged, [[0, 14], [64, 36]], `${what}: plugmap -'s blocks`);
  }

  if (e.verify === 3) {
    // Violations name where and what.
    const r = JSON.parse((await runCli(["verify", "--single-pass", "--json", path])).out);
    const vs = r.violations as { reason: string; gpa: number | null; streamOffset: number }[];
    assert.ok(
      vs.length > 0 && vs.every((v) => v.streamOffset > 0),
      `${what}: ${JSON.stringify(vs)}`,
    );
    const want = e.violation;
    if (want !== undefined) {
      assert.ok(
        vs.some((v) => v.reason === want.reason && (want.gpa === undefined || v.gpa === want.gpa)),
        `${what}: a ${want.reason} violation${
          want.gpa === undefined ? "" : ` at gpa 0x${want.gpa.toString(16)}`
        }: ${JSON.stringify(vs)}`,
      );
    }
  }
}
