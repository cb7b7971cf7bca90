/**
 * Which dump format a file is, from its first bytes.
 *
 * @module
 */

import { ELFMAG } from "../elf/constants.ts";
import { isFlattenedKdump } from "../kdump/flattened.ts";
import { KDUMP_SIGNATURE } from "../kdump/header.ts";
import type { PositionalReader } from "../io/positional.ts";

/** Dump formats told apart by magic. */
export type DumpKind = "elf" | "kdump" | "kdump-flattened";

/**
 * Sniff a dump: ELF (`\x7fELF`), kdump (`KDUMP   `) or flattened
 * (`makedumpfile`, type 1).
 *
 * @param reader The input.
 * @returns The kind, or `undefined` for anything else (a raw image, a stream).
 *
 * @example
 * ```ts
 * import { bytesPositional } from "@vmem-dump/vmem-dump";
 * import { sniffDump } from "@vmem-dump/vmem-dump/dumps";
 * console.log(await sniffDump(bytesPositional(new TextEncoder().encode("KDUMP   ........")))); // kdump
 * ```
 */
export async function sniffDump(reader: PositionalReader): Promise<DumpKind | undefined> {
  const head = new Uint8Array(24);
  const n = await reader.readInto(0, head);
  const b = head.subarray(0, n);
  if (n >= 4 && ELFMAG.every((x, i) => b[i] === x)) return "elf";
  if (n >= 8 && [...KDUMP_SIGNATURE].every((c, i) => b[i] === c.charCodeAt(0))) return "kdump";
  if (isFlattenedKdump(b)) return "kdump-flattened";
  return undefined;
}
