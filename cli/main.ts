/**
 * `vmem-dump`: inspect, filter, verify, strip and scan QEMU migration streams
 * and guest memory dumps with virtio-mem plug state in mind.
 *
 * @module
 */

import { FormatError } from "../src/errors.ts";
import { type CliIo, type CommandRun, denoIo, UsageError } from "./io.ts";

/** Subcommands, loaded on demand. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ run: CommandRun }> }> = {
  inspect: {
    summary: "summarise a migration stream (sections, RAM blocks, virtio-mem)",
    load: () => import("./commands/inspect.ts"),
  },
  plugmap: {
    summary: "extract the virtio-mem plug state as JSON",
    load: () => import("./commands/plugmap.ts"),
  },
  filter: {
    summary: "drop RAM records of unplugged virtio-mem blocks from a stream",
    load: () => import("./commands/filter.ts"),
  },
  verify: {
    summary: "check that no RAM record touches an unplugged block",
    load: () => import("./commands/verify.ts"),
  },
  proxy: {
    summary: "relay one migration between two QEMUs, filtering or verifying",
    load: () => import("./commands/proxy.ts"),
  },
  strip: {
    summary: "rewrite an ELF dump (or raw image) without unplugged memory",
    load: () => import("./commands/strip.ts"),
  },
  scan: {
    summary: "find data a guest wrote into unplugged memory",
    load: () => import("./commands/scan.ts"),
  },
  convert: {
    summary: "re-pack a stream: raw, gzip, zstd or libvirt save image",
    load: () => import("./commands/convert.ts"),
  },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `usage: vmem-dump COMMAND [options]\n\ncommands:\n${lines.join("\n")}\n\n` +
    `Run 'vmem-dump COMMAND --help' for the options of a command.\n`;
}

/**
 * Run the CLI with `args` and return the exit code: 0 success, 1 error,
 * 2 usage error, 3 findings or violations.
 */
export async function main(args: string[], io: CliIo = denoIo()): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    await io.out(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    await io.out("vmem-dump 0.1.0\n");
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    await io.err(`error: unknown command '${name}'\n${usage()}`);
    return 2;
  }
  try {
    const { run } = await command.load();
    return await run(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      await io.err(`error: ${e.message}\n`);
      return 2;
    }
    if (
      e instanceof FormatError || e instanceof Deno.errors.NotFound ||
      e instanceof Deno.errors.PermissionDenied
    ) {
      await io.err(`error: ${(e as Error).message}\n`);
      return 1;
    }
    await io.err(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
