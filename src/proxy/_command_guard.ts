/**
 * The proxy's first stage on the main channel: refuses the commands a relay
 * cannot serve (postcopy, COLO) before they are forwarded, and notes what the
 * return-path relay must know (the return path was opened, which PING values
 * wait for a PONG).
 *
 * @module
 */

import { UnsupportedFeatureError } from "../errors.ts";
import * as C from "../migration/constants.ts";
import type { RecordStage } from "../migration/stage.ts";
import { type CommandRecord, isPageRecord, type MigrationRecord } from "../migration/types.ts";

/**
 * Commands of postcopy and COLO. Postcopy starts the destination before all
 * pages arrived (a veto before the start is impossible, and the destination
 * then pulls pages over the return path); COLO keeps two VMs in lockstep.
 */
const REFUSED_COMMANDS = new Set([
  C.MIG_CMD_POSTCOPY_ADVISE,
  C.MIG_CMD_POSTCOPY_LISTEN,
  C.MIG_CMD_POSTCOPY_RUN,
  C.MIG_CMD_POSTCOPY_RAM_DISCARD,
  C.MIG_CMD_PACKAGED,
  C.MIG_CMD_ENABLE_COLO,
  C.MIG_CMD_POSTCOPY_RESUME,
  C.MIG_CMD_RECV_BITMAP,
]);

function refuse(r: CommandRecord): never {
  if (r.command === C.MIG_CMD_OPEN_RETURN_PATH) {
    throw new UnsupportedFeatureError(
      "Cannot relay migration: this relay does not support the return path (OPEN_RETURN_PATH); " +
        "turn off the return-path and switchover-ack capabilities on the source",
      "migration",
      r.streamOffset,
    );
  }
  const what = r.command === C.MIG_CMD_ENABLE_COLO ? "COLO (ENABLE_COLO)" : `postcopy (${r.name})`;
  throw new UnsupportedFeatureError(
    `Cannot relay migration: the proxy does not support ${what}; turn off the postcopy-ram, ` +
      "dirty-bitmaps and x-colo capabilities on the source (postcopy starts the destination " +
      "before every page has arrived, so no veto could stop it)",
    "migration",
    r.streamOffset,
  );
}

/** See the module documentation. */
export class CommandGuard implements RecordStage {
  /** Whether `OPEN_RETURN_PATH` has passed (the destination may answer from then on). */
  returnPathOpened = false;
  /** PING values forwarded and not yet answered by a PONG, oldest first. */
  readonly pings: number[] = [];
  /** Page records seen. */
  pageRecords = 0;
  #onReturnPath: (() => void) | undefined;
  #allowReturnPath: boolean;

  /**
   * @param allowReturnPath Let `OPEN_RETURN_PATH` pass (the caller relays the answers).
   * @param onReturnPath Called when `OPEN_RETURN_PATH` passes.
   */
  constructor(allowReturnPath: boolean, onReturnPath?: () => void) {
    this.#allowReturnPath = allowReturnPath;
    this.#onReturnPath = onReturnPath;
  }

  /** Check one batch; everything that passes goes on unchanged. */
  process(batch: readonly MigrationRecord[]): readonly MigrationRecord[] {
    for (let i = 0; i < batch.length; i++) {
      const r = batch[i]!;
      if (isPageRecord(r)) {
        this.pageRecords++;
      } else if (r.kind === "command") {
        if (REFUSED_COMMANDS.has(r.command)) refuse(r);
        if (r.command === C.MIG_CMD_OPEN_RETURN_PATH && !this.#allowReturnPath) refuse(r);
        if (r.command === C.MIG_CMD_OPEN_RETURN_PATH && !this.returnPathOpened) {
          this.returnPathOpened = true;
          this.#onReturnPath?.();
        } else if (r.command === C.MIG_CMD_PING) {
          this.pings.push(new DataView(r.payload.buffer, r.payload.byteOffset, 4).getUint32(0));
        }
      }
    }
    return batch;
  }

  /** Nothing is held back. */
  end(): readonly MigrationRecord[] {
    return [];
  }
}
