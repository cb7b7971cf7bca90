/**
 * The host side of the Linux test guest (the Debian kernel installed on the
 * host plus the busybox initramfs of `guest.ts`): boots in about 10 s under
 * TCG, plugs and unplugs virtio-mem memory through the kernel's virtio_mem
 * driver when the host changes `requested-size`, and runs the commands of the
 * protocol table in `guest.ts` (`fill`, `offline`, `info`, `run`, …).
 *
 * @example
 * ```ts ignore
 * await using vm = await startLinuxGuest({ qemu: "7.2", vmcoreinfo: true });
 * await vm.guest.plugTo(200 << 20);
 * await vm.guest.fill(48);
 * await vm.guest.offlineBlock(0);
 * ```
 *
 * @module
 */

import { buildInitramfs, GUEST_KERNEL_CMDLINE } from "./guest.ts";
import { ChannelGuest, type GuestReply, type GuestSpec } from "./guest_driver.ts";
import type { QemuProcess } from "./qemu_process.ts";

/** Driver of the Linux test guest. */
export class LinuxGuest extends ChannelGuest {
  /**
   * Attach to a QEMU booted from {@linkcode linuxGuestSpec}.
   *
   * @param vm The QEMU.
   */
  constructor(vm: QemuProcess) {
    super(vm, "linux");
  }

  /**
   * Let the guest write `mib` MiB of pattern data (`patternPage()` in
   * `guest.ts`) into a tmpfs file; movable memory, so hot-plugged memory first.
   *
   * @param mib MiB to write.
   * @param name File name in the guest's `/fill`. @default {"data.bin"}
   * @returns The guest's reply.
   */
  async fill(mib: number, name = "data.bin"): Promise<GuestReply> {
    return await this.command(`fill ${mib} ${name}`);
  }

  /**
   * Delete a fill file (`init_on_free=1` zeroes its pages).
   *
   * @param name File name in the guest's `/fill`. @default {"data.bin"}
   * @returns The guest's reply.
   */
  async drop(name = "data.bin"): Promise<GuestReply> {
    return await this.command(`drop ${name}`);
  }

  /**
   * Offline Linux memory block `index` of the device (counted from its
   * start; 128 MiB blocks with the Debian kernel). Linux then unplugs that
   * block first when the host shrinks the device.
   *
   * @param index Linux memory block index.
   * @returns The guest's reply.
   */
  async offlineBlock(index: number): Promise<GuestReply> {
    return await this.command(`offline ${index}`);
  }

  /**
   * Online Linux memory block `index` of the device as movable memory.
   *
   * @param index Linux memory block index.
   * @returns The guest's reply.
   */
  async onlineBlock(index: number): Promise<GuestReply> {
    return await this.command(`online ${index}`);
  }

  /**
   * Run a shell command in the guest.
   *
   * @param shellCommand One line of busybox `sh`.
   * @returns The reply (its `lines` are the output).
   */
  async run(shellCommand: string): Promise<GuestReply> {
    return await this.command(`run ${shellCommand}`);
  }
}

/**
 * The Linux test guest: the newest installed Debian kernel with a
 * virtio_mem module, and the initramfs of `guest.ts` (built once, cached in
 * `.cache/guest/`).
 *
 * @param kernelArgs Extra kernel parameters appended to `GUEST_KERNEL_CMDLINE`. @default {""}
 * @returns The spec for `startVm` in `qemu.ts`.
 * @example
 * ```ts ignore
 * await using vm = await startVm(linuxGuestSpec("loglevel=7"), { qemu: "10" });
 * ```
 */
export function linuxGuestSpec(kernelArgs = ""): GuestSpec<LinuxGuest> {
  return {
    kind: "linux",
    image: async () => {
      const linux = await buildInitramfs();
      return {
        kernel: linux.kernel,
        initrd: linux.initrd,
        append: `${GUEST_KERNEL_CMDLINE}${kernelArgs ? " " + kernelArgs : ""}`,
      };
    },
    attach: (vm) => new LinuxGuest(vm),
  };
}
