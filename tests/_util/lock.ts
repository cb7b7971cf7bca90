/**
 * A cross-process lock for build-once caches under `<repo>/.cache/`: parallel
 * test files (workers or processes) must not unpack or build the same thing
 * twice.
 *
 * @module
 */

/** Options for {@linkcode withCacheLock}. */
export interface CacheLockOptions {
  /** Give up waiting for another holder after this long. @default {900000} */
  waitMs?: number;
  /** A lock older than this is taken over even if its owner looks alive. @default {1800000} */
  staleMs?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Run `build` while holding the lock directory `lockDir` (created with an
 * atomic `mkdir`). If `isDone()` turns true while waiting (someone else built
 * it), returns without running `build`. A lock whose owner process is gone is
 * removed.
 *
 * @param lockDir Lock directory path (its parent must exist).
 * @param isDone Cheap check whether the product already exists.
 * @param build Produces the product; runs at most once per lock holder.
 * @param options Wait and staleness limits.
 * @returns Whether this call ran `build`.
 * @throws {Error} When waiting exceeds `waitMs`, or what `build` throws.
 * @example
 * ```ts ignore
 * await withCacheLock(`${dir}.lock`, () => existsSync(`${dir}/.complete`), async () => {
 *   // build into a temp dir, write the marker, rename
 * });
 * ```
 */
export async function withCacheLock(
  lockDir: string,
  isDone: () => boolean,
  build: () => Promise<void>,
  options: CacheLockOptions = {},
): Promise<boolean> {
  const deadline = Date.now() + (options.waitMs ?? 15 * 60_000);
  const staleMs = options.staleMs ?? 30 * 60_000;
  for (;;) {
    if (isDone()) return false;
    try {
      Deno.mkdirSync(lockDir);
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    try {
      const st = Deno.statSync(lockDir);
      let owner = NaN;
      try {
        owner = Number.parseInt(Deno.readTextFileSync(`${lockDir}/owner`), 10);
      } catch { /* owner not written yet */ }
      const age = Date.now() - (st.mtime?.getTime() ?? Date.now());
      const ownerGone = Number.isFinite(owner) && owner !== Deno.pid && !pidAlive(owner);
      if (ownerGone || age > staleMs) {
        Deno.removeSync(lockDir, { recursive: true });
        continue;
      }
    } catch { /* vanished meanwhile: retry */ }
    if (Date.now() > deadline) throw new Error(`Timed out waiting for the lock ${lockDir}`);
    await sleep(200);
  }
  try {
    Deno.writeTextFileSync(`${lockDir}/owner`, `${Deno.pid}\n`);
    if (isDone()) return false;
    await build();
    return true;
  } finally {
    try {
      Deno.removeSync(lockDir, { recursive: true });
    } catch { /* already gone */ }
  }
}

/**
 * Whether a path exists (any kind).
 *
 * @param path Path to check.
 * @returns `true` if `stat` succeeds.
 * @example
 * ```ts
 * import { existsSync } from "./lock.ts";
 * existsSync("/");
 * ```
 */
export function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
