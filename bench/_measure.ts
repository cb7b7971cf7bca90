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
