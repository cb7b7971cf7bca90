/** Shared measuring helpers for the benchmark scripts. */

/** Wall seconds of a shell command (bash -c). */
export async function timeShell(command: string): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command("bash", {
    args: ["-c", command],
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${command} failed`);
  return (performance.now() - t0) / 1000;
}

/** What a child measured about itself. */
export interface ChildResult {
  /** Bytes processed. */
  bytes: number;
  /** Seconds of work. */
  seconds: number;
  /** Peak RSS (VmHWM) in KiB. */
  peakRssKiB: number;
}

/** Run `deno run -A ARGS > stdoutPath` and parse the JSON line it prints on stderr. */
export async function runChild(args: string[], stdoutPath: string): Promise<ChildResult> {
  const deno = Deno.execPath();
  const quoted = [deno, "run", "-A", ...args].map((a) => `'${a}'`).join(" ");
  const out = await new Deno.Command("bash", {
    args: ["-c", `${quoted} | cat > '${stdoutPath}'`],
    stdout: "null",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`child failed: ${text}`);
  const line = text.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (!line) throw new Error(`child printed no result: ${text}`);
  return JSON.parse(line) as ChildResult;
}

/** `ours / baseline` as a throughput ratio, from times. */
export function ratio(baselineSeconds: number, ourSeconds: number): string {
  return (baselineSeconds / ourSeconds).toFixed(2) + "×";
}

/** Print a fixed-width table. */
export function printTable(header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const w = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  for (const r of cells) console.log(r.map((c, i) => c.padEnd(w[i]!)).join("  "));
}

/** What one run of a measured pipeline cost. */
export interface Measured {
  /** Wall seconds. */
  wall: number;
  /** CPU seconds (user + system) of every process of the pipeline. */
  cpu: number;
  /** Peak RSS of the vmem-dump process in MiB (NaN for a baseline). */
  rssMiB: number;
}

/** Quote for bash. */
export const shellQuote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

/** The median of some numbers. */
export const median = (xs: number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Run `pipeline(vmem)` in bash, where `vmem` runs the CLI `main` (under
 * /usr/bin/time for its peak RSS), and time it with bash's `time`:
 * millisecond wall and CPU figures, the children's CPU included. The CPU
 * time is the steadier figure on a loaded machine, which stretches wall
 * times unevenly (`cat` spends its time in the kernel and suffers less from
 * waiting for a core).
 *
 * @param pipeline The shell pipeline, given how to run the CLI.
 * @param main The CLI's `cli/main.ts`.
 * @param okCodes Exit codes that mean success.
 * @returns Wall, CPU and peak RSS.
 */
export async function measurePipeline(
  pipeline: (vmem: string) => string,
  main: string,
  okCodes: number[] = [0],
): Promise<Measured> {
  const q = shellQuote;
  const rssFile = await Deno.makeTempFile();
  const timeFile = await Deno.makeTempFile();
  try {
    const vmem = `/usr/bin/time -f %M -o ${q(rssFile)} ${q(Deno.execPath())} run -A ${q(main)}`;
    const script = `set -o pipefail; TIMEFORMAT='%3R %3U %3S'; ` +
      `{ time { ${pipeline(vmem)}; } 2>&3; } 3>&2 2>${q(timeFile)}`;
    const out = await new Deno.Command("bash", {
      args: ["-c", script],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!okCodes.includes(out.code)) {
      throw new Error(
        `${pipeline("vmem-dump")} exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    const [wall, user, sys] = (await Deno.readTextFile(timeFile)).trim().split("\n").pop()!
      .split(" ").map(Number) as [number, number, number];
    const rss = (await Deno.readTextFile(rssFile)).trim();
    return {
      wall,
      cpu: user + sys,
      rssMiB: rss === "" ? NaN : Number(rss.split("\n").pop()) / 1024,
    };
  } finally {
    await Deno.remove(rssFile);
    await Deno.remove(timeFile);
  }
}
