/**
 * The committed fixtures of `testdata/tiny/`: what QEMU 7.2 and 10.0 wrote
 * for one tiny VM in every format (stream, ELF, kdump flattened and plain,
 * raw region, mapped-ram), see testdata/README.md. They are stored with
 * zstd; this hands them out decompressed.
 *
 * @module
 */

import { zstdDecompressSync } from "node:zlib";

const TINY = new URL("../../testdata/tiny/", import.meta.url);

/** The tiny VM's virtio-mem region (16 MiB of 2 MiB blocks; blocks 0, 4 and 5 plugged). */
export const TINY_REGION = { gpa: 0x1_0000_0000, byteLength: 16 << 20 };

/**
 * A committed tiny fixture, decompressed.
 *
 * @param name The file name without `.zst` (`q72-tiny.kdump`, `q10-tiny.mig`, …).
 * @returns Its bytes.
 * @example
 * ```ts ignore
 * const elf = await tinyFixture("q10-tiny.elf");
 * ```
 */
export async function tinyFixture(name: string): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(zstdDecompressSync(await Deno.readFile(new URL(`${name}.zst`, TINY))));
}
