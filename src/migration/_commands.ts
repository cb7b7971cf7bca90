/**
 * Commands (`QEMU_VM_COMMAND`, 0x08): be16 command, be16 length, payload
 * (migration/savevm.c `qemu_savevm_command_send`). Private to the decoder.
 *
 * @module
 */

import * as C from "./constants.ts";
import type { CommandRecord } from "./types.ts";
import { bad, type ParseWindow } from "./_window.ts";

/** MIG_CMD_* names, and the payload lengths each may have (`null`: any). */
const COMMANDS = new Map<number, { name: string; length: number[] | null }>([
  [C.MIG_CMD_OPEN_RETURN_PATH, { name: "OPEN_RETURN_PATH", length: [0] }],
  [C.MIG_CMD_PING, { name: "PING", length: [4] }],
  [C.MIG_CMD_POSTCOPY_ADVISE, { name: "POSTCOPY_ADVISE", length: [0, 16] }],
  [C.MIG_CMD_POSTCOPY_LISTEN, { name: "POSTCOPY_LISTEN", length: [0] }],
  [C.MIG_CMD_POSTCOPY_RUN, { name: "POSTCOPY_RUN", length: [0] }],
  [C.MIG_CMD_POSTCOPY_RAM_DISCARD, { name: "POSTCOPY_RAM_DISCARD", length: null }],
  [C.MIG_CMD_PACKAGED, { name: "PACKAGED", length: [4] }],
  [C.MIG_CMD_ENABLE_COLO, { name: "ENABLE_COLO", length: [0] }],
  [C.MIG_CMD_POSTCOPY_RESUME, { name: "POSTCOPY_RESUME", length: [0] }],
  [C.MIG_CMD_RECV_BITMAP, { name: "RECV_BITMAP", length: null }],
  [C.MIG_CMD_SWITCHOVER_START, { name: "SWITCHOVER_START", length: [0] }],
]);

/** Bytes before a command's payload: type byte, be16 command, be16 length. */
const COMMAND_HEADER = 5;

/**
 * Name of a MIG_CMD_* value, for messages and reports.
 *
 * @param command A MIG_CMD_* value.
 * @returns Its name, e.g. `PACKAGED`, or the value in hex when unknown.
 *
 * @example
 * ```ts
 * import { commandName } from "@vmem-dump/vmem-dump/migration";
 * console.log(commandName(7)); // "PACKAGED"
 * ```
 */
export function commandName(command: number): string {
  return COMMANDS.get(command)?.name ?? `0x${command.toString(16)}`;
}

/**
 * Parse the command at `w.pos` (its type byte included) and consume it.
 * Returns `undefined` after asking for more bytes.
 * @throws {FormatError} (code `bad-command`) for an unknown command or a wrong length.
 */
export function parseCommand(w: ParseWindow): CommandRecord | undefined {
  const at = w.pos;
  if (w.left < COMMAND_HEADER) return void w.need(COMMAND_HEADER, "a command header");
  const command = w.view.getUint16(at + 1);
  const length = w.view.getUint16(at + 3);
  const spec = COMMANDS.get(command);
  if (spec === undefined) {
    throw bad(`unknown command 0x${command.toString(16)}`, "bad-command", w.offset(at + 1));
  }
  if (spec.length !== null && !spec.length.includes(length)) {
    throw bad(
      `command ${spec.name} has length ${length}, expected ${spec.length.join(" or ")}`,
      "bad-command",
      w.offset(at + 3),
    );
  }
  if (w.left < COMMAND_HEADER + length) {
    return void w.need(COMMAND_HEADER + length, `the ${spec.name} payload`);
  }
  const payload = w.bytes.slice(at + COMMAND_HEADER, at + COMMAND_HEADER + length);
  w.pos = at + COMMAND_HEADER + length;
  return { kind: "command", streamOffset: w.offset(at), command, name: spec.name, payload };
}
