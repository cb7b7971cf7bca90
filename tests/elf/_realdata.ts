/**
 * Real-data helpers for the ELF/raw tests: plug maps of the small fixture
 * sets, streamed file comparisons done with plain file reads (independent of
 * `src/`), and a byte-string counter.
 *
 * @module
 */

import assert from "node:assert/strict";

/** virtio-mem region of the small sets: 256 MiB at 4 GiB, 2 MiB blocks. */
export const REGION = { gpa: 0x1_0000_0000, byteLength: 0x1000_0000 } as const;
/** Block size of the small sets. */
export const BLOCK = 0x20_0000;

/** Plugged block runs per scenario of out-small and out-q10. */
export const PLUGGED: Record<string, Array<[number, number]>> = {
  "s0-unplugged": [],
  "s1-plugged-200M": [[0, 100]],
  "s2-holes-100M": [[0, 14], [64, 36]],
  "s3-malicious": [[0, 14], [64, 36]],
};

/** The plug map JSON (version 1) of a scenario. */
export function plugMapJson(scenario: string): string {
  const plugged = PLUGGED[scenario]!;
  const size = plugged.reduce((n, [, c]) => n + c * BLOCK, 0);
  return JSON.stringify({
    version: 1,
    devices: [{
      path: "0000:00:01.0",
      ramblock: "0000:00:01.0/vmem0mem",
      memaddr: REGION.gpa,
      "region-size": REGION.byteLength,
      "block-size": BLOCK,
      node: 0,
      "usable-region-size": null,
      size,
      "requested-size": size,
      plugged,
    }],
  });
}

/** Unplugged gpa ranges of a scenario (computed here, independent of src/vmem). */
export function unpluggedRanges(scenario: string): Array<{ gpa: number; byteLength: number }> {
  const out: Array<{ gpa: number; byteLength: number }> = [];
  let next = 0;
  for (const [first, count] of [...PLUGGED[scenario]!, [128, 0] as [number, number]]) {
    if (first > next) {
      out.push({ gpa: REGION.gpa + next * BLOCK, byteLength: (first - next) * BLOCK });
    }
    next = first + count;
  }
  return out;
}

/** Plugged gpa ranges of a scenario. */
export function pluggedRanges(scenario: string): Array<{ gpa: number; byteLength: number }> {
  return PLUGGED[scenario]!.map(([f, c]) => ({
    gpa: REGION.gpa + f * BLOCK,
    byteLength: c * BLOCK,
  }));
}

async function readFully(f: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let got = 0;
  while (got < buf.byteLength) {
    const n = await f.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got;
}

/** Assert that two file ranges hold the same bytes (streamed, 4 MiB at a time). */
export async function assertSameFileBytes(
  a: { path: string; fileOffset: number },
  b: { path: string; fileOffset: number },
  byteLength: number,
  what: string,
): Promise<void> {
  using fa = await Deno.open(a.path);
  using fb = await Deno.open(b.path);
  await fa.seek(a.fileOffset, Deno.SeekMode.Start);
  await fb.seek(b.fileOffset, Deno.SeekMode.Start);
  const ba = new Uint8Array(4 << 20);
  const bb = new Uint8Array(4 << 20);
  for (let done = 0; done < byteLength;) {
    const n = Math.min(ba.byteLength, byteLength - done);
    assert.equal(await readFully(fa, ba.subarray(0, n)), n, `${what}: ${a.path} too short`);
    assert.equal(await readFully(fb, bb.subarray(0, n)), n, `${what}: ${b.path} too short`);
    if (!sameBytes(ba.subarray(0, n), bb.subarray(0, n))) {
      const i = ba.subarray(0, n).findIndex((x, k) => x !== bb[k]);
      assert.fail(
        `${what}: differ at byte 0x${(done + i).toString(16)} (${a.path}@0x${
          (a.fileOffset + done + i).toString(16)
        })`,
      );
    }
    done += n;
  }
}

/** Word-wise equality of two buffers that start 4-aligned. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  const words = a.byteLength >>> 2;
  const wa = new Int32Array(a.buffer, a.byteOffset, words);
  const wb = new Int32Array(b.buffer, b.byteOffset, words);
  for (let i = 0; i < words; i++) if (wa[i] !== wb[i]) return false;
  for (let i = words * 4; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function allZero(a: Uint8Array): boolean {
  const words = a.byteLength >>> 2;
  const w = new Int32Array(a.buffer, a.byteOffset, words);
  let acc = 0;
  for (let i = 0; i < words; i++) acc |= w[i]!;
  for (let i = words * 4; i < a.byteLength; i++) acc |= a[i]!;
  return acc === 0;
}

/** Assert that a file range is all zero. */
export async function assertZeroFileBytes(
  path: string,
  fileOffset: number,
  byteLength: number,
  what: string,
) {
  using f = await Deno.open(path);
  await f.seek(fileOffset, Deno.SeekMode.Start);
  const buf = new Uint8Array(4 << 20);
  for (let done = 0; done < byteLength;) {
    const n = await readFully(f, buf.subarray(0, Math.min(buf.byteLength, byteLength - done)));
    assert.ok(n > 0, `${what}: file too short`);
    if (!allZero(buf.subarray(0, n))) {
      const i = buf.subarray(0, n).findIndex((x) => x !== 0);
      assert.fail(`${what}: non-zero byte at 0x${(fileOffset + done + i).toString(16)}`);
    }
    done += n;
  }
}

/** Count occurrences of an ASCII marker in a file, with grep (independent of our code, and fast). */
export async function countMarker(path: string, marker: string): Promise<number> {
  assert.match(marker, /^[A-Za-z0-9-]+$/);
  const out = await new Deno.Command("sh", {
    args: ["-c", `LC_ALL=C grep -a -o -F -- "$1" "$2" | wc -l`, "count", marker, path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return Number(new TextDecoder().decode(out.stdout).trim());
}

/** Find the first non-zero 16-byte line inside a range of a file (for gdb/od probes). */
export async function firstNonZero(
  path: string,
  fileOffset: number,
  byteLength: number,
): Promise<number | undefined> {
  using f = await Deno.open(path);
  await f.seek(fileOffset, Deno.SeekMode.Start);
  const buf = new Uint8Array(1 << 20);
  for (let done = 0; done < byteLength;) {
    const n = await readFully(f, buf.subarray(0, Math.min(buf.byteLength, byteLength - done)));
    if (n === 0) return undefined;
    const i = buf.subarray(0, n).findIndex((x) => x !== 0);
    if (i >= 0) return done + (i & ~15);
    done += n;
  }
  return undefined;
}
