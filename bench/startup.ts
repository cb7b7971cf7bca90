/**
 * Start-up of every command (issue 12 §2): each command run as users run it
 * (`bin/vmem-dump`, with its permissions) on a small input — the 168 KB
 * testdata stream, a 4 MiB raw image — against `deno run` of an empty
 * script, in the same run, interleaved, median of 7. A command's fixed cost
 * is its median minus the empty script's; the target is at most 50 ms.
 * CPU time (user + system of the child, from bash's `times`) is printed
 * beside the wall time: on a busy machine it says what is ours.
 *
 *   deno run -A bench/startup.ts [--rounds N] [--check]
 *
 * `--check` exits 1 when a command misses the target (the machine must be
 * quiet for that to mean something; the table is printed either way).
 */

import { printTable } from "./_measure.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");
const LAUNCHER = `${ROOT}/bin/vmem-dump`;
const TARGET_MS = 50;

const args = Deno.args;
const roundsAt = args.indexOf("--rounds");
const ROUNDS = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 7;
const CHECK = args.includes("--check");

const dir = await Deno.makeTempDir({ prefix: "vmem-bench-startup-" });
try {
  // Inputs: the testdata stream (late layout, QEMU 7.2), its plug map, a raw image of its region.
  const stream = `${dir}/s.mig`;
  await Deno.copyFile(`${ROOT}/testdata/migration/q72-qboot-unplugged.mig`, stream);
  await Deno.writeTextFile(`${dir}/empty.ts`, "");
  const map = `${dir}/map.json`;
  const pm = await new Deno.Command("sh", { args: [LAUNCHER, "plugmap", stream] }).output();
  if (!pm.success) throw new Error(`plugmap failed: ${new TextDecoder().decode(pm.stderr)}`);
  await Deno.writeFile(map, pm.stdout);
  const image = `${dir}/img.raw`;
  await Deno.writeFile(image, new Uint8Array(4 << 20));

  const commands: Record<string, string[]> = {
    "--version": ["--version"],
    inspect: ["inspect", stream],
    plugmap: ["plugmap", stream],
    verify: ["verify", stream],
    filter: ["filter", stream, `${dir}/f.mig`, "--force"],
    scan: ["scan", stream],
    strip: ["strip", image, `${dir}/s.elf`, "--base", "4G", "--plugmap", map, "--force"],
    convert: ["convert", stream, `${dir}/c.mig`, "--to", "raw", "--force"],
    "proxy --help": ["proxy", "--help"],
  };
  const runs: Record<string, { program: string; args: string[] }> = {
    "empty script": { program: Deno.execPath(), args: ["run", "--no-prompt", `${dir}/empty.ts`] },
  };
  for (const [name, a] of Object.entries(commands)) {
    runs[name] = { program: "sh", args: [LAUNCHER, ...a] };
  }

  const times: Record<string, number[]> = {};
  const cpu: Record<string, number[]> = {};
  for (const name of Object.keys(runs)) {
    times[name] = [];
    cpu[name] = [];
  }
  // bash runs the child and prints its CPU time (`times`, second line: children's user and system).
  const script = '"$@" >/dev/null 2>"$ERR" || exit $?; times';
  const seconds = (t: string) => {
    const m = /^(\d+)m([\d.]+)s$/.exec(t);
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  };
  const warm = async (name: string) => {
    const r = runs[name]!;
    const t0 = performance.now();
    const out = await new Deno.Command("bash", {
      args: ["-c", script, "bash", r.program, ...r.args],
      cwd: dir,
      env: { ERR: `${dir}/stderr.txt` },
      stdout: "piped",
      stderr: "null",
    }).output();
    const ms = performance.now() - t0;
    if (out.code !== 0) {
      const err = await Deno.readTextFile(`${dir}/stderr.txt`).catch(() => "");
      throw new Error(`${name} exited ${out.code}: ${err}`);
    }
    const children = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!.split(/\s+/);
    return { ms, cpuMs: (seconds(children[0]!) + seconds(children[1]!)) * 1000 };
  };
  // One untimed round fills Deno's caches (transpiled modules, V8 code cache).
  for (const name of Object.keys(runs)) await warm(name);
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, in an order that rotates, so that load on the machine spreads over all.
    const names = Object.keys(runs);
    const order = names.map((_, i) => names[(i + round) % names.length]!);
    for (const name of order) {
      const { ms, cpuMs } = await warm(name);
      times[name]!.push(ms);
      cpu[name]!.push(cpuMs);
    }
  }
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor((s.length - 1) / 2)]!;
  };
  const empty = median(times["empty script"]!);
  const emptyCpu = median(cpu["empty script"]!);
  let missed = 0;
  const rows = Object.keys(runs).map((name) => {
    const m = median(times[name]!);
    const c = median(cpu[name]!);
    const fixed = m - empty;
    const ok = name === "empty script" || fixed <= TARGET_MS;
    if (!ok) missed++;
    return [
      name,
      `${m.toFixed(0)} ms`,
      name === "empty script" ? "" : `${fixed >= 0 ? "+" : ""}${fixed.toFixed(0)} ms`,
      name === "empty script" ? "baseline" : ok ? "ok" : `over ${TARGET_MS} ms`,
      `${c.toFixed(0)} ms`,
      name === "empty script"
        ? ""
        : `${c - emptyCpu >= 0 ? "+" : ""}${(c - emptyCpu).toFixed(0)} ms`,
    ];
  });
  console.log(
    `start-up, median of ${ROUNDS} (interleaved), as users run it (bin/vmem-dump); ` +
      `target: fixed cost within ${TARGET_MS} ms of the empty script`,
  );
  printTable(["run", "median", "fixed cost", "target", "cpu", "cpu over empty"], rows);
  const load = await Deno.readTextFile("/proc/loadavg").catch(() => "");
  if (load) console.log(`load average: ${load.split(" ").slice(0, 3).join(" ")}`);
  if (CHECK && missed > 0) Deno.exitCode = 1;
} finally {
  await Deno.remove(dir, { recursive: true });
}
