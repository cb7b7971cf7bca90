/**
 * Regenerate the small real fixtures of testdata/tiny/: what QEMU 7.2 and
 * QEMU 10.0 write for one tiny VM, in every format the readers take, small
 * enough for the mutation campaign (tests/_util/fuzz/) to mutate thousands
 * of times and for git (each file ≤ 256 KiB after `zstd -19`).
 *
 *   deno run -A scripts/make-tiny-fixtures.ts [--qemu 10|7.2|all]
 *
 * The VM: q35, 2 MiB of boot RAM, one virtio-mem-pci device with a 16 MiB
 * region of 2 MiB blocks (8 blocks), the bare-metal tiny guest
 * (testdata/tinyguest/vmemtiny.elf), TCG. The scenario:
 *
 *   1. the guest plugs blocks 0-5 and writes a marker page at the start of each;
 *   2. requested-size 6 MiB; the guest unplugs blocks 1-3 (plugged: 0, 4, 5);
 *   3. VM stopped; through the gdbstub the host writes EVIL-PRE pages into
 *      unplugged blocks 2 (+0x2000) and 7 (its last page);
 *   4. `migrate exec:cat > qXX-tiny.mig` with pause-before-switchover; in
 *      pre-switchover the host writes an EVIL-MIG page into unplugged block 3
 *      (+0x1000), which the stream carries;
 *   5. with the source stopped after the migration: `dump-guest-memory` as
 *      ELF and kdump-zlib (QEMU's flattened format), and on QEMU 10 also
 *      kdump-raw-zlib (plain); on QEMU 7.2 `makedumpfile -R` turns the
 *      flattened kdump into a plain one (on QEMU 10 its output is byte for
 *      byte the kdump-raw-zlib dump); `pmemsave` of the whole region (EVIL
 *      pages inside);
 *   6. QEMU 10 only: the same VM migrated again to `file:` with the
 *      mapped-ram capability, then with mapped-ram and multifd (2 channels),
 *      an EVIL-MIG page written in pre-switchover each time.
 *
 * Output: testdata/tiny/qXX-tiny.{mig,elf,kdump-zlib,kdump,kdump-raw-zlib,
 * vmem0.raw,mapped-ram,mapped-ram-multifd}.zst; sizes and sha256 are printed
 * for testdata/README.md. The bytes differ from run to run (device and
 * firmware state, timestamps); the layout and the plug state do not.
 */

import { parseArgs } from "node:util";
import { evilPage } from "../tests/_util/guest.ts";
import { mappedRamCaps } from "../tests/_util/mapped_ram.ts";
import { type QemuVersion, startTinyGuest, tempDir, VMEM_GPA } from "../tests/_util/qemu.ts";
import { sha256File } from "../tests/_util/realdata.ts";

const MiB = 1 << 20;
const BLOCK = 2 * MiB;
const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const OUT = `${ROOT}testdata/tiny`;

/** The layout of the tiny fixtures. */
export const TINY_LAYOUT = { bootRamBytes: 2 * MiB, regionBytes: 16 * MiB, blockBytes: BLOCK };

async function sh(cmd: string, args: string[], stdin?: string): Promise<void> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `"$0" "$@"${stdin ? ` < "${stdin}"` : ""}`, cmd, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const dec = new TextDecoder();
    throw new Error(
      `${cmd} ${args.join(" ")} failed:\n${dec.decode(out.stdout)}${dec.decode(out.stderr)}`,
    );
  }
}

async function produce(qemu: QemuVersion, dir: string): Promise<string[]> {
  const tag = qemu === "10" ? "q10" : "q72";
  const files: string[] = [];
  const t0 = performance.now();
  const log = (s: string) =>
    console.error(`[${qemu} ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
  await using vm = await startTinyGuest({ qemu, layout: TINY_LAYOUT, bootTimeoutMs: 60_000 });
  await vm.guest.plugBlocks(0, 6);
  await vm.guest.writeBlocks(0, 6);
  await vm.setRequestedSize(6 * MiB);
  await vm.guest.unplugBlocks(1, 3);
  log(`plugged blocks 0, 4, 5: ${JSON.stringify(await vm.vmem())}`);
  await vm.pause();
  for (const gpa of [VMEM_GPA + 2 * BLOCK + 0x2000, VMEM_GPA + 8 * BLOCK - 0x1000]) {
    await vm.gdbWritePhys(gpa, evilPage("EVIL-PRE", gpa));
  }
  const evilMig = async (g: typeof vm) => {
    const gpa = VMEM_GPA + 3 * BLOCK + 0x1000;
    await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
  };
  const mig = `${dir}/${tag}-tiny.mig`;
  await vm.migrateToFile(mig, { onPreSwitchover: evilMig });
  files.push(mig);
  log("migrated");
  for (
    const format of qemu === "10" ? ["elf", "kdump-zlib", "kdump-raw-zlib"] : ["elf", "kdump-zlib"]
  ) {
    const path = `${dir}/${tag}-tiny.${format}`;
    await vm.dumpGuestMemory(path, { format });
    files.push(path);
  }
  if (qemu === "7.2") {
    // (On QEMU 10, makedumpfile -R of the flattened dump is byte for byte its kdump-raw-zlib.)
    const plain = `${dir}/${tag}-tiny.kdump`;
    await sh("makedumpfile", ["-R", plain], `${dir}/${tag}-tiny.kdump-zlib`);
    files.push(plain);
  }
  const raw = `${dir}/${tag}-tiny.vmem0.raw`;
  await vm.pmemsave(VMEM_GPA, TINY_LAYOUT.regionBytes, raw);
  files.push(raw);
  log("dumped");
  if (qemu === "10") {
    for (const multifd of [false, true]) {
      const path = `${dir}/${tag}-tiny.mapped-ram${multifd ? "-multifd" : ""}`;
      await vm.qmp("migrate-set-capabilities", { capabilities: mappedRamCaps(multifd) });
      await vm.migrate(`file:${path}`, { onPreSwitchover: evilMig });
      await vm.qmp("migrate-set-capabilities", {
        capabilities: mappedRamCaps(false).map((c) => ({ ...c, state: false })),
      });
      files.push(path);
      log(`mapped-ram${multifd ? " + multifd" : ""}`);
    }
  }
  return files;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { qemu: { type: "string", default: "all" } },
    strict: true,
  });
  const versions: QemuVersion[] = values.qemu === "all"
    ? ["7.2", "10"]
    : [values.qemu as QemuVersion];
  await Deno.mkdir(OUT, { recursive: true });
  await using tmp = await tempDir("vmem-tiny-");
  for (const v of versions) {
    for (const f of await produce(v, tmp.path)) {
      const base = f.slice(f.lastIndexOf("/") + 1);
      const zst = `${OUT}/${base}.zst`;
      await sh("zstd", ["-q", "-f", "-19", "--no-progress", f, "-o", zst]);
      const size = (await Deno.stat(zst)).size;
      console.log(
        `${base}: ${(await Deno.stat(f)).size} bytes sha256 ${await sha256File(f)}\n` +
          `testdata/tiny/${base}.zst: ${size} bytes sha256 ${await sha256File(zst)}`,
      );
      if (size > 256 * 1024) throw new Error(`${zst} is larger than 256 KiB`);
    }
  }
}
