/**
 * Checks a RAM packet against the main channel's MEM_SIZE block list, the
 * way QEMU's receiver resolves it (the block by name, every offset at most
 * `used_length - page_size`), plus page alignment, which QEMU does not check
 * but every sender keeps (an unaligned page would straddle two device
 * blocks). Private to the multifd filter and verifier.
 *
 * @module
 */

import { FormatError } from "../../errors.ts";
import { hex } from "../../io/text.ts";
import type { RamBlockInfo } from "../types.ts";
import { MULTIFD_PACKET } from "./layout.ts";
import { multifdOffsetSlotStreamOffset } from "./packet.ts";
import type { MultifdRamPacketRecord } from "./types.ts";

/** The block list of one stream, for packet checks. */
export class PacketBounds {
  #blocks = new Map<string, number>();
  #pageSize: number;
  #lastName: string | undefined;
  #lastLength = 0;

  /** @param pageSize Target page size. */
  constructor(pageSize: number) {
    this.#pageSize = pageSize;
  }

  /** Whether the block list is known. */
  get known(): boolean {
    return this.#blocks.size > 0;
  }

  /** Take the MEM_SIZE list. */
  setRamBlocks(blocks: readonly RamBlockInfo[]): void {
    this.#blocks = new Map(blocks.map((b) => [b.idstr, b.usedLength]));
    this.#lastName = undefined;
  }

  /**
   * Check every page of a packet.
   * @throws {FormatError} `unknown-block`, `out-of-range` or `bad-record`.
   */
  check(p: MultifdRamPacketRecord): void {
    const normal = p.normalRamOffsets;
    const zero = p.zeroRamOffsets;
    if (normal.length + zero.length === 0) return;
    let usedLength: number;
    if (p.ramBlock === this.#lastName) usedLength = this.#lastLength;
    else {
      const found = this.#blocks.get(p.ramBlock);
      if (found === undefined) {
        throw new FormatError(
          `Cannot check multifd packet: RAMBlock ${
            JSON.stringify(p.ramBlock)
          } is not in the stream's block list`,
          {
            format: "migration",
            code: "unknown-block",
            offset: p.streamOffset + MULTIFD_PACKET.fields.ramBlock.offset,
          },
        );
      }
      usedLength = found;
      this.#lastName = p.ramBlock;
      this.#lastLength = found;
    }
    const last = usedLength - this.#pageSize;
    for (let i = 0; i < normal.length + zero.length; i++) {
      const ramOffset = i < normal.length ? normal[i]! : zero[i - normal.length]!;
      if (ramOffset > last || ramOffset % this.#pageSize !== 0) {
        const aligned = ramOffset % this.#pageSize === 0;
        throw new FormatError(
          `Cannot check multifd packet: page offset ${hex(ramOffset)} in ${
            JSON.stringify(p.ramBlock)
          } ${
            aligned
              ? `lies beyond the block's ${hex(usedLength)} bytes`
              : `is not a multiple of the page size ${hex(this.#pageSize)}`
          }`,
          {
            format: "migration",
            code: aligned ? "out-of-range" : "bad-record",
            offset: multifdOffsetSlotStreamOffset(p, i),
          },
        );
      }
    }
  }
}
