/**
 * Raw guest-physical memory images (QEMU `pmemsave`, memory-backend file
 * copies): zero the unplugged virtio-mem blocks of an image. To turn an
 * image into an ELF core with only the plugged parts, use
 * `elfFromRawImage` from `@vmem-dump/vmem-dump/elf`.
 *
 * @example Zero the unplugged blocks of a pmemsave image
 * ```ts ignore
 * import { zeroRawImage } from "@vmem-dump/vmem-dump/raw";
 * await zeroRawImage("vmem0.raw", "vmem0.clean.raw", {
 *   baseGpa: 0x100000000,
 *   exclude: [{ gpa: 0x101c00000, byteLength: 0x6400000 }],
 * });
 * ```
 *
 * @module
 */

export {
  type ZeroedRange,
  zeroRawImage,
  type ZeroRawImageOptions,
  type ZeroRawImageReport,
} from "./zero.ts";
export type { GpaRange } from "../vmem/ranges.ts";
export type { ChunkSink, CopyStep, PositionalReader } from "../io/positional.ts";

// Types that the exports above name, from other folders (so that their documentation is complete).
export type { FileIdentity } from "../io/file.ts";
// END-TYPES
