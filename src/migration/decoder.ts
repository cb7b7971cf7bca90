/**
 * Streaming decoder of QEMU migration streams: header, configuration,
 * commands (PACKAGED decoded inside), `ram` sections record by record, early
 * virtio-mem sections, and the device-state tail (passed through, with the
 * virtio-mem device section and the vmdesc recognised).
 *
 * One async loop drives a synchronous parser (`_parser.ts`): the parser
 * emits every record the buffered bytes hold and otherwise says how many
 * bytes it needs (or, in a mapped-ram file, how many bytes the stream jumps
 * over); the loop hands out the records, then refills the reader (or skips).
 * That loop is the only place that awaits.
 *
 * @module
 */

import type { ByteReader } from "../io/byte_reader.ts";
import { StreamByteReader } from "../io/byte_reader.ts";
import type { MigrationRecord } from "./types.ts";
import { MigrationParser } from "./_parser.ts";

export { commandName } from "./_commands.ts";

/** Options for {@linkcode decodeMigration}. */
export interface DecodeOptions {
  /** Target page size; by default from `configuration/target-page-bits`, else 4096. @default {undefined} */
  pageSize?: number;
  /**
   * Most bytes of device state after the RAM held until the vmdesc at the
   * end gives their section sizes (a real VM's is a few hundred KiB); more is
   * a `FormatError` (code `too-large`). @default {67108864}
   */
  tailCap?: number;
  /**
   * `prove`: the device-state tail must be accounted for section by section
   * (see docs/security.md), else a `FormatError` (code `unproven`, or
   * `UnexpectedEofError` when it ends without EOF and vmdesc); so must the
   * configuration section (`unproven` at offset 8 without one). `describe`:
   * decode what can be decoded and emit `tail-problem` records for the rest
   * (an undelimited tail as `opaque` records), for tools that report on a
   * stream rather than vouch for it (`inspect`, plug-state extraction).
   * @default {"prove"}
   */
  deviceState?: "prove" | "describe";
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
  /**
   * Jump from the item that starts at stream offset `from` to stream offset
   * `to` without decoding what is between: for plug-state extraction from a
   * regular file, which skips the RAM sections between the early sections
   * and the device state (found through the vmdesc) and takes responsibility
   * for that. Nothing is proven about skipped bytes. Needs a reader whose
   * skips are seeks (`positionalByteReader`). @default {undefined}
   */
  skipRange?: { from: number; to: number };
}

/**
 * Decode a migration stream into records, in constant memory.
 *
 * Records hold views into the reader's buffers (page data, for one): with a
 * reader whose `viewLifetime` is `"until-refill"` they are valid until the
 * next record is requested; copy what you keep.
 *
 * @param reader Where the stream comes from.
 * @param options Page size and tail handling.
 * @returns The records in stream order; views point into the input.
 * @throws {FormatError} on malformed input, with the offset of the bad field.
 * @throws {UnexpectedEofError} when the input ends inside the stream.
 * @throws {UnsupportedFeatureError} for RDMA hooks, mapped-ram (without `options.mappedRam`) and
 *   iterable sections other than `ram`.
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

/** The input bytes each batch of {@linkcode decodeMigrationBatches} was parsed from. */
const BATCH_BYTES = new WeakMap<readonly MigrationRecord[], Uint8Array>();

/**
 * The input bytes a batch of {@linkcode decodeMigrationBatches} was parsed
 * from (a view, valid as long as the batch's own views). They may hold more
 * than the records (bytes the parser consumed without a record of their
 * own), so a caller that forwards them instead of encoding the records
 * checks their length first (see `MigrationPipeline`).
 *
 * @param batch A batch as the decoder yielded it.
 * @returns The bytes, or `undefined` for any other array.
 *
 * @example
 * ```ts ignore
 * import { batchInputBytes, decodeMigrationBatches } from "./decoder.ts";
 * import { openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * for await (const batch of decodeMigrationBatches(input.reader)) {
 *   console.log(batch.length, batchInputBytes(batch)?.byteLength);
 * }
 * ```
 */
export function batchInputBytes(batch: readonly MigrationRecord[]): Uint8Array | undefined {
  return BATCH_BYTES.get(batch);
}

/**
 * Like {@linkcode decodeMigration}, but yields records in batches: the
 * page records that could be decoded from buffered bytes without waiting
 * (at most 4096), and every other record (section headers and footers,
 * commands, the block list, EOS) ends its batch, so a consumer sees it
 * before anything after it was parsed. This is the fast path for filters and
 * encoders (one await per batch, not per page).
 *
 * With a reader whose `viewLifetime` is `"until-refill"`, the views in a
 * batch are valid until the next batch is requested.
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
  const parser = new MigrationParser({
    pageSize: options.pageSize,
    tailCap: options.tailCap ?? 64 << 20,
    deviceState: options.deviceState ?? "prove",
    opaqueChunk: options.opaqueChunk ?? 1 << 16,
    mappedRam: options.mappedRam ?? false,
    skipRange: options.skipRange,
  });
  const w = parser.window;
  let atEnd = false;
  for (;;) {
    w.reset(reader.buffered(), reader.offset, atEnd);
    const batch: MigrationRecord[] = [];
    parser.parse(batch);
    if (batch.length > 0) BATCH_BYTES.set(batch, w.bytes.subarray(0, w.pos));
    reader.advance(w.pos);
    if (batch.length > 0) yield batch;
    if (parser.done) return;
    if (w.skipping > 0) {
      // A region the stream jumps over (a mapped-ram block's bitmap and pages): never buffered,
      // a seek on a positional reader. After the yield, like a refill, since it may pull.
      await reader.skip(w.skipping, w.skipWhat);
    } else if (w.needed > 0) {
      // The one refill: make the bytes the parser asked for contiguous (or learn that the input ended).
      if (!(await reader.fill(w.needed))) atEnd = true;
    } else if (batch.length === 0) {
      throw new Error("Internal error: the migration parser stopped without progress");
    }
  }
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
