/**
 * A raw image of guest-physical memory (QEMU `pmemsave`) seen as an ELF
 * core with one PT_LOAD: ELF headers in memory in front of the image file,
 * so every ELF consumer (conversion, scan) works on it unchanged.
 *
 * @module
 */

import { EI_NIDENT, ELFMAG, EM_X86_64, ET_CORE, PF_R, PF_W, PF_X } from "../elf/constants.ts";
import type { ElfHeader } from "../elf/ehdr.ts";
import { planElfCore } from "../elf/writer.ts";
import { openPositional, type PositionalReader } from "../io/positional.ts";

/**
 * Open a raw image as a virtual ELF core (little-endian ELF64, x86_64).
 *
 * @param path The image.
 * @param baseGpa Guest-physical address of its first byte.
 * @returns A reader of the virtual ELF file; closing it closes the image.
 *
 * @example
 * ```ts ignore
 * import { readElfCore } from "@vmem-dump/vmem-dump/elf";
 * import { rawImageAsElf } from "@vmem-dump/vmem-dump/dumps";
 * using core = await readElfCore(await rawImageAsElf("vmem0.raw", 0x100000000));
 * ```
 */
export async function rawImageAsElf(
  path: string,
  baseGpa: number,
): Promise<PositionalReader & Disposable> {
  const image = await openPositional(path);
  const ident = new Uint8Array(EI_NIDENT);
  ident.set(ELFMAG);
  ident.set([2, 1, 1], 4);
  const template: ElfHeader = {
    elfClass: 64,
    littleEndian: true,
    ident,
    type: ET_CORE,
    machine: EM_X86_64,
    version: 1,
    entry: 0n,
    phdrFileOffset: 0,
    shdrFileOffset: 0,
    flags: 0,
    ehdrByteLength: 0,
    phdrEntrySize: 0,
    phdrCount: 0,
    shdrEntrySize: 0,
    shdrCount: 0,
    shstrIndex: 0,
  };
  const plan = planElfCore(template, new Uint8Array(0), [{
    paddr: BigInt(baseGpa),
    vaddr: BigInt(baseGpa),
    flags: PF_R | PF_W | PF_X,
    align: 0n,
    memByteLength: image.byteLength,
    fileByteLength: image.byteLength,
    inputFileOffset: 0,
  }], { pageAlign: 0 });
  const headers = plan.headers;
  const h = headers.byteLength;
  return {
    byteLength: h + image.byteLength,
    async readInto(fileOffset, into) {
      let done = 0;
      if (fileOffset < h) {
        const part = headers.subarray(fileOffset, Math.min(h, fileOffset + into.byteLength));
        into.set(part);
        done = part.byteLength;
      }
      if (done < into.byteLength) {
        done += await image.readInto(fileOffset + done - h, into.subarray(done));
      }
      return done;
    },
    close: () => image.close(),
    [Symbol.dispose]: () => image.close(),
  };
}
