/**
 * Typed errors for every parser in vmem-dump. Each error carries the absolute
 * byte offset of the field that was wrong, a stable `code` for programs and a
 * sentence for people.
 *
 * @module
 */

/** Which input format an error belongs to. */
export type ErrorFormat =
  | "migration"
  | "elf"
  | "kdump"
  | "raw"
  | "plugmap"
  | "container";

/** Stable machine-readable error codes. */
export type FormatErrorCode =
  | "bad-magic"
  | "bad-version"
  | "unexpected-eof"
  | "unsupported"
  | "bad-section"
  | "bad-footer"
  | "bad-command"
  | "bad-record"
  | "unknown-block"
  | "out-of-range"
  | "too-large"
  | "bad-virtio-mem"
  | "bad-mapped-ram"
  | "bad-header"
  | "bad-segment"
  | "bad-note"
  | "bad-json"
  | "invariant"
  | "verification"
  | "unproven"
  | "split-set";

/** Details shared by every {@linkcode FormatError}. */
export interface FormatErrorDetails {
  /** Which format was being read. */
  format: ErrorFormat;
  /** Stable code for programs. */
  code: FormatErrorCode;
  /** Absolute byte offset of the offending field in the input. */
  offset: number;
}

/**
 * An input is not what its format allows. The message ends with the offset in
 * hex; `offset` holds it as a number.
 *
 * @example Branch on the code
 * ```ts
 * import { FormatError } from "@vmem-dump/vmem-dump";
 * try {
 *   throw new FormatError("Cannot decode migration stream: bad magic", {
 *     format: "migration", code: "bad-magic", offset: 0,
 *   });
 * } catch (e) {
 *   if (e instanceof FormatError && e.code === "bad-magic") console.log(e.offset);
 * }
 * ```
 */
export class FormatError extends Error {
  /** The error class name. */
  override name = "FormatError";
  /** Which format was being read. */
  readonly format: ErrorFormat;
  /** Stable code for programs. */
  readonly code: FormatErrorCode;
  /** Absolute byte offset of the offending field. */
  readonly offset: number;

  /**
   * Construct it.
   *
   * @param message What went wrong, without the offset (it is appended).
   * @param details Format, code and offset.
   * @param options Standard error options, e.g. `{ cause }`.
   */
  constructor(message: string, details: FormatErrorDetails, options?: ErrorOptions) {
    super(`${message} at offset 0x${details.offset.toString(16)}`, options);
    this.format = details.format;
    this.code = details.code;
    this.offset = details.offset;
  }
}

/**
 * The sentence of a {@linkcode FormatError} without the ` at offset 0x…` its
 * constructor appends, for wrapping it into another error that names its own
 * offset (so the text does not say "at offset" twice).
 *
 * @param e The error.
 * @returns Its message, without the trailing offset.
 * @example
 * ```ts ignore
 * import { FormatError, formatErrorSentence } from "./errors.ts";
 * const e = new FormatError("Bad thing", { format: "raw", code: "bad-record", offset: 16 });
 * console.log(formatErrorSentence(e)); // "Bad thing"
 * ```
 */
export function formatErrorSentence(e: FormatError): string {
  return e.message.replace(/ at offset 0x[0-9a-f]+$/, "");
}

/**
 * The input ended in the middle of a structure (a truncated file or a dropped
 * connection).
 *
 * @example
 * ```ts
 * import { UnexpectedEofError } from "@vmem-dump/vmem-dump";
 * const e = new UnexpectedEofError("Cannot read RAM page: input ended", "migration", 4096);
 * console.log(e.code); // "unexpected-eof"
 * ```
 */
export class UnexpectedEofError extends FormatError {
  /** The error class name. */
  override name = "UnexpectedEofError";
  /**
   * Construct it.
   *
   * @param message What was being read.
   * @param format Which format was being read.
   * @param offset Where the input ended.
   */
  constructor(message: string, format: ErrorFormat, offset: number) {
    super(message, { format, code: "unexpected-eof", offset });
  }
}

/**
 * The input is valid but uses a feature vmem-dump does not handle (RDMA hooks,
 * multifd channels, bzip2 save images, …).
 *
 * @example
 * ```ts
 * import { UnsupportedFeatureError } from "@vmem-dump/vmem-dump";
 * const e = new UnsupportedFeatureError("RDMA hook records are not supported", "migration", 12);
 * console.log(e.code); // "unsupported"
 * ```
 */
export class UnsupportedFeatureError extends FormatError {
  /** The error class name. */
  override name = "UnsupportedFeatureError";
  /**
   * Construct it.
   *
   * @param message Which feature.
   * @param format Which format was being read.
   * @param offset Where the feature was found.
   */
  constructor(message: string, format: ErrorFormat, offset: number) {
    super(message, { format, code: "unsupported", offset });
  }
}

/** Where a verification failure was found. */
export interface VerificationErrorDetails {
  /** Guest-physical address of the offending page. */
  gpa: number;
  /** RAMBlock idstr of the offending record. */
  ramBlock: string;
  /** Offset of the page inside its RAMBlock. */
  ramOffset: number;
  /** Stream offset where the offending record starts. */
  offset: number;
}

/**
 * The receive side found a record for an unplugged virtio-mem block.
 *
 * @example
 * ```ts
 * import { VerificationError } from "@vmem-dump/vmem-dump";
 * const e = new VerificationError("RAM page in unplugged block 96", {
 *   gpa: 0x10c001000, ramBlock: "0000:00:01.0/vmem0mem", ramOffset: 0xc001000, offset: 231022400,
 * });
 * console.log(e.gpa.toString(16));
 * ```
 */
export class VerificationError extends FormatError {
  /** The error class name. */
  override name = "VerificationError";
  /** Guest-physical address of the offending page. */
  readonly gpa: number;
  /** RAMBlock idstr of the offending record. */
  readonly ramBlock: string;
  /** Offset of the page inside its RAMBlock. */
  readonly ramOffset: number;

  /**
   * Construct it.
   *
   * @param message What was found.
   * @param details Where it was found.
   */
  constructor(message: string, details: VerificationErrorDetails) {
    super(message, { format: "migration", code: "verification", offset: details.offset });
    this.gpa = details.gpa;
    this.ramBlock = details.ramBlock;
    this.ramOffset = details.ramOffset;
  }
}

/** Stable codes of an {@linkcode OutputError}. */
export type OutputErrorCode =
  /** The output is one of the inputs (same device and inode, links resolved). */
  | "output-is-input"
  /** The output exists and replacing it was not asked for. */
  | "output-exists"
  /** The output path cannot be written to (a directory, a block device …). */
  | "not-writable"
  /** Creating, writing, closing or renaming the output failed (ENOSPC, EIO, EACCES …). */
  | "io";

/** Details of an {@linkcode OutputError}. */
export interface OutputErrorDetails {
  /** Stable code for programs. */
  code: OutputErrorCode;
  /** The output path (`-` for standard output). */
  path: string;
  /** Output offset of the first byte that could not be written, when writing failed. */
  offset?: number | undefined;
  /** The operating system's error code (`ENOSPC`, `EIO` …) when there was one. */
  osCode?: string | undefined;
}

/**
 * Writing an output failed, or was refused because it would destroy
 * evidence (the output is an input, or it exists). The temporary output has
 * been removed when this is thrown; the destination is untouched.
 *
 * @example
 * ```ts
 * import { OutputError } from "@vmem-dump/vmem-dump";
 * const e = new OutputError("no space left on device writing out.mig at offset 0x1000", {
 *   code: "io", path: "out.mig", offset: 0x1000, osCode: "ENOSPC",
 * });
 * console.log(e.code, e.offset); // "io" 4096
 * ```
 */
export class OutputError extends Error {
  /** The error class name. */
  override name = "OutputError";
  /** Stable code for programs. */
  readonly code: OutputErrorCode;
  /** The output path. */
  readonly path: string;
  /** Output offset where writing failed, or `undefined`. */
  readonly offset: number | undefined;
  /** The operating system's error code, or `undefined`. */
  readonly osCode: string | undefined;

  /**
   * Construct it.
   *
   * @param message The whole sentence (it names the path, and the offset when there is one).
   * @param details Code, path, offset.
   * @param options Standard error options, e.g. `{ cause }`.
   */
  constructor(message: string, details: OutputErrorDetails, options?: ErrorOptions) {
    super(message, options);
    this.code = details.code;
    this.path = details.path;
    this.offset = details.offset;
    this.osCode = details.osCode;
  }
}

/**
 * A file changed while it was read. A reader that opens a file more than
 * once (a first pass for the plug state and the full pass, the kind told by
 * one open and the dump read by another) found another file under its path,
 * or the file was written meanwhile: what was read may come from two files.
 *
 * @example
 * ```ts
 * import { InputChangedError } from "@vmem-dump/vmem-dump";
 * const e = new InputChangedError("s1.mig", "it is another file now");
 * console.log(e.code, e.path); // "input-changed" "s1.mig"
 * ```
 */
export class InputChangedError extends Error {
  /** The error class name. */
  override name = "InputChangedError";
  /** Stable code for programs. */
  readonly code = "input-changed";
  /** The path of the file that changed, as it was given. */
  readonly path: string;

  /**
   * Construct it.
   *
   * @param path The path, as it was given.
   * @param why How it changed ("it is another file now").
   */
  constructor(path: string, why: string) {
    super(
      `${path} changed while it was read (${why}): what was read may come from two files; ` +
        "read it again when nothing writes it",
    );
    this.path = path;
  }
}
