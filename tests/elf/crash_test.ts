/**
 * The real `crash` utility, with the debug vmlinux of the fixtures' guest
 * kernel, opens a dump we stripped exactly as it opens the original: same
 * `sys` and `kmem -i`, same bytes in plugged memory, and a read error (not
 * the EVIL bytes) in unplugged memory.
 *
 * The original is the dump a QEMU < 6.2 or a /proc/vmcore copy would hold:
 * the real s3-malicious dump with the whole virtio-mem region as one PT_LOAD
 * of the pmemsave image, the guest's EVIL writes to unplugged blocks inside.
 *
 * Needs `crash`, `readelf` and the vmlinux (scripts/fetch-vmlinux-dbg.sh);
 * fails in CI when one is missing, skips loudly elsewhere.
 */
import assert from "node:assert/strict";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { realdata, realdataAvailable } from "../_util/realdata.ts";
import { requireTool, runTool, toolAvailable } from "../_util/tools.ts";
import { fixtureGuestKernel, requireVmlinux, vmlinuxAvailable } from "../_util/vmlinux.ts";
import {
  diagnostics,
  hex,
  probesFor,
  rdBytes,
  runCrash,
  SCENARIO,
  vmcoreinfoOf,
} from "./_crash.ts";
import { REGION } from "./_realdata.ts";

const CLI_MAIN = decodeURIComponent(new URL("../../cli/main.ts", import.meta.url).pathname);

const ready = [
  toolAvailable("crash", "readelf"),
  vmlinuxAvailable("out-small"),
  realdataAvailable("out-small"),
].every(Boolean);

Deno.test({
  name: "strip CLI output opens in crash like the whole-region dump, minus unplugged memory",
  ignore: !ready,
  fn: async () => {
    requireTool("crash");
    const vmlinux = requireVmlinux("out-small");
    const elf = await realdata("out-small", `${SCENARIO}.elf`);
    const raw = await realdata("out-small", `${SCENARIO}.vmem0.raw`);
    const mig = await realdata("out-small", `${SCENARIO}.mig`);

    // The vmlinux must be the guest's kernel, or crash's verdict means nothing.
    const { abi } = fixtureGuestKernel("out-small");
    const info = await vmcoreinfoOf(elf);
    assert.equal(info.osrelease, abi, "the dump's VMCOREINFO names the manifest's kernel");
    const notes = await runTool("readelf", ["-nW", vmlinux]);
    assert.equal(notes.code, 0, notes.stderr);
    const vmlinuxBuildId = /Build ID: ([0-9a-f]+)/.exec(notes.stdout)?.[1];
    assert.ok(info.buildId, "the dump's VMCOREINFO has a BUILD-ID");
    assert.equal(
      vmlinuxBuildId,
      info.buildId,
      `${vmlinux} is not the guest's kernel (build id differs from the dump's VMCOREINFO)`,
    );

    const dir = Deno.makeTempDirSync({ prefix: "vmem-crash-" });
    try {
      // 1. The dump as QEMU < 6.2 or a /proc/vmcore copy has it: EVIL pages inside.
      const input = `${dir}/whole-region.elf`;
      await writeWholeRegionElf(elf, raw, REGION, input);
      // 2. Strip it with the real CLI.
      const output = `${dir}/stripped.elf`;
      const strip = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", CLI_MAIN, "strip", input, output, "--plugmap-from", mig],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stripErr = new TextDecoder().decode(strip.stderr);
      assert.equal(strip.code, 0, `vmem-dump strip failed: ${stripErr}`);

      // 3. One crash session per file, both at once.
      const probes = await probesFor(raw);
      const t0 = performance.now();
      const [before, after] = await Promise.all([
        runCrash(vmlinux, input, `${dir}/crash-in`, probes),
        runCrash(vmlinux, output, `${dir}/crash-out`, probes),
      ]);
      const seconds = ((performance.now() - t0) / 1000).toFixed(1);
      console.log(`crash on both dumps: ${seconds} s`);

      // 4. Both sessions ran to the end.
      for (const [what, run] of [["input", before], ["output", after]] as const) {
        assert.equal(
          run.result.code,
          0,
          `crash on the ${what} exited ${run.result.code}:\n${run.result.stdout}\n${run.result.stderr}`,
        );
        assert.match(run.sys, new RegExp(`^\\s+RELEASE: ${abi.replaceAll(".", "\\.")}$`, "m"));
        assert.match(run.kmem, /^\s+TOTAL MEM\s+\d+/m, `kmem -i on the ${what}:\n${run.kmem}`);
      }
      const dumpfileless = (s: string) => s.replace(/^\s*DUMPFILE: .*\n/m, "");
      assert.equal(dumpfileless(after.sys), dumpfileless(before.sys), "sys");
      assert.equal(after.kmem, before.kmem, "kmem -i");

      for (const p of probes) {
        const at = hex(p.gpa);
        assert.deepEqual(rdBytes(before.rd.get(p.gpa)!), p.expected, `input, rd -p ${at}`);
        if (p.plugged) {
          assert.deepEqual(rdBytes(after.rd.get(p.gpa)!), p.expected, `output, rd -p ${at}`);
        } else {
          assert.match(before.rd.get(p.gpa)!, /EVIL-/, `input, rd -p ${at} shows the EVIL text`);
          assert.match(
            after.rd.get(p.gpa)!,
            new RegExp(`^rd: read error: physical address: ${p.gpa.toString(16)}\\s`, "m"),
            `output, rd -p ${at} must fail`,
          );
          assert.doesNotMatch(after.rd.get(p.gpa)!, /EVIL/, `output, rd -p ${at}`);
        }
      }

      // crash says nothing about our output that it did not say about the input,
      // except the expected read errors in unplugged memory.
      const expectedErrors = new Set(
        probes.filter((p) => !p.plugged).map((p) =>
          `rd: read error: physical address: ${p.gpa.toString(16)}`
        ),
      );
      const inputDiag = new Set(diagnostics(before, input));
      const newDiag = diagnostics(after, output).filter((l) =>
        !inputDiag.has(l) &&
        ![...expectedErrors].some((e) => l.startsWith(`${e} `) || l === e)
      );
      assert.deepEqual(newDiag, [], "crash messages on the stripped dump only");
      const seenErrors = diagnostics(after, output).filter((l) => l.startsWith("rd: read error"));
      assert.equal(seenErrors.length, expectedErrors.size, seenErrors.join("\n"));
      assert.deepEqual(
        [...inputDiag].filter((l) => /read error/.test(l)),
        [],
        "no read error on the input",
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
