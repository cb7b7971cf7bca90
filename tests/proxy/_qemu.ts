/**
 * Helpers for the proxy tests with real QEMU: the s2/s3 plug shape on the
 * tiny guest, its EVIL pages, a plug map file for it, and `vmem-dump proxy`
 * as a child process.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type QemuGuest, VMEM_GPA } from "../_util/qemu.ts";
import { assertReport } from "../_util/report_schema.ts";

/** One MiB. */
export const MiB = 1 << 20;
/** Device block size of the tiny guest's virtio-mem device. */
export const BLOCK = 2 * MiB;
/** The CLI entry point. */
export const MAIN = new URL("../../cli/main.ts", import.meta.url).pathname;
/** Unplugged blocks in the s2/s3 shape (plugged 0-13 and 64-99), as in the real fixtures. */
export const EVIL_BLOCKS = [39, 53];
/** One page in each of {@linkcode EVIL_BLOCKS}. */
export const EVIL_GPAS = EVIL_BLOCKS.map((b) => VMEM_GPA + b * BLOCK + 0x1000);

/** The s2/s3 plug shape on the tiny guest: blocks 0-13 and 64-99 plugged, each with a marker page. */
export async function holesShape(src: QemuGuest): Promise<void> {
  await src.plugHolesShape();
  assert.equal((await src.vmem()).size, 100 * MiB);
}

/** The harness's plug state as a plug map file (JSON version 1). */
export async function writePlugMap(src: QemuGuest, path: string): Promise<void> {
  const state = src.tinyPlugState();
  const runs: [number, number][] = [];
  state.forEach((v, i) => {
    if (v !== 1) return;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  });
  const vmem = await src.vmem();
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      version: 1,
      devices: [{
        path: "",
        ramblock: "vmem0mem",
        memaddr: vmem.memaddr,
        "region-size": vmem["max-size"],
        "block-size": vmem["block-size"],
        node: vmem.node,
        size: vmem.size,
        plugged: runs,
      }],
    }),
  );
}

/** Start `vmem-dump proxy` as a process and wait until its socket exists. */
export async function startProxy(dir: string, name: string, args: string[]) {
  const listen = `${dir}/${name}.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "proxy",
      "--listen",
      `unix:${listen}`,
      "--connect",
      `unix:${dir}/${name}-dst.sock`,
      "--json",
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new Response(child.stdout).text();
  const err = new Response(child.stderr).text();
  for (let i = 0; i < 400; i++) {
    try {
      if ((await Deno.lstat(listen)).isSocket) break;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    uri: `unix:${listen}`,
    destination: `unix:${dir}/${name}-dst.sock`,
    async done(): Promise<
      { code: number; out: string; err: string; json: Record<string, unknown> | undefined }
    > {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        child.status,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            try {
              child.kill("SIGKILL");
            } catch { /* gone */ }
            reject(new Error("proxy did not finish in 120 s"));
          }, 120_000);
        }),
      ]).finally(() => clearTimeout(timer));
      const o = await out;
      // Every report is checked against its schema and the glossary; no report on an error.
      const json = o.trim() === "" ? undefined : assertReport(o, "proxy");
      return { code: status.code, out: o, err: await err, json };
    },
    kill() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    },
  };
}

/** Whether the file contains the text. */
export async function containsBytes(path: string, needle: string): Promise<boolean> {
  const hay = await Deno.readFile(path);
  const n = new TextEncoder().encode(needle);
  for (let i = hay.indexOf(n[0]!); i >= 0; i = hay.indexOf(n[0]!, i + 1)) {
    let ok = true;
    for (let j = 1; j < n.length && ok; j++) ok = hay[i + j] === n[j];
    if (ok) return true;
  }
  return false;
}
