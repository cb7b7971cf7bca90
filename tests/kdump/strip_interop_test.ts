/**
 * `strip` of kdump files written by others, read back by the independent
 * readers, on dumps of a Linux guest made in the test by QEMU 7.2 and 10.0
 * (tests/_util/kernel_dumps.ts):
 *
 * - QEMU's own kdump files (kdump-zlib, flattened; 10.0 also the plain
 *   kdump-raw-zlib). QEMU >= 6.2 leaves unplugged memory out, so they are
 *   stripped with the plug map as it would be had the guest unplugged two
 *   more blocks: strip then removes real pages of QEMU's output.
 * - makedumpfile's split dump (`--split`, two files) of the whole-region
 *   ELF (the dump a QEMU < 6.2 writes, the EVIL pages in unplugged blocks),
 *   stripped file by file (each naming the other with --split-set) with the
 *   real plug map; read as a set by crash and
 *   reassembled by `makedumpfile --reassemble` for the other readers.
 * - makedumpfile's flattened output (`-F`) of the same ELF.
 *
 * crash gives the same `sys` and `kmem -i` as on the input, the input's
 * bytes at plugged addresses and a seek error in removed memory;
 * `makedumpfile --dump-dmesg` reads every output; drgn (libkdumpfile) reads
 * the input's bytes at plugged addresses and faults in removed memory (QEMU's
 * own kdump files it cannot open at all, stripped or not: their header names
 * only the machine; the stripped file must fail the same way).
 */
import assert from "node:assert/strict";
import { writeWholeRegionElf } from "../_util/elf_builder.ts";
import { readFileBytes } from "../_util/files.ts";
import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { QEMU_VERSIONS } from "../_util/qemu.ts";
import { assertReport } from "../_util/report_schema.ts";
import { requireTool, runTool, toolAvailable } from "../_util/tools.ts";
import { vmlinuxAvailable } from "../_util/vmlinux.ts";
import {
  assertReadError,
  assertVmlinuxOfGuest,
  hex,
  type Probe,
  PROBE_BYTES,
  probesFor,
  rdBytes,
  runCrashes,
} from "../elf/_crash.ts";
import { firstNonZero } from "../elf/_realdata.ts";
import type { GpaRange } from "../../src/vmem/ranges.ts";
import { cli, drgnOpenError, drgnRead, makedumpfile, requireDrgn } from "./_readers.ts";

/** `sys` without the DUMPFILE(S) lines (a split set lists one file per line). */
function sysWithoutDumpfiles(sys: string): string {
  const out: string[] = [];
  let inList = false;
  for (const line of sys.split("\n")) {
    if (/^\s*DUMPFILES?:/.test(line)) inList = true;
    else if (inList && /^\s+\S+$/.test(line)) continue;
    else {
      inList = false;
      out.push(line);
    }
  }
  return out.join("\n");
}

const within = (gpa: number, ranges: readonly GpaRange[]) =>
  ranges.some((r) => gpa >= r.gpa && gpa < r.gpa + r.byteLength);

for (const qemu of QEMU_VERSIONS) {
  Deno.test({
    name:
      `strip of QEMU ${qemu}'s kdump files and of makedumpfile's split and flattened dumps: crash, makedumpfile and drgn read the outputs like the input, minus the removed memory`,
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
      await assertVmlinuxOfGuest(d, d.vmlinux);
      const dir = Deno.makeTempDirSync({ prefix: "vmem-kdump-strip-interop-" });
      try {
        // The plug map as if the guest had unplugged the last two blocks of its first plugged run.
        const map = JSON.parse(Deno.readTextFileSync(d.plugmap));
        const dev = map.devices[0];
        const block = dev["block-size"] as number;
        const [first, count] = dev.plugged[0] as [number, number];
        assert.ok(count > 2, "the first plugged run has more than two blocks");
        dev.plugged[0] = [first, count - 2];
        dev.size -= 2 * block;
        const taken: GpaRange[] = [{
          gpa: d.device.gpa + (first + count - 2) * block,
          byteLength: 2 * block,
        }];
        const less = `${dir}/less.json`;
        Deno.writeTextFileSync(less, JSON.stringify(map));

        // Probes: the plugged and EVIL ones, and lines in the two taken blocks.
        const probes: Probe[] = [...await probesFor(d)];
        const nz = await firstNonZero(d.raw, taken[0]!.gpa - d.device.gpa, 2 * block);
        for (const gpa of [taken[0]!.gpa, taken[0]!.gpa + (nz ?? block)]) {
          if (probes.some((p) => p.gpa === gpa)) continue;
          const expected = [...await readFileBytes(d.raw, gpa - d.device.gpa, PROBE_BYTES)];
          probes.push({ gpa, plugged: true, expected });
        }
        probes.sort((a, b) => a.gpa - b.gpa);

        /** Each output, and the memory it must lack beside what QEMU never had. */
        const outputs: Array<{ name: string; files: string[]; gone: GpaRange[]; source?: string }> =
          [];

        // QEMU's kdump files, stripped of the two taken blocks.
        for (const [format, path] of Object.entries(d.kdump)) {
          const out = `${dir}/${format}.stripped`;
          const r = assertReport(
            await cli(["strip", path, out, "--plugmap", less, "--json"]),
            "strip",
          );
          assert.equal(r.removedNothing, false, format);
          assert.deepEqual(r.removed, taken, `strip of QEMU's ${format} removes the taken blocks`);
          const k = r.kdump as { removedPresentPages: number; removedPages: number };
          assert.equal(k.removedPresentPages, (2 * block) / 4096);
          assert.equal(k.removedPages, (2 * block) / 4096, "QEMU dumped every page of them");
          outputs.push({ name: `qemu-${format}`, files: [out], gone: taken, source: path });
        }

        // makedumpfile's split dump of the whole-region ELF, stripped file by file.
        const input = `${dir}/whole-region.elf`;
        await writeWholeRegionElf(d.elf, d.raw, d.device, input);
        const split = [`${dir}/split1.kdump`, `${dir}/split2.kdump`];
        await makedumpfile(["--split", "-c", "-d", "0", input, ...split]);
        const stripped = split.map((f) => f.replace(".kdump", ".stripped"));
        for (const [i, f] of split.entries()) {
          const r = assertReport(
            await cli([
              "strip",
              f,
              stripped[i]!,
              "--split-set",
              split[1 - i]!,
              "--plugmap",
              d.plugmap,
              "--json",
            ]),
            "strip",
          );
          // Every file carries the set's 1st bitmap: each clears all unplugged pfns.
          assert.deepEqual(r.removed, d.unpluggedRanges, `strip of split file ${i + 1}`);
          const info = assertReport(await cli(["inspect", stripped[i]!, "--json"]), "inspect");
          assert.equal((info.subHeader as { split: boolean }).split, true);
        }
        outputs.push({ name: "split-set", files: stripped, gone: d.unpluggedRanges });
        const reassembled = `${dir}/reassembled.kdump`;
        await makedumpfile(["--reassemble", ...stripped, reassembled]);
        outputs.push({ name: "reassembled", files: [reassembled], gone: d.unpluggedRanges });

        // makedumpfile's flattened output of the same ELF (-F writes to stdout).
        const flat = `${dir}/flattened.kdump`;
        const f = await runTool("sh", [
          "-c",
          `makedumpfile -F -c -d 0 "$1" > "$2"`,
          "sh",
          input,
          flat,
        ], {
          timeoutMs: 300_000,
        });
        assert.equal(f.code, 0, f.stderr);
        const flatOut = `${dir}/flattened.stripped`;
        const fr = assertReport(
          await cli(["strip", flat, flatOut, "--plugmap", d.plugmap, "--json"]),
          "strip",
        );
        assert.equal((fr.input as { container: string }).container, "flattened");
        assert.equal(
          (fr.output as { container: string }).container,
          "raw",
          "flattened in, plain out",
        );
        outputs.push({ name: "flattened", files: [flatOut], gone: d.unpluggedRanges });

        // crash: the input, then every output (a split set as one dump).
        const [before, ...after] = await runCrashes(
          d.vmlinux,
          [
            { name: "in", dump: input },
            ...outputs.map((o) => ({ name: o.name, dump: o.files })),
          ],
          dir,
          probes,
        );
        assert.equal(before!.result.code, 0, before!.result.stderr);
        assert.match(before!.kmem, /TOTAL MEM/);
        outputs.forEach((o, i) => {
          const run = after[i]!;
          assert.equal(
            run.result.code,
            0,
            `crash on ${o.name}: ${run.result.stdout}${run.result.stderr}`,
          );
          assert.equal(
            sysWithoutDumpfiles(run.sys),
            sysWithoutDumpfiles(before!.sys),
            `sys on ${o.name}`,
          );
          assert.equal(run.kmem, before!.kmem, `kmem -i on ${o.name}`);
          for (const p of probes) {
            const text = run.rd.get(p.gpa)!;
            if (p.plugged && !within(p.gpa, o.gone)) {
              assert.deepEqual(rdBytes(text), p.expected, `${o.name}: rd -p ${hex(p.gpa)}`);
            } else assertReadError(text, p.gpa, o.name, "seek");
          }
        });

        // makedumpfile reads the kernel log of every single-file output.
        for (const o of outputs.filter((x) => x.files.length === 1)) {
          const dmesg = `${dir}/${o.name}.dmesg`;
          await makedumpfile(["--dump-dmesg", o.files[0]!, dmesg]);
          assert.match(Deno.readTextFileSync(dmesg), /Linux version 6\./, `dmesg of ${o.name}`);
        }

        // drgn: plugged bytes equal the input's, removed memory faults. libkdumpfile 0.5.1
        // cannot open QEMU's own kdump files (their utsname names only the machine:
        // "KDUMP_ATTR_ARCH_NAME: Key has no value"); strip keeps the header as it is, so
        // there the stripped (plain) file must fail in drgn for that reason too.
        for (const o of outputs.filter((x) => x.files.length === 1)) {
          if (o.source !== undefined) {
            const inputError = await drgnOpenError(o.source);
            if (inputError !== undefined) {
              // A flattened file libkdumpfile does not read at all; a plain one fails on utsname.
              assert.match(
                inputError,
                /KDUMP_ATTR_ARCH_NAME|not an ELF core file/,
                `drgn on QEMU's ${o.name}: ${inputError}`,
              );
              const outputError = (await drgnOpenError(o.files[0]!)) ?? "opened";
              assert.match(
                outputError,
                /KDUMP_ATTR_ARCH_NAME\): Key has no value/,
                `drgn on ${o.name}: ${outputError}`,
              );
              continue;
            }
          }
          const got = await drgnRead(o.files[0]!, probes.map((p) => p.gpa), PROBE_BYTES);
          probes.forEach((p, i) => {
            const want = p.plugged && !within(p.gpa, o.gone)
              ? p.expected.map((b) => b.toString(16).padStart(2, "0")).join("")
              : "fault";
            assert.equal(got[i], want, `drgn ${o.name} ${hex(p.gpa)}`);
          });
        }
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    },
  });
}
