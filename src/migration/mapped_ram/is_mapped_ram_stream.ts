/**
 * Tell a mapped-ram stream from a plain one by its configuration section.
 * Apart from the rest of `mapped_ram/`, so that opening any stream file
 * (`openInput` asks this of every uncompressed one) loads only the decoder,
 * not the mapped-ram reader and the inspector it uses.
 *
 * @module
 */

import { FormatError } from "../../errors.ts";
import type { PositionalReader } from "../../io/positional.ts";
import { positionalByteReader } from "../../io/positional_byte_reader.ts";
import { decodeMigrationBatches } from "../decoder.ts";

/**
 * Whether the migration stream at `payloadOffset` of a file is a mapped-ram
 * stream: its configuration section lists the `mapped-ram` capability.
 * Reads the header and the configuration only.
 *
 * @param reader The file.
 * @param payloadOffset File offset of the `QEVM` magic. @default {0}
 * @returns `true` for a mapped-ram stream; `false` for anything else (including bytes that are no stream).
 *
 * @example
 * ```ts ignore
 * import { isMappedRamStream } from "@vmem-dump/vmem-dump/migration";
 * import { openPositional } from "@vmem-dump/vmem-dump";
 * using file = await openPositional("vm.mig");
 * console.log(await isMappedRamStream(file));
 * ```
 */
export async function isMappedRamStream(
  reader: PositionalReader,
  payloadOffset = 0,
): Promise<boolean> {
  const bytes = positionalByteReader(reader, { startOffset: payloadOffset, chunkSize: 4096 });
  try {
    for await (const batch of decodeMigrationBatches(bytes, { mappedRam: true })) {
      for (const r of batch) {
        if (r.kind === "configuration") return r.capabilities.includes("mapped-ram");
        if (r.kind !== "header") return false;
      }
    }
  } catch (e) {
    if (e instanceof FormatError) return false;
    throw e;
  }
  return false;
}
