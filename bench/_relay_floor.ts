/**
 * The floor for bench/proxy.ts: the most a relay in Deno can do with a
 * migration, copying bytes both ways without looking at them (one 1 MiB
 * buffer per direction and connection, read then write). Every connection
 * to the listen path gets its own connection to the destination, in
 * accept order (the main channel first, as the proxy does).
 *
 *   deno run -A bench/_relay_floor.ts LISTEN_PATH DESTINATION_PATH
 *
 * Runs until killed.
 */

const [listen, destination] = Deno.args;
if (listen === undefined || destination === undefined) throw new Error("usage: LISTEN DEST");

async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(1 << 20);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      for (let at = 0; at < n;) at += await to.write(buf.subarray(at, n));
    }
    await to.closeWrite();
  } catch { /* a side went away */ }
}

const listener = Deno.listen({ transport: "unix", path: listen });
let previous: Promise<unknown> = Promise.resolve();
for await (const source of listener) {
  // Connect in accept order: QEMU 7.2 takes the first connection as the main channel.
  const connected = previous.then(() => Deno.connect({ transport: "unix", path: destination }));
  previous = connected.catch(() => {});
  connected.then((dst) => {
    void copy(source, dst);
    void copy(dst, source);
  }, () => source.close());
}
