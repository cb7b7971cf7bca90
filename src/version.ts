/**
 * The version of vmem-dump, as reports and manifests name it.
 *
 * @module
 */

/** The tool's version (the `version` of deno.json; a test keeps the two equal). */
export const TOOL_VERSION = "0.2.0";

/** The tool's name and version, as reports name them. */
export const TOOL = { name: "vmem-dump", version: TOOL_VERSION } as const;
