/**
 * Whole multifd channels in memory for tests: decode every record (payloads
 * copied, so they outlive the decoder's buffers) and encode records back
 * into one byte array. Shared by the real-channel tests and the mutation
 * campaign's multifd target.
 *
 * @module
 */

import { bytesReader, PullByteReader } from "../../src/io/byte_reader.ts";
import { ByteWriter } from "../../src/io/byte_writer.ts";
import {
  decodeMultifdChannel,
  MultifdEncoder,
  type MultifdRecord,
} from "../../src/migration/multifd/mod.ts";
import { chunkedStream, type Chunking, concatBytes, WHOLE } from "./chunkings.ts";

/**
 * Decode a whole channel, copying payloads.
 *
 * @param bytes The channel as the source sent it.
 * @param chunking How the bytes arrive (default: in one piece).
 * @returns Every record.
 */
export async function decodeMultifdBytes(
  bytes: Uint8Array,
  chunking: Chunking = WHOLE,
): Promise<MultifdRecord[]> {
  let reader;
  if (chunking === WHOLE) reader = bytesReader(bytes);
  else {
    const stream = chunkedStream(bytes, chunking).getReader();
    reader = new PullByteReader(async () => {
      const { value, done } = await stream.read();
      return done ? undefined : value;
    });
  }
  const out: MultifdRecord[] = [];
  for await (const batch of decodeMultifdChannel(reader)) {
    for (const r of batch) out.push(r.kind === "multifd-init" ? r : { ...r, data: r.data.slice() });
  }
  return out;
}

/**
 * Encode records into one byte array.
 *
 * @param records Records of one channel.
 * @returns The channel's bytes.
 */
export async function encodeMultifdBytes(records: readonly MultifdRecord[]): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const enc = new MultifdEncoder(
    new ByteWriter((c) => {
      chunks.push(c.slice());
    }, { chunkSize: 1 << 16 }),
  );
  for (const r of records) enc.write(r);
  await enc.flush();
  return concatBytes(chunks);
}
