/**
 * multifd migrations between real QEMUs for tests: switch the capability on
 * on both sides, capture every channel with a transparent relay between the
 * source and the destination, and replay captured (or rewritten) channels
 * into a fresh destination.
 *
 * The relay tells the main channel (`QEVM`) from multifd channels
 * (`0x11223344`) by their first four bytes, connects the main channel to the
 * destination first (QEMU 7.2 takes the first connection as the main one)
 * and copies bytes both ways unchanged, writing what the source sent to one
 * file per connection.
 *
 * @module
 */

import { compareGuestMemory, readElfLoads } from "./guest_memory.ts";
import { evilPage } from "./guest.ts";
import { type QemuGuest, type QemuVersion, startDestination, startGuest } from "./qemu.ts";

/** `multifd-compression` values the Debian QEMU builds support. */
export type MultifdCompressionParameter = "none" | "zlib" | "zstd";

/**
 * Switch multifd on (before `migrate` on the source, before
 * `migrate-incoming` on the destination).
 *
 * @param guest A QEMU.
 * @param channels `multifd-channels`.
 * @param compression `multifd-compression`.
 */
export async function enableMultifd(
  guest: QemuGuest,
  channels: number,
  compression: MultifdCompressionParameter = "none",
): Promise<void> {
  await guest.qmp("migrate-set-capabilities", {
    capabilities: [{ capability: "multifd", state: true }],
  });
  await guest.qmp("migrate-set-parameters", {
    "multifd-channels": channels,
    "multifd-compression": compression,
  });
}

/** One connection the relay carried. */
export interface RelayedConnection {
  /** `main` or `multifd`. */
  kind: "main" | "multifd";
  /** File with the bytes the source sent. */
  path: string;
  /** Bytes the source sent. */
  byteLength: number;
}

const QEVM = 0x5145564d;
const MULTIFD = 0x11223344;

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const k = await conn.read(out.subarray(got));
    if (k === null) throw new Error(`connection closed after ${got} of ${n} bytes`);
    got += k;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let w = 0;
  while (w < bytes.byteLength) w += await conn.write(bytes.subarray(w));
}

/**
 * A transparent relay on a unix socket that records what the source sends
 * on every connection.
 */
export class CapturingRelay {
  readonly path: string;
  #listener: Deno.Listener;
  #dir: string;
  #destination: string;
  #mainConnected: Promise<void>;
  #resolveMain!: () => void;
  #done: Promise<RelayedConnection>[] = [];
  #count = 0;

  /**
   * Listen on `dir/relay.sock`; relay to the unix socket `destination`.
   *
   * @param dir Where the socket and the capture files go.
   * @param destination The destination's `-incoming` unix socket path.
   */
  constructor(dir: string, destination: string) {
    this.#dir = dir;
    this.#destination = destination;
    this.path = `${dir}/relay.sock`;
    this.#listener = Deno.listen({ transport: "unix", path: this.path });
    this.#mainConnected = new Promise((r) => (this.#resolveMain = r));
    void this.#acceptLoop();
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        const p = this.#relay(conn, this.#count++);
        p.catch(() => {});
        this.#done.push(p);
      }
    } catch { /* closed */ }
  }

  async #relay(src: Deno.Conn, index: number): Promise<RelayedConnection> {
    const first = await readExactly(src, 4);
    const magic = new DataView(first.buffer).getUint32(0);
    if (magic !== QEVM && magic !== MULTIFD) {
      src.close();
      throw new Error(`connection ${index} starts with 0x${magic.toString(16)}`);
    }
    const kind = magic === QEVM ? "main" : "multifd";
    if (kind === "multifd") await this.#mainConnected;
    const dst = await Deno.connect({ transport: "unix", path: this.#destination });
    if (kind === "main") this.#resolveMain();
    const path = `${this.#dir}/conn-${String(index).padStart(2, "0")}-${kind}.bin`;
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    // Destination to source (nothing without a return path, but never block it).
    const back = (async () => {
      const buf = new Uint8Array(65536);
      try {
        for (;;) {
          const n = await dst.read(buf);
          if (n === null) break;
          await writeAll(src, buf.subarray(0, n));
        }
      } catch { /* closed */ }
    })();
    let byteLength = 0;
    try {
      await file.write(first);
      await writeAll(dst, first);
      byteLength = 4;
      const buf = new Uint8Array(1 << 20);
      for (;;) {
        let n: number | null;
        try {
          n = await src.read(buf);
        } catch {
          n = null;
        }
        if (n === null) break;
        const chunk = buf.subarray(0, n);
        let w = 0;
        while (w < n) w += await file.write(chunk.subarray(w));
        byteLength += n;
        await writeAll(dst, chunk);
      }
    } finally {
      file.close();
      try {
        await dst.closeWrite();
      } catch { /* gone */ }
    }
    await Promise.race([back, new Promise((r) => setTimeout(r, 2000))]);
    try {
      dst.close();
    } catch { /* closed */ }
    try {
      src.close();
    } catch { /* closed */ }
    return { kind, path, byteLength };
  }

  /**
   * Stop accepting and wait for every connection to end.
   *
   * @returns The connections in accept order.
   */
  async finish(): Promise<RelayedConnection[]> {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    return await Promise.all(this.#done);
  }
}

/** Options for {@linkcode captureMultifdMigration}. */
export interface MultifdCaptureOptions {
  /** QEMU build of both sides. */
  qemu: QemuVersion;
  /** `multifd-channels`. */
  channels: number;
  /** `multifd-compression`. @default {"none"} */
  compression?: MultifdCompressionParameter;
  /** Pages to write `evilPage("EVIL-MIG", gpa)` to during pause-before-switchover (e.g. in unplugged blocks). @default {[]} */
  evilGpas?: readonly number[];
  /** Directory for the sockets, captures and dumps. */
  dir: string;
}

/** A captured real multifd migration. */
export interface MultifdCapture {
  /** The options it was made with. */
  options: MultifdCaptureOptions;
  /** The main channel's bytes. */
  main: string;
  /** The multifd channels' bytes, in accept order. */
  channels: string[];
  /** The source's memory after the migration (`dump-guest-memory`, ELF). */
  sourceElf: string;
  /** Plug state the harness drove (1 = plugged), per 2 MiB device block. */
  plugged: Uint8Array;
  /** The gpas written during pause-before-switchover. */
  evilGpas: number[];
}

/**
 * Migrate a tiny guest with the s2/s3 plug shape (blocks 0-13 and 64-99 of
 * its 2 MiB-block virtio-mem device plugged, a marker page in each) from one
 * real QEMU to another with multifd, through a {@linkcode CapturingRelay}.
 * The destination's memory is checked against the source's (so the capture
 * is a migration QEMU accepted), then both QEMUs are stopped.
 *
 * @param options QEMU build, channels, compression, EVIL pages, directory.
 * @returns Paths of the captured channels and the source's memory dump.
 */
export async function captureMultifdMigration(
  options: MultifdCaptureOptions,
): Promise<MultifdCapture> {
  const { qemu, channels, dir } = options;
  const compression = options.compression ?? "none";
  await using src = await startGuest({ qemu, guest: "tiny" });
  await src.plugHolesShape();
  await using dst = await startDestination({ qemu, guest: "tiny", incoming: "defer" });
  await enableMultifd(src, channels, compression);
  await enableMultifd(dst, channels, compression);
  const dstSock = `${dir}/dst.sock`;
  await dst.migrateIncoming(`unix:${dstSock}`);
  const relay = new CapturingRelay(dir, dstSock);
  const evilGpas = [...(options.evilGpas ?? [])];
  await src.migrate(`unix:${relay.path}`, {
    ...(evilGpas.length > 0
      ? {
        onPreSwitchover: async (g: QemuGuest) => {
          for (const gpa of evilGpas) await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
        },
      }
      : {}),
  });
  await dst.waitIncoming({ timeoutMs: 120_000 });
  const conns = await relay.finish();
  const main = conns.filter((c) => c.kind === "main");
  if (main.length !== 1) throw new Error(`expected one main channel, got ${main.length}`);
  const multifd = conns.filter((c) => c.kind === "multifd").map((c) => c.path);
  if (multifd.length !== channels) {
    throw new Error(`expected ${channels} multifd channels, got ${multifd.length}`);
  }
  const sourceElf = `${dir}/source.elf`;
  await src.dumpGuestMemory(sourceElf);
  const destinationElf = `${dir}/destination.elf`;
  await dst.dumpGuestMemory(destinationElf);
  const cmp = await compareGuestMemory(sourceElf, destinationElf);
  if (!cmp.equal) {
    throw new Error(
      `the destination's memory differs: ${JSON.stringify(cmp.differences.slice(0, 4))}`,
    );
  }
  await Deno.remove(destinationElf);
  return {
    options: { ...options, compression },
    main: main[0]!.path,
    channels: multifd,
    sourceElf,
    plugged: src.tinyPlugState(),
    evilGpas,
  };
}

/**
 * Send captured (or rewritten) channels into a destination's `-incoming`
 * unix socket: the main channel first, then every multifd channel, all
 * written concurrently, each closed for writing at its end.
 *
 * @param socket The destination's socket path.
 * @param main The main channel's bytes.
 * @param channels The multifd channels' bytes.
 */
export async function replayMultifdMigration(
  socket: string,
  main: Uint8Array,
  channels: readonly Uint8Array[],
): Promise<void> {
  const conns: Deno.Conn[] = [];
  try {
    conns.push(await Deno.connect({ transport: "unix", path: socket }));
    for (let i = 0; i < channels.length; i++) {
      conns.push(await Deno.connect({ transport: "unix", path: socket }));
    }
    await Promise.all([main, ...channels].map(async (bytes, i) => {
      const c = conns[i]!;
      for (let at = 0; at < bytes.byteLength; at += 1 << 20) {
        await writeAll(c, bytes.subarray(at, Math.min(bytes.byteLength, at + (1 << 20))));
      }
      await c.closeWrite().catch(() => {});
    }));
  } finally {
    await new Promise((r) => setTimeout(r, 200));
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  }
}

/**
 * Read guest memory from a `dump-guest-memory` ELF file.
 *
 * @param elf The dump.
 * @returns `covers(gpa, byteLength)`: whether the dump holds those bytes (it omits unplugged
 * virtio-mem memory); `read(gpa, byteLength)`: the bytes (zero where the dump has none); `close()`.
 */
export async function elfMemoryReader(elf: string): Promise<{
  covers(gpa: number, byteLength: number): boolean;
  read(gpa: number, byteLength: number): Uint8Array;
  close(): void;
}> {
  const loads = await readElfLoads(elf);
  const file = await Deno.open(elf);
  const WINDOW = 1 << 20;
  let window = new Uint8Array(0);
  let windowGpa = -Infinity;
  return {
    covers(gpa, byteLength) {
      return loads.some((l) => l.gpa <= gpa && gpa + byteLength <= l.gpa + l.memByteLength);
    },
    read(gpa, byteLength) {
      // A 1 MiB window: pages are mostly read in order.
      if (byteLength <= WINDOW && gpa >= windowGpa && gpa + byteLength <= windowGpa + WINDOW) {
        return window.slice(gpa - windowGpa, gpa - windowGpa + byteLength);
      }
      const out = new Uint8Array(byteLength <= WINDOW ? WINDOW : byteLength);
      const base = gpa;
      for (const l of loads) {
        const from = Math.max(base, l.gpa);
        const to = Math.min(base + out.byteLength, l.gpa + l.fileByteLength);
        if (from >= to) continue;
        file.seekSync(l.fileOffset + (from - l.gpa), Deno.SeekMode.Start);
        const part = out.subarray(from - base, to - base);
        let got = 0;
        while (got < part.byteLength) {
          const n = file.readSync(part.subarray(got));
          if (n === null) throw new Error(`${elf} ends inside a PT_LOAD`);
          got += n;
        }
      }
      if (out.byteLength === WINDOW) {
        window = out;
        windowGpa = base;
      }
      return out.slice(0, byteLength);
    },
    close() {
      file.close();
    },
  };
}
