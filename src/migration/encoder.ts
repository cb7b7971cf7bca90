/**
 * Encoder of migration records back into stream bytes. For every valid input,
 * `encode(decode(bytes))` is `bytes`.
 *
 * @module
 */

import { UnsupportedFeatureError } from "../errors.ts";
import { ByteWriter } from "../io/byte_writer.ts";
import * as C from "./constants.ts";
import type { MigrationRecord, RamPageLikeRecord } from "./types.ts";
import { latin1Encode } from "../io/text.ts";

const SECTION_TYPE = {
  "section-start": C.QEMU_VM_SECTION_START,
  "section-part": C.QEMU_VM_SECTION_PART,
  "section-end": C.QEMU_VM_SECTION_END,
  "section-full": C.QEMU_VM_SECTION_FULL,
} as const;

const PAGE_FLAG = {
  "ram-page": C.RAM_SAVE_FLAG_PAGE,
  "ram-zero-page": C.RAM_SAVE_FLAG_ZERO,
  "ram-xbzrle-page": C.RAM_SAVE_FLAG_XBZRLE,
  "ram-compressed-page": C.RAM_SAVE_FLAG_COMPRESS_PAGE,
} as const;

/**
 * Bytes a page record takes in the stream: header word, idstr unless
 * CONTINUE is set, payload.
 *
 * @param r A page record.
 * @returns Its encoded size.
 *
 * @example
 * ```ts
 * import { pageRecordByteLength } from "@vmem-dump/vmem-dump/migration";
 * console.log(pageRecordByteLength({
 *   kind: "ram-zero-page", streamOffset: 0, ramBlock: "pc.ram", ramOffset: 0, continued: true, fill: 0,
 * })); // 9
 * ```
 */
export function pageRecordByteLength(r: RamPageLikeRecord): number {
  const name = r.continued ? 0 : 1 + r.ramBlock.length;
  switch (r.kind) {
    case "ram-page":
      return 8 + name + r.data.byteLength;
    case "ram-zero-page":
      return 8 + name + 1;
    case "ram-xbzrle-page":
      return 8 + name + 3 + r.data.byteLength;
    case "ram-compressed-page":
      return 8 + name + 4 + r.data.byteLength;
  }
}

/**
 * Writes records as stream bytes through a {@linkcode ByteWriter}. It tracks
 * the last block named on the channel and refuses a CONTINUE record for a
 * different block, the mistake a filter could make.
 *
 * @example
 * ```ts
 * import { ByteWriter, MigrationEncoder } from "@vmem-dump/vmem-dump";
 * const chunks: Uint8Array[] = [];
 * const enc = new MigrationEncoder(new ByteWriter((c) => { chunks.push(c); }));
 * enc.write({ kind: "header", streamOffset: 0, version: 3 });
 * await enc.flush();
 * ```
 */
export class MigrationEncoder {
  #w: ByteWriter;
  #lastBlock: string | undefined;
  #idCache = new Map<string, Uint8Array>();

  /**
   * Construct it.
   *
   * @param writer Where the bytes go.
   */
  constructor(writer: ByteWriter) {
    this.#w = writer;
  }

  /** The writer, e.g. for its offset. */
  get writer(): ByteWriter {
    return this.#w;
  }

  #idstr(idstr: string): Uint8Array {
    let b = this.#idCache.get(idstr);
    if (b === undefined) {
      b = latin1Encode(idstr);
      if (b.byteLength > 255) {
        throw new RangeError(`idstr ${JSON.stringify(idstr)} is longer than 255 bytes`);
      }
      if (this.#idCache.size < 4096) this.#idCache.set(idstr, b);
    }
    return b;
  }

  #cstr8(idstr: string): void {
    const b = this.#idstr(idstr);
    this.#w.u8(b.byteLength);
    this.#w.bytes(b);
  }

  /**
   * Write `bytes`, which the caller knows to be exactly the encoding of the
   * page records `records` (the input they were decoded from, forwarded
   * unchanged): one copy instead of one encode per record. Keeps the
   * CONTINUE bookkeeping of {@linkcode MigrationEncoder.write}.
   *
   * @param records Page records only, in order.
   * @param bytes Their encoding.
   */
  writeVerbatim(records: readonly RamPageLikeRecord[], bytes: Uint8Array): void {
    const first = records[0];
    if (first !== undefined && first.continued && first.ramBlock !== this.#lastBlock) {
      throw new TypeError(
        `Cannot encode a CONTINUE record for ${JSON.stringify(first.ramBlock)}: the last block ` +
          `named was ${JSON.stringify(this.#lastBlock)}`,
      );
    }
    for (let i = records.length - 1; i >= 0; i--) {
      if (!records[i]!.continued) {
        this.#lastBlock = records[i]!.ramBlock;
        break;
      }
    }
    this.#w.bytes(bytes);
  }

  /** Encode one record (synchronously into the writer's buffer). */
  write(r: MigrationRecord): void {
    const w = this.#w;
    switch (r.kind) {
      case "ram-page":
      case "ram-zero-page":
      case "ram-xbzrle-page":
      case "ram-compressed-page": {
        const flag = PAGE_FLAG[r.kind] | (r.continued ? C.RAM_SAVE_FLAG_CONTINUE : 0);
        if (r.continued && r.ramBlock !== this.#lastBlock) {
          throw new TypeError(
            `Cannot encode a CONTINUE record for ${
              JSON.stringify(r.ramBlock)
            }: the last block named was ${JSON.stringify(this.#lastBlock)}`,
          );
        }
        w.u64(r.ramOffset + flag);
        if (!r.continued) {
          this.#cstr8(r.ramBlock);
          this.#lastBlock = r.ramBlock;
        }
        if (r.kind === "ram-page") w.bytes(r.data);
        else if (r.kind === "ram-zero-page") w.u8(r.fill);
        else if (r.kind === "ram-xbzrle-page") {
          w.u8(r.encoding);
          w.u16(r.data.byteLength);
          w.bytes(r.data);
        } else {
          w.u32(r.data.byteLength);
          w.bytes(r.data);
        }
        return;
      }
      case "header":
        w.u32(C.QEMU_VM_FILE_MAGIC);
        w.u32(r.version);
        return;
      case "configuration": {
        const name = latin1Encode(r.machineType);
        w.u8(C.QEMU_VM_CONFIGURATION);
        w.u32(name.byteLength);
        w.bytes(name);
        for (const s of r.subsections) {
          w.u8(C.QEMU_VM_SUBSECTION);
          this.#cstr8(s.name);
          w.u32(s.versionId);
          w.bytes(s.body);
        }
        return;
      }
      case "section-start":
      case "section-full":
        w.u8(SECTION_TYPE[r.kind]);
        w.u32(r.sectionId);
        this.#cstr8(r.idstr);
        w.u32(r.instanceId);
        w.u32(r.versionId);
        return;
      case "section-part":
      case "section-end":
        w.u8(SECTION_TYPE[r.kind]);
        w.u32(r.sectionId);
        return;
      case "section-footer":
        w.u8(C.QEMU_VM_SECTION_FOOTER);
        w.u32(r.sectionId);
        return;
      case "command":
        w.u8(C.QEMU_VM_COMMAND);
        w.u16(r.command);
        w.u16(r.payload.byteLength);
        w.bytes(r.payload);
        return;
      case "ram-mem-size":
        w.u64(r.totalBytes + C.RAM_SAVE_FLAG_MEM_SIZE);
        for (const b of r.blocks) {
          this.#cstr8(b.idstr);
          w.u64(b.usedLength);
          if (b.pageSize !== undefined) w.u64(b.pageSize);
          if (b.gpa !== undefined) w.u64(b.gpa);
          if (b.mappedRam !== undefined) {
            throw new UnsupportedFeatureError(
              "Cannot encode a mapped-ram block list: mapped-ram files are rewritten in place " +
                "(see filterMappedRam), not encoded as a stream",
              "migration",
              r.streamOffset,
            );
          }
        }
        this.#lastBlock = undefined;
        return;
      case "ram-eos":
        w.u64(C.RAM_SAVE_FLAG_EOS);
        return;
      case "ram-multifd-flush":
        w.u64(C.RAM_SAVE_FLAG_MULTIFD_FLUSH);
        return;
      case "virtio-mem-early":
        w.u64(r.gpa);
        w.u64(r.regionSize);
        w.u64(r.blockSize);
        w.u32(r.node);
        w.u64(r.size);
        w.bytes(r.bitmap);
        return;
      case "virtio-mem-device":
      case "device-state":
      case "opaque":
        w.bytes(r.data);
        return;
      case "tail-problem": // a report, no stream bytes
        return;
      case "eof":
        w.u8(C.QEMU_VM_EOF);
        return;
      case "vmdesc":
        w.u8(C.QEMU_VM_VMDESCRIPTION);
        w.u32(r.json.byteLength);
        w.bytes(r.json);
        return;
      default: {
        // Every record kind is encoded above: a new kind must be added there.
        const unknown: never = r;
        throw new TypeError(`Cannot encode a record of kind ${(unknown as { kind: string }).kind}`);
      }
    }
  }

  /** Await the sink if chunks are pending. */
  flushIfFull(): Promise<void> {
    return this.#w.flushIfFull();
  }

  /** Flush everything to the sink. */
  flush(): Promise<void> {
    return this.#w.flush();
  }
}

/**
 * Encode records (or batches of records) into a {@linkcode ByteWriter} and
 * flush it at the end.
 *
 * @param records The records, e.g. from `decodeMigration`.
 * @param writer Where the bytes go.
 * @returns The number of bytes written.
 *
 * @example Round trip
 * ```ts ignore
 * import { ByteWriter, decodeMigration, encodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * const out: Uint8Array[] = [];
 * await encodeMigration(decodeMigration(input.reader), new ByteWriter((c) => { out.push(c); }));
 * ```
 */
export async function encodeMigration(
  records:
    | AsyncIterable<MigrationRecord | MigrationRecord[]>
    | Iterable<MigrationRecord | MigrationRecord[]>,
  writer: ByteWriter,
): Promise<number> {
  const enc = new MigrationEncoder(writer);
  for await (const item of records) {
    if (Array.isArray(item)) { for (const r of item) enc.write(r); }
    else enc.write(item);
    await enc.flushIfFull();
  }
  await enc.flush();
  return writer.offset;
}

/**
 * A `TransformStream` from {@linkcode MigrationRecord}s to stream bytes.
 *
 * @example
 * ```ts ignore
 * import { MigrationDecoderStream, MigrationEncoderStream } from "@vmem-dump/vmem-dump";
 * const bytes = (await Deno.open("in.mig")).readable
 *   .pipeThrough(new MigrationDecoderStream())
 *   .pipeThrough(new MigrationEncoderStream());
 * ```
 */
export class MigrationEncoderStream extends TransformStream<MigrationRecord, Uint8Array> {
  /**
   * Construct it.
   *
   * @param options Chunk size of the emitted bytes.
   */
  constructor(options: { chunkSize?: number } = {}) {
    let enc: MigrationEncoder;
    super({
      start(controller) {
        enc = new MigrationEncoder(
          new ByteWriter((chunk) => controller.enqueue(chunk), {
            chunkSize: options.chunkSize ?? 1 << 20,
          }),
        );
      },
      transform(record) {
        enc.write(record);
      },
      async flush() {
        await enc.flush();
      },
    });
  }
}
