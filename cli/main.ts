/**
 * `vmem-dump`: inspect, filter, verify, strip and scan QEMU migration streams
 * and guest memory dumps with virtio-mem plug state in mind.
 *
 * @module
 */

import { FormatError, OutputError } from "../src/errors.ts";
import { TOOL_VERSION } from "../src/version.ts";
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
 * 2 usage error, 3 findings or violations, 4 inconclusive. Every error is
 * one line on stderr (`error: …`), never a stack trace (set
 * `VMEM_DUMP_DEBUG=1` to get one).
 */
export async function main(args: string[], io: CliIo = denoIo()): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    await io.out(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    await io.out(`vmem-dump ${TOOL_VERSION}\n`);
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
    await io.err(`error: ${errorLine(e)}\n`);
    if (debugRequested() && e instanceof Error && e.stack) await io.err(`${e.stack}\n`);
    return e instanceof UsageError ? 2 : 1;
  }
}

/**
 * One line for any error: typed errors by their message (it names the
 * offset or the path), operating-system errors as "what: why", anything
 * else with its class name (a bug: `VMEM_DUMP_DEBUG=1` shows the stack).
 */
export function errorLine(e: unknown): string {
  if (e instanceof UsageError || e instanceof FormatError || e instanceof OutputError) {
    return oneLine(e.message);
  }
  if (e instanceof Error) {
    const os = /^(.*?)\s*\(os error \d+\)(?::\s*(\w+)\s+'(.*)')?$/s.exec(e.message);
    if (os) {
      const why = os[1]!.charAt(0).toLowerCase() + os[1]!.slice(1);
      return oneLine(os[3] === undefined ? why : `cannot ${os[2]} ${os[3]}: ${why}`);
    }
    const known = e instanceof TypeError || e instanceof RangeError || e.name === "Error" ||
      Object.values(Deno.errors).some((k) => e instanceof k);
    return oneLine(known ? e.message : `${e.name}: ${e.message}`);
  }
  return oneLine(String(e));
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, "; ");
}

function debugRequested(): boolean {
  try {
    return Deno.env.get("VMEM_DUMP_DEBUG") === "1";
  } catch {
    return false;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
