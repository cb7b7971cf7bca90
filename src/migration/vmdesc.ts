/**
 * The vmdesc JSON that QEMU appends after EOF describes every FULL section
 * field by field, with the bytes each field took. From it the byte length of
 * each device section follows, which the stream itself does not carry.
 *
 * @module
 */

/** One FULL section as the vmdesc describes it. */
export interface VmdescSection {
  /** Section idstr. */
  idstr: string;
  /** Instance id. */
  instanceId: number;
  /** Version id. */
  versionId: number;
  /** Body bytes (fields and subsections; no header, no footer). */
  bodyLength: number;
}

interface VmdescField {
  size?: unknown;
  array_len?: unknown;
}

interface VmdescVmsd {
  vmsd_name?: unknown;
  fields?: unknown;
  subsections?: unknown;
}

function fieldsLength(vmsd: VmdescVmsd, depth: number): number | undefined {
  if (depth > 64) return undefined;
  let total = 0;
  if (vmsd.fields !== undefined) {
    if (!Array.isArray(vmsd.fields)) return undefined;
    for (const f of vmsd.fields as VmdescField[]) {
      if (typeof f !== "object" || f === null || typeof f.size !== "number") return undefined;
      const count = typeof f.array_len === "number" ? f.array_len : 1;
      total += f.size * count;
    }
  }
  if (vmsd.subsections !== undefined) {
    if (!Array.isArray(vmsd.subsections)) return undefined;
    for (const sub of vmsd.subsections as VmdescVmsd[]) {
      if (typeof sub !== "object" || sub === null || typeof sub.vmsd_name !== "string") {
        return undefined;
      }
      const inner = fieldsLength(sub, depth + 1);
      if (inner === undefined) return undefined;
      // Subsection header: 0x05, cstr8 name, be32 version.
      total += 1 + 1 + sub.vmsd_name.length + 4 + inner;
    }
  }
  return total;
}

/**
 * List the FULL sections a parsed vmdesc describes, with their body lengths.
 * Returns `undefined` when the JSON is not shaped as QEMU writes it.
 *
 * @param parsed The parsed vmdesc JSON.
 * @returns Sections in stream order, or `undefined`.
 *
 * @example
 * ```ts
 * import { vmdescSections } from "@vmem-dump/vmem-dump";
 * const s = vmdescSections({ page_size: 4096, devices: [
 *   { name: "timer", instance_id: 0, vmsd_name: "timer", version: 2,
 *     fields: [{ name: "a", type: "int64", size: 8 }] },
 * ] });
 * console.log(s?.[0]?.bodyLength); // 8
 * ```
 */
export function vmdescSections(parsed: unknown): VmdescSection[] | undefined {
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const devices = (parsed as { devices?: unknown }).devices;
  if (!Array.isArray(devices)) return undefined;
  const out: VmdescSection[] = [];
  for (const d of devices) {
    if (typeof d !== "object" || d === null) return undefined;
    const { name, instance_id, version } = d as {
      name?: unknown;
      instance_id?: unknown;
      version?: unknown;
    };
    if (
      typeof name !== "string" || typeof instance_id !== "number" || typeof version !== "number"
    ) {
      return undefined;
    }
    const bodyLength = fieldsLength(d as VmdescVmsd, 0);
    if (bodyLength === undefined) return undefined;
    out.push({ idstr: name, instanceId: instance_id, versionId: version, bodyLength });
  }
  return out;
}

/** Bytes of a FULL section header with this idstr (type, id, cstr8 idstr, instance, version). */
export function fullHeaderLength(idstr: string): number {
  return 1 + 4 + 1 + idstr.length + 4 + 4;
}
