/**
 * Real dumps of a Linux guest made in the test, from the kernel installed on
 * this machine, for every test that needs the guest's debug symbols (`crash`,
 * drgn, makedumpfile with a vmlinux): the debug vmlinux of that kernel is the
 * one Debian serves while it is current (`vmlinux.ts`,
 * `scripts/fetch-vmlinux-dbg.sh`), so these tests never depend on a package
 * version the archive may drop. Tests that need no debug symbols keep using
 * the shared fixtures (`realdata.ts`).
 *
 * What {@linkcode kernelDumps} hands out, once per QEMU build and installed
 * kernel (built on first use, about a minute under TCG, then cached in
 * `.cache/kernel-dumps/` under the cross-process lock of `lock.ts`):
 *
 * - the guest: the Linux test guest (`linux_guest.ts`) booted with
 *   `-device vmcoreinfo` (its initramfs loads `qemu_fw_cfg`, which publishes
 *   the kernel's VMCOREINFO), one virtio-mem device of 128 blocks of 2 MiB at
 *   GPA 0x100000000 (the shared fixtures' small profile);
 * - the state of the fixtures' s3: plug 200 MiB, fill 48 MiB of pattern data,
 *   offline Linux memory block 0, shrink to 100 MiB (Linux leaves holes), VM
 *   stopped; EVIL pages written through the gdbstub into unplugged blocks:
 *   two before the migration (`EVIL-PRE`), two while it waits before
 *   switchover (`EVIL-MIG`, so they travel in the stream);
 * - the files (read-only: copy one before changing it):
 *   - `migration`: the migration stream (`exec:cat`), EVIL-MIG pages inside;
 *   - `elf`: QEMU's `dump-guest-memory` ELF dump (no paging) with the
 *     VMCOREINFO note; QEMU >= 6.2 leaves unplugged memory out;
 *   - `kdump`: every kdump format the build writes, by QMP format name
 *     (Debian's 7.2: `kdump-zlib`; 10.0: `kdump-zlib` (flattened) and
 *     `kdump-raw-zlib` (plain); LZO and Snappy when a build has them);
 *   - `raw`: `pmemsave` of the whole virtio-mem region, EVIL pages included
 *     (with `elf`, `writeWholeRegionElf()` in `elf_builder.ts` gives the dump
 *     a QEMU < 6.2 or a /proc/vmcore copy would hold);
 *   - `plugmap`: the plug map, JSON version 1 (`--plugmap FILE`);
 * - the facts: the plug bitmap and its ranges, taken from QEMU's own ELF
 *   dump (its PT_LOADs over the device region: QEMU's view, independent of
 *   `src/`) and checked against the device's plugged size; the EVIL writes;
 *   the VMCOREINFO `OSRELEASE` and `BUILD-ID`; the kernel; the QEMU version;
 * - `vmlinux`: the debug vmlinux of that kernel (reading it throws, failing
 *   the test, when it is missing; gate the test with `vmlinuxAvailable()`).
 *
 * Deleting `.cache/kernel-dumps/` forces a rebuild; a new kernel or QEMU
 * build, or a change of {@linkcode KERNEL_DUMPS_RECIPE}, gets a new folder.
 *
 * @example
 * ```ts ignore
 * import { kernelDumps, kernelDumpsAvailable } from "../_util/kernel_dumps.ts";
 * import { vmlinuxAvailable } from "../_util/vmlinux.ts";
 * for (const qemu of ["7.2", "10"] as const) {
 *   Deno.test({
 *     name: `crash opens QEMU ${qemu}'s kdump-zlib`,
 *     ignore: !kernelDumpsAvailable(qemu) || !vmlinuxAvailable(),
 *     fn: async () => {
 *       const d = await kernelDumps(qemu);
 *       // crash -s d.vmlinux d.kdump["kdump-zlib"]; strip d.elf --plugmap d.plugmap; …
 *     },
 *   });
 * }
 * ```
 *
 * @module
 */

import { readPhdrsIndependently } from "./elf_builder.ts";
import { readFileBytes } from "./files.ts";
import { evilPage } from "./guest.ts";
import { type GpaRange, readElfLoads } from "./guest_memory.ts";
import type { LinuxGuest } from "./linux_guest.ts";
import { existsSync, withCacheLock } from "./lock.ts";
import { qemuAvailable, type QemuGuest, startLinuxGuest } from "./qemu.ts";
import { qemuBinary, type QemuVersion } from "./qemu_binary.ts";
import { sha256Hex } from "./hashing.ts";
import { type GuestKernel, installedGuestKernel, requireVmlinux } from "./vmlinux.ts";

/** Bump when the recipe below changes what the dumps hold (old folders are then ignored). */
export const KERNEL_DUMPS_RECIPE = 1;

const MiB = 1 << 20;
const PAGE = 4096;
const CACHE_ROOT = decodeURIComponent(
  new URL("../../.cache/kernel-dumps/", import.meta.url).pathname,
);
const COMPLETE = ".complete";
const MANIFEST = "manifest.json";

/** The recipe's sizes: the shared fixtures' `--small` profile (`make-fixtures.sh`). */
const PLUG_FIRST = 200 * MiB;
const FILL_MIB = 48;
const OFFLINE_LINUX_BLOCK = 0;
const PLUG_SECOND = 100 * MiB;

/** One page written into an unplugged block through the gdbstub. */
export interface EvilWrite {
  /** Guest-physical address of the 4096-byte page. */
  gpa: number;
  /** Device block it lies in. */
  block: number;
  /** `"EVIL-PRE"` (before the migration) or `"EVIL-MIG"` (at pre-switchover). */
  marker: "EVIL-PRE" | "EVIL-MIG";
}

/** What the dumps' VMCOREINFO note says (the fields tests check). */
export interface VmcoreinfoFacts {
  /** `OSRELEASE`: the kernel release, equal to the installed kernel's ABI. */
  osrelease: string;
  /** `BUILD-ID`: equals the debug vmlinux's GNU build id. */
  buildId: string;
  /** `PAGESIZE`. */
  pageSize: number;
}

/** The virtio-mem device of the dumps. */
export interface KernelDumpsDevice {
  /** Guest-physical base. */
  gpa: number;
  /** Region size in bytes. */
  byteLength: number;
  /** Device block size in bytes. */
  blockBytes: number;
  /** Plugged bytes (`query-memory-devices`). */
  pluggedBytes: number;
  /** PCI path of the device (the `P` of its migration section names), e.g. `"0000:00:01.0"`. */
  pciPath: string;
}

/** The dumps of one QEMU build (see the module documentation). */
export interface KernelDumps {
  /** QEMU build. */
  qemu: QemuVersion;
  /** QEMU's version string (QMP greeting `package`, or major.minor.micro). */
  qemuVersion: string;
  /** Machine type the VM ran (`pc-q35-7.2`, `pc-q35-10.0`). */
  machine: string;
  /** The guest kernel (the one installed on this machine). */
  kernel: GuestKernel;
  /** The dumps' VMCOREINFO. */
  vmcoreinfo: VmcoreinfoFacts;
  /** The folder holding the files (read-only; shared between tests and processes). */
  dir: string;
  /** The migration stream. */
  migration: string;
  /** QEMU's ELF dump. */
  elf: string;
  /** QEMU's kdump-compressed dumps by QMP format name (e.g. `kdump-zlib`, `kdump-raw-zlib`). */
  kdump: Readonly<Record<string, string>>;
  /** `pmemsave` of the whole device region (unplugged blocks and EVIL pages included). */
  raw: string;
  /** The plug map as JSON version 1. */
  plugmap: string;
  /** The device. */
  device: KernelDumpsDevice;
  /** Plug bitmap by device block (1 = plugged). */
  plugged: Uint8Array;
  /** Plugged gpa ranges, ascending. */
  pluggedRanges: GpaRange[];
  /** Unplugged gpa ranges, ascending. */
  unpluggedRanges: GpaRange[];
  /** The pages written into unplugged blocks. */
  evil: EvilWrite[];
  /** The debug vmlinux of `kernel`. Reading it throws (failing the test) with the reason when missing. */
  readonly vmlinux: string;
}

/** The manifest written next to the files (everything but the derived ranges). */
interface Manifest {
  recipe: number;
  qemu: QemuVersion;
  qemuVersion: string;
  machine: string;
  kernel: GuestKernel;
  vmcoreinfo: VmcoreinfoFacts;
  device: KernelDumpsDevice;
  plugged: [number, number][];
  evil: EvilWrite[];
  kdumpFormats: string[];
  /** File name → size, checked when the folder is reused. */
  files: Record<string, number>;
}

/**
 * Whether tests with {@linkcode kernelDumps} can run (synchronous, for
 * `ignore:`): QEMU `qemu` and the Linux test guest are there. In CI always
 * `true`, so a missing piece fails the test.
 *
 * @param qemu QEMU build.
 * @returns Whether the dumps can be made.
 * @example
 * ```ts ignore
 * Deno.test({ name: "…", ignore: !kernelDumpsAvailable("10"), fn: async () => {} });
 * ```
 */
export function kernelDumpsAvailable(qemu: QemuVersion): boolean {
  return qemuAvailable(qemu, "linux");
}

/**
 * VMCOREINFO of an ELF dump, read without `src/` (ELF64 little-endian).
 *
 * @param elfPath An ELF core dump.
 * @returns `OSRELEASE`, `BUILD-ID` and `PAGESIZE`, or `undefined` when there is no VMCOREINFO note.
 * @example
 * ```ts ignore
 * const info = await readVmcoreinfo(dumps.elf); // { osrelease: "6.1.0-57-amd64", … }
 * ```
 */
export async function readVmcoreinfo(elfPath: string): Promise<VmcoreinfoFacts | undefined> {
  let text = "";
  for (const note of (await readPhdrsIndependently(elfPath)).filter((p) => p.type === 4)) {
    text += new TextDecoder("latin1").decode(
      await readFileBytes(elfPath, note.offset, note.filesz),
    );
  }
  const osrelease = /(?:^|[\n\0])OSRELEASE=(\S+)/.exec(text)?.[1];
  const buildId = /(?:^|[\n\0])BUILD-ID=([0-9a-f]+)/.exec(text)?.[1];
  const pageSize = /(?:^|[\n\0])PAGESIZE=(\d+)/.exec(text)?.[1];
  if (osrelease === undefined || buildId === undefined || pageSize === undefined) return undefined;
  return { osrelease, buildId, pageSize: Number(pageSize) };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function runsOf(bits: Uint8Array): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < bits.length; i++) {
    if (bits[i] !== 1) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

/** Plug bitmap from the PT_LOADs of QEMU's ELF dump over the device region. */
async function plugStateFromElf(elf: string, device: KernelDumpsDevice): Promise<Uint8Array> {
  const blocks = device.byteLength / device.blockBytes;
  const covered = new Float64Array(blocks);
  const end = device.gpa + device.byteLength;
  for (const l of await readElfLoads(elf)) {
    const lo = Math.max(l.gpa, device.gpa);
    const hi = Math.min(l.gpa + l.memByteLength, end);
    if (lo >= hi) continue;
    if (l.fileByteLength !== l.memByteLength) {
      throw new Error(`${elf}: PT_LOAD at 0x${l.gpa.toString(16)} has filesz != memsz`);
    }
    const first = Math.floor((lo - device.gpa) / device.blockBytes);
    for (let b = first; b * device.blockBytes < hi - device.gpa; b++) {
      const bLo = device.gpa + b * device.blockBytes;
      covered[b] = covered[b]! + Math.min(hi, bLo + device.blockBytes) - Math.max(lo, bLo);
    }
  }
  const bits = new Uint8Array(blocks);
  for (let b = 0; b < blocks; b++) {
    if (covered[b] === device.blockBytes) bits[b] = 1;
    else if (covered[b] !== 0) {
      throw new Error(`${elf}: device block ${b} is only partly in the dump (${covered[b]} bytes)`);
    }
  }
  const plugged = bits.reduce((a, b) => a + b, 0) * device.blockBytes;
  if (plugged !== device.pluggedBytes) {
    throw new Error(
      `${elf} holds ${plugged} bytes of the device, QEMU reports ${device.pluggedBytes} plugged`,
    );
  }
  return bits;
}

/** Where to write: like the fixtures' s3, in holes between plugged blocks and at the end. */
function chooseEvil(bits: Uint8Array, device: KernelDumpsDevice): EvilWrite[] {
  const unplugged: number[] = [];
  bits.forEach((b, i) => b === 0 && unplugged.push(i));
  const lastPlugged = bits.lastIndexOf(1);
  const holes = unplugged.filter((i) => i < lastPlugged);
  if (holes.length === 0 || unplugged.length < 2) {
    throw new Error(
      `the guest left no hole between plugged blocks: ${JSON.stringify(runsOf(bits))}`,
    );
  }
  const at = (block: number, offset: number, marker: EvilWrite["marker"]): EvilWrite => ({
    gpa: device.gpa + block * device.blockBytes + offset,
    block,
    marker,
  });
  const last = unplugged[unplugged.length - 1]!;
  const writes = [
    at(holes[0]!, 0, "EVIL-PRE"),
    at(last, device.blockBytes - PAGE, "EVIL-PRE"),
    at(holes[Math.floor(holes.length / 2)]!, 0x1000, "EVIL-MIG"),
    at(unplugged[Math.floor(unplugged.length / 2)]!, 0x1000, "EVIL-MIG"),
  ];
  const gpas = new Set(writes.map((w) => w.gpa));
  return gpas.size === writes.length ? writes : writes.slice(0, 3);
}

async function pciPathOf(vm: QemuGuest): Promise<string> {
  type Dev = {
    bus: number;
    slot: number;
    function: number;
    id: { vendor: number; device: number };
    qdev_id?: string;
  };
  const buses = await vm.qmp<{ bus: number; devices: Dev[] }[]>("query-pci");
  for (const bus of buses) {
    for (const d of bus.devices) {
      if (d.qdev_id === "vmem0" || (d.id.vendor === 0x1af4 && d.id.device === 0x1058)) {
        const h = (n: number, w: number) => n.toString(16).padStart(w, "0");
        return `0000:${h(d.bus, 2)}:${h(d.slot, 2)}.${d.function}`;
      }
    }
  }
  throw new Error("query-pci lists no virtio-mem device");
}

/** Boot, plug, write, migrate and dump into `dir` (empty); returns the manifest. */
async function build(qemu: QemuVersion, kernel: GuestKernel, dir: string): Promise<Manifest> {
  await using vm: QemuGuest<LinuxGuest> = await startLinuxGuest({ qemu, vmcoreinfo: true });
  const fwCfg = await vm.guest.command("run ls /sys/firmware/qemu_fw_cfg/by_name/etc/vmcoreinfo", {
    allowFailure: true,
  });
  if (fwCfg.rc !== 0) {
    throw new Error(`the guest publishes no VMCOREINFO (qemu_fw_cfg): ${fwCfg.lines.join(" ")}`);
  }
  await vm.guest.plugTo(PLUG_FIRST);
  await vm.guest.fill(FILL_MIB);
  await vm.guest.offlineBlock(OFFLINE_LINUX_BLOCK);
  await vm.guest.plugTo(PLUG_SECOND);
  await vm.pause();

  const info = await vm.vmem();
  const device: KernelDumpsDevice = {
    gpa: info.memaddr,
    byteLength: info["max-size"],
    blockBytes: info["block-size"],
    pluggedBytes: info.size,
    pciPath: await pciPathOf(vm),
  };
  const file = (name: string) => `${dir}/${name}`;
  // The plug state as QEMU's own dump shows it, before anything is written.
  await vm.dumpGuestMemory(file("probe.elf"));
  const bits = await plugStateFromElf(file("probe.elf"), device);
  await Deno.remove(file("probe.elf"));

  const evil = chooseEvil(bits, device);
  for (const w of evil.filter((w) => w.marker === "EVIL-PRE")) {
    await vm.gdbWritePhys(w.gpa, evilPage(w.marker, w.gpa));
  }
  await vm.migrateToFile(file("guest.mig"), {
    onPreSwitchover: async (v) => {
      for (const w of evil.filter((w) => w.marker === "EVIL-MIG")) {
        await v.gdbWritePhys(w.gpa, evilPage(w.marker, w.gpa));
      }
    },
  });

  await vm.dumpGuestMemory(file("guest.elf"));
  const again = await plugStateFromElf(file("guest.elf"), device);
  if (!sameBytes(again, bits)) throw new Error("the plug state changed while dumping");
  const vmcoreinfo = await readVmcoreinfo(file("guest.elf"));
  if (!vmcoreinfo) throw new Error("QEMU's ELF dump has no VMCOREINFO (OSRELEASE, BUILD-ID)");
  if (vmcoreinfo.osrelease !== kernel.abi) {
    throw new Error(`the guest ran ${vmcoreinfo.osrelease}, the installed kernel is ${kernel.abi}`);
  }
  const kdumpFormats = (await vm.dumpFormats()).filter((f) => f.startsWith("kdump-"));
  if (!kdumpFormats.includes("kdump-zlib")) throw new Error(`QEMU ${qemu} writes no kdump-zlib`);
  for (const f of kdumpFormats) await vm.dumpGuestMemory(file(`guest.${f}`), { format: f });
  await vm.pmemsave(device.gpa, device.byteLength, file("vmem0.raw"));
  for (const w of evil) {
    const page = await readFileBytes(file("vmem0.raw"), w.gpa - device.gpa, PAGE);
    if (!sameBytes(page, evilPage(w.marker, w.gpa))) {
      throw new Error(`the pmemsave image lacks the ${w.marker} page at 0x${w.gpa.toString(16)}`);
    }
  }

  const plugmap = {
    version: 1,
    devices: [{
      path: device.pciPath,
      ramblock: `${device.pciPath}/vmem0mem`,
      memaddr: device.gpa,
      "region-size": device.byteLength,
      "block-size": device.blockBytes,
      node: info.node,
      "usable-region-size": null,
      size: device.pluggedBytes,
      "requested-size": info["requested-size"],
      plugged: runsOf(bits),
    }],
  };
  Deno.writeTextFileSync(file("plugmap.json"), JSON.stringify(plugmap, null, 1) + "\n");

  const greeting = vm.qmpClient.greeting.QMP as {
    version?: { package?: string; qemu?: { major: number; minor: number; micro: number } };
  };
  const v = greeting.version;
  const machine = (await vm.qmp<{ name: string; alias?: string }[]>("query-machines"))
    .find((m) => m.alias === "q35")?.name ?? "q35";
  const files: Record<string, number> = {};
  for (const e of Deno.readDirSync(dir)) files[e.name] = Deno.statSync(file(e.name)).size;
  return {
    recipe: KERNEL_DUMPS_RECIPE,
    qemu,
    qemuVersion: v?.qemu
      ? `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}${v.package ?? ""}`
      : "?",
    machine,
    kernel,
    vmcoreinfo,
    device,
    plugged: runsOf(bits),
    evil,
    kdumpFormats,
    files,
  };
}

function folderComplete(dir: string): boolean {
  if (!existsSync(`${dir}/${COMPLETE}`)) return false;
  try {
    const m: Manifest = JSON.parse(Deno.readTextFileSync(`${dir}/${MANIFEST}`));
    return Object.entries(m.files).every(([name, size]) =>
      Deno.statSync(`${dir}/${name}`).size === size
    );
  } catch {
    return false;
  }
}

async function cacheKey(qemu: QemuVersion, kernel: GuestKernel): Promise<string> {
  const bin = await qemuBinary(qemu);
  const st = Deno.statSync(bin.path);
  const id = JSON.stringify([KERNEL_DUMPS_RECIPE, bin.path, st.size, st.mtime?.getTime(), kernel]);
  return `${qemu}-${kernel.abi}-${sha256Hex(new TextEncoder().encode(id)).slice(0, 12)}`;
}

function handOut(dir: string, m: Manifest): KernelDumps {
  const bits = new Uint8Array(m.device.byteLength / m.device.blockBytes);
  for (const [first, count] of m.plugged) bits.fill(1, first, first + count);
  const ranges = (value: number): GpaRange[] => {
    const out: GpaRange[] = [];
    for (let b = 0; b < bits.length; b++) {
      if (bits[b] !== value) continue;
      const gpa = m.device.gpa + b * m.device.blockBytes;
      const last = out[out.length - 1];
      if (last && last.gpa + last.byteLength === gpa) last.byteLength += m.device.blockBytes;
      else out.push({ gpa, byteLength: m.device.blockBytes });
    }
    return out;
  };
  const kdump: Record<string, string> = {};
  for (const f of m.kdumpFormats) kdump[f] = `${dir}/guest.${f}`;
  return {
    qemu: m.qemu,
    qemuVersion: m.qemuVersion,
    machine: m.machine,
    kernel: m.kernel,
    vmcoreinfo: m.vmcoreinfo,
    dir,
    migration: `${dir}/guest.mig`,
    elf: `${dir}/guest.elf`,
    kdump,
    raw: `${dir}/vmem0.raw`,
    plugmap: `${dir}/plugmap.json`,
    device: m.device,
    plugged: bits,
    pluggedRanges: ranges(1),
    unpluggedRanges: ranges(0),
    evil: m.evil,
    get vmlinux(): string {
      return requireVmlinux();
    },
  };
}

const inProcess = new Map<QemuVersion, Promise<KernelDumps>>();

/**
 * The dumps of a Linux guest with VMCOREINFO and unplugged memory, made by
 * QEMU `qemu` from the installed kernel (see the module documentation).
 * Built once per QEMU build and kernel, shared by every test and process.
 *
 * @param qemu QEMU build.
 * @returns Paths and facts. The files are read-only.
 * @throws {Error} When the guest or QEMU does not cooperate (logs attached), or the lock wait times out.
 * @example
 * ```ts ignore
 * const d = await kernelDumps("10");
 * console.log(d.kdump["kdump-raw-zlib"], d.plugmap, d.evil.map((w) => w.gpa));
 * ```
 */
export function kernelDumps(qemu: QemuVersion): Promise<KernelDumps> {
  let p = inProcess.get(qemu);
  if (!p) {
    p = kernelDumpsUncached(qemu);
    p.catch(() => inProcess.delete(qemu));
    inProcess.set(qemu, p);
  }
  return p;
}

async function kernelDumpsUncached(qemu: QemuVersion): Promise<KernelDumps> {
  const kernel = installedGuestKernel();
  const dir = `${CACHE_ROOT}${await cacheKey(qemu, kernel)}`;
  if (!folderComplete(dir)) {
    Deno.mkdirSync(CACHE_ROOT, { recursive: true });
    await withCacheLock(`${dir}.lock`, () => folderComplete(dir), async () => {
      const tmp = `${dir}.tmp-${Deno.pid}`;
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
      Deno.mkdirSync(tmp);
      try {
        const manifest = await build(qemu, kernel, tmp);
        Deno.writeTextFileSync(`${tmp}/${MANIFEST}`, JSON.stringify(manifest, null, 1) + "\n");
        for (const e of Deno.readDirSync(tmp)) Deno.chmodSync(`${tmp}/${e.name}`, 0o444);
        Deno.writeTextFileSync(`${tmp}/${COMPLETE}`, "");
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        Deno.renameSync(tmp, dir);
      } catch (e) {
        await Deno.remove(tmp, { recursive: true }).catch(() => {});
        throw e;
      }
    });
  }
  const manifest: Manifest = JSON.parse(Deno.readTextFileSync(`${dir}/${MANIFEST}`));
  return handOut(dir, manifest);
}
