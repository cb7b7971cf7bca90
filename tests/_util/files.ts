/**
 * File helpers for tests that read fixtures independently of `src/`.
 *
 * @module
 */

/**
 * Read `byteLength` bytes at `fileOffset` with plain Deno file reads
 * (independent of src/); fewer at the end of the file.
 *
 * @param path File path.
 * @param fileOffset Where to start.
 * @param byteLength How many bytes to read at most.
 * @returns The bytes read.
 * @example
 * ```ts ignore
 * const magic = await readFileBytes("s1.mig", 0, 4);
 * ```
 */
export async function readFileBytes(
  path: string,
  fileOffset: number,
  byteLength: number,
): Promise<Uint8Array<ArrayBuffer>> {
  using f = await Deno.open(path);
  await f.seek(fileOffset, Deno.SeekMode.Start);
  const out = new Uint8Array(byteLength);
  let got = 0;
  while (got < byteLength) {
    const n = await f.read(out.subarray(got));
    if (n === null) break;
    got += n;
  }
  return out.subarray(0, got);
}

/**
 * Write `text` to a fresh temporary file, run `fn` on its path, remove it.
 *
 * @param text File contents.
 * @param fn Gets the path.
 * @returns What `fn` returns.
 * @example
 * ```ts ignore
 * await withTempFile("0x100000000-0x101c00000\n", (plugMapFile) => loadPlugState({ plugMapFile }));
 * ```
 */
export async function withTempFile<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(path, text);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

/**
 * Whether a file contains the bytes of `needle` (small files only).
 *
 * @param path The file.
 * @param needle ASCII text.
 * @returns Whether it occurs.
 */
export async function fileContains(path: string, needle: string): Promise<boolean> {
  const hay = await Deno.readFile(path);
  const n = new TextEncoder().encode(needle);
  for (let i = hay.indexOf(n[0]!); i >= 0; i = hay.indexOf(n[0]!, i + 1)) {
    let ok = true;
    for (let j = 1; j < n.length && ok; j++) ok = hay[i + j] === n[j];
    if (ok) return true;
  }
  return false;
}
