/**
 * Streaming decoder of QEMU migration streams: header, configuration,
 * commands (PACKAGED decoded inside), `ram` sections record by record, early
 * virtio-mem sections, and the device-state tail (passed through, with the
 * virtio-mem device section and the vmdesc recognised).
 *
 * @module
 */

import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../errors.ts";
import { type ByteReader, StreamByteReader } from "../io/byte_reader.ts";
import { isPowerOfTwo } from "../io/bits.ts";
import { getSafeU64, viewOf } from "../io/endian.ts";
import { VIRTIO_MEM_MAX_BLOCKS } from "../vmem/plug_map.ts";
import * as C from "./constants.ts";
import type {
  ConfigurationSubsection,
  MigrationRecord,
  RamBlockInfo,
  SectionHeaderRecord,
  VirtioMemEarlyRecord,
} from "./types.ts";
import { latin1Decode } from "../io/text.ts";
import { decodeTail, encodeLongHeader } from "./_tail.ts";
import { MAPPED_RAM_HEADER_SIZE, readMappedRamHeader } from "./mapped_ram/header.ts";
import { mappedRamBlockLayout } from "./mapped_ram/block_layout.ts";

/** Options for {@linkcode decodeMigration}. */
export interface DecodeOptions {
  /** Target page size; by default from `configuration/target-page-bits`, else 4096. @default {undefined} */
  pageSize?: number;
  /** Bytes of device-state tail held back to find the virtio-mem section and the vmdesc. @default {16777216} */
  tailWindow?: number;
  /** Treat a tail without vmdesc as truncated (Xen machines and postcopy send none). @default {true} */
  requireVmdesc?: boolean;
  /** Size of `opaque` records. @default {65536} */
  opaqueChunk?: number;
  /**
   * Decode mapped-ram files (the `mapped-ram` capability): each block of the
   * MEM_SIZE list gets its `mappedRam` layout, and the reader skips the
   * block's bitmap and pages. Reader offsets must be file offsets, and skips
   * should be seeks (`positionalByteReader`). Without it, a mapped-ram
   * stream is an `UnsupportedFeatureError`. @default {false}
   */
  mappedRam?: boolean;
}

/** MIG_CMD_* names, and the payload length each must have (-1: variable). */
const COMMANDS = new Map<number, { name: string; length: number[] | null }>([
  [C.MIG_CMD_OPEN_RETURN_PATH, { name: "OPEN_RETURN_PATH", length: [0] }],
  [C.MIG_CMD_PING, { name: "PING", length: [4] }],
  [C.MIG_CMD_POSTCOPY_ADVISE, { name: "POSTCOPY_ADVISE", length: [0, 16] }],
  [C.MIG_CMD_POSTCOPY_LISTEN, { name: "POSTCOPY_LISTEN", length: [0] }],
  [C.MIG_CMD_POSTCOPY_RUN, { name: "POSTCOPY_RUN", length: [0] }],
  [C.MIG_CMD_POSTCOPY_RAM_DISCARD, { name: "POSTCOPY_RAM_DISCARD", length: null }],
  [C.MIG_CMD_PACKAGED, { name: "PACKAGED", length: [4] }],
  [C.MIG_CMD_ENABLE_COLO, { name: "ENABLE_COLO", length: [0] }],
  [C.MIG_CMD_POSTCOPY_RESUME, { name: "POSTCOPY_RESUME", length: [0] }],
  [C.MIG_CMD_RECV_BITMAP, { name: "RECV_BITMAP", length: null }],
  [C.MIG_CMD_SWITCHOVER_START, { name: "SWITCHOVER_START", length: [0] }],
]);

/** Name of a MIG_CMD_* value, for messages and reports. */
export function commandName(command: number): string {
  return COMMANDS.get(command)?.name ?? `0x${command.toString(16)}`;
}

const MAX_RAM_BLOCKS = 65536;
const MAX_MACHINE_NAME = 256;
const MAX_CAPABILITIES = 256;
const MAX_VMDESC = 64 << 20;

function bad(message: string, code: FormatError["code"], offset: number): FormatError {
  return new FormatError(`Cannot decode migration stream: ${message}`, {
    format: "migration",
    code,
    offset,
  });
}

/** Per-stream decoder state shared by the top level and nested PACKAGED streams. */
interface State {
  pageSize: number;
  pageMask: number;
  sections: Map<number, { idstr: string; instanceId: number; versionId: number }>;
  ramBlocks: RamBlockInfo[];
  ramBlockByName: Map<string, RamBlockInfo>;
  lastBlock: RamBlockInfo | undefined;
  footers: boolean | undefined;
  capabilities: string[];
  postcopyPageSummary: number | undefined;
  early: Map<string, VirtioMemEarlyRecord>;
  /** The stream has the mapped-ram capability. */
  mappedRam: boolean;
  options: Required<DecodeOptions>;
}

/**
 * Decode a migration stream into records, in constant memory.
 *
 * @param reader Where the stream comes from.
 * @param options Page size and tail handling.
 * @returns The records in stream order; views point into the input.
 * @throws {FormatError} on malformed input, with the offset of the bad field.
 * @throws {UnexpectedEofError} when the input ends inside the stream.
 * @throws {UnsupportedFeatureError} for RDMA hooks, mapped-ram and iterable sections other than `ram`.
 *
 * @example Count page records
 * ```ts ignore
 * import { decodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * let pages = 0;
 * for await (const r of decodeMigration(input.reader)) if (r.kind === "ram-page") pages++;
 * input.close();
 * ```
 */
export async function* decodeMigration(
  reader: ByteReader,
  options: DecodeOptions = {},
): AsyncGenerator<MigrationRecord> {
  for await (const batch of decodeMigrationBatches(reader, options)) yield* batch;
}

/**
 * Like {@linkcode decodeMigration}, but yields records in batches: all the
 * records that could be decoded from buffered bytes without waiting. This is
 * the fast path for filters and encoders (one await per batch, not per page).
 *
 * @param reader Where the stream comes from.
 * @param options Page size and tail handling.
 * @returns Non-empty arrays of records in stream order.
 * @throws {FormatError} on malformed input.
 *
 * @example
 * ```ts ignore
 * import { decodeMigrationBatches, openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * for await (const batch of decodeMigrationBatches(input.reader)) console.log(batch.length);
 * ```
 */
export async function* decodeMigrationBatches(
  reader: ByteReader,
  options: DecodeOptions = {},
): AsyncGenerator<MigrationRecord[]> {
  const headerOffset = reader.offset;
  const head = await reader.read(8, "the stream header");
  const hv = viewOf(head);
  if (hv.getUint32(0) !== C.QEMU_VM_FILE_MAGIC) {
    throw bad(
      `bad magic 0x${hv.getUint32(0).toString(16).padStart(8, "0")}, expected QEVM`,
      "bad-magic",
      headerOffset,
    );
  }
  const version = hv.getUint32(4);
  if (version !== C.QEMU_VM_FILE_VERSION) {
    throw bad(`unsupported stream version ${version}, expected 3`, "bad-version", headerOffset + 4);
  }
  yield [{ kind: "header", streamOffset: headerOffset, version }];

  const state: State = {
    pageSize: options.pageSize ?? C.DEFAULT_PAGE_SIZE,
    pageMask: (options.pageSize ?? C.DEFAULT_PAGE_SIZE) - 1,
    sections: new Map(),
    ramBlocks: [],
    ramBlockByName: new Map(),
    lastBlock: undefined,
    footers: undefined,
    capabilities: [],
    postcopyPageSummary: undefined,
    early: new Map(),
    mappedRam: false,
    options: {
      pageSize: options.pageSize ?? C.DEFAULT_PAGE_SIZE,
      tailWindow: options.tailWindow ?? 16 << 20,
      requireVmdesc: options.requireVmdesc ?? true,
      opaqueChunk: options.opaqueChunk ?? 1 << 16,
      mappedRam: options.mappedRam ?? false,
    },
  };

  if ((await reader.peekByte()) === C.QEMU_VM_CONFIGURATION) {
    yield [await decodeConfiguration(reader, state, options.pageSize === undefined)];
  }
  yield* decodeItems(reader, state, undefined);
}

async function decodeConfiguration(
  reader: ByteReader,
  state: State,
  takePageBits: boolean,
): Promise<MigrationRecord> {
  const at = reader.offset;
  const h = viewOf(await reader.read(5, "the configuration section"));
  const nameLength = h.getUint32(1);
  if (nameLength > MAX_MACHINE_NAME) {
    throw bad(`machine type name of ${nameLength} bytes is too long`, "bad-section", at + 1);
  }
  const machineType = latin1Decode(await reader.read(nameLength, "the machine type"));
  const subsections: ConfigurationSubsection[] = [];
  let capabilities: string[] = [];
  let targetPageBits: number | undefined;
  while ((await reader.peekByte()) === C.QEMU_VM_SUBSECTION) {
    const subAt = reader.offset;
    const lenByte = (await reader.read(2, "a configuration subsection"))[1]!;
    const name = latin1Decode(await reader.read(lenByte, "a subsection name"));
    const versionId = viewOf(await reader.read(4, "a subsection version")).getUint32(0);
    const bodyAt = reader.offset;
    let body: Uint8Array;
    if (name === "configuration/target-page-bits") {
      body = (await reader.read(4, "target-page-bits")).slice();
      targetPageBits = viewOf(body).getUint32(0);
      if (targetPageBits < 10 || targetPageBits > 16) {
        throw bad(`target page bits ${targetPageBits} out of range`, "bad-section", bodyAt);
      }
    } else if (name === "configuration/capabilities") {
      const countBytes = await reader.read(4, "the capability count");
      const count = viewOf(countBytes).getUint32(0);
      if (count > MAX_CAPABILITIES) {
        throw bad(`${count} capabilities is too many`, "bad-section", bodyAt);
      }
      const parts: Uint8Array[] = [countBytes.slice()];
      capabilities = [];
      for (let i = 0; i < count; i++) {
        const len = (await reader.read(1, "a capability name"))[0]!;
        const capName = await reader.read(len, "a capability name");
        parts.push(new Uint8Array([len]), capName.slice());
        capabilities.push(latin1Decode(capName));
      }
      body = concat(parts);
    } else if (name === "configuration/uuid") {
      body = (await reader.read(16, "the uuid")).slice();
    } else {
      throw bad(`unknown configuration subsection ${JSON.stringify(name)}`, "bad-section", subAt);
    }
    subsections.push({ name, versionId, body });
  }
  state.mappedRam = capabilities.includes("mapped-ram");
  if (state.mappedRam && !state.options.mappedRam) {
    throw new UnsupportedFeatureError(
      "Cannot decode migration stream: it is a mapped-ram file (RAM pages at fixed file " +
        "offsets), which is read from an uncompressed regular file, not as a stream",
      "migration",
      at,
    );
  }
  state.capabilities = capabilities;
  if (targetPageBits !== undefined && takePageBits) {
    state.pageSize = 1 << targetPageBits;
    state.pageMask = state.pageSize - 1;
  }
  return {
    kind: "configuration",
    streamOffset: at,
    machineType,
    subsections,
    capabilities,
    targetPageBits,
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.byteLength, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/**
 * Decode top-level items until EOF (or, inside PACKAGED, until `limit`).
 */
async function* decodeItems(
  reader: ByteReader,
  state: State,
  limit: number | undefined,
): AsyncGenerator<MigrationRecord[]> {
  for (;;) {
    if (limit !== undefined && reader.offset >= limit) {
      if (reader.offset > limit) {
        throw bad("a record crosses the end of its PACKAGED blob", "bad-command", limit);
      }
      return;
    }
    const at = reader.offset;
    const typeBytes = await reader.readOrEnd(1);
    if (typeBytes === undefined) {
      throw new UnexpectedEofError(
        "Cannot decode migration stream: input ended before QEMU_VM_EOF",
        "migration",
        at,
      );
    }
    const type = typeBytes[0]!;
    switch (type) {
      case C.QEMU_VM_SECTION_START:
      case C.QEMU_VM_SECTION_FULL: {
        const sectionId = viewOf(await reader.read(4, "a section header")).getUint32(0);
        const idLen = (await reader.read(1, "a section idstr"))[0]!;
        const idBytes = (await reader.read(idLen, "a section idstr")).slice();
        const iv = viewOf(await reader.read(8, "a section header"));
        const idstr = latin1Decode(idBytes);
        const header: SectionHeaderRecord = {
          kind: type === C.QEMU_VM_SECTION_START ? "section-start" : "section-full",
          streamOffset: at,
          sectionId,
          idstr,
          instanceId: iv.getUint32(0),
          versionId: iv.getUint32(4),
        };
        if (type === C.QEMU_VM_SECTION_START) {
          if (idstr !== C.RAM_SECTION_IDSTR) {
            throw new UnsupportedFeatureError(
              `Cannot decode migration stream: iterable section ${
                JSON.stringify(idstr)
              } cannot be delimited`,
              "migration",
              at,
            );
          }
          if (header.versionId !== C.RAM_SECTION_VERSION) {
            throw bad(
              `ram section version ${header.versionId}, expected 4`,
              "bad-version",
              at + 10 + idLen,
            );
          }
          state.sections.set(sectionId, {
            idstr,
            instanceId: header.instanceId,
            versionId: header.versionId,
          });
          yield [header];
          yield* decodeRamBody(reader, state, true);
          yield* decodeFooter(reader, state, sectionId);
        } else if (idstr.endsWith(C.VIRTIO_MEM_EARLY_SUFFIX) && header.versionId === 1) {
          yield [header];
          const early = await decodeEarly(
            reader,
            idstr.slice(0, -C.VIRTIO_MEM_EARLY_SUFFIX.length),
          );
          state.early.set(early.devicePath, early);
          yield [early];
          yield* decodeFooter(reader, state, sectionId);
        } else if (limit !== undefined) {
          // Inside PACKAGED (postcopy) device state runs to the end of the blob.
          yield [header];
          yield* passThrough(reader, limit - reader.offset, state.options.opaqueChunk);
        } else {
          const first = encodeLongHeader(
            type,
            sectionId,
            idBytes,
            header.instanceId,
            header.versionId,
          );
          for await (
            const r of decodeTail(reader, first, at, {
              ramBlocks: state.ramBlocks,
              early: state.early,
              window: state.options.tailWindow,
              requireVmdesc: state.options.requireVmdesc,
              opaqueChunk: state.options.opaqueChunk,
            })
          ) yield [r];
          return;
        }
        break;
      }
      case C.QEMU_VM_SECTION_PART:
      case C.QEMU_VM_SECTION_END: {
        const sectionId = viewOf(await reader.read(4, "a section id")).getUint32(0);
        const known = state.sections.get(sectionId);
        if (known === undefined) {
          throw bad(`section id ${sectionId} was never started`, "bad-section", at + 1);
        }
        yield [{
          kind: type === C.QEMU_VM_SECTION_PART ? "section-part" : "section-end",
          streamOffset: at,
          sectionId,
          ...known,
        }];
        yield* decodeRamBody(reader, state, false);
        yield* decodeFooter(reader, state, sectionId);
        break;
      }
      case C.QEMU_VM_COMMAND: {
        const h = viewOf(await reader.read(4, "a command header"));
        const command = h.getUint16(0);
        const length = h.getUint16(2);
        const spec = COMMANDS.get(command);
        if (spec === undefined) {
          throw bad(`unknown command 0x${command.toString(16)}`, "bad-command", at + 1);
        }
        if (spec.length !== null && !spec.length.includes(length)) {
          throw bad(
            `command ${spec.name} has length ${length}, expected ${spec.length.join(" or ")}`,
            "bad-command",
            at + 3,
          );
        }
        const payload = (await reader.read(length, `the ${spec.name} payload`)).slice();
        yield [{ kind: "command", streamOffset: at, command, name: spec.name, payload }];
        if (command === C.MIG_CMD_POSTCOPY_ADVISE && length === 16) {
          state.postcopyPageSummary = getSafeU64(viewOf(payload), 0, false, {
            format: "migration",
            offset: at + 5,
          });
        }
        if (command === C.MIG_CMD_PACKAGED) {
          if (limit !== undefined) throw bad("PACKAGED inside PACKAGED", "bad-command", at);
          const blobLength = viewOf(payload).getUint32(0);
          yield* decodeItems(reader, state, reader.offset + blobLength);
        }
        break;
      }
      case C.QEMU_VM_EOF: {
        if (limit !== undefined) throw bad("QEMU_VM_EOF inside PACKAGED", "bad-section", at);
        yield [{ kind: "eof", streamOffset: at }];
        yield* decodeAfterEof(reader);
        return;
      }
      default:
        throw bad(`unknown section type 0x${type.toString(16)}`, "bad-section", at);
    }
  }
}

async function* passThrough(
  reader: ByteReader,
  byteLength: number,
  chunk: number,
): AsyncGenerator<MigrationRecord[]> {
  let left = byteLength;
  while (left > 0) {
    const at = reader.offset;
    const got = await reader.readChunk(Math.min(left, chunk));
    if (got === undefined) {
      throw new UnexpectedEofError(
        "Cannot decode migration stream: input ended inside PACKAGED",
        "migration",
        at,
      );
    }
    left -= got.byteLength;
    yield [{ kind: "opaque", streamOffset: at, data: got.slice() }];
  }
}

async function* decodeAfterEof(reader: ByteReader): AsyncGenerator<MigrationRecord[]> {
  const at = reader.offset;
  const type = await reader.readOrEnd(1);
  // Streams without a vmdesc (Xen machines, device-state-only saves) end at EOF.
  if (type === undefined) return;
  if (type[0] !== C.QEMU_VM_VMDESCRIPTION) {
    throw bad(`unexpected byte 0x${type[0]!.toString(16)} after QEMU_VM_EOF`, "bad-section", at);
  }
  const length = viewOf(await reader.read(4, "the vmdesc length")).getUint32(0);
  if (length > MAX_VMDESC) throw bad(`vmdesc of ${length} bytes is too large`, "too-large", at + 1);
  const json = (await reader.read(length, "the vmdesc JSON")).slice();
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(json));
  } catch {
    parsed = undefined;
  }
  yield [{ kind: "vmdesc", streamOffset: at, json, parsed }];
  const rest = await reader.readOrEnd(1);
  if (rest !== undefined) {
    throw bad("trailing bytes after the vmdesc", "bad-section", reader.offset - 1);
  }
}

async function* decodeFooter(
  reader: ByteReader,
  state: State,
  sectionId: number,
): AsyncGenerator<MigrationRecord[]> {
  if (state.footers === false) return;
  const at = reader.offset;
  const next = await reader.peekByte();
  if (next !== C.QEMU_VM_SECTION_FOOTER) {
    if (state.footers === undefined) {
      state.footers = false; // QEMU <= 2.3 machine types send none, for the whole stream
      return;
    }
    if (next === undefined) {
      throw new UnexpectedEofError("Cannot read a section footer: input ended", "migration", at);
    }
    throw bad(`expected section footer 0x7e, found 0x${next.toString(16)}`, "bad-footer", at);
  }
  state.footers = true;
  const f = viewOf(await reader.read(5, "a section footer"));
  const id = f.getUint32(1);
  if (id !== sectionId) {
    throw bad(`section footer for id ${id} closes section ${sectionId}`, "bad-footer", at + 1);
  }
  yield [{ kind: "section-footer", streamOffset: at, sectionId }];
}

async function decodeEarly(reader: ByteReader, devicePath: string): Promise<VirtioMemEarlyRecord> {
  const at = reader.offset;
  const v = viewOf(await reader.read(36, "the virtio-mem early section"));
  const u64 = (o: number) => getSafeU64(v, o, false, { format: "migration", offset: at + o });
  const gpa = u64(0);
  const regionSize = u64(8);
  const blockSize = u64(16);
  const node = v.getUint32(24);
  const size = u64(28);
  if (!isPowerOfTwo(blockSize) || regionSize % blockSize !== 0) {
    throw bad(
      `virtio-mem block size 0x${blockSize.toString(16)} does not divide region size 0x${
        regionSize.toString(16)
      }`,
      "bad-virtio-mem",
      at + 16,
    );
  }
  const bits = regionSize / blockSize;
  if (bits > VIRTIO_MEM_MAX_BLOCKS) {
    throw bad(`virtio-mem bitmap of ${bits} bits is too large`, "too-large", at + 8);
  }
  const bitmap = (await reader.read(8 * Math.ceil(bits / 64), "the virtio-mem bitmap")).slice();
  return {
    kind: "virtio-mem-early",
    streamOffset: at,
    devicePath,
    gpa,
    regionSize,
    blockSize,
    node,
    size,
    bitmap,
  };
}

/** Decode one `ram` section body up to and including EOS, in batches. */
async function* decodeRamBody(
  reader: ByteReader,
  state: State,
  isStart: boolean,
): AsyncGenerator<MigrationRecord[]> {
  const pageSize = state.pageSize;
  const mask = state.pageMask;
  let batch: MigrationRecord[] = [];
  for (;;) {
    if (batch.length >= 4096) {
      yield batch;
      batch = [];
    }
    const at = reader.offset;
    let w = reader.tryReadSync(8);
    if (w === undefined) {
      if (batch.length > 0) {
        yield batch;
        batch = [];
      }
      w = await reader.read(8, "a RAM record header");
    }
    const hi = (w[0]! << 24 | w[1]! << 16 | w[2]! << 8 | w[3]!) >>> 0;
    const lo = (w[4]! << 24 | w[5]! << 16 | w[6]! << 8 | w[7]!) >>> 0;
    const flags = lo & mask;
    const ramOffset = hi * 0x1_0000_0000 + (lo - flags);
    const kindFlags = flags & ~C.RAM_SAVE_FLAG_CONTINUE;
    if (
      kindFlags === C.RAM_SAVE_FLAG_PAGE || kindFlags === C.RAM_SAVE_FLAG_ZERO ||
      kindFlags === C.RAM_SAVE_FLAG_XBZRLE || kindFlags === C.RAM_SAVE_FLAG_COMPRESS_PAGE
    ) {
      // No 2^53 check needed: a larger offset is past the end of any block (checked below).
      const continued = (flags & C.RAM_SAVE_FLAG_CONTINUE) !== 0;
      let block: RamBlockInfo | undefined;
      if (continued) {
        block = state.lastBlock;
        if (block === undefined) {
          throw bad("RAM record has CONTINUE but no block was named before", "bad-record", at);
        }
      } else {
        const lenAt = reader.offset;
        let lenByte = reader.tryReadSync(1);
        if (lenByte === undefined) {
          if (batch.length > 0) {
            yield batch;
            batch = [];
          }
          lenByte = await reader.read(1, "a RAMBlock idstr");
        }
        const len = lenByte[0]!;
        let idBytes = reader.tryReadSync(len);
        if (idBytes === undefined) {
          if (batch.length > 0) {
            yield batch;
            batch = [];
          }
          idBytes = await reader.read(len, "a RAMBlock idstr");
        }
        block = lookupBlock(state, idBytes);
        if (block === undefined) {
          throw bad(
            `unknown RAMBlock ${JSON.stringify(latin1Decode(idBytes))}`,
            "unknown-block",
            lenAt,
          );
        }
        state.lastBlock = block;
      }
      if (ramOffset >= block.usedLength) {
        throw bad(
          `RAM offset 0x${ramOffset.toString(16)} is past the end of ${
            JSON.stringify(block.idstr)
          } (0x${block.usedLength.toString(16)})`,
          "out-of-range",
          at,
        );
      }
      if (kindFlags === C.RAM_SAVE_FLAG_PAGE) {
        let data = reader.tryReadSync(pageSize);
        if (data === undefined) {
          if (batch.length > 0) {
            yield batch;
            batch = [];
          }
          data = await reader.read(pageSize, "a RAM page");
        }
        batch.push({
          kind: "ram-page",
          streamOffset: at,
          ramBlock: block.idstr,
          ramOffset,
          continued,
          data,
        });
      } else if (kindFlags === C.RAM_SAVE_FLAG_ZERO) {
        let fill = reader.tryReadSync(1);
        if (fill === undefined) {
          if (batch.length > 0) {
            yield batch;
            batch = [];
          }
          fill = await reader.read(1, "a zero page fill byte");
        }
        batch.push({
          kind: "ram-zero-page",
          streamOffset: at,
          ramBlock: block.idstr,
          ramOffset,
          continued,
          fill: fill[0]!,
        });
      } else {
        if (batch.length > 0) {
          yield batch;
          batch = [];
        }
        yield [
          await decodeRareRecord(reader, kindFlags, pageSize, {
            at,
            ramBlock: block.idstr,
            ramOffset,
            continued,
          }),
        ];
      }
      continue;
    }
    if (batch.length > 0) {
      yield batch;
      batch = [];
    }
    if (flags === C.RAM_SAVE_FLAG_EOS && ramOffset === 0) {
      yield [{ kind: "ram-eos", streamOffset: at }];
      return;
    }
    if (flags === C.RAM_SAVE_FLAG_MULTIFD_FLUSH && ramOffset === 0) {
      yield [{ kind: "ram-multifd-flush", streamOffset: at }];
      continue;
    }
    if (flags === C.RAM_SAVE_FLAG_MEM_SIZE && isStart) {
      const total = getSafeU64(viewOf(w), 0, false, { format: "migration", offset: at }) - flags;
      yield [await decodeMemSize(reader, state, total, at)];
      continue;
    }
    if (flags === C.RAM_SAVE_FLAG_HOOK) {
      throw new UnsupportedFeatureError(
        "Cannot decode migration stream: RDMA hook records are not supported",
        "migration",
        at,
      );
    }
    throw bad(`invalid RAM record flags 0x${flags.toString(16)}`, "bad-record", at + 6);
  }
}

/** Find a block by its idstr bytes without building a string for the common case. */
function lookupBlock(state: State, idBytes: Uint8Array): RamBlockInfo | undefined {
  const last = state.lastBlock;
  if (last !== undefined && last.idstr.length === idBytes.byteLength) {
    let same = true;
    for (let i = 0; i < idBytes.byteLength; i++) {
      if (last.idstr.charCodeAt(i) !== idBytes[i]) {
        same = false;
        break;
      }
    }
    if (same) return last;
  }
  return state.ramBlockByName.get(latin1Decode(idBytes));
}

/** XBZRLE and COMPRESS_PAGE records: rare, decoded on the slow path. */
async function decodeRareRecord(
  reader: ByteReader,
  kindFlags: number,
  pageSize: number,
  base: { at: number; ramBlock: string; ramOffset: number; continued: boolean },
): Promise<MigrationRecord> {
  const { at, ramBlock, ramOffset, continued } = base;
  if (kindFlags === C.RAM_SAVE_FLAG_XBZRLE) {
    const hAt = reader.offset;
    const h = await reader.read(3, "an XBZRLE header");
    const encoding = h[0]!;
    if (encoding !== C.ENCODING_FLAG_XBZRLE) {
      throw bad(`XBZRLE encoding 0x${encoding.toString(16)}, expected 0x01`, "bad-record", hAt);
    }
    const len = h[1]! << 8 | h[2]!;
    if (len > pageSize) {
      throw bad(`XBZRLE length ${len} exceeds the page size`, "bad-record", hAt + 1);
    }
    const data = await reader.read(len, "XBZRLE data");
    return {
      kind: "ram-xbzrle-page",
      streamOffset: at,
      ramBlock,
      ramOffset,
      continued,
      encoding,
      data,
    };
  }
  const lAt = reader.offset;
  const len = viewOf(await reader.read(4, "a compressed page length")).getUint32(0);
  if (len > pageSize * 2 + 64) {
    throw bad(`compressed page of ${len} bytes is too large`, "bad-record", lAt);
  }
  const data = await reader.read(len, "a compressed page");
  return { kind: "ram-compressed-page", streamOffset: at, ramBlock, ramOffset, continued, data };
}

async function decodeMemSize(
  reader: ByteReader,
  state: State,
  totalBytes: number,
  at: number,
): Promise<MigrationRecord> {
  const blocks: RamBlockInfo[] = [];
  let remaining = totalBytes;
  const hasPageSizes = state.postcopyPageSummary !== undefined &&
    state.postcopyPageSummary !== state.pageSize;
  const hasGpa = state.capabilities.includes("x-ignore-shared");
  while (remaining > 0) {
    if (blocks.length >= MAX_RAM_BLOCKS) {
      throw bad("too many RAMBlocks in the block list", "too-large", reader.offset);
    }
    const nameAt = reader.offset;
    const len = (await reader.read(1, "a RAMBlock idstr"))[0]!;
    const idstr = latin1Decode(await reader.read(len, "a RAMBlock idstr"));
    const lv = viewOf(await reader.read(8, "a RAMBlock length"));
    const usedLength = getSafeU64(lv, 0, false, { format: "migration", offset: nameAt + 1 + len });
    if (usedLength === 0 || usedLength > remaining) {
      throw bad(
        `RAMBlock ${JSON.stringify(idstr)} length 0x${
          usedLength.toString(16)
        } does not fit the total`,
        "bad-record",
        nameAt + 1 + len,
      );
    }
    if (state.ramBlockByName.has(idstr)) {
      throw bad(`RAMBlock ${JSON.stringify(idstr)} listed twice`, "bad-record", nameAt);
    }
    const block: RamBlockInfo = { idstr, usedLength };
    if (hasPageSizes && (await reader.peekByte()) === 0) {
      const pAt = reader.offset;
      const pv = viewOf(await reader.read(8, "a RAMBlock page size"));
      block.pageSize = getSafeU64(pv, 0, false, { format: "migration", offset: pAt });
    }
    if (hasGpa) {
      const gAt = reader.offset;
      const gv = viewOf(await reader.read(8, "a RAMBlock address"));
      block.gpa = getSafeU64(gv, 0, false, { format: "migration", offset: gAt });
    }
    if (state.mappedRam) {
      const headerOffset = reader.offset;
      const header = readMappedRamHeader(
        await reader.read(MAPPED_RAM_HEADER_SIZE, "a mapped-ram header"),
        headerOffset,
      );
      const layout = mappedRamBlockLayout({
        idstr,
        usedLength,
        header,
        headerOffset,
        pageSize: state.pageSize,
        ignoreShared: hasGpa,
      });
      block.mappedRam = layout;
      await reader.skip(layout.areaEnd - reader.offset, `the mapped-ram area of ${idstr}`);
    }
    blocks.push(block);
    remaining -= usedLength;
  }
  state.ramBlocks.splice(0, state.ramBlocks.length, ...blocks);
  state.ramBlockByName = new Map(blocks.map((b) => [b.idstr, b]));
  state.lastBlock = undefined;
  return { kind: "ram-mem-size", streamOffset: at, totalBytes, blocks };
}

/**
 * A `TransformStream` from stream bytes to {@linkcode MigrationRecord}s.
 *
 * @example
 * ```ts ignore
 * import { MigrationDecoderStream } from "@vmem-dump/vmem-dump";
 * const records = (await Deno.open("s1.mig")).readable.pipeThrough(new MigrationDecoderStream());
 * for await (const r of records) console.log(r.kind);
 * ```
 */
export class MigrationDecoderStream implements TransformStream<Uint8Array, MigrationRecord> {
  /** Decoded records. */
  readonly readable: ReadableStream<MigrationRecord>;
  /** Stream bytes in. */
  readonly writable: WritableStream<Uint8Array>;

  /**
   * Construct it.
   *
   * @param options Decoder options.
   */
  constructor(options: DecodeOptions = {}) {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    this.writable = writable;
    this.readable = ReadableStream.from(decodeMigration(new StreamByteReader(readable), options));
  }
}
