/**
 * Regenerate the bundled real QEMU migration streams in testdata/migration/.
 *
 *   deno run -A scripts/make-demo-stream.ts [--qemu 10|7.2|all] [--keep-raw]
 *
 * A real QEMU (TCG) boots the bare-metal guest scripts/tinyguest/vmemtiny.c,
 * which drives a real virtio-mem-pci device through its virtio PCI interface.
 * The scenario mirrors `s3-malicious` of shared/realdata (small profile):
 *
 *   1. requested-size 200M; the guest plugs device blocks 0-99 and writes one
 *      marker page ("DATA block=NNN ...") at the start of each;
 *   2. requested-size 100M; the guest unplugs blocks 14-63 (what Linux does
 *      after offlining its first memory block), leaving plugged 0-13, 64-99;
 *   3. VM stopped; through the gdbstub (physical mode) the host writes
 *      EVIL-PRE pages into unplugged blocks 14 and 127;
 *   4. migrate "exec:cat > FILE" with pause-before-switchover; while paused in
 *      pre-switchover the host writes EVIL-MIG pages into unplugged blocks 39
 *      and 53 (offset 0x1000), then migrate-continue.
 *
 * Output: testdata/migration/<q10|q72>-s3-malicious.mig.zst (zstd -19) and
 * testdata/tinyguest/vmemtiny.elf; sizes and sha256 are printed for
 * testdata/README.md.
 */

import { evilPage } from "../tests/_util/guest.ts";
import {
  type QemuGuest,
  type QemuVersion,
  startGuest,
  tempDir,
  VMEM_GPA,
} from "../tests/_util/qemu.ts";
import { sha256File } from "../tests/_util/realdata.ts";
import { parseArgs } from "node:util";

const MiB = 1 << 20;
const BLOCK = 2 * MiB;
const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);

async function sh(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

/** Build vmemtiny.elf (gcc -m32) into testdata/tinyguest/. */
export async function buildTinyGuest(): Promise<string> {
  const dir = `${ROOT}scripts/tinyguest`;
  const out = `${ROOT}testdata/tinyguest/vmemtiny.elf`;
  await Deno.mkdir(`${ROOT}testdata/tinyguest`, { recursive: true });
  await sh("gcc", [
    "-m32",
    "-march=i686",
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-nostdlib",
    "-O2",
    "-static",
    "-no-pie",
    "-Wall",
    "-Wextra",
    "-Wl,-T," + `${dir}/link.ld`,
    "-Wl,-m,elf_i386",
    "-Wl,--build-id=none",
    "-s",
    "-o",
    out,
    `${dir}/vmemtiny.c`,
  ]);
  return out;
}

async function setRequested(vm: QemuGuest, byteLength: number): Promise<void> {
  await vm.qmp("qom-set", {
    path: "/machine/peripheral/vmem0",
    property: "requested-size",
    value: byteLength,
  });
}

async function size(vm: QemuGuest): Promise<number> {
  return (await vm.vmem()).size;
}

async function produce(qemu: QemuVersion, elf: string, outDir: string): Promise<string> {
  const t0 = performance.now();
  await using vm = await startGuest({ qemu, kernel: { path: elf }, bootTimeoutMs: 60_000 });
  const log = (s: string) =>
    console.error(`[${qemu} ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
  log(`booted: ${(await vm.guestCmd("info")).lines.join(" ")}`);
  await setRequested(vm, 200 * MiB);
  await vm.guestCmd("plug 0 100");
  await vm.guestCmd("write 0 100");
  if ((await size(vm)) !== 200 * MiB) throw new Error("plug did not reach 200M");
  await setRequested(vm, 100 * MiB);
  await vm.guestCmd("unplug 14 50");
  if ((await size(vm)) !== 100 * MiB) throw new Error("unplug did not reach 100M");
  log(`plugged 0-13, 64-99: ${(await vm.guestCmd("info")).lines.join(" ")}`);
  await vm.pause();
  for (const gpa of [VMEM_GPA + 14 * BLOCK, VMEM_GPA + 128 * BLOCK - 0x1000]) {
    await vm.gdbWritePhys(gpa, evilPage("EVIL-PRE", gpa));
  }
  const mig = `${outDir}/${qemu === "10" ? "q10" : "q72"}-s3-malicious.mig`;
  const info = await vm.migrateToFile(mig, {
    onPreSwitchover: async (g) => {
      for (const block of [39, 53]) {
        const gpa = VMEM_GPA + block * BLOCK + 0x1000;
        await g.gdbWritePhys(gpa, evilPage("EVIL-MIG", gpa));
      }
    },
  });
  const version = (vm.qmpClient.greeting.QMP as { version: { package: string } }).version.package;
  const machine = (await vm.qmp<{ name: string; alias?: string }[]>("query-machines"))
    .find((m) => m.alias === "q35")?.name;
  log(`migrated ${Deno.statSync(mig).size} bytes (${info.status}); QEMU ${version}, ${machine}`);
  return mig;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      qemu: { type: "string", default: "all" },
      "keep-raw": { type: "boolean", default: false },
    },
    strict: true,
  });
  const versions: QemuVersion[] = values.qemu === "all"
    ? ["10", "7.2"]
    : [values.qemu as QemuVersion];
  const elf = await buildTinyGuest();
  console.log(
    `testdata/tinyguest/vmemtiny.elf ${Deno.statSync(elf).size} bytes sha256 ${await sha256File(
      elf,
    )}`,
  );
  await Deno.mkdir(`${ROOT}testdata/migration`, { recursive: true });
  await using tmp = await tempDir("vmem-demo-");
  for (const v of versions) {
    const mig = await produce(v, elf, tmp.path);
    const base = mig.slice(mig.lastIndexOf("/") + 1);
    const zst = `${ROOT}testdata/migration/${base}.zst`;
    await sh("zstd", ["-q", "-f", "-19", "--no-progress", mig, "-o", zst]);
    console.log(
      `${base}: ${Deno.statSync(mig).size} bytes sha256 ${await sha256File(mig)}\n` +
        `testdata/migration/${base}.zst: ${Deno.statSync(zst).size} bytes sha256 ${await sha256File(
          zst,
        )}`,
    );
    if (values["keep-raw"]) await Deno.copyFile(mig, `${ROOT}.cache/${base}`);
  }
}
