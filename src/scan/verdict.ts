/**
 * The verdict of a scan: `findings`, `clean` or `inconclusive`. A forensic
 * tool never says clean about what it did not see: `clean` needs every
 * unplugged byte of every device examined (streams: no record for an
 * unplugged block).
 *
 * @module
 */

import { formatByteCount } from "../io/text.ts";
import type { Coverage } from "./coverage.ts";

/**
 * `findings` (exit 3), `clean` (exit 0) or `inconclusive` (exit 4).
 */
export type ScanVerdict = "clean" | "findings" | "inconclusive";

/** The exit code of each verdict: 0 clean, 3 findings, 4 inconclusive. */
export const VERDICT_EXIT_CODES: Readonly<Record<ScanVerdict, number>> = {
  clean: 0,
  findings: 3,
  inconclusive: 4,
};

/** What {@linkcode decideVerdict} looks at. */
export interface VerdictInput {
  /** Totals. */
  summary: { findings: number; blocksWithFindings: number; devicesWithFindings: number };
  /** The devices (their count decides "nothing to check"). */
  devices: readonly unknown[];
  /** Dumps: what was examined and absent; `null` for streams (their verdict rests on records). */
  coverage: Coverage | null;
  /**
   * Why the plug states disagree, when the plug map given differs from the
   * input's own (which judged it): no finding then is not a proof.
   */
  plugStateConflict?: string | undefined;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/**
 * Decide the verdict of a scan and say why in one sentence.
 *
 * - any finding: `findings`;
 * - no device in the plug map: `inconclusive` ("nothing to check");
 * - the plug map given disagrees with the input's own plug state:
 *   `inconclusive` (judged by one of two states that disagree);
 * - a dump whose unplugged memory was not all examined: `inconclusive`,
 *   saying how much and why (by reason);
 * - otherwise `clean`.
 *
 * @param input Totals, devices, coverage.
 * @returns The verdict and the sentence.
 *
 * @example
 * ```ts
 * import { decideVerdict } from "@vmem-dump/vmem-dump/scan";
 * const v = decideVerdict({
 *   summary: { findings: 0, blocksWithFindings: 0, devicesWithFindings: 0 },
 *   devices: [],
 *   coverage: null,
 * });
 * console.log(v.verdict, v.reason); // inconclusive no virtio-mem devices: nothing to check
 * ```
 */
export function decideVerdict(input: VerdictInput): { verdict: ScanVerdict; reason: string } {
  const s = input.summary;
  if (s.findings > 0) {
    return {
      verdict: "findings",
      reason: `${plural(s.findings, "finding")} in ${plural(s.blocksWithFindings, "block")} of ${
        plural(s.devicesWithFindings, "device")
      }`,
    };
  }
  if (input.devices.length === 0) {
    return { verdict: "inconclusive", reason: "no virtio-mem devices: nothing to check" };
  }
  if (input.plugStateConflict !== undefined) {
    return { verdict: "inconclusive", reason: input.plugStateConflict };
  }
  const c = input.coverage;
  if (c === null) {
    return { verdict: "clean", reason: "no page record for an unplugged block" };
  }
  if (c.examinedBytes >= c.unpluggedBytes && c.absentBytes === 0) {
    return {
      verdict: "clean",
      reason: `every unplugged byte (${
        formatByteCount(c.unpluggedBytes)
      }) was examined: no findings`,
    };
  }
  const unseen = c.unpluggedBytes - c.examinedBytes;
  const why = c.absent.map((a) => `${formatByteCount(a.byteLength)} ${a.detail}`);
  const unaccounted = unseen - c.absentBytes;
  if (unaccounted > 0) {
    why.push(`${formatByteCount(unaccounted)} not examined for no recorded reason`);
  }
  return {
    verdict: "inconclusive",
    reason: `no findings, but ${formatByteCount(unseen)} of ${
      formatByteCount(c.unpluggedBytes)
    } unplugged memory was not in the input: ${why.join("; ")}`,
  };
}

/**
 * The verdict's reason when the plug map given and the input's own plug state
 * disagree on some devices (`undefined` when they agree).
 *
 * @param devices The devices they disagree on.
 * @param input What the input is called in the sentence ("stream", "file").
 * @returns The reason, or `undefined`.
 */
export function conflictReason(devices: readonly string[], input: string): string | undefined {
  if (devices.length === 0) return undefined;
  return `the plug map given and the ${input}'s own plug state disagree on ${
    devices.join(", ")
  }: judged by the ${input}'s state, which is not a proof for the map given`;
}
