/**
 * The crash interop test, registered by crash_qemu72_test.ts and
 * crash_qemu10_test.ts (one file per QEMU build, so that `deno test
 * --parallel` runs the two on both cores). What it checks:
 *
 * The real `crash` utility, with the debug vmlinux of the guest's kernel,
 * opens a dump we stripped exactly as it opens the original: same `sys` and
 * `kmem -i`, same bytes in plugged memory, and a read error (not the EVIL
 * bytes) in unplugged memory. It also reads QEMU's own kdump dump of the
 * same state (7.2: flattened kdump-zlib; 10.0: plain kdump-raw-zlib): same
 * `kmem -i`, same bytes in plugged memory, unplugged memory absent.
 *
 * The dumps are made in the test (tests/_util/kernel_dumps.ts) by QEMU 7.2
 * and 10.0 from a Linux guest running the kernel installed on this machine,
 * whose debug package Debian serves while it is current
 * (scripts/fetch-vmlinux-dbg.sh). The original is the dump a QEMU < 6.2 or a
 * /proc/vmcore copy would hold: QEMU's ELF dump with the whole virtio-mem
 * region as one PT_LOAD of the pmemsave image, the EVIL writes to unplugged
 * blocks inside.
 *
 * Needs `crash`, `readelf`, QEMU and the vmlinux; fails in CI when one is
 * missing, skips loudly elsewhere.
 */
import assert from "node:assert/strict";
import { CLI_MAIN } from "../_util/cli.ts";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import type { QemuVersion } from "../_util/qemu.ts";
import { requireTool, toolAvailable } from "../_util/tools.ts";
import { vmlinuxAvailable } from "../_util/vmlinux.ts";
import {
  assertReadError,
  assertVmlinuxOfGuest,
  diagnostics,
  hex,
  probesFor,
  rdBytes,
  runCrash,
} from "./_crash.ts";

/**
 * Register the crash interop test for the kernel dumps of one QEMU build
 * (what it checks: the module documentation).
 *
 * @param qemu QEMU build.
 */
export function crashInteropTest(qemu: QemuVersion): void {
  Deno.test({
    name:
      `crash opens our strip of a QEMU ${qemu} dump like the whole-region dump, minus unplugged memory, and QEMU's kdump alike`,
    ignore: ![toolAvailable("crash", "readelf"), vmlinuxAvailable(), kernelDumpsAvailable(qemu)]
      .every(Boolean),
    fn: async () => {
      requireTool("crash");
      const d = await kernelDumps(qemu);
      const vmlinux = d.vmlinux;
      const abi = d.kernel.abi;

      await assertVmlinuxOfGuest(d, vmlinux);

      const dir = Deno.makeTempDirSync({ prefix: "vmem-crash-" });
      try {
        // 1. The dump as QEMU < 6.2 or a /proc/vmcore copy has it: EVIL pages inside.
        const input = `${dir}/whole-region.elf`;
        await writeWholeRegionElf(d.elf, d.raw, d.device, input);
        // 2. Strip it with the real CLI.
        const output = `${dir}/stripped.elf`;
        const strip = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", CLI_MAIN, "strip", input, output, "--plugmap", d.plugmap],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stripErr = new TextDecoder().decode(strip.stderr);
        assert.equal(strip.code, 0, `vmem-dump strip failed: ${stripErr}`);

        // 3. One crash session per file, all at once; QEMU 10's kdump in its plain
        //    (non-flattened) form, 7.2's flattened (the only one it writes).
        const kdumpFormat = qemu === "7.2" ? "kdump-zlib" : "kdump-raw-zlib";
        const probes = await probesFor(d);
        const t0 = performance.now();
        const [before, after, kdump] = await Promise.all([
          runCrash(vmlinux, input, `${dir}/crash-in`, probes),
          runCrash(vmlinux, output, `${dir}/crash-out`, probes),
          runCrash(vmlinux, d.kdump[kdumpFormat]!, `${dir}/crash-kdump`, probes),
        ]);
        const seconds = ((performance.now() - t0) / 1000).toFixed(1);
        console.log(
          `crash on three dumps of QEMU ${qemu} (${d.qemuVersion}), ${abi}: ${seconds} s`,
        );

        // 4. Every session ran to the end.
        const runs = [["input", before], ["output", after], [kdumpFormat, kdump]] as const;
        for (const [what, run] of runs) {
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
        assert.equal(kdump.kmem, before.kmem, `kmem -i of QEMU's ${kdumpFormat}`);

        for (const p of probes) {
          const at = hex(p.gpa);
          assert.deepEqual(rdBytes(before.rd.get(p.gpa)!), p.expected, `input, rd -p ${at}`);
          if (p.plugged) {
            assert.deepEqual(rdBytes(after.rd.get(p.gpa)!), p.expected, `output, rd -p ${at}`);
            assert.deepEqual(
              rdBytes(kdump.rd.get(p.gpa)!),
              p.expected,
              `${kdumpFormat}, rd -p ${at}`,
            );
          } else {
            assert.match(before.rd.get(p.gpa)!, /EVIL-/, `input, rd -p ${at} shows the EVIL text`);
            assertReadError(after.rd.get(p.gpa)!, p.gpa, "output");
            assertReadError(kdump.rd.get(p.gpa)!, p.gpa, kdumpFormat, "seek");
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
}
