/**
 * System tools for differential and real-QEMU tests (qemu-system-x86_64,
 * readelf, gdb, crash, makedumpfile, zstd …).
 *
 * Policy: outside CI a missing tool skips the test with a loud message; in CI
 * (`CI=true`) a test is never skipped, and {@linkcode requireTool} throws, so
 * the test fails.
 *
 * @example
 * ```ts ignore
 * import { requireTool, toolAvailable } from "./tools.ts";
 * Deno.test({
 *   name: "rewriteElf() output passes readelf -lW",
 *   ignore: !toolAvailable("readelf"),
 *   fn: async () => {
 *     const readelf = requireTool("readelf");
 *     // new Deno.Command(readelf, { args: ["-lW", path] }) …
 *   },
 * });
 * ```
 *
 * @module
 */

const SEARCH_PATH_FALLBACK = [
  "/usr/local/sbin",
  "/usr/local/bin",
  "/usr/sbin",
  "/usr/bin",
  "/sbin",
  "/bin",
];

const found = new Map<string, string | undefined>();
const warned = new Set<string>();

/**
 * An environment variable, or `undefined` when unset or when env access is
 * not permitted.
 *
 * @param name Variable name.
 * @returns Its value.
 */
export function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Whether the tests run in CI (`CI=true` or `CI=1`): then nothing is skipped. */
export function inCi(): boolean {
  const v = envGet("CI");
  return v === "true" || v === "1";
}

function isExecutableFile(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && st.mode !== null && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Find an executable on `PATH` (plus the usual system folders), or
 * `undefined`. Absolute paths are checked as given. Results are cached.
 *
 * @param name Tool name, e.g. `"readelf"`, or an absolute path.
 * @returns The absolute path, or `undefined`.
 * @example
 * ```ts
 * import { findTool } from "./tools.ts";
 * console.log(findTool("sh"));
 * ```
 */
export function findTool(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  let result: string | undefined;
  if (name.includes("/")) {
    result = isExecutableFile(name) ? name : undefined;
  } else {
    const dirs = [...(envGet("PATH") ?? "").split(":").filter(Boolean), ...SEARCH_PATH_FALLBACK];
    for (const dir of dirs) {
      if (isExecutableFile(`${dir}/${name}`)) {
        result = `${dir}/${name}`;
        break;
      }
    }
  }
  found.set(name, result);
  return result;
}

/**
 * Synchronous check for `Deno.test({ ignore: !toolAvailable(...) })`.
 * Outside CI: `false` (and a loud warning once) when a tool is missing.
 * In CI: always `true`, so the test runs and {@linkcode requireTool} fails it.
 *
 * @param names One or more tool names.
 * @returns Whether the test may run.
 * @example
 * ```ts
 * import { toolAvailable } from "./tools.ts";
 * const ok = toolAvailable("readelf", "gdb");
 * ```
 */
export function toolAvailable(...names: string[]): boolean {
  if (inCi()) return true;
  const missing = names.filter((n) => findTool(n) === undefined);
  for (const n of missing) {
    if (!warned.has(n)) {
      warned.add(n);
      console.warn(
        `\n!!! SKIPPING tests that need \`${n}\`: not installed (in CI they would FAIL; ` +
          `see .ci/run for the packages)\n`,
      );
    }
  }
  return missing.length === 0;
}

/**
 * Path of a required tool. Throws (failing the test) when it is missing;
 * call it inside the test body, after gating the test with
 * {@linkcode toolAvailable}.
 *
 * @param name Tool name, e.g. `"qemu-system-x86_64"`.
 * @returns The absolute path.
 * @throws {Error} When the tool is not installed.
 * @example
 * ```ts
 * import { requireTool } from "./tools.ts";
 * const sh = requireTool("sh");
 * ```
 */
export function requireTool(name: string): string {
  const path = findTool(name);
  if (path === undefined) {
    throw new Error(
      `Required tool \`${name}\` is not installed` +
        (inCi() ? " (CI must not skip: install it in .ci/run)" : ""),
    );
  }
  return path;
}

/** Result of {@linkcode runTool}. */
export interface ToolResult {
  /** Exit code. */
  code: number;
  /** Whether the exit code was 0. */
  success: boolean;
  /** Standard output as text. */
  stdout: string;
  /** Standard error as text. */
  stderr: string;
}

/** Options for {@linkcode runTool}. */
export interface RunToolOptions {
  /** Kill the tool after this many milliseconds. @default {60000} */
  timeoutMs?: number;
  /** Extra environment variables. @default {{}} */
  env?: Record<string, string>;
  /** Text fed to standard input; otherwise stdin is closed. @default {undefined} */
  stdin?: string;
  /** Working directory. @default {undefined} (inherited) */
  cwd?: string;
}

/**
 * Run a required tool and capture its output, with a timeout. Does not throw
 * on a non-zero exit code; throws if the tool is missing or times out.
 *
 * @param name Tool name.
 * @param args Arguments.
 * @param options Timeout, environment, stdin.
 * @returns Exit code and decoded output.
 * @throws {Error} When the tool is missing or exceeds the timeout.
 * @example
 * ```ts ignore
 * const r = await runTool("readelf", ["-lW", "dump.elf"]);
 * ```
 */
export async function runTool(
  name: string,
  args: string[],
  options: RunToolOptions = {},
): Promise<ToolResult> {
  const path = requireTool(name);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const child = new Deno.Command(path, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }, timeoutMs);
  try {
    if (options.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(options.stdin));
      await w.close();
    }
    const out = await child.output();
    if (timedOut) throw new Error(`${name} ${args.join(" ")} timed out after ${timeoutMs} ms`);
    const dec = new TextDecoder();
    return {
      code: out.code,
      success: out.success,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}
