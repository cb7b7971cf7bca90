/**
 * Oracles of the mutation campaign: what counts as a correct answer to a
 * mutated input, and the failure raised when an answer is not.
 *
 * A reader may succeed or throw one of the typed errors of `src/errors.ts`
 * (a `FormatError` or one of its subclasses, with a safe integer offset
 * inside the input; an `OutputError` for outputs; the CLI's `CommandError`
 * for a command's own failures, such as an input without plug state).
 * Anything else — a
 * `TypeError` from deep inside, a `RangeError` from an allocation, an error
 * from a library below us — is a failure, as are disagreements between
 * commands that read the same input, leftover files, an allocation above the
 * guard's cap, and a case that does not finish in time.
 *
 * @module
 */

import { FormatError, OutputError } from "../../../src/errors.ts";
import { CommandError } from "../../../cli/io.ts";

/** Why a case failed. */
export type FailureKind =
  /** An error that is not one of the typed errors (or a typed error without a usable offset). */
  | "untyped-error"
  /** A typed error whose offset is not a safe integer inside the input. */
  | "bad-offset"
  /** Commands reading the same input disagree (verdict, violations, plug state, error class). */
  | "disagreement"
  /** A command left a temporary or partial file behind. */
  | "leftover-file"
  /** An output still holds what it was to remove (`filter`'s does not verify clean, `strip`'s has findings). */
  | "output-unclean"
  /** An allocation above the guard's cap (sized by an untrusted field). */
  | "allocation"
  /** The case did not finish within its timeout. */
  | "hang"
  /** The process grew beyond the memory limit. */
  | "memory"
  /** The case's outputs take far more space than its input (an output sized by a field). */
  | "output-size"
  /** An exception escaped every handler (the worker died). */
  | "uncaught";

/** A broken oracle. */
export class OracleFailure extends Error {
  /** The error class name. */
  override name = "OracleFailure";
  /** Which oracle. */
  readonly kind: FailureKind;

  /**
   * Construct it.
   *
   * @param kind Which oracle.
   * @param message What was seen.
   * @param options `{ cause }`.
   */
  constructor(kind: FailureKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}

/** Bounds for {@linkcode typedErrorLabel}. */
export interface OffsetBound {
  /** Largest offset allowed for errors of `format` (inclusive); formats not listed are not bounded. */
  maxOffset?: Partial<Record<string, number>>;
}

/**
 * The outcome label of a thrown error, after checking that it is typed:
 * `FormatError:migration/bad-section`, `UnexpectedEofError:container`,
 * `OutputError:io`.
 *
 * @param e What was thrown.
 * @param bound Offset bounds per error format.
 * @returns The label.
 * @throws {OracleFailure} `untyped-error` or `bad-offset`.
 */
export function typedErrorLabel(e: unknown, bound: OffsetBound = {}): string {
  if (e instanceof OracleFailure) throw e;
  if (e instanceof FormatError) {
    const off = e.offset;
    if (!Number.isSafeInteger(off) || off < 0) {
      throw new OracleFailure("bad-offset", `${e.name} with offset ${off}: ${e.message}`, {
        cause: e,
      });
    }
    const max = bound.maxOffset?.[e.format];
    if (max !== undefined && off > max) {
      throw new OracleFailure(
        "bad-offset",
        `${e.name} (${e.format}) at offset 0x${off.toString(16)}, beyond the input's ` +
          `0x${max.toString(16)} bytes: ${e.message}`,
        { cause: e },
      );
    }
    if (/\n/.test(e.message)) {
      throw new OracleFailure("untyped-error", `${e.name} message spans lines: ${e.message}`);
    }
    return e.name === "FormatError" ? `${e.name}:${e.format}/${e.code}` : `${e.name}:${e.format}`;
  }
  if (e instanceof OutputError) return `OutputError:${e.code}`;
  if (e instanceof CommandError) return `CommandError:${e.code}`;
  const name = e instanceof Error ? e.name : typeof e;
  const message = e instanceof Error ? e.message : String(e);
  throw new OracleFailure("untyped-error", `${name}: ${message}`, { cause: e });
}

/**
 * Throw a `disagreement` failure when `ok` is false.
 *
 * @param ok The condition.
 * @param message What disagrees.
 */
export function agree(ok: boolean, message: string): asserts ok {
  if (!ok) throw new OracleFailure("disagreement", message);
}

/** A stack trace worth printing for a failure (its cause's, when there is one). */
export function failureStack(e: unknown): string {
  const cause = e instanceof Error && e.cause instanceof Error ? e.cause : e;
  return cause instanceof Error && cause.stack ? cause.stack : String(cause);
}
