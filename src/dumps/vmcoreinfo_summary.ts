/**
 * What `inspect` shows of a dump's VMCOREINFO (the kernel's own description
 * of itself that kdump tools read): release, page size, build id, the
 * physical load offsets, and whether the kernel marks offline pages
 * (`PG_offline`: virtio-mem and the balloon drivers set it on memory they
 * took away, and makedumpfile leaves such pages out at every dump level).
 *
 * @module
 */

import { latin1Encode } from "../io/text.ts";
import { parseVmcoreinfo } from "../elf/note.ts";

/** A VMCOREINFO summary. */
export interface VmcoreinfoSummary {
  /** `OSRELEASE`. */
  release: string | null;
  /** `PAGESIZE`. */
  pageSize: number | null;
  /** `BUILD-ID`. */
  buildId: string | null;
  /** `NUMBER(phys_base)` as written (a signed decimal). */
  physBase: string | null;
  /** `KERNELOFFSET` as written (hex). */
  kernelOffset: string | null;
  /**
   * How the kernel marks offline pages for dump tools:
   * `NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)` (page type in `_mapcount`), or
   * `NUMBER(PG_offline)` on kernels that export a flag bit; `null` when
   * neither is there (such a kernel cannot tell dump tools which pages
   * virtio-mem took away).
   */
  pgOffline: { key: string; value: string } | null;
  /** `CRASHTIME`, when the kernel crashed (not in QEMU dumps of a running guest). */
  crashTime: number | null;
  /** Keys in the text. */
  keyCount: number;
}

const PG_OFFLINE_KEYS = ["NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)", "NUMBER(PG_offline)"];

/**
 * Summarise a VMCOREINFO text.
 *
 * @param text The `KEY=VALUE` lines (as bytes of a note descriptor, or text).
 * @returns The summary.
 *
 * @example
 * ```ts
 * import { summarizeVmcoreinfo } from "@vmem-dump/vmem-dump/dumps";
 * const s = summarizeVmcoreinfo("OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257\n");
 * console.log(s.release, s.pageSize, s.pgOffline?.value); // 6.1.0 4096 -257
 * ```
 */
export function summarizeVmcoreinfo(text: string | Uint8Array): VmcoreinfoSummary {
  const info = parseVmcoreinfo(typeof text === "string" ? latin1Encode(text) : text);
  const num = (key: string) => {
    const v = info.get(key);
    return v !== undefined && /^[0-9]{1,15}$/.test(v) ? Number(v) : null;
  };
  const pgKey = PG_OFFLINE_KEYS.find((k) => info.has(k));
  return {
    release: info.get("OSRELEASE") ?? null,
    pageSize: num("PAGESIZE"),
    buildId: info.get("BUILD-ID") ?? null,
    physBase: info.get("NUMBER(phys_base)") ?? null,
    kernelOffset: info.get("KERNELOFFSET") ?? null,
    pgOffline: pgKey === undefined ? null : { key: pgKey, value: info.get(pgKey)! },
    crashTime: num("CRASHTIME"),
    keyCount: info.size,
  };
}
