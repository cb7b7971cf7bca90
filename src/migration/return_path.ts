/**
 * The return path: messages a destination QEMU sends back to its source on
 * the same connection, once the source's `OPEN_RETURN_PATH` command asked
 * for them (capability `return-path`, also implied by `postcopy-ram` and
 * needed by `switchover-ack`).
 *
 * Each message is a be16 type, a be16 length and that many bytes
 * (migration/migration.c, `migrate_send_rp_message` and the source's
 * `source_return_path_thread`). QEMU 7.2 knows SHUT, PONG, REQ_PAGES_ID,
 * REQ_PAGES, RECV_BITMAP and RESUME_ACK; QEMU 8.1 added SWITCHOVER_ACK (10.0
 * has the same set). A precopy migration uses SHUT (the destination's final
 * word: 0 loaded, 1 failed), PONG (answer to the source's PING) and
 * SWITCHOVER_ACK; the others belong to postcopy.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import * as C from "./constants.ts";

/** A decoded return-path message. */
export interface ReturnPathMessage {
  /** MIG_RP_MSG_* value. */
  type: number;
  /** Its name, e.g. `SHUT`, `PONG`, `SWITCHOVER_ACK`. */
  name: string;
  /** Offset of the message's first byte in the return path. */
  streamOffset: number;
  /** Encoded size: 4 header bytes plus the payload. */
  byteLength: number;
  /** The payload (a copy). */
  payload: Uint8Array<ArrayBuffer>;
  /** SHUT: the error flag; PONG: the PING's value; RESUME_ACK: its value. */
  value: number | undefined;
}

/** Payload length of each known message; -1 for variable (migration.c `rp_cmd_args`). */
const RP_MESSAGES = new Map<number, { name: string; length: number }>([
  [C.MIG_RP_MSG_SHUT, { name: "SHUT", length: 4 }],
  [C.MIG_RP_MSG_PONG, { name: "PONG", length: 4 }],
  [C.MIG_RP_MSG_REQ_PAGES_ID, { name: "REQ_PAGES_ID", length: -1 }],
  [C.MIG_RP_MSG_REQ_PAGES, { name: "REQ_PAGES", length: 12 }],
  [C.MIG_RP_MSG_RECV_BITMAP, { name: "RECV_BITMAP", length: -1 }],
  [C.MIG_RP_MSG_RESUME_ACK, { name: "RESUME_ACK", length: 4 }],
  [C.MIG_RP_MSG_SWITCHOVER_ACK, { name: "SWITCHOVER_ACK", length: 0 }],
]);

/** The largest payload a source accepts (its receive buffer in `source_return_path_thread`). */
const MAX_RP_PAYLOAD = 512;

/**
 * Name of a MIG_RP_MSG_* value, for messages and reports.
 *
 * @param type The message type.
 * @returns Its name, or the value in hex.
 *
 * @example
 * ```ts
 * import { returnPathMessageName } from "@vmem-dump/vmem-dump/migration";
 * console.log(returnPathMessageName(1)); // SHUT
 * ```
 */
export function returnPathMessageName(type: number): string {
  return RP_MESSAGES.get(type)?.name ?? `0x${type.toString(16)}`;
}

/**
 * An incremental decoder of the return path: push bytes as they arrive,
 * get the complete messages back. Rejects what a source QEMU would reject
 * (unknown type, wrong length, a payload over 512 bytes) with a
 * `FormatError` at the message's offset.
 *
 * @example
 * ```ts
 * import { ReturnPathDecoder } from "@vmem-dump/vmem-dump/migration";
 * const d = new ReturnPathDecoder();
 * const [pong] = d.push(new Uint8Array([0, 2, 0, 4, 0, 0, 0, 1]));
 * console.log(pong!.name, pong!.value); // PONG 1
 * ```
 */
export class ReturnPathDecoder {
  #buf = new Uint8Array(4 + MAX_RP_PAYLOAD);
  #have = 0;
  #offset = 0;

  /** Offset of the next undecoded byte (the bytes pushed minus those still buffered). */
  get offset(): number {
    return this.#offset;
  }

  /** Whether part of a message is buffered (the return path must not end here). */
  get pending(): boolean {
    return this.#have > 0;
  }

  /**
   * Decode what `bytes` completes.
   *
   * @param bytes The next bytes of the return path (not kept).
   * @returns The messages completed, in order.
   * @throws {FormatError} for an unknown type or a wrong length.
   */
  push(bytes: Uint8Array): ReturnPathMessage[] {
    const out: ReturnPathMessage[] = [];
    let i = 0;
    while (i < bytes.byteLength) {
      // Fill the header, then the payload it announces.
      const want = this.#have < 4 ? 4 : 4 + this.#payloadLength();
      const take = Math.min(want - this.#have, bytes.byteLength - i);
      this.#buf.set(bytes.subarray(i, i + take), this.#have);
      this.#have += take;
      i += take;
      if (this.#have === 4) this.#checkHeader();
      if (this.#have >= 4 && this.#have === 4 + this.#payloadLength()) out.push(this.#take());
    }
    return out;
  }

  #payloadLength(): number {
    return (this.#buf[2]! << 8) | this.#buf[3]!;
  }

  #checkHeader(): void {
    const type = (this.#buf[0]! << 8) | this.#buf[1]!;
    const length = this.#payloadLength();
    const spec = RP_MESSAGES.get(type);
    if (spec === undefined) {
      throw new FormatError(
        `Cannot decode the return path: unknown message type 0x${type.toString(16)}`,
        { format: "migration", code: "bad-record", offset: this.#offset },
      );
    }
    if ((spec.length !== -1 && length !== spec.length) || length > MAX_RP_PAYLOAD) {
      throw new FormatError(
        `Cannot decode the return path: ${spec.name} message of ${length} bytes, expected ${
          spec.length === -1 ? `at most ${MAX_RP_PAYLOAD}` : spec.length
        }`,
        { format: "migration", code: "bad-record", offset: this.#offset + 2 },
      );
    }
  }

  #take(): ReturnPathMessage {
    const type = (this.#buf[0]! << 8) | this.#buf[1]!;
    const length = this.#payloadLength();
    const payload = this.#buf.slice(4, 4 + length);
    const value = type === C.MIG_RP_MSG_SHUT || type === C.MIG_RP_MSG_PONG ||
        type === C.MIG_RP_MSG_RESUME_ACK
      ? new DataView(payload.buffer).getUint32(0)
      : undefined;
    const message: ReturnPathMessage = {
      type,
      name: returnPathMessageName(type),
      streamOffset: this.#offset,
      byteLength: 4 + length,
      payload,
      value,
    };
    this.#offset += 4 + length;
    this.#have = 0;
    return message;
  }
}
