/**
 * Recognising and reading the plug-map input formats: the versioned JSON
 * exchange format (`{"version": 1, "devices": [...]}`), a QMP
 * `query-memory-devices` reply combined with plugged block runs, and a
 * plain list of plugged guest-physical ranges. See docs/plugmaps.md.
 *
 * @module
 */

import { FormatError } from "../errors.ts";
import { PlugMap } from "./plug_map.ts";
import { isQmpPlugMapInput, plugMapFromQmp } from "./qmp.ts";
import { plugMapFromRangeList } from "./range_list.ts";

/** The input formats {@linkcode parsePlugMapSource} recognises. */
export type PlugMapSourceFormat = "json-v1" | "qmp" | "range-list";

/**
 * Recognise the format of a `--plugmap` file and read it:
 *
 * - a JSON object with `version` → the exchange format (`PlugMap.fromJSON`);
 * - a JSON object with `qmp`, `return` or `query-memory-devices`, or a JSON
 *   array of `{type, data}` entries → a QMP reply plus runs (`plugMapFromQmp`);
 * - a JSON array of `[gpa, byteLength]` pairs, or anything that is not JSON
 *   → a list of plugged guest-physical ranges (`plugMapFromRangeList`).
 *
 * @param text The file contents.
 * @returns The map and the format it was read as.
 * @throws {FormatError} (format `plugmap`) when the text is empty or blank, none of these, or describes an impossible state.
 *
 * @example
 * ```ts
 * import { parsePlugMapSource } from "@vmem-dump/vmem-dump";
 * const { map, format } = parsePlugMapSource("0x100000000-0x100400000\n");
 * console.log(format, map.devices.length); // "range-list" 1
 * ```
 */
export function parsePlugMapSource(text: string): { map: PlugMap; format: PlugMapSourceFormat } {
  const trimmed = text.trim();
  if (trimmed.length === 0) {
    // Not "no devices": an empty file is a plug map that went missing (fail closed).
    throw new FormatError("Cannot read plug map: it is empty (no JSON, no ranges)", {
      format: "plugmap",
      code: "bad-json",
      offset: 0,
    });
  }
  if (!trimmed.startsWith("{") && !trimmed.startsWith("[")) {
    return { map: plugMapFromRangeList(text), format: "range-list" };
  }
  let json: unknown;
  try {
    json = JSON.parse(trimmed);
  } catch (e) {
    // V8's message may quote the input, newlines included: one line, and the offset in bytes
    // when it names a position.
    const message = (e as Error).message.replace(/\s+/g, " ");
    const position = /at position (\d+)/.exec(message);
    const leading = text.length - text.trimStart().length;
    const offset = position === null
      ? 0
      : new TextEncoder().encode(text.slice(0, leading + Number(position[1]))).length;
    throw new FormatError(`Cannot read plug map: not valid JSON: ${message}`, {
      format: "plugmap",
      code: "bad-json",
      offset,
    }, { cause: e });
  }
  if (typeof json === "object" && json !== null && !Array.isArray(json) && "version" in json) {
    return { map: PlugMap.fromJSON(json), format: "json-v1" };
  }
  if (isQmpPlugMapInput(json)) return { map: plugMapFromQmp(json), format: "qmp" };
  if (Array.isArray(json)) return { map: plugMapFromRangeList(json), format: "range-list" };
  throw new FormatError(
    "Cannot read plug map: expected the version 1 format, a QMP query-memory-devices reply or a range list",
    { format: "plugmap", code: "bad-json", offset: 0 },
  );
}
