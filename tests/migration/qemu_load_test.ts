/**
 * Interop: a real QEMU 7.2 loads a stream that went through our decoder and
 * encoder, and its guest memory then equals the memory of the VM that made
 * the stream (the producer's `dump-guest-memory` of the same paused state).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { openFileReader } from "../../src/io/file.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { encodeMigration } from "../../src/migration/encoder.ts";
import { readPhdrsIndependently } from "../_util/elf_builder.ts";
import { QmpClient } from "../_util/qmp.ts";
import { realdata, realdataFacts } from "../_util/realdata.ts";
import { requireTool, toolAvailable } from "../_util/tools.ts";

/** sha256 of every PT_LOAD's bytes, keyed by `paddr+memsz`. */
async function loadDigests(path: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  using f = await Deno.open(path);
  for (const p of await readPhdrsIndependently(path)) {
    if (p.type !== 1) continue;
    const h = createHash("sha256");
    await f.seek(p.offset, Deno.SeekMode.Start);
    const buf = new Uint8Array(1 << 20);
    let left = p.filesz;
    while (left > 0) {
      const n = await f.read(buf.subarray(0, Math.min(left, buf.byteLength)));
      if (n === null) throw new Error(`${path}: PT_LOAD past the end of the file`);
      h.update(buf.subarray(0, n));
      left -= n;
    }
    out.set(`0x${p.paddr.toString(16)}+0x${p.memsz.toString(16)}`, h.digest("hex"));
  }
  return out;
}

/** The producer's QEMU command line, as a destination: no kernel, sockets in `dir`, `-incoming defer`. */
function destinationArgs(cmdline: string[], dir: string): string[] {
  const args: string[] = [];
  const drop = new Set([
    "-kernel",
    "-initrd",
    "-append",
    "-chardev",
    "-serial",
    "-qmp",
    "-gdb",
    "-pidfile",
  ]);
  for (let i = 1; i < cmdline.length; i++) {
    if (drop.has(cmdline[i]!)) {
      i++;
      continue;
    }
    args.push(cmdline[i]!);
  }
  return [
    ...args,
    "-serial",
    "null",
    "-serial",
    "null",
    "-qmp",
    `unix:${dir}/qmp.sock,server=on,wait=off`,
    "-incoming",
    "defer",
  ];
}

Deno.test({
  name: "encodeMigration() output loads into a real QEMU 7.2 whose memory then equals the source's",
  ignore: !toolAvailable("qemu-system-x86_64"),
  sanitizeResources: false,
  fn: async () => {
    const qemu = requireTool("qemu-system-x86_64");
    const facts = realdataFacts("out-small");
    const source = await realdata("out-small", "s2-holes-100M.mig");
    const sourceElf = await realdata("out-small", "s2-holes-100M.elf");
    const dir = await Deno.makeTempDir({ prefix: "vmem-load-" });
    const child = new Deno.Command(qemu, {
      args: destinationArgs(facts.manifest.qemu_cmdline, dir),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      // Re-encode the real stream through our codec.
      const input = await openFileReader(source);
      const reencoded = `${dir}/reencoded.mig`;
      const file = await Deno.open(reencoded, { write: true, create: true });
      await encodeMigration(
        decodeMigrationBatches(input.reader),
        new ByteWriter(async (c) => {
          let done = 0;
          while (done < c.byteLength) done += await file.write(c.subarray(done));
        }, { reuseChunks: true }),
      );
      file.close();
      input.close();

      using qmp = await QmpClient.connect(`${dir}/qmp.sock`, { timeoutMs: 20_000 });
      await qmp.execute("migrate-incoming", { uri: `exec:cat ${reencoded}` });
      let status = "";
      for (let i = 0; i < 600 && status !== "completed"; i++) {
        status = ((await qmp.execute("query-migrate")) as { status?: string }).status ?? "";
        if (status === "failed") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(status, "completed", "the destination loaded the re-encoded stream");
      const destElf = `${dir}/dest.elf`;
      await qmp.execute("dump-guest-memory", { paging: false, protocol: `file:${destElf}` }, {
        timeoutMs: 60_000,
      });
      const want = await loadDigests(sourceElf);
      const got = await loadDigests(destElf);
      assert.deepEqual(
        [...got.keys()],
        [...want.keys()],
        "same memory layout (plugged virtio-mem ranges included)",
      );
      for (const [range, digest] of want) assert.equal(got.get(range), digest, `memory ${range}`);
      await qmp.execute("quit").catch(() => {});
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.output().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});
