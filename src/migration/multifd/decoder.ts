/**
 * Decoder of one multifd channel: `MultiFDInit_t`, then packets until the
 * source closes the channel (a clean end is only allowed between packets).
 *
 * @module
 */

import { UnexpectedEofError } from "../../errors.ts";
import type { ByteReader } from "../../io/byte_reader.ts";
import { DEFAULT_PAGE_SIZE } from "../constants.ts";
import { MULTIFD_INIT, MULTIFD_PACKET_HDR } from "./layout.ts";
import {
  checkMultifdPageSize,
  readMultifdDeviceStatePacketHeader,
  readMultifdInit,
  readMultifdPacketHdr,
  readMultifdRamPacketHeader,
} from "./packet.ts";
import type { MultifdRecord } from "./types.ts";

/** Options for {@linkcode decodeMultifdChannel}. */
export interface DecodeMultifdOptions {
  /**
   * Target page size of the migration (the main channel's
   * `configuration/target-page-bits`, else 4096); it sizes the offset table.
   * @default {4096}
   */
  pageSize?: number;
}

/**
 * Decode a multifd channel into batches of records. A batch holds the
 * records decoded from bytes the reader already had; the `data` views of a
 * batch stay valid until the next batch is requested.
 *
 * @param reader The channel's bytes.
 * @param options Page size.
 * @returns Batches in channel order.
 * @throws {FormatError} for a bad magic, version, flag, count or size (at the field's offset).
 * @throws {UnexpectedEofError} when the channel ends inside the initial packet or a packet.
 *
 * @example Count the pages of a captured channel
 * ```ts ignore
 * import { openInput } from "@vmem-dump/vmem-dump";
 * import { decodeMultifdChannel } from "@vmem-dump/vmem-dump/migration";
 * const input = await openInput("channel-0.bin");
 * let pages = 0;
 * for await (const batch of decodeMultifdChannel(input.reader)) {
 *   for (const r of batch) if (r.kind === "multifd-ram-packet") pages += r.normalRamOffsets.length;
 * }
 * ```
 */
export async function* decodeMultifdChannel(
  reader: ByteReader,
  options: DecodeMultifdOptions = {},
): AsyncGenerator<MultifdRecord[]> {
  const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
  checkMultifdPageSize(pageSize);
  const initAt = reader.offset;
  const init = await reader.readOrEnd(MULTIFD_INIT.byteLength, "the multifd initial packet");
  if (init === undefined) {
    throw new UnexpectedEofError(
      "Cannot decode multifd channel: it ended before its initial packet",
      "migration",
      initAt,
    );
  }
  let batch: MultifdRecord[] = [readMultifdInit(init, initAt)];
  /** `n` bytes: at once when buffered, else after the pending batch went out (one place that awaits). */
  async function* take(
    n: number,
    what: string,
    orEnd: boolean,
  ): AsyncGenerator<MultifdRecord[], Uint8Array | undefined> {
    const sync = reader.tryReadSync(n);
    if (sync !== undefined) return sync;
    if (batch.length > 0) {
      yield batch;
      batch = [];
    }
    return orEnd ? await reader.readOrEnd(n, what) : await reader.read(n, what);
  }
  const hdrSize = MULTIFD_PACKET_HDR.byteLength;
  for (;;) {
    const at = reader.offset;
    const hdr = yield* take(hdrSize, "a multifd packet header", true);
    if (hdr === undefined) break; // a clean end, between packets
    const kind = readMultifdPacketHdr(hdr, at, pageSize);
    const header = new Uint8Array(kind.headerByteLength);
    header.set(hdr);
    header.set(
      (yield* take(kind.headerByteLength - hdrSize, "a multifd packet header", false))!,
      hdrSize,
    );
    const parsed = kind.deviceState
      ? readMultifdDeviceStatePacketHeader(header, at)
      : readMultifdRamPacketHeader(header, at, pageSize);
    if (parsed.dataByteLength > 0) {
      parsed.record.data = (yield* take(parsed.dataByteLength, "a multifd packet payload", false))!;
    }
    batch.push(parsed.record);
  }
  if (batch.length > 0) yield batch;
}
