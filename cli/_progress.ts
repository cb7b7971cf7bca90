/**
 * A progress line on standard error, shown only when it is a terminal.
 *
 * @module
 */

import { formatByteCount } from "./_format.ts";
import type { CliIo } from "./io.ts";

/** Progress on a terminal: one updating line on stderr (nothing otherwise). */
export function terminalProgress(io: CliIo, label: string, total: number | undefined): {
  update(done: number): void;
  end(): Promise<void>;
} {
  if (!io.stderrIsTerminal) return { update() {}, end: () => Promise.resolve() };
  let last = 0;
  let shown = false;
  return {
    update(done) {
      const now = Date.now();
      if (now - last < 250) return;
      last = now;
      shown = true;
      const pct = total ? ` (${Math.floor((done / total) * 100)}%)` : "";
      void io.err(
        `\r${label}: ${formatByteCount(done)}${
          total ? ` of ${formatByteCount(total)}` : ""
        }${pct}   `,
      );
    },
    end: () => (shown ? io.err("\r\x1b[K") : Promise.resolve()),
  };
}
