/**
 * A zstd frame walker: follows frame headers, block headers and checksums of
 * compressed data as it streams past, without decompressing anything.
 *
 * The zstd decoder under `node:zlib` ends quietly when its input stops in the
 * middle of a frame, and only reports a window that is too large as "Frame
 * requires too much memory". Walking the frames ourselves turns both into
 * typed errors with offsets: {@linkcode UnexpectedEofError} for a truncated
 * frame and a `FormatError` naming the window size. The cost is a few
 * operations per block (a block holds up to 128 KiB).
 *
 * Layout from RFC 8878 §3.1 (frames, Frame_Header_Descriptor,
 * Window_Descriptor, block headers) and §3.1.2 (skippable frames).
 *
 * @module
 */

import { FormatError, UnexpectedEofError } from "../errors.ts";
import { hexBytes } from "../io/text.ts";

/** Largest window log the zstd format allows on 64-bit hosts (`ZSTD_WINDOWLOG_MAX_64`). */
export const ZSTD_WINDOWLOG_MAX = 31;

/**
 * Default limit on the window log when decompressing: 30, a 1 GiB window, the
 * size `zstd --long=30` writes (the shared real-data archives use it). The
 * `zstd` tool itself stops at 27 (128 MiB) unless told otherwise.
 */
export const DEFAULT_ZSTD_WINDOW_LOG_MAX = 30;

/** What the walker learned about one frame. */
export interface ZstdFrameInfo {
  /** Offset of the frame's magic in the compressed input. */
  streamOffset: number;
  /** True for a skippable frame (no data, ignored by decoders). */
  skippable: boolean;
  /** Window size the decoder needs, in bytes (0 for skippable frames). */
  windowSize: number;
  /** Decompressed size when the frame header records it. */
  contentSize: number | undefined;
  /** Whether a 4-byte content checksum follows the last block. */
  checksum: boolean;
}

/** Options for {@linkcode ZstdFrameScanner}. */
export interface ZstdFrameScannerOptions {
  /** Offset of the first byte pushed, used in errors. @default {0} */
  startOffset?: number;
  /** Largest window log accepted; larger windows raise a `FormatError` ("too-large"). @default {30} */
  windowLogMax?: number;
  /** Called for every frame header. @default {undefined} */
  onFrame?: (info: ZstdFrameInfo) => void;
}

const enum State {
  Magic,
  SkippableSize,
  FrameHeaderDescriptor,
  FrameHeaderRest,
  BlockHeader,
  SkipBlock,
  SkipChecksum,
  SkipSkippable,
}

/**
 * Human-readable byte count for error messages: "1 GiB", "192 MiB", "1234 bytes".
 *
 * @param n A byte count.
 * @returns The count in the largest binary unit that divides it.
 */
export function formatByteSize(n: number): string {
  for (const [unit, size] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return `${n} bytes`;
}

/**
 * Walks the frame structure of zstd data pushed to it chunk by chunk.
 *
 * @example Check that a zstd buffer is complete
 * ```ts
 * import { zstdCompressSync } from "node:zlib";
 * import { ZstdFrameScanner } from "@vmem-dump/vmem-dump/container";
 * const z = zstdCompressSync(new Uint8Array(100_000));
 * const scanner = new ZstdFrameScanner();
 * scanner.push(z);
 * scanner.finish(); // would throw UnexpectedEofError for z.subarray(0, 20)
 * console.log(scanner.frameCount); // 1
 * ```
 */
export class ZstdFrameScanner {
  #state: State = State.Magic;
  #buf = new Uint8Array(16);
  #have = 0;
  #need = 4;
  #skip = 0;
  #offset: number;
  #frameStart = 0;
  #blockStart = 0;
  #lastBlock = false;
  #checksum = false;
  #frames = 0;
  #windowLogMax: number;
  #onFrame: ((info: ZstdFrameInfo) => void) | undefined;
  #ends: number[] = [];

  /**
   * Create a walker positioned before the first frame.
   *
   * @param options Start offset, window limit, frame callback.
   * @throws {RangeError} when `windowLogMax` is not 10 to 31.
   */
  constructor(options: ZstdFrameScannerOptions = {}) {
    this.#offset = options.startOffset ?? 0;
    const max = options.windowLogMax ?? DEFAULT_ZSTD_WINDOW_LOG_MAX;
    if (!Number.isInteger(max) || max < 10 || max > ZSTD_WINDOWLOG_MAX) {
      throw new RangeError(`Cannot use zstd windowLogMax ${max}: it must be 10 to 31`);
    }
    this.#windowLogMax = max;
    this.#onFrame = options.onFrame;
  }

  /** Number of frames (including skippable ones) whose header was seen. */
  get frameCount(): number {
    return this.#frames;
  }

  /** Offset just after the last byte pushed. */
  get offset(): number {
    return this.#offset;
  }

  /** Whether the input seen so far ends exactly between frames. */
  get atFrameBoundary(): boolean {
    return this.#state === State.Magic && this.#have === 0;
  }

  /**
   * Walk the next chunk of compressed input.
   *
   * @param chunk The bytes following those pushed before.
   * @returns Positions in `chunk` just after each frame that ends inside it
   *   (usually none), in order.
   * @throws {FormatError} on a bad magic, a reserved bit or block type, or a window above the limit.
   */
  push(chunk: Uint8Array): number[] {
    const chunkStart = this.#offset;
    this.#ends = [];
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.#skip > 0) {
        const take = Math.min(this.#skip, n - i);
        i += take;
        this.#offset += take;
        this.#skip -= take;
        if (this.#skip === 0) this.#afterSkip();
        continue;
      }
      const take = Math.min(this.#need - this.#have, n - i);
      this.#buf.set(chunk.subarray(i, i + take), this.#have);
      this.#have += take;
      this.#offset += take;
      i += take;
      if (this.#have === this.#need) this.#onGathered();
    }
    return this.#ends.map((end) => end - chunkStart);
  }

  /**
   * Declare the end of input.
   *
   * @throws {UnexpectedEofError} when the input ended inside a frame or held no frame.
   */
  finish(): void {
    if (this.atFrameBoundary && this.#frames > 0) return;
    if (this.#frames === 0 && this.#state === State.Magic) {
      throw new UnexpectedEofError(
        "Cannot decompress zstd data: the input holds no complete frame header",
        "container",
        this.#offset,
      );
    }
    throw new UnexpectedEofError(
      `Cannot decompress zstd data: input ended inside the frame that starts at 0x${
        this.#frameStart.toString(16)
      }`,
      "container",
      this.#offset,
    );
  }

  #frameEnded(): void {
    this.#ends.push(this.#offset);
    this.#gather(State.Magic, 4);
  }

  #gather(state: State, need: number): void {
    this.#state = state;
    this.#need = need;
    this.#have = 0;
  }

  #skipThen(state: State, count: number): void {
    this.#state = state;
    this.#skip = count;
    if (count === 0) this.#afterSkip();
  }

  #afterSkip(): void {
    switch (this.#state) {
      case State.SkipBlock:
        if (!this.#lastBlock) this.#gather(State.BlockHeader, 3);
        else if (this.#checksum) this.#skipThen(State.SkipChecksum, 4);
        else this.#frameEnded();
        return;
      case State.SkipChecksum:
      case State.SkipSkippable:
        this.#frameEnded();
        return;
      default:
        throw new Error("unreachable zstd scanner state");
    }
  }

  #onGathered(): void {
    const b = this.#buf;
    switch (this.#state) {
      case State.Magic: {
        this.#frameStart = this.#offset - 4;
        if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) {
          this.#gather(State.FrameHeaderDescriptor, 1);
        } else if ((b[0]! & 0xf0) === 0x50 && b[1] === 0x2a && b[2] === 0x4d && b[3] === 0x18) {
          this.#gather(State.SkippableSize, 4);
        } else {
          throw new FormatError(
            `Cannot decompress zstd data: expected a frame magic, found bytes ${
              hexBytes(b.subarray(0, 4))
            }` +
              (this.#frames > 0 ? " after the last frame (trailing garbage)" : ""),
            { format: "container", code: "bad-magic", offset: this.#frameStart },
          );
        }
        return;
      }
      case State.SkippableSize: {
        const size = (b[0]! | b[1]! << 8 | b[2]! << 16) + b[3]! * 0x100_0000;
        this.#frames++;
        this.#onFrame?.({
          streamOffset: this.#frameStart,
          skippable: true,
          windowSize: 0,
          contentSize: undefined,
          checksum: false,
        });
        this.#skipThen(State.SkipSkippable, size);
        return;
      }
      case State.FrameHeaderDescriptor: {
        const fhd = b[0]!;
        if (fhd & 0x08) {
          throw new FormatError(
            "Cannot decompress zstd data: the reserved bit of the frame header descriptor is set",
            { format: "container", code: "bad-header", offset: this.#offset - 1 },
          );
        }
        const singleSegment = (fhd & 0x20) !== 0;
        const fcsFlag = fhd >> 6;
        const dictBytes = [0, 1, 2, 4][fhd & 3]!;
        const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : 1 << fcsFlag;
        const rest = (singleSegment ? 0 : 1) + dictBytes + fcsBytes;
        this.#buf[15] = fhd; // keep the descriptor for the next step
        if (rest === 0) this.#onFrameHeader(fhd);
        else this.#gather(State.FrameHeaderRest, rest);
        return;
      }
      case State.FrameHeaderRest:
        this.#onFrameHeader(this.#buf[15]!);
        return;
      case State.BlockHeader: {
        this.#blockStart = this.#offset - 3;
        const header = b[0]! | b[1]! << 8 | b[2]! << 16;
        this.#lastBlock = (header & 1) !== 0;
        const type = (header >> 1) & 3;
        const size = header >>> 3;
        if (type === 3) {
          throw new FormatError("Cannot decompress zstd data: reserved block type 3", {
            format: "container",
            code: "bad-record",
            offset: this.#blockStart,
          });
        }
        this.#skipThen(State.SkipBlock, type === 1 ? 1 : size);
        return;
      }
      default:
        throw new Error("unreachable zstd scanner state");
    }
  }

  #onFrameHeader(fhd: number): void {
    const b = this.#buf;
    const singleSegment = (fhd & 0x20) !== 0;
    const fcsFlag = fhd >> 6;
    const dictBytes = [0, 1, 2, 4][fhd & 3]!;
    this.#checksum = (fhd & 0x04) !== 0;
    let at = 0;
    let windowSize = 0;
    let windowLog = 0;
    if (!singleSegment) {
      const wd = b[at++]!;
      windowLog = 10 + (wd >> 3);
      const base = 2 ** windowLog;
      windowSize = base + (base / 8) * (wd & 7);
    }
    at += dictBytes;
    let contentSize: number | undefined;
    if (fcsFlag === 0 && singleSegment) contentSize = b[at]!;
    else if (fcsFlag === 1) contentSize = (b[at]! | b[at + 1]! << 8) + 256;
    else if (fcsFlag === 2) {
      contentSize = (b[at]! | b[at + 1]! << 8 | b[at + 2]! << 16) + b[at + 3]! * 0x100_0000;
    } else if (fcsFlag === 3) {
      const lo = (b[at]! | b[at + 1]! << 8 | b[at + 2]! << 16) + b[at + 3]! * 0x100_0000;
      const hi = (b[at + 4]! | b[at + 5]! << 8 | b[at + 6]! << 16) + b[at + 7]! * 0x100_0000;
      contentSize = hi * 0x1_0000_0000 + lo;
    }
    if (singleSegment) {
      windowSize = contentSize ?? 0;
      windowLog = windowSize <= 1 ? 0 : Math.ceil(Math.log2(windowSize));
    }
    const limit = 2 ** this.#windowLogMax;
    if (windowSize > limit) {
      const why = singleSegment
        ? `(a single-segment frame: its whole content, window log ${windowLog})`
        : `(window log ${windowLog}, as written by zstd --long=${windowLog})`;
      throw new FormatError(
        `Cannot decompress zstd data: the frame needs a ${formatByteSize(windowSize)} window ` +
          `${why} but the limit is ${formatByteSize(limit)} (windowLogMax ${this.#windowLogMax})`,
        { format: "container", code: "too-large", offset: this.#frameStart },
      );
    }
    this.#frames++;
    this.#onFrame?.({
      streamOffset: this.#frameStart,
      skippable: false,
      windowSize,
      contentSize,
      checksum: this.#checksum,
    });
    this.#gather(State.BlockHeader, 3);
  }
}
