import assert from "node:assert/strict";
import {
  fullRealdataEnabled,
  realdata,
  realdataAvailable,
  realdataCacheDir,
  realdataFacts,
  realdataSharedDir,
} from "../_util/realdata.ts";
import { evilPage } from "../_util/guest.ts";
import { readFileRange } from "../../src/io/file.ts";

Deno.test({
  name: "realdata() unpacks out-small once and returns verified fixture paths",
  ignore: !realdataAvailable("out-small"),
  fn: async () => {
    const [mig, elf] = await Promise.all([
      realdata("out-small", "s3-malicious.mig"),
      realdata("out-small", "s3-malicious.mig"),
      realdata("out-small", "s0-unplugged.elf"),
    ]).then(([a, b, c]) => {
      assert.equal(a, b);
      return [a, c];
    });
    assert.equal(mig, `${realdataCacheDir("out-small")}/s3-malicious.mig`);
    const facts = realdataFacts("out-small");
    assert.equal(
      Deno.statSync(mig).size,
      facts.analysis.scenarios["s3-malicious"].migration.size,
    );
    assert.ok(Deno.statSync(elf!).isFile);
    // the verification is remembered: a second call does not hash 100 MB again
    const t0 = performance.now();
    await realdata("out-small", "s3-malicious.mig");
    assert.ok(performance.now() - t0 < 200);
  },
});

Deno.test({
  name: "realdataFacts() parses manifest, analysis, QMP records and checksums of out-q10",
  ignore: !realdataAvailable("out-q10"),
  fn: () => {
    const f = realdataFacts("out-q10");
    assert.equal(f.manifest.qemu_version.qemu.major, 10);
    assert.deepEqual(Object.keys(f.qmp), [...f.scenarios]);
    assert.equal(f.qmp["s3-malicious"].vmem0.size, 100 << 20);
    assert.match(f.sha256["s3-malicious.mig"] ?? "", /^[0-9a-f]{64}$/);
    assert.equal(f.sharedDir, realdataSharedDir("out-q10"));
  },
});

Deno.test({
  name: "evilPage() reproduces the EVIL-MIG page found in the real out-q10 raw image",
  ignore: !realdataAvailable("out-q10"),
  fn: async () => {
    const f = realdataFacts("out-q10");
    const raw = await realdata("out-q10", "s3-malicious.vmem0.raw");
    for (const w of f.manifest.malicious_writes.during_migration) {
      const bytes = await readFileRange(raw, w.region_offset, 4096);
      assert.deepEqual(bytes, evilPage(w.marker, w.gpa));
    }
  },
});

Deno.test("realdata() returns small side files from the shared folder without unpacking", async () => {
  if (!realdataAvailable("out-q10")) return;
  assert.equal(
    await realdata("out-q10", "manifest.json"),
    `${realdataSharedDir("out-q10")}/manifest.json`,
  );
  await assert.rejects(realdata("out-q10", "../x.mig"), TypeError);
});

Deno.test({
  name: "realdata() refuses the 6.7 GB set without VMEM_FULL=1",
  ignore: fullRealdataEnabled(),
  fn: async () => {
    assert.equal(realdataAvailable("out"), false);
    await assert.rejects(realdata("out", "s0-unplugged.mig"), /VMEM_FULL=1/);
  },
});
