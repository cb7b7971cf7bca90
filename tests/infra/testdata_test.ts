/**
 * testdata/ stays in sync with testdata/README.md, and the bundled real
 * streams hold what the README says they hold.
 */

import assert from "node:assert/strict";
import { countBytes } from "../_util/assert.ts";
import { zstdDecompressSync } from "node:zlib";
import { sha256File, sha256Hex } from "../_util/hashing.ts";

const TESTDATA = decodeURIComponent(new URL("../../testdata/", import.meta.url).pathname);

interface Row {
  bytes: number;
  sha256: string;
}

function readmeTable(): Map<string, Row> {
  const rows = new Map<string, Row>();
  const text = Deno.readTextFileSync(`${TESTDATA}README.md`);
  for (const m of text.matchAll(/^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|/gm)) {
    rows.set(m[1]!, { bytes: Number(m[2]), sha256: m[3]! });
  }
  return rows;
}

function listFiles(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const rel = prefix + e.name;
    if (e.isDirectory) out.push(...listFiles(`${dir}/${e.name}`, `${rel}/`));
    else if (rel !== "README.md") out.push(rel);
  }
  return out.sort();
}

Deno.test("testdata/README.md lists every file under testdata/ with its size and sha256", async () => {
  const table = readmeTable();
  const files = listFiles(TESTDATA);
  for (const f of files) {
    const row = table.get(f);
    assert.ok(
      row,
      `testdata/${f} has no row in testdata/README.md (add: | \`${f}\` | bytes | \`sha256\` | producer |)`,
    );
    assert.equal(Deno.statSync(`${TESTDATA}${f}`).size, row.bytes, `size of testdata/${f}`);
    assert.equal(await sha256File(`${TESTDATA}${f}`), row.sha256, `sha256 of testdata/${f}`);
  }
  for (const f of table.keys()) assert.ok(files.includes(f), `README lists missing testdata/${f}`);
});

const DEMO = [
  {
    file: "migration/q10-s3-malicious.mig.zst",
    byteLength: 1_417_096,
    sha256: "f360f84dc425dc6b0e5bcf1336cc14d70fcc18353f0f73c2311efd06dd570073",
    machine: "pc-q35-10.0",
    earlyBitmapAt: 310,
  },
  {
    file: "migration/q72-s3-malicious.mig.zst",
    byteLength: 1_403_795,
    sha256: "4486a970e1dbfe6997b82ae7898cc20bcbd959b623d2cc1baf268f990c6ae183",
    machine: "pc-q35-7.2",
    earlyBitmapAt: undefined,
  },
];

for (const d of DEMO) {
  Deno.test(`testdata/${d.file} is the real stream the README describes`, async () => {
    const zst = await Deno.readFile(`${TESTDATA}${d.file}`);
    const mig = new Uint8Array(zstdDecompressSync(zst));
    assert.equal(mig.length, d.byteLength);
    assert.equal(sha256Hex(mig), d.sha256);
    assert.deepEqual([...mig.subarray(0, 8)], [0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
    assert.equal(new TextDecoder().decode(mig.subarray(13, 13 + d.machine.length)), d.machine);
    // one marker page per plugged block (+1: the format string inside the guest image)
    assert.equal(Math.floor(countBytes(mig, "DATA block=") / 64), 50);
    assert.equal(countBytes(mig, "EVIL-MIG gpa=0x000104e01000 line="), 64);
    assert.equal(countBytes(mig, "EVIL-MIG gpa=0x000106a01000 line="), 64);
    assert.equal(countBytes(mig, "EVIL-PRE"), 0);
    const bitmap = [0, 0, 0, 0, 0, 0, 0x3f, 0xff, 0, 0, 0, 0x0f, 0xff, 0xff, 0xff, 0xff];
    if (d.earlyBitmapAt !== undefined) {
      assert.deepEqual([...mig.subarray(d.earlyBitmapAt, d.earlyBitmapAt + 16)], bitmap);
    } else {
      const key = new Uint8Array([
        ...[0, 0, 0, 1, 0, 0, 0, 0], // addr 0x100000000
        ...[0, 0, 0, 0, 0x10, 0, 0, 0], // region 0x10000000
        ...[0, 0, 0, 0, 0, 0x20, 0, 0], // block 0x200000
      ]);
      const at = findLast(mig, key);
      assert.ok(at > 1_000_000, "late plug state after the RAM");
      // sanity block (24 + node 4) + usable, size, requested (3 × 8)
      assert.deepEqual([...mig.subarray(at + 52, at + 68)], bitmap);
    }
  });
}

function findLast(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = haystack.length - needle.length; i >= 0; i--) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
