/**
 * A compact record of which MiB of which RAMBlock a stream touched, with the
 * first record of every touched MiB kept as a witness (ramOffset, stream
 * offset, kind) and a record count. Used by the verifier while the plug state
 * of a RAMBlock is not known yet (late layout).
 *
 * Layout: per RAMBlock a map from page number to an `Int32Array` of
 * {@link CHUNKS_PER_PAGE} slot numbers (0 = untouched), and parallel typed
 * arrays for the witnesses. Every virtio-mem block size is a power-of-two
 * multiple of 1 MiB, so a touched MiB lies in exactly one device block.
 *
 * @module
 */

import { FormatError } from "../errors.ts";

/** Granularity: 1 MiB, the smallest virtio-mem block size. */
export const CHUNK_SIZE = 1 << 20;
/** MiB chunks per allocated page of slot numbers (256 MiB of RAM per KiB). */
const CHUNKS_PER_PAGE = 256;

/** Page record kinds by code. */
export const KIND_NAMES = [
  "ram-page",
  "ram-zero-page",
  "ram-xbzrle-page",
  "ram-compressed-page",
] as const;

/** One touched MiB. */
export interface TouchedChunk {
  /** Chunk index (ramOffset / 1 MiB). */
  chunk: number;
  /** ramOffset of the first record in this MiB. */
  ramOffset: number;
  /** Stream offset of the first record in this MiB. */
  streamOffset: number;
  /** Kind of the first record. */
  recordKind: (typeof KIND_NAMES)[number];
  /** Records seen in this MiB. */
  records: number;
}

/** The touched set. */
export class TouchedSet {
  #blocks = new Map<string, Map<number, Int32Array>>();
  #ramOffsets = new Float64Array(1024);
  #streamOffsets = new Float64Array(1024);
  #kinds = new Uint8Array(1024);
  #counts = new Uint32Array(1024);
  #slots = 0; // slot 0 unused: 0 means untouched
  #pages = 0;
  #maxBytes: number;
  #lastBlock: string | undefined;
  #lastPages: Map<number, Int32Array> | undefined;
  #lastChunk = -1;
  #lastSlot = 0;

  /** @param maxBytes Memory cap; beyond it `add` throws a FormatError (code `too-large`). */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
    this.#slots = 1;
  }

  /** Approximate bytes in use. */
  get byteLength(): number {
    return this.#pages * CHUNKS_PER_PAGE * 4 + this.#ramOffsets.byteLength * 2 +
      this.#kinds.byteLength +
      this.#counts.byteLength;
  }

  /** Touched chunks in all RAMBlocks. */
  get chunkCount(): number {
    return this.#slots - 1;
  }

  /** Note a record. Constant time; allocation only on the first record of a new 256 MiB range. */
  add(ramBlock: string, ramOffset: number, streamOffset: number, kindCode: number): void {
    const chunk = Math.floor(ramOffset / CHUNK_SIZE);
    if (ramBlock === this.#lastBlock) {
      if (chunk === this.#lastChunk) {
        this.#counts[this.#lastSlot]!++;
        return;
      }
    } else {
      this.#lastBlock = ramBlock;
      let pages = this.#blocks.get(ramBlock);
      if (pages === undefined) {
        pages = new Map();
        this.#blocks.set(ramBlock, pages);
      }
      this.#lastPages = pages;
    }
    const pages = this.#lastPages!;
    const pageNo = Math.floor(chunk / CHUNKS_PER_PAGE);
    let page = pages.get(pageNo);
    if (page === undefined) {
      this.#pages++;
      this.#checkSize(streamOffset);
      page = new Int32Array(CHUNKS_PER_PAGE);
      pages.set(pageNo, page);
    }
    const at = chunk - pageNo * CHUNKS_PER_PAGE;
    let slot = page[at]!;
    if (slot === 0) {
      slot = this.#newSlot(streamOffset);
      page[at] = slot;
      this.#ramOffsets[slot] = ramOffset;
      this.#streamOffsets[slot] = streamOffset;
      this.#kinds[slot] = kindCode;
    }
    this.#counts[slot]!++;
    this.#lastChunk = chunk;
    this.#lastSlot = slot;
  }

  #checkSize(streamOffset: number): void {
    if (this.byteLength > this.#maxBytes) {
      throw new FormatError(
        `Cannot verify migration stream: the set of touched memory exceeds ${this.#maxBytes} bytes`,
        { format: "migration", code: "too-large", offset: streamOffset },
      );
    }
  }

  #newSlot(streamOffset: number): number {
    if (this.#slots === this.#counts.length) {
      const n = this.#counts.length * 2;
      const grow = <T extends Float64Array | Uint8Array | Uint32Array>(
        a: T,
        make: (n: number) => T,
      ): T => {
        const b = make(n);
        b.set(a);
        return b;
      };
      this.#ramOffsets = grow(this.#ramOffsets, (k) => new Float64Array(k));
      this.#streamOffsets = grow(this.#streamOffsets, (k) => new Float64Array(k));
      this.#kinds = grow(this.#kinds, (k) => new Uint8Array(k));
      this.#counts = grow(this.#counts, (k) => new Uint32Array(k));
      this.#checkSize(streamOffset);
    }
    return this.#slots++;
  }

  /** The touched chunks of one RAMBlock, in ascending chunk order. */
  chunks(ramBlock: string): TouchedChunk[] {
    const pages = this.#blocks.get(ramBlock);
    if (pages === undefined) return [];
    const out: TouchedChunk[] = [];
    for (const pageNo of [...pages.keys()].sort((a, b) => a - b)) {
      const page = pages.get(pageNo)!;
      for (let i = 0; i < CHUNKS_PER_PAGE; i++) {
        const slot = page[i]!;
        if (slot === 0) continue;
        out.push({
          chunk: pageNo * CHUNKS_PER_PAGE + i,
          ramOffset: this.#ramOffsets[slot]!,
          streamOffset: this.#streamOffsets[slot]!,
          recordKind: KIND_NAMES[this.#kinds[slot]!]!,
          records: this.#counts[slot]!,
        });
      }
    }
    return out;
  }

  /** Forget one RAMBlock (its slots stay allocated). */
  delete(ramBlock: string): void {
    const pages = this.#blocks.get(ramBlock);
    if (pages === undefined) return;
    this.#pages -= pages.size;
    this.#blocks.delete(ramBlock);
    if (this.#lastBlock === ramBlock) {
      this.#lastBlock = undefined;
      this.#lastChunk = -1;
    }
  }

  /** Forget everything. */
  clear(): void {
    this.#blocks.clear();
    this.#pages = 0;
    this.#counts.fill(0, 0, this.#slots);
    this.#slots = 1;
    this.#lastBlock = undefined;
    this.#lastChunk = -1;
  }
}
