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
import { readPhdrsIndependently, writeWholeRegionElf } from "../_util/elf_builder.ts";
import { realdata, realdataAvailable, realdataFacts } from "../_util/realdata.ts";
import { requireTool, runTool, toolAvailable, type ToolResult } from "../_util/tools.ts";
import { fixtureGuestKernel, requireVmlinux, vmlinuxAvailable } from "../_util/vmlinux.ts";
import { readFileBytes } from "./_helpers.ts";
import { firstNonZero, pluggedRanges, REGION, unpluggedRanges } from "./_realdata.ts";

const SCENARIO = "s3-malicious";
const CLI_MAIN = decodeURIComponent(new URL("../../cli/main.ts", import.meta.url).pathname);
const CRASH_TIMEOUT_MS = 300_000;
const PROBE_BYTES = 16;

const hex = (n: number) => `0x${n.toString(16)}`;

/** `OSRELEASE` and `BUILD-ID` from the VMCOREINFO note of a real dump, read without src/. */
async function vmcoreinfoOf(elfPath: string): Promise<{ osrelease?: string; buildId?: string }> {
  const note = (await readPhdrsIndependently(elfPath)).find((p) => p.type === 4);
  assert.ok(note, `${elfPath} has no PT_NOTE`);
  const text = new TextDecoder("latin1").decode(
    await readFileBytes(elfPath, note.offset, note.filesz),
  );
  const osrelease = /(?:^|[\n\0])OSRELEASE=(\S+)/.exec(text)?.[1];
  const buildId = /(?:^|[\n\0])BUILD-ID=([0-9a-f]+)/.exec(text)?.[1];
  return { ...(osrelease ? { osrelease } : {}), ...(buildId ? { buildId } : {}) };
}

/** One `rd -p -8 GPA 16` probe and what its bytes must be. */
interface Probe {
  gpa: number;
  plugged: boolean;
  /** The pmemsave image's bytes at `gpa`. */
  expected: number[];
}

/** Where to read: start, first non-zero line and last line of every plugged run; every EVIL write. */
async function probesFor(raw: string): Promise<Probe[]> {
  const gpas = new Map<number, boolean>();
  for (const r of pluggedRanges(SCENARIO)) {
    gpas.set(r.gpa, true);
    const nz = await firstNonZero(raw, r.gpa - REGION.gpa, r.byteLength);
    if (nz !== undefined) gpas.set(r.gpa + nz, true);
    gpas.set(r.gpa + r.byteLength - PROBE_BYTES, true);
  }
  const manifest = realdataFacts("out-small").manifest;
  const evil: Array<{ gpa: number; marker: string }> = [
    ...manifest.malicious_writes.pre_migration,
    ...manifest.malicious_writes.during_migration,
  ];
  assert.ok(evil.length >= 2, "the manifest lists the guest's EVIL writes");
  const unplugged = unpluggedRanges(SCENARIO);
  for (const w of evil) {
    assert.ok(
      unplugged.some((u) => u.gpa <= w.gpa && w.gpa < u.gpa + u.byteLength),
      `EVIL write at ${hex(w.gpa)} is in an unplugged block`,
    );
    gpas.set(w.gpa, false);
  }
  // The addresses of the brief must be among them.
  for (const must of [0x1_0000_0000, 0x1_0800_0000]) assert.equal(gpas.get(must), true);
  for (const must of [0x1_04e0_1000, 0x1_01c0_0000]) assert.equal(gpas.get(must), false);

  const probes: Probe[] = [];
  for (const [gpa, plugged] of [...gpas].sort((a, b) => a[0] - b[0])) {
    const expected = [...(await readFileBytes(raw, gpa - REGION.gpa, PROBE_BYTES))];
    if (!plugged) {
      assert.equal(
        new TextDecoder().decode(new Uint8Array(expected.slice(0, 5))),
        "EVIL-",
        `the pmemsave image holds an EVIL marker at ${hex(gpa)}`,
      );
    }
    probes.push({ gpa, plugged, expected });
  }
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
