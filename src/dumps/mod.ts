/**
 * Dump rewrites across formats: ELF ↔ kdump conversion, strip of either
 * format, raw images as ELF, and the provenance note every rewrite leaves.
 *
 * @example Convert QEMU's ELF dump to kdump-zstd without unplugged memory
 * ```ts ignore
 * import { convertDump } from "@vmem-dump/vmem-dump/dumps";
 * const report = await convertDump("guest.elf", "guest.kdump", { to: "kdump", codec: "zstd", plugMap });
 * console.log(report.kdump?.byteLength, report.removed);
 * ```
 *
 * @module
 */

export * from "./detect.ts";
export * from "./provenance.ts";
export * from "./kdump_output.ts";
export * from "./elf_to_kdump.ts";
export * from "./kernel_utsname.ts";
export * from "./kdump_to_elf.ts";
export * from "./raw_as_elf.ts";
export * from "./rewrite.ts";
