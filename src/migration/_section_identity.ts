/**
 * Which savevm entry QEMU's loader gives a section idstr to
 * (migration/savevm.c `find_se`, reached from
 * `qemu_loadvm_section_start_full`), and the idstrs for which that is not
 * what the bytes say. Private to the decoder.
 *
 * QEMU reads the idstr as a counted string and then compares it as a C
 * string, so it ends at the first NUL byte: `ram\0x` is the `ram` section to
 * the loader. And an entry registered with a device path also answers to its
 * vmstate name alone (its "compat" entry, kept for streams of QEMU versions
 * before device paths): a section `virtio-mem` loads the plug state of a
 * virtio-mem device whose path the stream does not name. QEMU never writes
 * either form (idstrs are C strings; a device with a path is always saved
 * under it), and both were proven with real QEMU 7.2 and 10.0 to load RAM
 * or plug state behind a name that looked harmless
 * (`tests/migration/redteam_idstr_test.ts`).
 *
 * @module
 */

import {
  RAM_SECTION_IDSTR,
  VIRTIO_MEM_DEVICE_SUFFIX,
  VIRTIO_MEM_EARLY_SUFFIX,
} from "./constants.ts";

/** What a section loads, as QEMU's loader resolves its idstr. */
export type SectionRole = "ram" | "virtio-mem-device" | "virtio-mem-early" | "other";

/** Vmstate name of the virtio-mem device section (its compat idstr). */
const VIRTIO_MEM_DEVICE_VMSD = VIRTIO_MEM_DEVICE_SUFFIX.slice(1);
/** Vmstate name of the early virtio-mem section (its compat idstr). */
const VIRTIO_MEM_EARLY_VMSD = VIRTIO_MEM_EARLY_SUFFIX.slice(1);

/** The idstr as QEMU's loader compares it: up to its first NUL byte. */
function loaderIdstr(idstr: string): string {
  const nul = idstr.indexOf("\0");
  return nul < 0 ? idstr : idstr.slice(0, nul);
}

/**
 * What a section with this idstr loads, as QEMU resolves it (C string,
 * compat names included).
 *
 * @param idstr The idstr bytes as latin1.
 * @returns `ram`, a virtio-mem plug-state section, or `other`.
 */
export function sectionRole(idstr: string): SectionRole {
  const name = loaderIdstr(idstr);
  if (name === RAM_SECTION_IDSTR) return "ram";
  if (name.endsWith(VIRTIO_MEM_DEVICE_SUFFIX) || name === VIRTIO_MEM_DEVICE_VMSD) {
    return "virtio-mem-device";
  }
  if (name.endsWith(VIRTIO_MEM_EARLY_SUFFIX) || name === VIRTIO_MEM_EARLY_VMSD) {
    return "virtio-mem-early";
  }
  return "other";
}

/**
 * Why QEMU's loader would not read this idstr (of a section or a RAMBlock;
 * `qemu_ram_block_by_name` compares C strings too) as its bytes say, when it
 * holds a NUL byte; `undefined` otherwise.
 *
 * @param idstr The idstr bytes as latin1.
 * @returns A clause for an error message ("contains …"), or `undefined`.
 */
export function nulMisreading(idstr: string): string | undefined {
  const name = loaderIdstr(idstr);
  return name === idstr ? undefined : "contains a NUL byte: QEMU's loader reads it only up to " +
    `there, as ${JSON.stringify(name)} (QEMU never writes one)`;
}

/**
 * Why QEMU's loader would not read this section idstr as its bytes say, or
 * `undefined` when it reads it as written: a NUL byte (the loader stops
 * there), or a virtio-mem vmstate name without a device path (the loader
 * gives it to one of its virtio-mem devices, by instance id).
 *
 * @param idstr The idstr bytes as latin1.
 * @returns A clause for an error message ("contains …", "is …"), or `undefined`.
 */
export function idstrMisreading(idstr: string): string | undefined {
  const nul = nulMisreading(idstr);
  if (nul !== undefined) return nul;
  if (idstr === VIRTIO_MEM_DEVICE_VMSD || idstr === VIRTIO_MEM_EARLY_VMSD) {
    return "is a virtio-mem vmstate name without a device path: QEMU's loader gives it to one " +
      "of its virtio-mem devices (by instance id), so which device's plug state it sets is " +
      "unknown (QEMU always writes the device path)";
  }
  return undefined;
}
