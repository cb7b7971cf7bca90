/**
 * The Linux test guest for real-QEMU tests: a Debian kernel plus a tiny
 * initramfs (busybox-static, the virtio-mem modules, a pattern file and an
 * `init` that serves a line protocol on the second serial port, ttyS1).
 *
 * Protocol: the host sends one line `COMMAND [ARGS]`; the guest answers with
 * zero or more output lines and then `DONE COMMAND rc=N`. Commands:
 *
 * | command | effect |
 * |---|---|
 * | `ping` | nothing (liveness) |
 * | `info [TAG]` | meminfo, memory blocks of the device, iomem, virtio_mem dmesg |
 * | `fill MIB [NAME]` | write MIB MiB of pattern data to tmpfs file `/fill/NAME` (movable memory, so mostly hot-plugged virtio-mem memory) |
 * | `drop [NAME]` | delete a fill file (its pages are zeroed: `init_on_free=1`) |
 * | `offline IDX` / `online IDX` | Linux memory block IDX counted from the device start |
 * | `blocks` | state and zones of the device's Linux memory blocks |
 * | `run SHELL-COMMAND` | run a shell command (output returned) |
 * | `poweroff` | power off |
 *
 * The guest prints `VMEM-GUEST: READY` on ttyS0 when the protocol is up.
 * The host side (the `LinuxGuest` driver) is in `linux_guest.ts`; the
 * protocol client in `guest_driver.ts`.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { existsSync, withCacheLock } from "./lock.ts";
import { requireTool } from "./tools.ts";

export { GUEST_READY_MARKER, GuestChannel, type GuestReply } from "./guest_driver.ts";

const REPO_ROOT = new URL("../../", import.meta.url);
const GUEST_CACHE = decodeURIComponent(new URL(".cache/guest/", REPO_ROOT).pathname);

/** Guest kernel command line (`linuxGuestSpec()` in `linux_guest.ts` appends its extra arguments). */
export const GUEST_KERNEL_CMDLINE: string = "console=ttyS0 memhp_default_state=online_movable " +
  "init_on_free=1 nokaslr mitigations=off panic=-1 quiet cryptomgr.notests no_timer_check";

/** Modules loaded by the guest, in load order (dependencies first). */
export const GUEST_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_pci_legacy_dev",
  "virtio_pci_modern_dev",
  "virtio_pci",
  "virtio_mem",
  "qemu_fw_cfg",
] as const;

// `@{` stands for the shell's `${` (which a template literal would interpolate)
const INIT_SCRIPT = String.raw`#!/bin/busybox sh
# vmem-dump test guest (tests/_util/guest.ts): line protocol on ttyS1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=1024m tmpfs /fill
say() { echo "VMEM-GUEST: $*"; }
say "init started"
while read -r m; do
    insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done < /lib/modules/load.order

# guest-physical start of the virtio-mem device (hex, no 0x)
vmem_base() {
    sed -n 's/^ *\([0-9a-f]*\)-[0-9a-f]* : virtio[0-9]*$/\1/p' /proc/iomem | head -n 1
}
block_bytes() { echo $((0x$(cat /sys/devices/system/memory/block_size_bytes))); }
block_no() { echo $((0x$(vmem_base) / $(block_bytes) + $1)); }

show_blocks() {
    b=$(vmem_base)
    [ -n "$b" ] || { echo "no virtio-mem device"; return 1; }
    bs=$(block_bytes)
    first=$((0x$b / bs))
    for d in /sys/devices/system/memory/memory*; do
        n=@{d##*memory}
        [ "$n" -ge "$first" ] || continue
        echo "block $((n - first)) memory$n phys=0x$(printf %x $((n * bs))) state=$(cat $d/state) zones=$(cat $d/valid_zones)"
    done
}

show_info() {
    echo "info @{1:-}"
    grep -E 'MemTotal|MemFree|MemAvailable|Shmem:' /proc/meminfo
    echo "virtio-mem base 0x$(vmem_base), memory block size $(block_bytes)"
    show_blocks
    grep -E 'System RAM|virtio' /proc/iomem
    dmesg | grep virtio_mem | tail -n 12
}

fill() {
    i=0
    while [ $i -lt "$1" ]; do
        printf 'VMEMFIX-CHUNK-%06d' $i
        cat /pat/chunk.bin
        i=$((i + 1))
    done > "/fill/$2"
    sync
    ls -l "/fill/$2"
}

set_block() {
    n=$(block_no "$1")
    echo "$2" > "/sys/devices/system/memory/memory$n/state"
    rc=$?
    echo "memory$n $(cat /sys/devices/system/memory/memory$n/state)"
    return $rc
}

show_info boot
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3<>/dev/ttyS1
say "READY"
while true; do
    if ! read -r cmd args <&3; then sleep 1; continue; fi
    set -- $args
    case "$cmd" in
    ping) out=""; rc=0 ;;
    info) out=$(show_info "$1" 2>&1); rc=$? ;;
    fill) out=$(fill "$1" "@{2:-data.bin}" 2>&1); rc=$? ;;
    drop) out=$(rm -f "/fill/@{1:-data.bin}" 2>&1); rc=$? ;;
    offline) out=$(set_block "$1" offline 2>&1); rc=$? ;;
    online) out=$(set_block "$1" online_movable 2>&1); rc=$? ;;
    blocks) out=$(show_blocks 2>&1); rc=$? ;;
    run) out=$(eval "$args" 2>&1); rc=$? ;;
    poweroff) echo "DONE poweroff rc=0" >&3; say "poweroff"; poweroff -f ;;
    *) out="unknown command $cmd"; rc=127 ;;
    esac
    [ -n "$out" ] && { echo "$out" >&3; echo "$out"; }
    say "done $cmd $args rc=$rc"
    echo "DONE $cmd rc=$rc" >&3
done
`.replaceAll("@{", "${");

/**
 * Page `k` (0..255) of the 1 MiB pattern chunk the guest writes with `fill`:
 * `VMEMFIX-DATA page=kkk\n` followed by the byte ramp `(k*31+i) & 0xff`.
 * The first 20 bytes of each MiB are replaced by `VMEMFIX-CHUNK-nnnnnn`.
 *
 * @param k Page index inside the 1 MiB chunk.
 * @returns A new 4096-byte page.
 * @example
 * ```ts
 * import { patternPage } from "./guest.ts";
 * new TextDecoder().decode(patternPage(3).subarray(0, 21)); // "VMEMFIX-DATA page=003"
 * ```
 */
export function patternPage(k: number): Uint8Array<ArrayBuffer> {
  const page = new Uint8Array(4096);
  const hdr = new TextEncoder().encode(`VMEMFIX-DATA page=${String(k).padStart(3, "0")}\n`);
  page.set(hdr);
  for (let i = 0; i < 4096 - hdr.length; i++) page[hdr.length + i] = (k * 31 + i) & 0xff;
  return page;
}

/**
 * A 4096-byte marker page as written into unplugged memory by the malicious
 * scenarios: 64 lines `TAG gpa=0x… line=NN ###…\n` of 64 bytes each.
 *
 * @param tag Marker, e.g. `"EVIL-PRE"` or `"EVIL-MIG"`.
 * @param gpa Guest-physical address the page is written to (printed in it).
 * @returns A new 4096-byte page.
 * @example
 * ```ts
 * import { evilPage } from "./guest.ts";
 * const page = evilPage("EVIL-MIG", 0x104e01000);
 * ```
 */
export function evilPage(tag: string, gpa: number): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder();
  const out = new Uint8Array(4096);
  for (let i = 0; i < 64; i++) {
    const head = `${tag} gpa=0x${gpa.toString(16).padStart(12, "0")} line=${
      String(i).padStart(2, "0")
    } `;
    const line = (head + "#".repeat(Math.max(0, 63 - head.length))).slice(0, 63) + "\n";
    out.set(enc.encode(line), i * 64);
  }
  return out;
}

function patternChunk(): Uint8Array<ArrayBuffer> {
  const chunk = new Uint8Array(1 << 20);
  for (let k = 0; k < 256; k++) chunk.set(patternPage(k), k * 4096);
  return chunk.slice(20); // the guest prepends a 20-byte VMEMFIX-CHUNK header per MiB
}

/** Kernel and initramfs for the test guest. */
export interface GuestImage {
  /** `/boot/vmlinuz-<version>`. */
  kernel: string;
  /** Kernel version string. */
  kernelVersion: string;
  /** Uncompressed newc cpio archive in `<repo>/.cache/guest/`. */
  initrd: string;
  /** Modules inside the initramfs, in load order. */
  modules: string[];
}

/**
 * The kernel the Linux test guest boots: the newest `/boot/vmlinuz-<version>`
 * whose modules include virtio_mem (the kernel installed on this machine).
 *
 * @returns Its release (`uname -r`, e.g. `"6.1.0-57-amd64"`) and image path.
 * @throws {Error} When no such kernel is installed.
 * @example
 * ```ts ignore
 * const { version } = kernelWithVirtioMem(); // "6.1.0-57-amd64"
 * ```
 */
export function kernelWithVirtioMem(): { version: string; kernel: string } {
  const versions: string[] = [];
  for (const e of Deno.readDirSync("/boot")) {
    if (e.name.startsWith("vmlinuz-")) versions.push(e.name.slice("vmlinuz-".length));
  }
  versions.sort((a, b) => b.localeCompare(a, undefined, { numeric: true }));
  for (const v of versions) {
    const dep = `/lib/modules/${v}/modules.dep`;
    if (!existsSync(dep)) continue;
    if (/\/virtio_mem\.ko(\.\w+)?:/.test(Deno.readTextFileSync(dep))) {
      return { version: v, kernel: `/boot/vmlinuz-${v}` };
    }
  }
  throw new Error(
    "No Debian kernel with the virtio_mem module in /boot (install linux-image-amd64)",
  );
}

/** Whether a kernel with virtio_mem, busybox-static and cpio are present (sync, for `ignore:`). */
export function guestImageAvailable(): boolean {
  try {
    kernelWithVirtioMem();
  } catch {
    return false;
  }
  return existsSync("/bin/busybox") && existsSync("/usr/bin/cpio");
}

let imagePromise: Promise<GuestImage> | undefined;

/**
 * Build (once, cached in `<repo>/.cache/guest/`) the test guest's initramfs
 * and locate the kernel. Safe to call from parallel test files.
 *
 * @returns Paths of kernel and initramfs.
 * @throws {Error} When the kernel, busybox or a module is missing.
 * @example
 * ```ts ignore
 * const { kernel, initrd } = await buildInitramfs();
 * ```
 */
export function buildInitramfs(): Promise<GuestImage> {
  imagePromise ??= buildInitramfsUncached();
  imagePromise.catch(() => (imagePromise = undefined));
  return imagePromise;
}

async function buildInitramfsUncached(): Promise<GuestImage> {
  const { version, kernel } = kernelWithVirtioMem();
  const busybox = "/bin/busybox";
  if (!existsSync(busybox)) throw new Error("busybox-static is not installed (/bin/busybox)");
  requireTool("cpio");
  const deps = Deno.readTextFileSync(`/lib/modules/${version}/modules.dep`);
  const builtin = existsSync(`/lib/modules/${version}/modules.builtin`)
    ? Deno.readTextFileSync(`/lib/modules/${version}/modules.builtin`)
    : "";
  const modules: { name: string; path: string }[] = [];
  for (const name of GUEST_MODULES) {
    const m = new RegExp(`^(\\S*/${name}\\.ko(?:\\.(?:xz|zst|gz))?):`, "m").exec(deps);
    if (m) {
      modules.push({ name, path: `/lib/modules/${version}/${m[1]}` });
    } else if (!builtin.includes(`/${name}.ko`)) {
      throw new Error(`Kernel ${version} has no module ${name}`);
    }
  }
  const key = createHash("sha256");
  key.update(INIT_SCRIPT).update(version);
  for (const f of [busybox, ...modules.map((m) => m.path)]) {
    const st = Deno.statSync(f);
    key.update(`${f}:${st.size}:${st.mtime?.getTime()}`);
  }
  const initrd = `${GUEST_CACHE}initrd-${key.digest("hex").slice(0, 16)}.cpio`;
  const image: GuestImage = {
    kernel,
    kernelVersion: version,
    initrd,
    modules: modules.map((m) => m.name),
  };
  if (existsSync(initrd)) return image;
  Deno.mkdirSync(GUEST_CACHE, { recursive: true });
  await withCacheLock(`${initrd}.lock`, () => existsSync(initrd), async () => {
    const root = await Deno.makeTempDir({ prefix: "vmem-guest-root-" });
    try {
      for (const d of ["bin", "dev", "proc", "sys", "fill", "pat", "lib/modules"]) {
        Deno.mkdirSync(`${root}/${d}`, { recursive: true });
      }
      Deno.copyFileSync(busybox, `${root}/bin/busybox`);
      Deno.chmodSync(`${root}/bin/busybox`, 0o755);
      for (const m of modules) {
        const dst = `${root}/lib/modules/${m.name}.ko`;
        if (m.path.endsWith(".ko")) {
          Deno.copyFileSync(m.path, dst);
        } else {
          const tool = m.path.endsWith(".xz") ? "xz" : m.path.endsWith(".zst") ? "zstd" : "gzip";
          const out = await new Deno.Command(tool, { args: ["-dc", m.path], stdout: "piped" })
            .output();
          if (!out.success) throw new Error(`Cannot decompress ${m.path}`);
          Deno.writeFileSync(dst, out.stdout);
        }
      }
      Deno.writeTextFileSync(
        `${root}/lib/modules/load.order`,
        modules.map((m) => m.name).join("\n") + "\n",
      );
      Deno.writeFileSync(`${root}/pat/chunk.bin`, patternChunk());
      Deno.writeTextFileSync(`${root}/init`, INIT_SCRIPT);
      Deno.chmodSync(`${root}/init`, 0o755);
      const tmp = `${initrd}.tmp-${Deno.pid}`;
      const out = await new Deno.Command("bash", {
        args: [
          "-c",
          'set -o pipefail; cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 > "$2"',
          "mkinitrd",
          root,
          tmp,
        ],
        stdin: "null",
        stderr: "piped",
      }).output();
      if (!out.success) {
        throw new Error(`cpio failed: ${new TextDecoder().decode(out.stderr)}`);
      }
      Deno.renameSync(tmp, initrd);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });
  return image;
}
