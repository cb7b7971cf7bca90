/**
 * Check a `--json` report against its JSON Schema in `schemas/` and the
 * glossary (docs/glossary.md): every key camelCase or a plug-map device key,
 * none of the names the glossary retired. Command tests call
 * {@linkcode assertReport} on what they parse, so every report a test
 * produces is checked.
 *
 * @module
 */

import assert from "node:assert/strict";
import { schemaFolderLoader, validate } from "./json_schema.ts";

const load = schemaFolderLoader(new URL("../../schemas/", import.meta.url));

/** Keys of the plug-map device object (QMP's names). */
const DEVICE_KEYS = new Set([
  "region-size",
  "block-size",
  "usable-region-size",
  "requested-size",
]);

/** Names the glossary replaced: each has one name now. */
const RETIRED = new Set([
  "ramBlock",
  "devicePath",
  "bytesIn",
  "bytesOut",
  "streamBytes",
  "inputByteLength",
  "outputByteLength",
  "inputSha256",
  "regionSize",
  "blockSize",
  "usableRegionSize",
  "requestedSize",
  "vmdescBytes",
  "pageBytes",
  "droppedBytes",
  "renamedBytes",
  "unpluggedBytes",
]);

/** Subtrees that are not report vocabulary (stored formats, message names). */
const OPAQUE = new Set(["provenance", "messages", "inputLayout", "libvirt"]);

/** Every key of `value` that breaks the glossary, as `path: key` lines. */
export function glossaryProblems(value: unknown, path = "$"): string[] {
  const problems: string[] = [];
  if (Array.isArray(value)) {
    value.forEach((v, i) => problems.push(...glossaryProblems(v, `${path}[${i}]`)));
  } else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (RETIRED.has(k)) problems.push(`${path}: ${k} (a retired name)`);
      else if (!DEVICE_KEYS.has(k) && !/^[a-z][a-zA-Z0-9]*$/.test(k)) {
        problems.push(`${path}: ${k} (not camelCase)`);
      }
      if (!OPAQUE.has(k)) problems.push(...glossaryProblems(v, `${path}.${k}`));
    }
  }
  return problems;
}

/**
 * Parse `text` as the report of `command` and check it against
 * `schemas/<command>-report.schema.json` and the glossary.
 *
 * @param text What the command printed.
 * @param command The command (`inspect`, `verify` …).
 * @returns The parsed report.
 */
export function assertReport(text: string, command: string): Record<string, unknown> {
  const report = JSON.parse(text) as Record<string, unknown>;
  const errors = validate(report, `${command}-report.schema.json`, load);
  assert.deepEqual(errors, [], `${command} report does not match its schema`);
  assert.deepEqual(glossaryProblems(report), [], `${command} report breaks the glossary`);
  return report;
}

/**
 * Parse standard error as the JSON error of a `--json` run and check it
 * against `schemas/error.schema.json`.
 *
 * @param text Standard error.
 * @returns The error object.
 */
export function assertJsonError(
  text: string,
): { code: string; message: string; offset: number | null } {
  const last = text.trimEnd().split("\n").at(-1) ?? "";
  const parsed = JSON.parse(last) as {
    error: { code: string; message: string; offset: number | null };
  };
  assert.deepEqual(validate(parsed, "error.schema.json", load), []);
  return parsed.error;
}
