/**
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
import { readFileBytes } from "../_util/files.ts";
import { type KernelDumps, kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
import { QEMU_VERSIONS } from "../_util/qemu.ts";
import { requireTool, runTool, toolAvailable, type ToolResult } from "../_util/tools.ts";
import { vmlinuxAvailable } from "../_util/vmlinux.ts";
import { firstNonZero } from "./_realdata.ts";

const CRASH_TIMEOUT_MS = 300_000;
const PROBE_BYTES = 16;

const hex = (n: number) => `0x${n.toString(16)}`;

/** One `rd -p -8 GPA 16` probe and what its bytes must be. */
interface Probe {
  gpa: number;
  plugged: boolean;
  /** The pmemsave image's bytes at `gpa`. */
  expected: number[];
}

/** Where to read: start, first non-zero line and last line of every plugged run; every EVIL write. */
async function probesFor(d: KernelDumps): Promise<Probe[]> {
  const gpas = new Map<number, boolean>();
  for (const r of d.pluggedRanges) {
    gpas.set(r.gpa, true);
    const nz = await firstNonZero(d.raw, r.gpa - d.device.gpa, r.byteLength);
    if (nz !== undefined) gpas.set(r.gpa + nz, true);
    gpas.set(r.gpa + r.byteLength - PROBE_BYTES, true);
  }
  assert.ok(d.evil.length >= 3, "the guest's EVIL writes");
  for (const w of d.evil) gpas.set(w.gpa, false);
  const probes: Probe[] = [];
  for (const [gpa, plugged] of [...gpas].sort((a, b) => a[0] - b[0])) {
    const expected = [...(await readFileBytes(d.raw, gpa - d.device.gpa, PROBE_BYTES))];
    if (!plugged) {
      assert.equal(
        new TextDecoder().decode(new Uint8Array(expected.slice(0, 5))),
        "EVIL-",
        `the pmemsave image holds an EVIL marker at ${hex(gpa)}`,
      );
    }
    probes.push({ gpa, plugged, expected });
  }
  assert.ok(probes.filter((p) => p.plugged).some((p) => p.expected.some((b) => b !== 0)));
  return probes;
}

/** What one crash session printed: each command's output file, and the diagnostics on stdout/stderr. */
interface CrashRun {
  result: ToolResult;
  sys: string;
  kmem: string;
  /** Output of `rd -p -8 GPA 16`, by gpa. */
  rd: Map<number, string>;
}

/**
 * Run crash once on `dump` with the command file: every command's output is
 * redirected to its own file (crash's `cmd > file`), so stdout keeps only
 * crash's own messages (warnings, errors; they go to both).
 */
async function runCrash(
  vmlinux: string,
  dump: string,
  outDir: string,
  probes: Probe[],
): Promise<CrashRun> {
  Deno.mkdirSync(outDir);
  const lines = [`sys > ${outDir}/sys.txt`, `kmem -i > ${outDir}/kmem.txt`];
  for (const p of probes) {
    lines.push(`rd -p -8 ${hex(p.gpa)} ${PROBE_BYTES} > ${outDir}/rd-${p.gpa.toString(16)}.txt`);
  }
  lines.push("exit");
  const cmdFile = `${outDir}.cmds`;
  Deno.writeTextFileSync(cmdFile, lines.join("\n") + "\n");
  const result = await runTool("crash", ["-s", vmlinux, dump, "-i", cmdFile], {
    timeoutMs: CRASH_TIMEOUT_MS,
  });
  const read = (name: string) => {
    try {
      return Deno.readTextFileSync(`${outDir}/${name}`);
    } catch {
      return "";
    }
  };
  const rd = new Map<number, string>();
  for (const p of probes) rd.set(p.gpa, read(`rd-${p.gpa.toString(16)}.txt`));
  return { result, sys: read("sys.txt"), kmem: read("kmem.txt"), rd };
}

/** The bytes of `rd -p -8` output lines ("       100000000:  00 11 ...   ascii"). */
function rdBytes(text: string): number[] {
  const bytes: number[] = [];
  for (const m of text.matchAll(/^\s*[0-9a-f]+:\s+((?:[0-9a-f]{2} )*[0-9a-f]{2})(?:\s{2}|$)/gm)) {
    bytes.push(...m[1]!.split(" ").map((b) => parseInt(b, 16)));
  }
  return bytes;
}

/** crash's own messages of a run (stdout and stderr lines), with the dump's name replaced. */
function diagnostics(run: CrashRun, dump: string): string[] {
  const base = dump.slice(dump.lastIndexOf("/") + 1);
  return `${run.result.stdout}\n${run.result.stderr}`
    .split("\n")
    .map((l) => l.trimEnd().replaceAll(dump, "DUMPFILE").replaceAll(base, "DUMPFILE"))
    .filter((l) => l !== "");
}

/**
 * `rd -p -8` of unplugged memory in a dump that leaves it out fails: crash
 * says "read error" for an ELF dump without a PT_LOAD there and "seek error"
 * for a kdump page whose bitmap bit is clear.
 */
function assertReadError(text: string, gpa: number, what: string, error = "read"): void {
  assert.match(
    text,
    new RegExp(`^rd: ${error} error: physical address: ${gpa.toString(16)}\\s`, "m"),
    `${what}, rd -p ${hex(gpa)} must fail`,
  );
  assert.doesNotMatch(text, /EVIL/, `${what}, rd -p ${hex(gpa)}`);
}

for (const qemu of QEMU_VERSIONS) {
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

      // The vmlinux must be the guest's kernel, or crash's verdict means nothing.
      assert.equal(d.vmcoreinfo.osrelease, abi, "the dump's VMCOREINFO names the guest kernel");
      const notes = await runTool("readelf", ["-nW", vmlinux]);
      assert.equal(notes.code, 0, notes.stderr);
      assert.equal(
        /Build ID: ([0-9a-f]+)/.exec(notes.stdout)?.[1],
        d.vmcoreinfo.buildId,
        `${vmlinux} is not the guest's kernel (build id differs from the dump's VMCOREINFO)`,
      );

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
