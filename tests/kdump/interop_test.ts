/**
 * kdump outputs read by the independent readers, on real QEMU 7.2 output of
 * the installed kernel (`kernelDumps("7.2")`, tests/_util/kernel_dumps.ts:
 * the fixtures' s3 state made in the test, so that the guest's debug vmlinux
 * is one Debian serves), as the whole virtio-mem region with the guest's
 * EVIL writes in unplugged blocks, as a QEMU < 6.2 dump would hold it:
 *
 * - `convert --to kdump --plugmap-from` of that ELF (zlib, the default), and
 * - `strip --plugmap-from` of makedumpfile's own `-c -d 0` kdump of it,
 *
 * both give in `crash` (the guest's debug vmlinux) the same `sys` and
 * `kmem -i` as the input, the input's bytes in plugged memory and a read
 * error in unplugged memory; `makedumpfile --dump-dmesg` reads them and
 * makedumpfile re-filters them into a new kdump with the same kernel log
 * (its `-E` refuses every kdump input); drgn (libkdumpfile) opens them, reads the
 * input's bytes at plugged addresses and faults at unplugged ones. A zstd
 * conversion is checked with crash and drgn (makedumpfile 1.7.2 has no zstd).
 */
import assert from "node:assert/strict";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { requireTool, runTool, toolAvailable } from "../_util/tools.ts";
import { vmlinuxAvailable } from "../_util/vmlinux.ts";
import { assertVmlinuxOfGuest, hex, probesFor, rdBytes, runCrash } from "../elf/_crash.ts";

const CLI_MAIN = decodeURIComponent(new URL("../../cli/main.ts", import.meta.url).pathname);
const DRGN_PYTHON = "/usr/bin/python3";

async function cli(args: string[]): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI_MAIN, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, `vmem-dump ${args.join(" ")} failed: ${err}`);
  return new TextDecoder().decode(r.stdout);
}

/** drgn: read each probe; returns hex bytes or "fault" per probe. */
async function drgnRead(dump: string, gpas: number[], length: number): Promise<string[]> {
  const script = `
import sys, drgn
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
for a in sys.argv[3:]:
    try:
        print(prog.read(int(a, 16), int(sys.argv[2]), True).hex())
    except drgn.FaultError:
        print("fault")
`;
  const r = await runTool(DRGN_PYTHON, [
    "-c",
    script,
    dump,
    String(length),
    ...gpas.map((g) => g.toString(16)),
  ], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `drgn on ${dump}: ${r.stderr}`);
  return r.stdout.trim().split("\n");
}

function drgnAvailable(): boolean {
  try {
    const r = new Deno.Command(DRGN_PYTHON, { args: ["-c", "import drgn"] }).outputSync();
    return r.code === 0;
  } catch {
    return false;
  }
}

const ready = [
  toolAvailable("crash", "makedumpfile", "readelf"),
  vmlinuxAvailable(),
  kernelDumpsAvailable("7.2"),
].every(Boolean);

Deno.test({
  name:
    "kdump from convert and strip: crash, makedumpfile and drgn read it like the input, minus unplugged memory",
  ignore: !ready,
  fn: async () => {
    requireTool("crash");
    requireTool("makedumpfile");
    if (!drgnAvailable()) {
      throw new Error(`drgn is missing: apt-get install python3-drgn (${DRGN_PYTHON})`);
    }
    const kd = await kernelDumps("7.2");
    const vmlinux = kd.vmlinux;
    await assertVmlinuxOfGuest(kd, vmlinux);
    const { elf, raw, migration: mig } = kd;
    const dir = Deno.makeTempDirSync({ prefix: "vmem-kdump-interop-" });
    try {
      const input = `${dir}/whole-region.elf`;
      await writeWholeRegionElf(elf, raw, kd.device, input);
      const converted = `${dir}/converted.kdump`;
      await cli(["convert", input, converted, "--to", "kdump", "--plugmap-from", mig]);
      const zstd = `${dir}/converted-zstd.kdump`;
      await cli([
        "convert",
        input,
        zstd,
        "--to",
        "kdump",
        "--codec",
        "zstd",
        "--plugmap-from",
        mig,
      ]);
      // makedumpfile's own kdump of the input (EVIL pages inside), then our strip of it.
      const mk = `${dir}/makedumpfile.kdump`;
      const made = await runTool("makedumpfile", ["-c", "-d", "0", input, mk], {
        timeoutMs: 300_000,
      });
      assert.equal(made.code, 0, made.stdout + made.stderr);
      const stripped = `${dir}/makedumpfile-stripped.kdump`;
      await cli(["strip", mk, stripped, "--plugmap-from", mig]);

      const probes = await probesFor(kd);
      const dumps = { converted, zstd, stripped };
      const runs = await Promise.all([
        runCrash(vmlinux, input, `${dir}/crash-in`, probes),
        ...Object.values(dumps).map((d, i) => runCrash(vmlinux, d, `${dir}/crash-${i}`, probes)),
      ]);
      const [before, ...after] = runs;
      const dumpfileless = (s: string) =>
        s.replace(/^\s*DUMPFILE: .*\n/m, "").replace(/^(\s*MEMORY: .*)$/m, "$1");
      assert.equal(before!.result.code, 0, before!.result.stderr);
      assert.match(before!.kmem, /TOTAL MEM/);
      Object.keys(dumps).forEach((name, i) => {
        const run = after[i]!;
        assert.equal(
          run.result.code,
          0,
          `crash on ${name}: ${run.result.stdout}${run.result.stderr}`,
        );
        assert.equal(dumpfileless(run.sys), dumpfileless(before!.sys), `sys on ${name}`);
        assert.equal(run.kmem, before!.kmem, `kmem -i on ${name}`);
        for (const p of probes) {
          const text = run.rd.get(p.gpa)!;
          if (p.plugged) {
            assert.deepEqual(rdBytes(text), p.expected, `${name}: rd -p ${hex(p.gpa)}`);
          } else {
            assert.doesNotMatch(text, /EVIL/, `${name}: rd -p ${hex(p.gpa)}`);
            assert.deepEqual(rdBytes(text), [], `${name}: rd -p ${hex(p.gpa)} must fail`);
          }
        }
      });

      // makedumpfile reads the zlib outputs: the kernel log, and back to ELF.
      for (const name of ["converted", "stripped"] as const) {
        const d = dumps[name];
        const dmesg = `${dir}/${name}.dmesg`;
        const r = await runTool("makedumpfile", ["--dump-dmesg", d, dmesg], { timeoutMs: 120_000 });
        assert.equal(r.code, 0, `makedumpfile --dump-dmesg ${name}: ${r.stdout}${r.stderr}`);
        assert.match(Deno.readTextFileSync(dmesg), /Linux version 6\./, `dmesg of ${name}`);
        // makedumpfile 1.7.2 refuses -E for any kdump input ("'-E' option is disable"),
        // so it reads the whole dump by re-filtering it into a new kdump (LZO) instead,
        // and the kernel log of that copy must be the same.
        const again = `${dir}/${name}.refiltered.kdump`;
        const e = await runTool("makedumpfile", ["-l", "-d", "0", d, again], {
          timeoutMs: 300_000,
        });
        assert.equal(e.code, 0, `makedumpfile -l -d 0 ${name}: ${e.stdout}${e.stderr}`);
        const dmesg2 = `${dir}/${name}.refiltered.dmesg`;
        const r2 = await runTool("makedumpfile", ["--dump-dmesg", again, dmesg2], {
          timeoutMs: 120_000,
        });
        assert.equal(r2.code, 0, r2.stdout + r2.stderr);
        assert.equal(Deno.readTextFileSync(dmesg2), Deno.readTextFileSync(dmesg));
      }

      // drgn (libkdumpfile): plugged bytes equal the input's, unplugged addresses fault.
      for (const [name, d] of Object.entries(dumps)) {
        const got = await drgnRead(d, probes.map((p) => p.gpa), 16);
        probes.forEach((p, i) => {
          if (p.plugged) {
            assert.equal(
              got[i],
              p.expected.map((b) => b.toString(16).padStart(2, "0")).join(""),
              `drgn ${name} ${hex(p.gpa)}`,
            );
          } else assert.equal(got[i], "fault", `drgn ${name} ${hex(p.gpa)}`);
        });
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
