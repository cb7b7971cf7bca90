/**
 * The bytes one synchronous parse step works on, and the two ways a step
 * hands control back to the decoder's loop: "not enough bytes yet" and
 * "jump over bytes". Private to the decoder.
 *
 * A step parses from `pos`, never past the end of `bytes`. When a structure
 * is not complete it calls {@linkcode ParseWindow.need} with the number of
 * bytes it needs from `pos` (the start of that structure, which it has not
 * consumed) and returns; the decoder's loop refills and runs the step again
 * over the larger window. At the end of the input `need` throws instead.
 *
 * A mapped-ram file's stream jumps over each RAMBlock's bitmap and pages
 * (possibly hundreds of GiB). A step that has consumed the bytes before such
 * a region calls {@linkcode ParseWindow.skip} and returns; the loop then
 * skips the region with `ByteReader.skip` (a seek on a positional reader)
 * instead of buffering it, and parsing goes on after it.
 *
 * @module
 */

import { FormatError, UnexpectedEofError } from "../errors.ts";
import { getSafeU64 } from "../io/endian.ts";

const EMPTY = new Uint8Array(0);

/** Records the decoder hands out per batch at most. */
export const MAX_BATCH = 4096;

/** A `FormatError` of the migration decoder. */
export function bad(message: string, code: FormatError["code"], offset: number): FormatError {
  return new FormatError(`Cannot decode migration stream: ${message}`, {
    format: "migration",
    code,
    offset,
  });
}

/** The buffered bytes of the input as one parse step sees them. */
export class ParseWindow {
  /** The buffered unread bytes (a view into the reader's chunk). */
  bytes: Uint8Array = EMPTY;
  /** The same bytes as a big-endian `DataView`. */
  view: DataView = new DataView(EMPTY.buffer);
  /** Stream offset of `bytes[0]`. */
  base = 0;
  /** Index of the next byte to parse; what lies before it is consumed. */
  pos = 0;
  /** Set by {@linkcode ParseWindow.need}: bytes wanted from `pos`; 0 when no more input is wanted. */
  needed = 0;
  /** Set by {@linkcode ParseWindow.skip}: bytes to jump over after `pos`; 0 when none. */
  skipping = 0;
  /** What {@linkcode ParseWindow.skipping} jumps over, for the truncation error. */
  skipWhat = "";
  /** The input has ended: no byte beyond `bytes` will come. */
  atEnd = false;

  /** Start a step over new bytes. */
  reset(bytes: Uint8Array, base: number, atEnd: boolean): void {
    if (bytes !== this.bytes) {
      this.bytes = bytes;
      this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    this.base = base;
    this.pos = 0;
    this.needed = 0;
    this.skipping = 0;
    this.atEnd = atEnd;
  }

  /** Bytes from `pos` to the end of the window. */
  get left(): number {
    return this.bytes.byteLength - this.pos;
  }

  /** Stream offset of window index `at` (default: `pos`). */
  offset(at: number = this.pos): number {
    return this.base + at;
  }

  /**
   * Ask for `n` bytes from `pos` (more than the window holds). Returns
   * `false` so that steps can `return w.need(...)`.
   * @throws {UnexpectedEofError} when the input has ended.
   */
  need(n: number, what: string): false {
    if (this.atEnd) {
      throw new UnexpectedEofError(
        `Cannot decode migration stream: input ended inside ${what} (${this.left} of ${n} bytes)`,
        "migration",
        this.base + this.bytes.byteLength,
      );
    }
    this.needed = n;
    return false;
  }

  /**
   * Ask the loop to jump over the `n` bytes after `pos` (`pos` is consumed up
   * to there; the bytes are not looked at, whether buffered or not). Returns
   * `false` like {@linkcode ParseWindow.need}. The reader's `skip` reports a
   * truncation inside them.
   */
  skip(n: number, what: string): false {
    this.skipping = n;
    this.skipWhat = what;
    return false;
  }

  /** be32 at window index `at`. */
  u32(at: number): number {
    return this.view.getUint32(at);
  }

  /** be64 at window index `at` as a safe integer. @throws {FormatError} (code `too-large`) above 2^53. */
  u64(at: number): number {
    return getSafeU64(this.view, at, false, { format: "migration", offset: this.base + at });
  }
}
