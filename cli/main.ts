/**
 * `vmem-dump`: inspect, filter, verify, strip and scan QEMU migration streams
 * and guest memory dumps with virtio-mem plug state in mind.
 *
 * Run as the main module it is the command; `main(args)` runs it in-process
 * and returns the exit code.
 *
 * @example Install the command
 * ```sh
 * deno install -g -n vmem-dump --allow-read --allow-write --allow-net \
 *   --allow-env=VMEM_DUMP_DEBUG jsr:@vmem-dump/vmem-dump/cli
 * ```
 *
 * @module
 */

import { FormatError, InputChangedError, OutputError } from "../src/errors.ts";
import { TOOL_VERSION } from "../src/version.ts";
import { type CliIo, CommandError, type CommandRun, denoIo, UsageError } from "./io.ts";
import { lazyImport } from "./_lazy.ts";
import { nearestName } from "./_nearest.ts";

/**
 * A permission a command needs (Deno's names). Every command that writes
 * needs `sys` for `Deno.umask()`, so that no output is wider than the umask
 * allows (docs/evidence.md); Deno 2.9 grants no narrower `sys` for it.
 */
export type CommandPermission = "read" | "write" | "net" | "sys";

/** One subcommand: what `usage` says, what it may touch, and its module (loaded on demand). */
interface CommandEntry {
  /** One line for the usage text. */
  summary: string;
  /**
   * What the command needs, and all it gets: `bin/vmem-dump` grants exactly
   * these (a test keeps the two lists equal), and `main` refuses to start
   * without them.
   */
  permissions: readonly CommandPermission[];
  /** Load the command's module. */
  load: () => Promise<{ run: CommandRun }>;
}

export type { CliIo } from "./io.ts";

/** Subcommands, loaded on demand. */
const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  inspect: {
    summary: "summarise a migration stream (sections, RAM blocks, virtio-mem)",
    permissions: ["read"],
    load: () =>
      lazyImport<typeof import("./commands/inspect.ts")>("./commands/inspect.ts", import.meta.url),
  },
  plugmap: {
    summary: "extract the virtio-mem plug state as JSON",
    permissions: ["read"],
    load: () =>
      lazyImport<typeof import("./commands/plugmap.ts")>("./commands/plugmap.ts", import.meta.url),
  },
  filter: {
    summary: "drop RAM records of unplugged virtio-mem blocks from a stream",
    permissions: ["read", "write", "sys"],
    load: () =>
      lazyImport<typeof import("./commands/filter.ts")>("./commands/filter.ts", import.meta.url),
  },
  verify: {
    summary: "check that no RAM record touches an unplugged block",
    permissions: ["read", "write", "sys"],
    load: () =>
      lazyImport<typeof import("./commands/verify.ts")>("./commands/verify.ts", import.meta.url),
  },
  proxy: {
    summary: "relay one migration between two QEMUs, filtering or verifying",
    permissions: ["read", "write", "sys", "net"],
    load: () =>
      lazyImport<typeof import("./commands/proxy.ts")>("./commands/proxy.ts", import.meta.url),
  },
  strip: {
    summary: "rewrite an ELF or kdump dump (or raw image) without unplugged memory",
    permissions: ["read", "write", "sys"],
    load: () =>
      lazyImport<typeof import("./commands/strip.ts")>("./commands/strip.ts", import.meta.url),
  },
  scan: {
    summary: "find data a guest wrote into unplugged memory",
    permissions: ["read", "write", "sys"],
    load: () =>
      lazyImport<typeof import("./commands/scan.ts")>("./commands/scan.ts", import.meta.url),
  },
  convert: {
    summary: "re-pack a stream (raw, gzip, zstd, libvirt) or convert a dump (kdump, ELF)",
    permissions: ["read", "write", "sys"],
    load: () =>
      lazyImport<typeof import("./commands/convert.ts")>("./commands/convert.ts", import.meta.url),
  },
};

/**
 * The permissions each command needs, and all it gets (`bin/vmem-dump`
 * grants these; docs/cli.md).
 */
export const COMMAND_PERMISSIONS: Readonly<Record<string, readonly CommandPermission[]>> = Object
  .fromEntries(Object.entries(COMMANDS).map(([name, c]) => [name, c.permissions]));

/** The flag that grants each permission. */
const FLAGS: Record<CommandPermission, string> = {
  read: "--allow-read",
  write: "--allow-write",
  net: "--allow-net",
  sys: "--allow-sys",
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `usage: vmem-dump COMMAND [options]\n\ncommands:\n${lines.join("\n")}\n\n` +
    `Run 'vmem-dump COMMAND --help' for the options of a command. Reference: docs/ in the\n` +
    `checkout (README.md links every page); exit codes and JSON: docs/glossary.md.\n`;
}

/**
 * The permissions `command` needs that this process lacks (a scoped grant,
 * `--allow-read=DIR`, counts as given: the operating system has the last
 * word on each path).
 */
function missingPermissions(command: CommandEntry): CommandPermission[] {
  return command.permissions.filter((p) => {
    const status = Deno.permissions.querySync({ name: p });
    return status.state !== "granted" && !status.partial;
  });
}

/**
 * Run the CLI with `args` and return the exit code: 0 success, 1 error,
 * 2 usage error, 3 findings or violations, 4 inconclusive. Every error is
 * one line on stderr (`error: …`), or with `--json` one JSON object
 * (`{"error": {"code", "message", "offset"}}`, docs/glossary.md); never a
 * stack trace (set `VMEM_DUMP_DEBUG=1` to get one).
 */
export async function main(args: string[], io: CliIo = denoIo()): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    // No arguments is a usage mistake: the usage goes to stderr (exit 2); asked for, to stdout.
    if (name === undefined) await io.err(usage());
    else await io.out(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    await io.out(`vmem-dump ${TOOL_VERSION}\n`);
    return 0;
  }
  const jsonErrors = wantsJson(rest);
  try {
    const command = COMMANDS[name];
    if (command === undefined) throw new UsageError(unknownCommand(name));
    const missing = rest.includes("--help") || rest.includes("-h")
      ? []
      : missingPermissions(command);
    if (missing.length > 0) {
      throw new CommandError(
        "permission-denied",
        `vmem-dump ${name} needs ${missing.map((p) => FLAGS[p]).join(" ")}: run it as ` +
          `vmem-dump (bin/vmem-dump grants each command what it needs; docs/cli.md)`,
      );
    }
    const { run } = await command.load();
    return await run(rest, io);
  } catch (e) {
    // At a terminal, a progress line may be showing: the error starts the line again.
    const clear = io.stderrIsTerminal ? "\r\x1b[K" : "";
    if (jsonErrors) await io.err(`${clear}${JSON.stringify({ error: errorObject(e) })}\n`);
    else {
      await io.err(`${clear}error: ${errorLine(e)}\n`);
      if (e instanceof UsageError && COMMANDS[name] === undefined) await io.err(usage());
    }
    if ((debug ?? debugRequested()) && e instanceof Error && e.stack) {
      await io.err(`${e.stack}\n`);
    }
    return e instanceof UsageError ? 2 : 1;
  }
}

/** Whether the arguments ask for JSON (`--json` before any `--`). */
function wantsJson(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === "--") return false;
    if (a === "--json") return true;
  }
  return false;
}

/** The usage error for a command that does not exist, with the nearest one when close. */
function unknownCommand(name: string): string {
  const guess = nearestName(name, Object.keys(COMMANDS));
  return `unknown command '${name}'${guess ? `; did you mean '${guess}'?` : ""}`;
}

/** The JSON error object (docs/glossary.md). */
export interface ErrorObject {
  /** Stable code for programs. */
  code: string;
  /** The one line a person reads (what {@linkcode errorLine} gives). */
  message: string;
  /** The byte offset the message names, or `null`. */
  offset: number | null;
}

/**
 * The JSON error object of any error: the typed errors' own `code` and
 * `offset`, `usage` for command-line mistakes, `not-found` /
 * `permission-denied` / `os-error` for what the operating system refused,
 * `internal` for anything else (a bug).
 */
export function errorObject(e: unknown): ErrorObject {
  const message = errorLine(e);
  if (e instanceof UsageError) return { code: "usage", message, offset: null };
  if (e instanceof FormatError) return { code: e.code, message, offset: e.offset };
  if (e instanceof OutputError) return { code: e.code, message, offset: e.offset ?? null };
  if (e instanceof CommandError) return { code: e.code, message, offset: null };
  if (e instanceof InputChangedError) return { code: e.code, message, offset: null };
  if (e instanceof Error) {
    // Typed errors of modules main does not load (ProxyError): a stable kebab-case code.
    const code = (e as { code?: unknown }).code;
    if (e.name === "ProxyError" && typeof code === "string") return { code, message, offset: null };
    if (e instanceof Deno.errors.NotFound) return { code: "not-found", message, offset: null };
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
      return { code: "permission-denied", message, offset: null };
    }
    if (Object.values(Deno.errors).some((k) => e instanceof k)) {
      return { code: "os-error", message, offset: null };
    }
  }
  return { code: "internal", message, offset: null };
}

/**
 * One line for any error: typed errors by their message (it names the
 * offset or the path), operating-system errors as "what: why", anything
 * else with its class name (a bug: `VMEM_DUMP_DEBUG=1` shows the stack).
 */
export function errorLine(e: unknown): string {
  // Deno guards /dev and /proc behind --allow-all, which bin/vmem-dump never gives: say what
  // works instead of a flag the launcher cannot pass (an input, or an output the output helper
  // reports).
  const guarded = e instanceof Error
    ? /\brequires all access to "(\/(?:dev|proc)\/[^"]*)"/i.exec(e.message)
    : null;
  if (guarded && (e instanceof Deno.errors.NotCapable || e instanceof OutputError)) {
    return `Cannot open ${guarded[1]}: vmem-dump may not open /dev or /proc paths (Deno ` +
      "guards them behind --allow-all); give '-' for standard input or output";
  }
  if (
    e instanceof UsageError || e instanceof FormatError || e instanceof OutputError ||
    e instanceof CommandError || e instanceof InputChangedError
  ) {
    return oneLine(e.message);
  }
  if (e instanceof Error) {
    const os = /^(.*?)\s*\(os error \d+\)(?::\s*(\w+)\s+'(.*)')?$/s.exec(e.message);
    if (os) {
      const why = os[1]!.charAt(0).toLowerCase() + os[1]!.slice(1);
      return oneLine(os[3] === undefined ? why : `cannot ${os[2]} ${os[3]}: ${why}`);
    }
    const known = e instanceof TypeError || e instanceof RangeError || e.name === "Error" ||
      e.name === "ProxyError" || Object.values(Deno.errors).some((k) => e instanceof k);
    return oneLine(known ? e.message : `${e.name}: ${e.message}`);
  }
  return oneLine(String(e));
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, "; ");
}

/** `VMEM_DUMP_DEBUG=1`, read at start-up (before the permission to read it is dropped). */
let debug: boolean | undefined;

function debugRequested(): boolean {
  try {
    return Deno.env.get("VMEM_DUMP_DEBUG") === "1";
  } catch {
    return false;
  }
}

if (import.meta.main) {
  debug = debugRequested();
  Deno.exit(await main(Deno.args));
}
