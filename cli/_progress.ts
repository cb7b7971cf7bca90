/**
 * Progress of a long command on standard error: on a terminal, one line
 * updated at most four times a second with what was done, the rate and the
 * time left; and, terminal or not, one summary line at the end (so scripts
 * and cron logs keep a trace). With `--json` the report is the trace: no
 * summary line.
 *
 * @module
 */

import { byteCount, duration, formatByteCount, rate } from "./_format.ts";
import type { CliIo } from "./io.ts";

/** A running progress display. */
export interface Progress {
  /** Bytes done so far (cheap: call it per chunk or batch). */
  update(done: number, total?: number): void;
  /** Clear the terminal line (before printing anything else). */
  end(): Promise<void>;
  /** Seconds since the start. */
  readonly seconds: number;
}

/** How often the terminal line is redrawn. */
const REDRAW_MS = 250;

/** Time before a rate and time left are shown (they are noise before). */
const SETTLE_MS = 1000;

/**
 * Start a progress display for `label` (the command), with the total when
 * it is known (a file's size). Nothing is shown when stderr is not a
 * terminal.
 *
 * @param io The command's output.
 * @param label What is shown first, e.g. `verify`.
 * @param total Bytes to do, when known.
 * @returns The display.
 */
export function terminalProgress(io: CliIo, label: string, total: number | undefined): Progress {
  const start = performance.now();
  // The first update always draws (performance.now() counts from the process's start, which
  // may be less than REDRAW_MS ago).
  let last = -Infinity;
  let shown = false;
  let whole = total;
  return {
    update(done, newTotal) {
      if (newTotal !== undefined) whole = newTotal;
      if (!io.stderrIsTerminal) return;
      const now = performance.now();
      if (now - last < REDRAW_MS) return;
      last = now;
      shown = true;
      void io.err(`\r${progressLine(label, done, whole, (now - start) / 1000)}\x1b[K`);
    },
    end: () => {
      if (!shown) return Promise.resolve();
      shown = false;
      return io.err("\r\x1b[K");
    },
    get seconds() {
      return (performance.now() - start) / 1000;
    },
  };
}

/**
 * The text of a progress line: `verify: 1.20 GiB of 3.40 GiB (35%), 512 MiB/s, 4 s left`.
 *
 * @param label The command.
 * @param done Bytes done.
 * @param total Bytes to do, when known.
 * @param seconds Time so far.
 * @returns The line, without a line end.
 */
export function progressLine(
  label: string,
  done: number,
  total: number | undefined,
  seconds: number,
): string {
  let line = `${label}: ${formatByteCount(done)}`;
  if (total !== undefined && total > 0) {
    line += ` of ${formatByteCount(total)} (${Math.min(100, Math.floor((done / total) * 100))}%)`;
  }
  if (seconds * 1000 >= SETTLE_MS && done > 0) {
    line += `, ${rate(done, seconds)}`;
    if (total !== undefined && total > done) {
      line += `, ${duration(((total - done) / done) * seconds)} left`;
    }
  }
  return line;
}

/**
 * The one summary line at the end of a command, on stderr, whatever stderr
 * is: `filter: 369,036 bytes in 0.05 s (7.04 MiB/s)` plus what the command
 * adds.
 *
 * @param io The command's output.
 * @param label The command.
 * @param bytes Bytes read (the measure the rate is of).
 * @param seconds Time taken.
 * @param detail What the command adds after a semicolon, if anything.
 */
export async function summaryLine(
  io: CliIo,
  label: string,
  bytes: number,
  seconds: number,
  detail?: string,
): Promise<void> {
  await io.err(
    `${label}: ${byteCount(bytes)} in ${duration(seconds)} (${rate(bytes, seconds)})` +
      `${detail ? `; ${detail}` : ""}\n`,
  );
}

/** Progress over the bytes of an input file, fed by the reader's `onChunk`. */
export interface InputProgress extends Progress {
  /** Hand this to the reader (`openStreamInput`'s `onChunk`). */
  onChunk: (chunk: Uint8Array) => void;
  /** Set the input's size once it is known (a regular file's). */
  setTotal(total: number | undefined): void;
  /** Bytes read so far. */
  readonly bytes: number;
}

/**
 * Progress of a command that reads one input front to back (inspect,
 * verify, filter, scan of a stream, convert of a stream): the bytes read
 * from the file (compressed bytes for a compressed file) against its size.
 *
 * @param io The command's output.
 * @param label The command.
 * @returns The display and its `onChunk` tap.
 */
export function inputProgress(io: CliIo, label: string): InputProgress {
  let total: number | undefined;
  let bytes = 0;
  const shown = terminalProgress(io, label, undefined);
  return {
    onChunk(chunk) {
      bytes += chunk.byteLength;
      shown.update(bytes, total);
    },
    setTotal(n) {
      total = n;
    },
    update: shown.update,
    end: shown.end,
    get seconds() {
      return shown.seconds;
    },
    get bytes() {
      return bytes;
    },
  };
}
