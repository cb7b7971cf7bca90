/**
 * The parts of the `verify`, `filter` and `proxy` reports that describe the
 * record pipeline's results: violations, verified devices, drop counts, in
 * the glossary's names (docs/glossary.md). One place, so the three commands
 * name them alike.
 *
 * @module
 */

import type { DropStats } from "../src/migration/filter.ts";
import type { VerifyResult } from "../src/migration/verify.ts";
import type { PlugMapValues } from "./_args.ts";
import { type PlugStateChoice, plugStateJson, sourceName } from "./_plug_state.ts";
import { deviceJson, type PlugStateSourceName } from "./_report.ts";

/**
 * A verification's counts, violations and devices (the body of
 * `verify --json` after `streamByteLength`; `proxy`'s `verify`).
 *
 * @param values The plug-map options.
 * @param r The verifier's result.
 * @param given How the command obtained the map it handed the verifier.
 * @returns The JSON object.
 */
export function verifyResultJson(
  values: PlugMapValues,
  r: VerifyResult,
  given: PlugStateChoice["source"] | undefined,
): Record<string, unknown> {
  const name = (s: string): PlugStateSourceName => sourceName(s, given);
  return {
    plugState: plugStateJson(values, r.layout, r.devices.flatMap((d) => d.sources.map(name))),
    pageRecords: r.pageRecords,
    violationCount: r.violationCount,
    violatingRecords: r.violatingRecords,
    violations: r.violations.map((v) => ({
      reason: v.reason,
      recordKind: v.recordKind,
      path: v.devicePath,
      ramblock: v.ramBlock,
      ramOffset: v.ramOffset,
      gpa: v.gpa,
      blockIndex: v.blockIndex,
      streamOffset: v.streamOffset,
      records: v.records,
      detectedBy: name(v.detectedBy),
      // A page of a multifd channel: `streamOffset` is in that channel.
      ...("channel" in v && typeof v.channel === "number" ? { channel: v.channel } : {}),
    })),
    devices: r.devices.map((d) => tableDeviceJson(d, d.sources.map(name))),
  };
}

/** A device as the record pipeline's plug tables know it (verify, filter, mapped-ram). */
export interface TableDevice {
  /** Device path P. */
  devicePath: string;
  /** RAMBlock idstr. */
  ramBlock: string;
  /** Guest-physical base. */
  gpa: number;
  /** Block size. */
  blockSize: number;
  /** Device blocks. */
  blocks: number;
  /** Plugged blocks. */
  pluggedBlocks: number;
}

/**
 * A device of the plug tables in the glossary's keys, with its block counts
 * and plug-state sources.
 *
 * @param d The device.
 * @param sources Where its state came from (glossary names; repeats dropped).
 * @returns The JSON object.
 */
export function tableDeviceJson(
  d: TableDevice,
  sources: readonly PlugStateSourceName[],
): Record<string, unknown> {
  return {
    ...deviceJson({
      path: d.devicePath,
      ramblock: d.ramBlock,
      memaddr: d.gpa,
      regionSize: d.blocks * d.blockSize,
      blockSize: d.blockSize,
    }),
    blocks: d.blocks,
    pluggedBlocks: d.pluggedBlocks,
    sources: [...new Set(sources)],
  };
}

/**
 * What a filter dropped, per device and record (the body of `filter --json`
 * after `streamByteLength`; `proxy`'s `filter`).
 *
 * @param values The plug-map options.
 * @param s The dropper's counts.
 * @param given How the command obtained the map it handed the dropper.
 * @param firstPassLayout The layout a first pass found, when one ran.
 * @returns The JSON object.
 */
export function dropStatsJson(
  values: PlugMapValues,
  s: DropStats,
  given: PlugStateChoice["source"] | undefined,
  firstPassLayout?: "early" | "late" | "none" | undefined,
): Record<string, unknown> {
  const name = (source: string): PlugStateSourceName => sourceName(source, given);
  const sources = s.devices.map((d) => name(d.source));
  // The stream's own layout: from the first pass, else from what the stream stated in-band.
  const layout = firstPassLayout ??
    (sources.includes("early")
      ? "early"
      : sources.includes("device")
      ? "late"
      : given === "in-band"
      ? "none"
      : null);
  const pathOf = new Map(s.devices.map((d) => [d.ramBlock, d.devicePath]));
  return {
    plugState: plugStateJson(values, layout, sources),
    pageRecords: s.pageRecords,
    droppedRecords: s.droppedRecords,
    droppedByteLength: s.droppedBytes,
    renamedRecords: s.renamedRecords,
    renamedByteLength: s.renamedBytes,
    devices: s.devices.map((d) => ({
      ...tableDeviceJson(d, [name(d.source)]),
      keptRecords: d.keptRecords,
      droppedRecords: d.droppedRecords,
      droppedByteLength: d.droppedBytes,
      droppedBlocks: d.droppedBlocks.map((b) => ({
        blockIndex: b.blockIndex,
        gpa: b.gpa,
        droppedRecords: b.droppedRecords,
        droppedByteLength: b.droppedBytes,
      })),
    })),
    dropped: s.dropped.map((r) => ({
      recordKind: r.recordKind,
      path: pathOf.get(r.ramBlock) ?? "",
      ramblock: r.ramBlock,
      ramOffset: r.ramOffset,
      gpa: r.gpa,
      blockIndex: r.blockIndex,
      streamOffset: r.streamOffset,
      byteLength: r.byteLength,
    })),
  };
}
