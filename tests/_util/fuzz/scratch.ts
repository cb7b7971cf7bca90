/**
 * Scratch folders of the mutation campaign: on tmpfs (`/dev/shm`) when there
 * is one, since every case writes its input and the commands' outputs (and
 * atomic outputs sync their data before the rename).
 *
 * @module
 */

/**
 * Make a private scratch folder.
 *
 * @param prefix Name prefix.
 * @returns Its path.
 * @throws {Error} when no folder can be made.
 */
export async function makeScratchDir(prefix: string): Promise<string> {
  for (const dir of ["/dev/shm", undefined]) {
    try {
      return await Deno.makeTempDir({ prefix, ...(dir ? { dir } : {}) });
    } catch { /* next */ }
  }
  throw new Error("cannot create a scratch folder for the campaign");
}
