/**
 * Argument parsing shared by the CLI commands: `parseArgs` (strict) with
 * `--help`, positional-count checks and parse mistakes as usage errors, plus
 * the option specs and checks several commands repeat.
 *
 * @module
 */

// Types only: loading node:util costs a command ~70 ms of start-up (the Node compatibility
// layer), a third of what `inspect` of a 200 MB stream takes in all, so the parser is below.
import type { parseArgs, ParseArgsOptionsConfig } from "node:util";
import type { AtomicOutputOptions } from "../src/io/file.ts";
import type { PlugMap } from "../src/vmem/plug_map.ts";
import { type CliIo, UsageError } from "./io.ts";
import { lazyImport } from "./_lazy.ts";
import { nearestName } from "./_nearest.ts";

/** `-h`, `--help`: every command has it. */
const HELP_OPTION = { help: { type: "boolean", short: "h" } } as const;

/** `--json`: machine-readable output. */
export const JSON_OPTION = { json: { type: "boolean" } } as const;

/** `--plugmap FILE` and `--plugmap-from STREAM`: out-of-band plug state. */
export const PLUGMAP_OPTIONS = {
  plugmap: { type: "string" },
  "plugmap-from": { type: "string" },
} as const;

/** What {@linkcode parseCommandArgs} needs to know about a command. */
export interface CommandArgsSpec<O extends ParseArgsOptionsConfig> {
  /** The command's options (`--help` is added). */
  options: O;
  /** Printed on stdout for `--help`. */
  help: string;
  /** How many positionals the command takes: exactly `n`, or a range. */
  positionals?: number | { min: number; max: number };
  /** The usage error when the positional count is wrong. */
  usage?: string;
}

type Parsed<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{
    args: string[];
    options: O & typeof HELP_OPTION;
    allowPositionals: true;
    strict: true;
  }>
>;

/**
 * Parse a command's arguments strictly. Prints the help and returns
 * `undefined` for `--help`; throws {@linkcode UsageError} for parse mistakes
 * (unknown option, missing value) and a wrong positional count.
 */
export async function parseCommandArgs<O extends ParseArgsOptionsConfig>(
  args: string[],
  io: CliIo,
  spec: CommandArgsSpec<O>,
): Promise<Parsed<O> | undefined> {
  const parsed = parseStrict(args, { ...spec.options, ...HELP_OPTION }) as Parsed<O>;
  if ((parsed.values as { help?: boolean }).help) {
    await io.out(spec.help);
    return undefined;
  }
  const count = spec.positionals;
  if (count !== undefined) {
    const { min, max } = typeof count === "number" ? { min: count, max: count } : count;
    const n = parsed.positionals.length;
    if (n < min || n > max) throw new UsageError(spec.usage ?? "wrong number of arguments");
  }
  return parsed;
}

/**
 * `parseArgs` of `node:util` with `strict: true` and `allowPositionals: true`,
 * for what the commands use: boolean and string options, long (`--name`,
 * `--name=value`) and short (`-f`, grouped `-fv`, `-xVALUE`) forms,
 * `default`, `multiple`, and `--` before positionals. Mistakes are
 * {@linkcode UsageError}s worded as Node words them.
 */
function parseStrict(
  args: readonly string[],
  options: ParseArgsOptionsConfig,
): { values: Record<string, unknown>; positionals: string[] } {
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, o] of Object.entries(options)) if (o.short) byShort.set(o.short, name);
  const label = (name: string) => {
    const short = options[name]?.short;
    return short ? `-${short}, --${name}` : `--${name}`;
  };
  const set = (name: string, value: string | boolean) => {
    if (options[name]!.multiple) ((values[name] ??= []) as unknown[]).push(value);
    else values[name] = value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg.length < 2 || arg[0] !== "-") {
      positionals.push(arg);
      continue;
    }
    // --name, --name=value, -x, -xyz (booleans), -xVALUE (a string option).
    const long = arg.startsWith("--");
    const eq = long ? arg.indexOf("=") : -1;
    let name: string;
    let inline: string | undefined;
    if (long) {
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      if (eq >= 0) inline = arg.slice(eq + 1);
    } else {
      const first = byShort.get(arg[1]!);
      if (first === undefined) throw new UsageError(`Unknown option '-${arg[1]}'`);
      name = first;
      if (arg.length > 2) {
        if (options[first]!.type === "string") inline = arg.slice(2);
        else {
          // A group of short booleans.
          for (const c of arg.slice(1)) {
            const n = byShort.get(c);
            if (n === undefined) throw new UsageError(`Unknown option '-${c}'`);
            if (options[n]!.type !== "boolean") {
              throw new UsageError(`Option '${label(n)} <value>' argument missing`);
            }
            set(n, true);
          }
          continue;
        }
      }
    }
    const o = options[name];
    if (o === undefined) {
      const guess = long ? nearestName(name, Object.keys(options)) : undefined;
      throw new UsageError(
        `Unknown option '${long ? `--${name}` : arg}'${
          guess ? `; did you mean '--${guess}'?` : ""
        }`,
      );
    }
    if (o.type === "boolean") {
      if (inline !== undefined) {
        throw new UsageError(`Option '${label(name)}' does not take an argument`);
      }
      set(name, true);
      continue;
    }
    if (inline === undefined) {
      const next = args[i + 1];
      if (next === undefined) {
        throw new UsageError(`Option '${label(name)} <value>' argument missing`);
      }
      if (next.length > 1 && next[0] === "-") {
        throw new UsageError(
          `Option '${label(name)}' argument is ambiguous. Did you forget to specify the option ` +
            `argument for '${label(name)}'? To specify an option argument starting with a dash ` +
            `use '--${name}=-XYZ'`,
        );
      }
      inline = next;
      i++;
    }
    set(name, inline);
  }
  for (const [name, o] of Object.entries(options)) {
    if (values[name] === undefined && o.default !== undefined) values[name] = o.default;
  }
  return { values, positionals };
}

/** `-f`, `--force`: replace an existing output (never an input). */
export const FORCE_OPTION = { force: { type: "boolean", short: "f" } } as const;

/** The help line of {@linkcode FORCE_OPTION}, aligned like the other option lines. */
export const FORCE_HELP =
  "  -f, --force            replace an existing output (never one of the inputs)\n";

/**
 * The output policy of a command (docs/evidence.md): the files it reads as
 * data (`inputs`: protected, and the output's permissions never wider than
 * theirs), further files it reads (`protect`: plug maps, headers), and
 * `--force`. Undefined entries are skipped.
 */
export function outputPolicy(
  values: { force?: boolean | undefined },
  inputs: readonly (string | undefined)[],
  protect: readonly (string | undefined)[] = [],
): AtomicOutputOptions {
  const defined = (list: readonly (string | undefined)[]) =>
    list.filter((x): x is string => x !== undefined);
  return { inputs: defined(inputs), protect: defined(protect), force: values.force ?? false };
}

/** The files named by the plug-map options (they are inputs too). */
export function plugMapFiles(values: PlugMapValues): (string | undefined)[] {
  return [values.plugmap, values["plugmap-from"]];
}

/** Values of {@linkcode PLUGMAP_OPTIONS}. */
export interface PlugMapValues {
  plugmap?: string | undefined;
  "plugmap-from"?: string | undefined;
}

/** How {@linkcode checkPlugMapOptions} checks the plug-map options. */
export interface PlugMapCheck {
  /** Require exactly one of them, naming this command in the error. */
  requiredBy?: string;
  /** The usage error when both are given (at-most-one commands). */
  bothMessage?: string;
}

/**
 * Check the `--plugmap`/`--plugmap-from` pair: at most one, or exactly one
 * with `requiredBy`.
 */
export function checkPlugMapOptions(values: PlugMapValues, check: PlugMapCheck = {}): void {
  const given = (values.plugmap !== undefined ? 1 : 0) +
    (values["plugmap-from"] !== undefined ? 1 : 0);
  if (check.requiredBy !== undefined && given !== 1) {
    throw new UsageError(
      `${check.requiredBy} needs exactly one of --plugmap FILE and --plugmap-from STREAM`,
    );
  }
  if (given > 1) {
    throw new UsageError(check.bothMessage ?? "give either --plugmap or --plugmap-from, not both");
  }
}

/**
 * Refuse standard input as both the input and the plug map
 * (`verify - --plugmap-from -`): the plug map's reader would take the first
 * part of it (the early sections, or all of it) and the input's the rest.
 *
 * @param inPath The command's input (`-`: standard input).
 * @param values The plug-map options.
 * @throws {UsageError} when both are `-`.
 */
export function checkStdinOnce(inPath: string, values: PlugMapValues): void {
  const option = values.plugmap === "-"
    ? "--plugmap"
    : values["plugmap-from"] === "-"
    ? "--plugmap-from"
    : undefined;
  if (inPath === "-" && option !== undefined) {
    throw new UsageError(
      `standard input cannot be both the input and ${option}: give one of them as a file`,
    );
  }
}

/**
 * Check the plug-map options (see {@linkcode checkPlugMapOptions}) and load
 * the map they name, `undefined` when neither is given.
 */
export async function loadPlugMapOption(
  values: PlugMapValues,
  check: PlugMapCheck = {},
): Promise<PlugMap | undefined> {
  checkPlugMapOptions(values, check);
  const plugMapFile = values.plugmap;
  const stream = values["plugmap-from"];
  if (plugMapFile === undefined && stream === undefined) return undefined;
  // Loaded on use: the plug-state loaders pull in the stream and container readers, a cost
  // commands without these options (inspect) should not pay at start-up.
  const { loadPlugState } = await lazyImport<typeof import("../src/input/load_plug_state.ts")>(
    "../src/input/load_plug_state.ts",
    import.meta.url,
  );
  if (plugMapFile !== undefined) return (await loadPlugState({ plugMapFile })).plugMap;
  return (await loadPlugState({ stream: stream! })).plugMap;
}

/**
 * A non-negative integer option value, decimal or `0x` hex; a usage error
 * naming `flag` otherwise.
 */
export function parseNumber(text: string, flag: string): number {
  const n = /^0x[0-9a-f]+$/i.test(text)
    ? Number.parseInt(text.slice(2), 16)
    : /^\d+$/.test(text)
    ? Number(text)
    : NaN;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new UsageError(`${flag} needs a non-negative integer (decimal or 0x hex), not ${text}`);
  }
  return n;
}

/** Binary multipliers of size suffixes, as QEMU reads them (`4G` is 4 GiB). */
const SIZE_SUFFIXES: Record<string, number> = {
  "": 1,
  b: 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
};

/**
 * A size or address option value: decimal or `0x` hex, with an optional
 * binary suffix as QEMU takes them (`K`, `M`, `G`, `T`, `P`, also written
 * `KiB`, `MB` …: always powers of 1024), e.g. `--base 4G`, `2M`,
 * `0x100000000`. A usage error naming `flag` otherwise.
 *
 * @param text The value.
 * @param flag The option, for the error.
 * @returns Bytes.
 */
export function parseSize(text: string, flag: string): number {
  const m = /^(0x[0-9a-f]+|\d+)\s*(?:([kmgtp])(?:i?b)?|(b))?$/i.exec(text.trim());
  const value = m === null
    ? NaN
    : (m[1]!.startsWith("0x") || m[1]!.startsWith("0X")
      ? Number.parseInt(m[1]!.slice(2), 16)
      : Number(m[1])) * SIZE_SUFFIXES[(m[2] ?? m[3] ?? "").toLowerCase()]!;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new UsageError(
      `${flag} needs a size or address: decimal or 0x hex, optionally with K, M, G, T ` +
        `(binary: 4G is 4 GiB), not ${JSON.stringify(text)}`,
    );
  }
  return value;
}
