/**
 * The targets of the mutation campaign, loaded on demand by name.
 *
 * @module
 */

import type { FuzzTarget } from "../target.ts";

const TARGETS: Record<string, () => Promise<FuzzTarget>> = {
  "migration-cli": async () => (await import("./migration_cli.ts")).migrationCliTarget,
  "migration-cli-realdata": async () =>
    (await import("./migration_cli.ts")).migrationCliRealdataTarget,
  "container": async () => (await import("./container.ts")).containerTarget,
  "plugmap": async () => (await import("./plugmap.ts")).plugmapTarget,
  "elf": async () => (await import("./dumps.ts")).elfTarget,
  "kdump": async () => (await import("./dumps.ts")).kdumpTarget,
  "cli-json": async () => (await import("./cli_json.ts")).cliJsonTarget,
  "mapped-ram": async () => (await import("./mapped_ram.ts")).mappedRamTarget,
  "multifd": async () => (await import("./multifd.ts")).multifdTarget,
  "selftest": async () => (await import("./selftest.ts")).selftestTarget,
};

/** Every target name. */
export const TARGET_NAMES: readonly string[] = Object.keys(TARGETS);

/**
 * Load a target.
 *
 * @param name Target name.
 * @returns The target.
 * @throws {RangeError} for an unknown name.
 */
export async function loadTarget(name: string): Promise<FuzzTarget> {
  const load = TARGETS[name];
  if (load === undefined) {
    throw new RangeError(`unknown campaign target ${name} (known: ${TARGET_NAMES.join(", ")})`);
  }
  return await load();
}
