/**
 * A small, full-able file system for ENOSPC tests: a tmpfs mounted in a
 * private mount namespace (`unshare`), so nothing outside the test sees it.
 *
 * @module
 */

/**
 * Run `sh -c SCRIPT` in a private mount namespace with a small tmpfs (256 KiB) at
 * `$MNT` (root: `unshare --mount`; otherwise a user namespace). Returns
 * `undefined` when no namespace can be made here.
 */
export async function inSmallTmpfs(
  mnt: string,
  script: string,
  env: Record<string, string>,
  sizeKiB = 256,
): Promise<{ code: number; out: string; err: string } | undefined> {
  const body = `mount -t tmpfs -o size=${sizeKiB}k vmem-enospc "$MNT" || exit 97; ${script}`;
  const tries = [
    ["--mount", "--propagation", "private"],
    ["--user", "--map-root-user", "--mount", "--propagation", "private"],
  ];
  for (const flags of tries) {
    const out = await new Deno.Command("unshare", {
      args: [...flags, "sh", "-c", body],
      env: { ...env, MNT: mnt },
      stdout: "piped",
      stderr: "piped",
    }).output().catch(() => undefined);
    if (
      out === undefined || out.code === 97 || (out.code === 1 && out.stderr.length > 0 &&
        /unshare:/.test(new TextDecoder().decode(out.stderr)))
    ) continue;
    const dec = new TextDecoder();
    return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
  }
  return undefined;
}
