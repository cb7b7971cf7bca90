/**
 * Import a module on demand, out of sight of Deno's module graph. Deno reads
 * and hashes every module a literal `import("…")` names when the program
 * starts, loaded or not (20 ms and more for a command's worth of modules), so
 * the CLI names the modules it loads on demand through this one function.
 * Type-check with `typeof import("…")` at the call site: a type-only
 * reference, which `deno check` follows and `deno run` does not load.
 *
 * `deno compile` cannot see these imports: its task includes `cli/` and
 * `src/` explicitly.
 *
 * @module
 */

/**
 * Import `specifier`, resolved against `base` (the caller's `import.meta.url`).
 *
 * @param specifier A relative module path.
 * @param base The importing module's URL.
 * @returns The module.
 */
export function lazyImport<T>(specifier: string, base: string): Promise<T> {
  const url = new URL(specifier, base).href;
  return import(url) as Promise<T>;
}
