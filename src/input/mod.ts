/**
 * Inputs of any kind: open a file or standard input whatever its container
 * and format ({@linkcode openInput}), and load a VM's plug state from a
 * plug-map file or a migration stream ({@linkcode loadPlugState}).
 *
 * This folder is a floor above the format folders: it may import any of
 * them (`src/migration`, `src/container`, `src/dumps`, …), and no format
 * folder imports it.
 *
 * @module
 */

export { type Input, type InputKind, openInput, type OpenInputOptions } from "./open_input.ts";
export {
  type LoadedPlugState,
  loadPlugState,
  type PlugMapFileSource,
  type PlugStateFromFile,
  type PlugStateFromStream,
  type PlugStateOrigin,
  type StreamSource,
} from "./load_plug_state.ts";
