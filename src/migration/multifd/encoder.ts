/**
 * Encoder of multifd channel records back into channel bytes. For every
 * valid channel, encoding its decoded records gives the input bytes.
 *
 * @module
 */

import type { ByteWriter } from "../../io/byte_writer.ts";
import type { MultifdRecord } from "./types.ts";

/**
 * Writes multifd records through a {@linkcode ByteWriter}: the initial
 * packet's bytes, then each packet's header and payload. Payloads of a
 * chunk's size or more go to the sink without a copy.
 *
 * @example Re-encode a channel
 * ```ts ignore
 * import { ByteWriter, openInput } from "@vmem-dump/vmem-dump";
 * import { decodeMultifdChannel, MultifdEncoder } from "@vmem-dump/vmem-dump/migration";
 * const input = await openInput("channel-0.bin");
 * const chunks: Uint8Array[] = [];
 * const enc = new MultifdEncoder(new ByteWriter((c) => { chunks.push(c.slice()); }));
 * for await (const batch of decodeMultifdChannel(input.reader)) {
 *   for (const r of batch) enc.write(r);
 *   await enc.flushIfFull();
 * }
 * await enc.flush();
 * ```
 */
export class MultifdEncoder {
  #w: ByteWriter;
  #started = false;

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

  /**
   * Encode one record (synchronously into the writer's buffer).
   *
   * @param r The record.
   * @throws {TypeError} for an initial packet after packets, or a packet before it.
   */
  write(r: MultifdRecord): void {
    if (r.kind === "multifd-init") {
      if (this.#started) throw new TypeError("A multifd channel has one initial packet, first");
      this.#started = true;
      this.#w.bytes(r.bytes);
      return;
    }
    if (!this.#started) throw new TypeError("A multifd channel starts with its initial packet");
    this.#w.bytes(r.header);
    if (r.data.byteLength > 0) this.#w.bytes(r.data);
  }

  /** Await the sink when the writer holds too many chunks. */
  async flushIfFull(): Promise<void> {
    await this.#w.flushIfFull();
  }

  /** Hand everything buffered to the sink and wait for it. */
  async flush(): Promise<void> {
    await this.#w.flush();
  }
}
