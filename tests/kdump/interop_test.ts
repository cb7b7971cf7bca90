/**
 * Our kdump outputs read by the independent readers, on dumps of a Linux
 * guest made in the test by QEMU 7.2 and 10.0 (tests/_util/kernel_dumps.ts:
 * the installed kernel, whose debug vmlinux Debian serves while it is
 * current). The input is the dump a QEMU < 6.2 or a /proc/vmcore copy
 * holds: QEMU's ELF dump with the whole virtio-mem region, the EVIL pages in
 * unplugged blocks inside. From it:
 *
 * - `convert --to kdump --plugmap` (zlib, the default, and zstd);
 * - `strip --plugmap` of makedumpfile's own `-c -d 0` kdump of it;
 * - QEMU's own kdump files (7.2: flattened kdump-zlib; 10.0: also the plain
 *   kdump-raw-zlib): `strip` says it removed nothing (QEMU >= 6.2 leaves
 *   unplugged memory out), and `convert --to elf` unpacks them.
 *
 * crash (the debug vmlinux) gives the same `sys` and `kmem -i` on every
 * output as on the input, the input's bytes at plugged addresses and a read
 * error at the EVIL ones; `makedumpfile --dump-dmesg` reads the zlib
 * outputs and makedumpfile re-filters them into an LZO kdump with the same
 * kernel log (its `-E` refuses every kdump input); drgn (libkdumpfile)
 * opens every output, reads the input's bytes at plugged addresses and
 * faults at unplugged ones.
 */
import assert from "node:assert/strict";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { QEMU_VERSIONS } from "../_util/qemu.ts";
import { requireTool, toolAvailable } from "../_util/tools.ts";
import { vmlinuxAvailable } from "../_util/vmlinux.ts";
import {
  assertReadError,
  assertVmlinuxOfGuest,
  hex,
  probesFor,
  rdBytes,
  runCrashes,
} from "../elf/_crash.ts";
import { cli, drgnRead, makedumpfile, requireDrgn } from "./_readers.ts";

for (const qemu of QEMU_VERSIONS) {
  Deno.test({
    name:
      `kdump outputs of dumps from QEMU ${qemu} (convert, strip of makedumpfile's and QEMU's kdump, kdump -> ELF): crash, makedumpfile and drgn read them like the input, minus unplugged memory`,
    ignore: ![
      toolAvailable("crash", "makedumpfile", "readelf"),
      vmlinuxAvailable(),
      kernelDumpsAvailable(qemu),
    ].every(Boolean),
    fn: async () => {
      requireTool("crash");
      requireTool("makedumpfile");
      requireDrgn();
      const d = await kernelDumps(qemu);
      // The vmlinux must be the guest's kernel, or crash's verdict means nothing.
      await assertVmlinuxOfGuest(d, d.vmlinux);
      const dir = Deno.makeTempDirSync({ prefix: "vmem-kdump-interop-" });
      try {
        const input = `${dir}/whole-region.elf`;
        await writeWholeRegionElf(d.elf, d.raw, d.device, input);
        const outputs: Record<string, string> = {};
        outputs.converted = `${dir}/converted.kdump`;
        await cli(["convert", input, outputs.converted, "--to", "kdump", "--plugmap", d.plugmap]);
        outputs.zstd = `${dir}/converted-zstd.kdump`;
        await cli([
          "convert",
          input,
          outputs.zstd,
          "--to",
          "kdump",
          "--codec",
          "zstd",
          "--plugmap",
          d.plugmap,
        ]);
        // makedumpfile's own kdump of the input (EVIL pages inside), then our strip of it.
        const mk = `${dir}/makedumpfile.kdump`;
        await makedumpfile(["-c", "-d", "0", input, mk]);
        outputs.stripped = `${dir}/makedumpfile-stripped.kdump`;
        await cli(["strip", mk, outputs.stripped, "--plugmap", d.plugmap]);
        // QEMU's own kdump files: nothing to strip (QEMU >= 6.2 leaves unplugged memory
        // out), then unpacked to ELF.
        for (const [format, path] of Object.entries(d.kdump)) {
          const s = JSON.parse(
            await cli([
              "strip",
              path,
              `${dir}/${format}.stripped`,
              "--plugmap",
              d.plugmap,
              "--json",
            ]),
          );
          assert.equal(s.removedNothing, true, `strip of QEMU's ${format}`);
          assert.equal(s.input.container, format === "kdump-zlib" ? "flattened" : "raw");
          outputs[`${format}.elf`] = `${dir}/${format}.elf`;
          await cli(["convert", path, outputs[`${format}.elf`]!, "--to", "elf"]);
        }

        const probes = await probesFor(d);
        const names = Object.keys(outputs);
        const t0 = performance.now();
        const [before, ...after] = await runCrashes(
          d.vmlinux,
          [
            { name: "in", dump: input },
            ...names.map((n) => ({ name: n, dump: outputs[n]! })),
          ],
          dir,
          probes,
        );
        console.log(
          `crash on ${names.length + 1} dumps of QEMU ${qemu}: ${
            ((performance.now() - t0) / 1000).toFixed(1)
          } s`,
        );
        const dumpfileless = (s: string) => s.replace(/^\s*DUMPFILE: .*\n/m, "");
        assert.equal(before!.result.code, 0, before!.result.stderr);
        assert.match(before!.kmem, /TOTAL MEM/);
        names.forEach((name, i) => {
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
              // kdump: the pfn's bitmap bit is clear ("seek error"); ELF: no PT_LOAD ("read error").
              assertReadError(text, p.gpa, name, name.endsWith(".elf") ? "read" : "seek");
            }
          }
        });

        // makedumpfile reads the zlib outputs: the kernel log, and the whole dump by
        // re-filtering it (1.7.2 refuses -E, "'-E' option is disable", for every kdump input).
        for (const name of ["converted", "stripped"]) {
          const dmesg = `${dir}/${name}.dmesg`;
          await makedumpfile(["--dump-dmesg", outputs[name]!, dmesg]);
          assert.match(Deno.readTextFileSync(dmesg), /Linux version 6\./, `dmesg of ${name}`);
          const again = `${dir}/${name}.refiltered.kdump`;
          await makedumpfile(["-l", "-d", "0", outputs[name]!, again]);
          const dmesg2 = `${dir}/${name}.refiltered.dmesg`;
          await makedumpfile(["--dump-dmesg", again, dmesg2]);
          assert.equal(Deno.readTextFileSync(dmesg2), Deno.readTextFileSync(dmesg));
        }

        // drgn (libkdumpfile for kdump files): plugged bytes equal the input's, unplugged addresses fault.
        for (const name of names) {
          const got = await drgnRead(outputs[name]!, probes.map((p) => p.gpa), 16);
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
}
