/**
 * ELF constants used by guest memory dumps, with their C names so they grep
 * against elf(5), glibc `elf.h` and QEMU `include/elf.h`.
 *
 * @module
 */

/** `\x7fELF`, the 4 magic bytes at offset 0 (`ELFMAG`). */
export const ELFMAG: Uint8Array<ArrayBuffer> = new Uint8Array([0x7f, 0x45, 0x4c, 0x46]);

/** e_ident index of the file class. */
export const EI_CLASS = 4;
/** e_ident index of the data encoding (byte order). */
export const EI_DATA = 5;
/** e_ident index of the ELF header version. */
export const EI_VERSION = 6;
/** e_ident index of the OS ABI. */
export const EI_OSABI = 7;
/** Size of e_ident. */
export const EI_NIDENT = 16;

/** 32-bit objects. */
export const ELFCLASS32 = 1;
/** 64-bit objects. */
export const ELFCLASS64 = 2;
/** Little-endian (2's complement). */
export const ELFDATA2LSB = 1;
/** Big-endian (2's complement). */
export const ELFDATA2MSB = 2;
/** The only ELF version. */
export const EV_CURRENT = 1;

/** Core file. */
export const ET_CORE = 4;

/** Intel 80386. */
export const EM_386 = 3;
/** AMD x86-64. */
export const EM_X86_64 = 62;
/** ARM 64-bit. */
export const EM_AARCH64 = 183;

/** Unused program header entry. */
export const PT_NULL = 0;
/** Loadable segment (guest memory in a dump). */
export const PT_LOAD = 1;
/** Note segment. */
export const PT_NOTE = 4;
/** e_phnum value meaning "the real count is in section header 0's sh_info". */
export const PN_XNUM = 0xffff;

/** Execute permission. */
export const PF_X = 1;
/** Write permission. */
export const PF_W = 2;
/** Read permission. */
export const PF_R = 4;

/** Section header type: inactive. */
export const SHT_NULL = 0;
/** Section header type: string table. */
export const SHT_STRTAB = 3;
/** Undefined section index. */
export const SHN_UNDEF = 0;
/** First reserved section index. */
export const SHN_LORESERVE = 0xff00;
/** e_shstrndx escape: the real index is in section header 0's sh_link. */
export const SHN_XINDEX = 0xffff;

/** Note type of a "CORE" note with the CPU registers (`struct elf_prstatus`). */
export const NT_PRSTATUS = 1;
/** Note type of a "CORE" note with FPU registers. */
export const NT_PRFPREG = 2;
/** Note type of a "CORE" note with process info. */
export const NT_PRPSINFO = 3;
/** Note type of a "CORE" note with the task struct. */
export const NT_TASKSTRUCT = 4;
/** Note type of the "VMCOREINFO" note (and of QEMU's "QEMU" CPU-state note). */
export const NT_VMCOREINFO = 0;
/** Note type of a "LINUX" device dump note in /proc/vmcore. */
export const NT_VMCOREDD = 0x700;

/** Size of Elf64_Ehdr. */
export const EHDR64_SIZE = 64;
/** Size of Elf32_Ehdr. */
export const EHDR32_SIZE = 52;
/** Size of Elf64_Phdr. */
export const PHDR64_SIZE = 56;
/** Size of Elf32_Phdr. */
export const PHDR32_SIZE = 32;
/** Size of Elf64_Shdr. */
export const SHDR64_SIZE = 64;
/** Size of Elf32_Shdr. */
export const SHDR32_SIZE = 40;
/** Size of Elf32_Nhdr and Elf64_Nhdr (both use 32-bit fields). */
export const NHDR_SIZE = 12;

/** u64 all ones: QEMU's p_offset for paging-mode PT_LOADs without file data. */
export const U64_ALL_ONES = 0xffff_ffff_ffff_ffffn;
