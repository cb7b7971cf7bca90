/**
 * The vmdesc JSON that QEMU appends after EOF describes every FULL section
 * field by field, with the bytes each field took (migration/vmstate.c,
 * `vmsd_desc_field_end`; migration/savevm.c, `vmstate_save`). From it the
 * byte length of each device section body follows, which the stream itself
 * does not carry.
 *
 * QEMU's loader never reads it (it skips it after EOF), so it is a hint: the
 * decoder checks every size it takes from it against the stream (the footer
 * that must follow, the sections that must add up).
 *
 * @module
 */

/** One FULL section as the vmdesc describes it. */
export interface VmdescSection {
  /** Section idstr. */
  idstr: string;
  /** Instance id. */
  instanceId: number;
  /** Version id, or `undefined` for a section without vmstate (QEMU writes none then). */
  versionId: number | undefined;
  /** Body bytes (fields and subsections; no header, no footer). */
  bodyLength: number;
}

/** Deepest nesting of subsections accepted. */
const MAX_DEPTH = 64;

function isCount(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

/**
 * Bytes a vmstate described in the vmdesc writes: its fields' sizes (times
 * `array_len` for a compressed array; a struct's size already covers its
 * members) plus each subsection with its header (0x05, cstr8 name, be32
 * version). `undefined` when the description is not shaped as QEMU writes it.
 */
function vmstateByteLength(vmsd: unknown, depth: number): number | undefined {
  if (typeof vmsd !== "object" || vmsd === null || depth > MAX_DEPTH) return undefined;
  const { fields, subsections } = vmsd as { fields?: unknown; subsections?: unknown };
  let total = 0;
  if (fields !== undefined) {
    if (!Array.isArray(fields)) return undefined;
    for (const f of fields) {
      if (typeof f !== "object" || f === null) return undefined;
      const { size, array_len } = f as { size?: unknown; array_len?: unknown };
      if (!isCount(size)) return undefined;
      const count = array_len === undefined ? 1 : array_len;
      if (!isCount(count)) return undefined;
      total += size * count;
    }
  }
  if (subsections !== undefined) {
    if (!Array.isArray(subsections)) return undefined;
    for (const sub of subsections) {
      const name = (sub as { vmsd_name?: unknown } | null)?.vmsd_name;
      if (typeof name !== "string") return undefined;
      const inner = vmstateByteLength(sub, depth + 1);
      if (inner === undefined) return undefined;
      total += 1 + 1 + new TextEncoder().encode(name).byteLength + 4 + inner;
    }
  }
  return Number.isSafeInteger(total) ? total : undefined;
}

/**
 * List the FULL sections a parsed vmdesc describes, in stream order, with
 * their body lengths. Returns `undefined` when the JSON is not shaped as
 * QEMU writes it.
 *
 * @param parsed The parsed vmdesc JSON.
 * @returns Sections in stream order, or `undefined`.
 *
 * @example
 * ```ts
 * import { vmdescSections } from "@vmem-dump/vmem-dump/migration";
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
    if (typeof name !== "string" || !isCount(instance_id)) return undefined;
    if (version !== undefined && !isCount(version)) return undefined;
    const bodyLength = vmstateByteLength(d, 0);
    if (bodyLength === undefined) return undefined;
    out.push({ idstr: name, instanceId: instance_id, versionId: version, bodyLength });
  }
  return out;
}

/** Bytes of a FULL section header with this idstr (type, id, cstr8 idstr, instance, version). */
export function fullHeaderLength(idstr: string): number {
  return 1 + 4 + 1 + new TextEncoder().encode(idstr).byteLength + 4 + 4;
}
