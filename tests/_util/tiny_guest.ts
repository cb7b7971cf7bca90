/**
 * The host side of the bare-metal tiny guest (`testdata/tinyguest/vmemtiny.elf`,
 * built from `scripts/tinyguest/vmemtiny.c`): boots in under a second and
 * plugs, unplugs and writes exactly the virtio-mem device blocks the host
 * names, through the real virtio-mem PCI device. Its protocol (ttyS1):
 * `ping`, `info`, `plug FIRST COUNT`, `unplug FIRST COUNT`, `write FIRST COUNT`.
 *
 * The guest does not follow `requested-size` by itself, so the driver keeps
 * the plug state it asked for ({@linkcode TinyGuest.plugState}) and
 * {@linkcode TinyGuest.plugTo} turns a size into explicit plugs and unplugs.
 *
 * @example
 * ```ts ignore
 * await using vm = await startTinyGuest({ qemu: "10" });
 * await vm.guest.plugHolesShape(); // blocks 0-13 and 64-99 plugged, a marker page in each
 * const plugged = vm.guest.plugState();
 * ```
 *
 * @module
 */

import { ChannelGuest, type GuestSpec } from "./guest_driver.ts";
import type { QemuProcess } from "./qemu_process.ts";

/** The bare-metal virtio-mem guest (built from `scripts/tinyguest/vmemtiny.c`). */
export const TINY_GUEST_ELF: string = decodeURIComponent(
  new URL("../../testdata/tinyguest/vmemtiny.elf", import.meta.url).pathname,
);

const MiB = 1 << 20;

/** Driver of the tiny guest. */
export class TinyGuest extends ChannelGuest {
  /** Plug state as the driver requested it (index = device block, 1 = plugged). */
  #plugged: Uint8Array;

  /**
   * Attach to a QEMU booted from {@linkcode tinyGuestSpec}.
   *
   * @param vm The QEMU.
   */
  constructor(vm: QemuProcess) {
    super(vm, "tiny");
    this.#plugged = new Uint8Array(vm.layout.regionBytes / vm.layout.blockBytes);
  }

  #pluggedCount(): number {
    return this.#plugged.reduce((a, b) => a + b, 0);
  }

  /** Runs of blocks in state `value`, as `[first, count]`. */
  #runs(value: number): [number, number][] {
    const runs: [number, number][] = [];
    for (let i = 0; i < this.#plugged.length; i++) {
      if (this.#plugged[i] !== value) continue;
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === i) last[1]++;
      else runs.push([i, 1]);
    }
    return runs;
  }

  /**
   * Plug or unplug to `byteLength`: sets `requested-size`, then plugs the
   * lowest unplugged blocks or unplugs the highest plugged ones.
   *
   * @param byteLength Plugged bytes wanted (multiple of the block size).
   * @throws {RangeError} When it is not a whole number of blocks of the region.
   */
  override async plugTo(byteLength: number): Promise<void> {
    const blocks = byteLength / this.vm.layout.blockBytes;
    if (!Number.isInteger(blocks) || blocks > this.#plugged.length) {
      throw new RangeError(
        `cannot plug ${byteLength} bytes in ${this.vm.layout.blockBytes}-byte blocks`,
      );
    }
    let have = this.#pluggedCount();
    if (blocks > have) {
      await this.vm.setRequestedSize(byteLength);
      for (const [first, count] of this.#runs(0)) {
        const n = Math.min(count, blocks - have);
        if (n <= 0) break;
        await this.plugBlocks(first, n, { setRequested: false });
        have += n;
      }
    } else if (blocks < have) {
      await this.vm.setRequestedSize(byteLength);
      for (const [first, count] of this.#runs(1).reverse()) {
        const n = Math.min(count, have - blocks);
        if (n <= 0) break;
        await this.unplugBlocks(first + count - n, n);
        have -= n;
      }
    }
  }

  /**
   * Plug device blocks `first .. first+count-1` (raises `requested-size`
   * first unless `setRequested` is false, since QEMU refuses plugs beyond it).
   *
   * @param first First device block.
   * @param count Number of blocks.
   * @param options `setRequested` (default true).
   * @throws {Error} When the device refuses (NACK).
   */
  async plugBlocks(
    first: number,
    count: number,
    options: { setRequested?: boolean } = {},
  ): Promise<void> {
    if (options.setRequested ?? true) {
      const after = this.#pluggedCount() +
        this.#plugged.subarray(first, first + count).filter((b) => b === 0).length;
      const requested = await this.vm.vmemProperty("requested-size");
      if (after * this.vm.layout.blockBytes > requested) {
        await this.vm.setRequestedSize(after * this.vm.layout.blockBytes);
      }
    }
    await this.command(`plug ${first} ${count}`);
    this.#plugged.fill(1, first, first + count);
  }

  /**
   * Unplug device blocks `first .. first+count-1`. Does not change
   * `requested-size` (set it with `vm.setRequestedSize()` to mirror a real
   * shrink request).
   *
   * @param first First device block.
   * @param count Number of blocks.
   * @throws {Error} When the device refuses.
   */
  async unplugBlocks(first: number, count: number): Promise<void> {
    await this.command(`unplug ${first} ${count}`);
    this.#plugged.fill(0, first, first + count);
  }

  /**
   * The guest itself writes one marker page (64 lines
   * `DATA block=NNN gpa=0x… line=NN ###`) at the start of each device block
   * `first .. first+count-1`; the blocks must be plugged.
   *
   * @param first First device block.
   * @param count Number of blocks.
   */
  async writeBlocks(first: number, count: number): Promise<void> {
    await this.command(`write ${first} ${count}`);
  }

  /**
   * The s2/s3 shape of shared/realdata: plug 200 MiB, write a marker page
   * into blocks 0-99, set `requested-size` to 100 MiB and unplug blocks
   * 14-63, which leaves blocks 0-13 and 64-99 plugged.
   */
  async plugHolesShape(): Promise<void> {
    await this.plugTo(200 * MiB);
    await this.writeBlocks(0, 100);
    await this.vm.setRequestedSize(100 * MiB);
    await this.unplugBlocks(14, 50);
  }

  /**
   * The plug bitmap as the driver drove it (index = device block). A
   * destination's driver starts from all-unplugged: it did not see the
   * source's plugs.
   *
   * @returns A copy; 1 = plugged.
   */
  plugState(): Uint8Array {
    return this.#plugged.slice();
  }
}

/**
 * The tiny guest.
 *
 * @returns The spec for `startVm` in `qemu.ts`.
 * @example
 * ```ts ignore
 * await using vm = await startVm(tinyGuestSpec(), { qemu: "7.2" });
 * ```
 */
export function tinyGuestSpec(): GuestSpec<TinyGuest> {
  return {
    kind: "tiny",
    image: () => Promise.resolve({ kernel: TINY_GUEST_ELF, append: "" }),
    attach: (vm) => new TinyGuest(vm),
  };
}
