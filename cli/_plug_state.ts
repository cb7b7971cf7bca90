/**
 * Where `filter` and `verify` get the plug state from: `--plugmap`,
 * `--plugmap-from`, a first pass over a seekable input (late layout), or the
 * stream itself (in-band, early layout).
 *
 * @module
 */

import { FormatError } from "../src/errors.ts";
import type { PlugStateFromStream } from "../src/input/load_plug_state.ts";
import type { PlugMap } from "../src/vmem/plug_map.ts";
import { loadPlugMapOption, type PlugMapValues } from "./_args.ts";
import type { PlugStateJson, PlugStateSourceName } from "./_report.ts";
import { lazyImport } from "./_lazy.ts";
import { CommandError } from "./io.ts";

/** How the plug state of a command was obtained. */
export interface PlugStateChoice {
  /** The map to pass to the filter/verifier (`undefined`: in-band only). */
  plugMap: PlugMap | undefined;
  /** `plugmap`, `plugmap-from`, `two-pass` (read from IN first) or `in-band`. */
  source: "plugmap" | "plugmap-from" | "two-pass" | "in-band";
  /** Layout found by the first pass, when one ran. */
  layout: "early" | "late" | "none" | undefined;
}

/**
 * Decide where the plug state comes from: `--plugmap`/`--plugmap-from`, a
 * first pass over a seekable IN (late layout or no device), or in-band.
 * `unprovenIsFinal`: a first pass that cannot prove the device state ends the
 * command with its error (for `filter`, whose in-band pass would stop at the
 * first page of a late-layout stream for want of a plug state instead).
 */
export async function choosePlugState(
  values: PlugMapValues,
  inPath: string,
  options: { twoPass: boolean; unprovenIsFinal?: boolean },
): Promise<PlugStateChoice> {
  const plugMap = await loadPlugMapOption(values);
  if (values.plugmap !== undefined || values["plugmap-from"] !== undefined) {
    return {
      plugMap,
      source: values.plugmap !== undefined ? "plugmap" : "plugmap-from",
      layout: undefined,
    };
  }
  if (options.twoPass && inPath !== "-") {
    const info = await Deno.stat(inPath);
    if (info.isFile) {
      let r: PlugStateFromStream;
      try {
        // Loaded on use: a pipe or an early-layout stream never needs the first pass's reader.
        const { loadPlugState } = await lazyImport<
          typeof import("../src/input/load_plug_state.ts")
        >("../src/input/load_plug_state.ts", import.meta.url);
        r = await loadPlugState({ stream: inPath });
      } catch (e) {
        // The first pass is a helper: when it cannot give one plug state (a restated plug
        // state, device state it cannot prove), the full pass over the stream judges it.
        // Except for filter: device state it cannot prove stays unproven in its full pass,
        // which in the late layout would only say that the plug state was unknown at the
        // first page: give the reason.
        if (e instanceof FormatError && !(options.unprovenIsFinal && e.code === "unproven")) {
          return { plugMap: undefined, source: "in-band", layout: undefined };
        }
        throw e;
      }
      // Early layout: the stream states it before RAM (the first pass stopped there); use it
      // in-band. An early section that comes only after RAM pages (no QEMU writes that; the
      // first pass then read on) is used like a late one: from the first pass.
      if (r.layout === "early" && r.method === "early") {
        return { plugMap: undefined, source: "in-band", layout: "early" };
      }
      return { plugMap: r.plugMap, source: "two-pass", layout: r.layout };
    }
  }
  return { plugMap: undefined, source: "in-band", layout: undefined };
}

/**
 * The glossary's name for a plug-state source as the library names it
 * (`plugmap`, `early`, `device`, `structure`): the library calls every map
 * it was handed `plugmap`, so the command says which one it was (a
 * `--plugmap-from` stream, or the input's own device section read first).
 *
 * @param source The library's name.
 * @param given How the command obtained the map it handed over, if any.
 * @returns The name for reports and text.
 */
export function sourceName(
  source: string,
  given: PlugStateChoice["source"] | undefined,
): PlugStateSourceName {
  if (source === "plugmap") {
    if (given === "two-pass") return "first-pass";
    if (given === "plugmap-from") return "plugmap-from";
    return "plugmap";
  }
  return source as PlugStateSourceName;
}

/**
 * A report's `plugState` object: every source the devices' states came
 * from, the input's own layout, and the `--plugmap`/`--plugmap-from` file.
 *
 * @param values The plug-map options.
 * @param layout The input's own layout, when the command read it.
 * @param sources The sources in glossary names, in any order, with repeats.
 * @returns The object.
 */
export function plugStateJson(
  values: PlugMapValues,
  layout: "early" | "late" | "none" | null,
  sources: Iterable<PlugStateSourceName>,
): PlugStateJson {
  return {
    sources: [...new Set(sources)],
    layout,
    path: values.plugmap ?? values["plugmap-from"] ?? null,
  };
}

/**
 * A clean verdict needs a plug state to be judged by. A stream (or mapped-ram
 * file) without any virtio-mem state, checked without `--plugmap`, proves
 * nothing: its destination keeps the plug state of its own command line, and
 * pages a guest wrote into blocks unplugged there still load (a hostile source
 * can leave the device section out). So it is an error, as for `scan`.
 *
 * @param devices Devices the verdict covers.
 * @param what `stream` or `file`.
 * @throws {CommandError} `no-plug-state` when there are none.
 */
export function requirePlugState(devices: number, what: "stream" | "file"): void {
  if (devices > 0) return;
  throw new CommandError(
    "no-plug-state",
    `the ${what} carries no virtio-mem plug state, so nothing could be verified; ` +
      "give --plugmap FILE or --plugmap-from STREAM",
  );
}
