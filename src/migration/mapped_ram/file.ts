/**
 * Open a mapped-ram migration file (QEMU >= 9.0, `migrate file:…` with the
 * `mapped-ram` capability, with or without `multifd`; libvirt's "sparse"
 * save images): one pass of the migration decoder over the stream parts of
 * the file (configuration, sections, device state, EOF, vmdesc), jumping
 * over every RAMBlock's bitmap and pages, which stay where they are and are
 * read on demand.
 *
 * @module
 */

import { FormatError } from "../../errors.ts";
import type { PositionalReader } from "../../io/positional.ts";
import { positionalByteReader } from "../../io/positional_byte_reader.ts";
import type { PlugMap } from "../../vmem/plug_map.ts";
import { decodeMigrationBatches } from "../decoder.ts";
import { inspectMigration, type InspectReport } from "../inspect.ts";
import { isPageRecord, type MigrationRecord, type RamBlockInfo } from "../types.ts";
import { PlugStateCollector } from "../_plug_state_collector.ts";
import type { MappedRamBlock } from "./block_layout.ts";
import { DEFAULT_PAGE_SIZE } from "../constants.ts";

/** A RAMBlock of a mapped-ram MEM_SIZE list. */
export interface MappedRamBlockInfo extends RamBlockInfo {
  /** Where its bitmap and pages are. */
  mappedRam: MappedRamBlock;
}

/**
 * One MEM_SIZE list: QEMU loads the pages of every block in it while it
 * reads the list. A file from QEMU has exactly one.
 */
export interface MappedRamLoad {
  /** File offset of the MEM_SIZE record. */
  fileOffset: number;
  /** The blocks, in list order. */
  blocks: MappedRamBlockInfo[];
}

/** A mapped-ram file whose stream parts have been read. */
export interface MappedRamFile {
  /** The file. */
  reader: PositionalReader;
  /** File size in bytes. */
  byteLength: number;
  /** File offset of the `QEVM` magic (after a libvirt header, else 0). All offsets are file offsets. */
  payloadOffset: number;
  /** Target page size. */
  pageSize: number;
  /** The MEM_SIZE lists (one in a file written by QEMU). */
  loads: MappedRamLoad[];
  /** The stream parts summarised as `inspect` does (offsets are file offsets). */
  stream: InspectReport;
  /** The virtio-mem plug state the stream carries. */
  plugMap: PlugMap;
  /** `early` (the early section), `late` (the device section) or `none` (no virtio-mem device). */
  plugLayout: "early" | "late" | "none";
}

/** Options for {@linkcode readMappedRamFile}. */
export interface ReadMappedRamFileOptions {
  /** File offset of the `QEVM` magic (e.g. after a libvirt header). @default {0} */
  payloadOffset?: number;
}

function bad(message: string, code: FormatError["code"], offset: number): FormatError {
  return new FormatError(`Cannot read mapped-ram file: ${message}`, {
    format: "migration",
    code,
    offset,
  });
}

/**
 * Decode the stream parts of a mapped-ram file and check them: the
 * configuration lists `mapped-ram`, every block's header is valid (see
 * `mappedRamBlockLayout`), no RAM record travels in the stream (QEMU refuses
 * PAGE, ZERO, XBZRLE and MULTIFD_FLUSH records in a mapped-ram stream), the
 * stream ends with EOF and its vmdesc, and the virtio-mem plug state is
 * valid. Reads the stream bytes only (a few hundred KiB), whatever the
 * size of the guest.
 *
 * @param reader The file.
 * @param options Where the stream starts.
 * @returns The blocks, the stream summary and the plug state.
 * @throws {FormatError} (codes `bad-mapped-ram`, `bad-record`, …) with the file offset of what is wrong.
 * @throws {UnexpectedEofError} when the file is truncated.
 *
 * @example
 * ```ts ignore
 * import { openPositional, readMappedRamFile } from "@vmem-dump/vmem-dump";
 * using file = await openPositional("vm.mapped");
 * const mr = await readMappedRamFile(file);
 * for (const b of mr.loads[0]!.blocks) console.log(b.idstr, b.mappedRam.pagesOffset);
 * ```
 */
export async function readMappedRamFile(
  reader: PositionalReader,
  options: ReadMappedRamFileOptions = {},
): Promise<MappedRamFile> {
  const payloadOffset = options.payloadOffset ?? 0;
  const loads: MappedRamLoad[] = [];
  const collector = new PlugStateCollector({ doing: "read the plug state of a mapped-ram file" });
  let pageSize = 0;
  let sawConfiguration = false;
  const check = (r: MigrationRecord) => {
    if (r.kind === "configuration") {
      sawConfiguration = true;
      pageSize = r.targetPageBits === undefined ? DEFAULT_PAGE_SIZE : 2 ** r.targetPageBits;
      if (!r.capabilities.includes("mapped-ram")) {
        throw bad(
          "its configuration does not list the mapped-ram capability",
          "bad-mapped-ram",
          r.streamOffset,
        );
      }
    } else if (r.kind === "ram-mem-size") {
      if (!sawConfiguration) {
        throw bad("the stream has no configuration section", "bad-mapped-ram", r.streamOffset);
      }
      loads.push({
        fileOffset: r.streamOffset,
        blocks: r.blocks.map((b) => ({ ...b, mappedRam: b.mappedRam! })),
      });
    } else if (isPageRecord(r) || r.kind === "ram-multifd-flush") {
      throw bad(
        `a ${r.kind} record in the stream of a mapped-ram file (QEMU refuses to load it)`,
        "bad-record",
        r.streamOffset,
      );
    }
    collector.add(r);
  };
  const bytes = positionalByteReader(reader, { startOffset: payloadOffset });
  async function* checked(): AsyncGenerator<MigrationRecord[]> {
    for await (const batch of decodeMigrationBatches(bytes, { mappedRam: true })) {
      for (const r of batch) check(r);
      yield batch;
    }
  }
  const stream = await inspectMigration(checked());
  if (!sawConfiguration) {
    throw bad("the stream has no configuration section", "bad-mapped-ram", payloadOffset + 8);
  }
  if (loads.length === 0) {
    throw bad("the stream has no RAMBlock list", "bad-mapped-ram", payloadOffset + 8);
  }
  const { plugMap, layout } = collector.finish(true);
  return {
    reader,
    byteLength: reader.byteLength,
    payloadOffset,
    pageSize,
    loads,
    stream,
    plugMap,
    plugLayout: layout,
  };
}
