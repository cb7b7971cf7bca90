/**
 * The `utsname` a kdump header should carry, for dumps made from an ELF
 * core or a raw image (which have no such header).
 *
 * Readers rely on it: libkdumpfile (drgn) takes the architecture from
 * `utsname.machine`, but only when the whole structure looks like a real
 * one (`sysname` "Linux", non-empty `release`, `version` and `machine`);
 * otherwise drgn fails with "KDUMP_ATTR_ARCH_NAME: Key has no value". So we
 * read what makedumpfile reads: the kernel's own `init_uts_ns.name`, found
 * through VMCOREINFO (`SYMBOL(init_uts_ns)`, `OFFSET(uts_namespace.name)`)
 * and translated to a physical address through the kernel text mapping
 * (x86_64: `vaddr - __START_KERNEL_map + phys_base`). When that is not
 * possible (another architecture, the page is not in the dump, the bytes do
 * not look like a utsname of the release VMCOREINFO names), the header gets
 * `sysname` "Linux", the VMCOREINFO release, the ELF machine and the
 * `version` "unknown", and the report says so.
 *
 * @module
 */

import { EM_386, EM_AARCH64, EM_X86_64 } from "../elf/constants.ts";
import { type ElfCore, planGpaRange } from "../elf/reader.ts";
import { decodeUtsname, type KdumpUtsname, UTSNAME_BYTE_LENGTH } from "../kdump/header.ts";

/** `__START_KERNEL_map` of x86_64: where the kernel image is mapped. */
const X86_64_START_KERNEL_MAP = 0xffff_ffff_8000_0000n;

/** The `version` written when the kernel's own could not be read. */
export const UNKNOWN_UTS_VERSION = "unknown";

/** A utsname for a kdump header and where it came from. */
export interface KernelUtsname {
  /** The six strings. */
  utsname: KdumpUtsname;
  /**
   * `kernel`: read from `init_uts_ns` in the dumped memory; `derived`:
   * release from VMCOREINFO, machine from the ELF header, version
   * {@linkcode UNKNOWN_UTS_VERSION}.
   */
  source: "kernel" | "derived";
}

/**
 * The `uname -m` name of an ELF machine.
 *
 * @param machine `e_machine`.
 * @returns `x86_64`, `i686`, `aarch64`, or `machine-<n>`.
 *
 * @example
 * ```ts
 * import { elfMachineName } from "@vmem-dump/vmem-dump/dumps";
 * console.log(elfMachineName(62)); // x86_64
 * ```
 */
export function elfMachineName(machine: number): string {
  if (machine === EM_X86_64) return "x86_64";
  if (machine === EM_386) return "i686";
  if (machine === EM_AARCH64) return "aarch64";
  return `machine-${machine}`;
}

/**
 * The dumped kernel's utsname: read from its memory when the dump allows,
 * else derived (see the module notes).
 *
 * @param core The ELF core (or a raw image seen as one).
 * @param vmcoreinfo Its VMCOREINFO keys (empty when it has none).
 * @returns The utsname and its source.
 *
 * @example
 * ```ts ignore
 * import { parseVmcoreinfo, readElfCore } from "@vmem-dump/vmem-dump/elf";
 * import { kernelUtsname } from "@vmem-dump/vmem-dump/dumps";
 * using core = await readElfCore("guest.elf");
 * const note = core.notes.find((n) => n.kind === "vmcoreinfo")!;
 * console.log((await kernelUtsname(core, parseVmcoreinfo(note.desc))).utsname.version);
 * ```
 */
export async function kernelUtsname(
  core: ElfCore,
  vmcoreinfo: ReadonlyMap<string, string>,
): Promise<KernelUtsname> {
  const release = vmcoreinfo.get("OSRELEASE") ?? "";
  const machine = elfMachineName(core.ehdr.machine);
  const read = await readKernelUtsname(core, vmcoreinfo);
  if (
    read !== undefined && read.sysname === "Linux" && read.version !== "" &&
    read.machine !== "" && (release === "" || read.release === release)
  ) return { utsname: read, source: "kernel" };
  return {
    utsname: {
      sysname: "Linux",
      nodename: "",
      release,
      version: UNKNOWN_UTS_VERSION,
      machine,
      domainname: "",
    },
    source: "derived",
  };
}

/** `init_uts_ns.name` from memory, or undefined when it cannot be located or read. */
async function readKernelUtsname(
  core: ElfCore,
  info: ReadonlyMap<string, string>,
): Promise<KdumpUtsname | undefined> {
  if (core.ehdr.machine !== EM_X86_64) return undefined;
  const symbol = hexNumber(info.get("SYMBOL(init_uts_ns)"));
  const offset = decimalNumber(info.get("OFFSET(uts_namespace.name)"));
  const physBase = decimalNumber(info.get("NUMBER(phys_base)") ?? "0");
  if (symbol === undefined || offset === undefined || physBase === undefined) return undefined;
  const vaddr = symbol + offset;
  if (vaddr < X86_64_START_KERNEL_MAP) return undefined;
  const paddr = vaddr - X86_64_START_KERNEL_MAP + physBase;
  if (paddr < 0n || paddr > BigInt(Number.MAX_SAFE_INTEGER - UTSNAME_BYTE_LENGTH)) {
    return undefined;
  }
  const gpa = Number(paddr);
  const bytes = new Uint8Array(UTSNAME_BYTE_LENGTH);
  for (const piece of planGpaRange(core, { gpa, byteLength: bytes.byteLength })) {
    if (piece.kind === "absent") return undefined;
    if (piece.kind !== "data") continue; // a zero-fill tail reads as zeros
    const into = bytes.subarray(piece.gpa - gpa, piece.gpa - gpa + piece.byteLength);
    if (await core.reader.readInto(piece.fileOffset, into) !== piece.byteLength) return undefined;
  }
  return decodeUtsname(bytes);
}

function hexNumber(text: string | undefined): bigint | undefined {
  return text !== undefined && /^[0-9a-f]{1,16}$/i.test(text) ? BigInt(`0x${text}`) : undefined;
}

function decimalNumber(text: string | undefined): bigint | undefined {
  return text !== undefined && /^-?[0-9]{1,20}$/.test(text) ? BigInt(text) : undefined;
}
