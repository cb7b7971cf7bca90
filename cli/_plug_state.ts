/**
 * Where `filter` and `verify` get the plug state from: `--plugmap`,
 * `--plugmap-from`, a first pass over a seekable input (late layout), or the
 * stream itself (in-band, early layout).
 *
 * @module
 */

import { FormatError } from "../src/errors.ts";
import { loadPlugState, type PlugStateFromStream } from "../src/input/load_plug_state.ts";
import type { PlugMap } from "../src/vmem/plug_map.ts";
import { loadPlugMapOption, type PlugMapValues } from "./_args.ts";

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
 */
export async function choosePlugState(
  values: PlugMapValues,
  inPath: string,
  options: { twoPass: boolean },
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
        r = await loadPlugState({ stream: inPath });
      } catch (e) {
        // The first pass is a helper: when it cannot give one plug state (a restated plug
        // state, device state it cannot prove), the full pass over the stream judges it.
        if (e instanceof FormatError) {
          return { plugMap: undefined, source: "in-band", layout: undefined };
        }
        throw e;
      }
      // Early layout: the stream states it before RAM; use it in-band.
      if (r.layout === "early") return { plugMap: undefined, source: "in-band", layout: "early" };
      return { plugMap: r.plugMap, source: "two-pass", layout: r.layout };
    }
  }
  return { plugMap: undefined, source: "in-band", layout: undefined };
}
