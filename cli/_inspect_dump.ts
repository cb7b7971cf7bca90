/**
 * `inspect` for guest memory dumps (ELF, kdump-compressed, raw images) and
 * the libvirt save image header: the views of src/dumps, rendered as text or
 * JSON, with the plug state of the memory they hold when a plug map is
 * given. `inspect` dispatches here by magic; migration streams keep their
 * own path.
 */

import {
  describeElfDump,
  type ElfDumpDescription,
  type ElfNoteDescription,
} from "../src/dumps/describe_elf.ts";
import { describeKdumpDump, type KdumpDumpDescription } from "../src/dumps/describe_kdump.ts";
import { describeRawImage, type RawImageDescription } from "../src/dumps/describe_raw.ts";
import { sniffDump } from "../src/dumps/detect.ts";
import { type Provenance, provenanceRemoved } from "../src/dumps/provenance.ts";
import type { VmcoreinfoSummary } from "../src/dumps/vmcoreinfo_summary.ts";
import { readElfCore } from "../src/elf/reader.ts";
import { openPositional } from "../src/io/positional.ts";
import { readKdump } from "../src/kdump/reader.ts";
import type { PlugMap } from "../src/vmem/plug_map.ts";
import { type PlugOverlay, plugOverlay } from "../src/vmem/plug_overlay.ts";
import { formatGpaRange, type GpaRange } from "../src/vmem/ranges.ts";
import { formatByteCount, grouped, hex, table } from "./_format.ts";
import { reportJson } from "./_report.ts";
import type { CliIo } from "./io.ts";

/** A dump's description, any format. */
export type DumpDescription = ElfDumpDescription | KdumpDumpDescription | RawImageDescription;

/** Ranges shown in text before "… N more" (JSON has them all). */
const TEXT_RANGE_LIMIT = 32;

/** Describe the dump at `path` (a raw image when `baseGpa` is given). */
export async function describeDump(path: string, baseGpa?: number): Promise<DumpDescription> {
  if (baseGpa !== undefined) {
    using r = await openPositional(path);
    return describeRawImage(r.byteLength, baseGpa);
  }
  let kind;
  let fileByteLength;
  {
    using r = await openPositional(path);
    kind = await sniffDump(r);
    fileByteLength = r.byteLength;
  }
  if (kind === "elf") {
    using core = await readElfCore(path);
    return describeElfDump(core);
  }
  using dump = await readKdump(path);
  return describeKdumpDump(dump, fileByteLength);
}

/** The memory a dump holds (for the plug overlay). */
function heldMemory(d: DumpDescription): GpaRange[] {
  return d.format === "kdump" ? d.present : d.memory;
}

/** Print a dump's description (text or JSON) with the plug overlay of `map`. */
export async function printDump(
  io: CliIo,
  path: string,
  d: DumpDescription,
  map: PlugMap | undefined,
  asJson: boolean,
): Promise<void> {
  const overlay = map === undefined ? undefined : plugOverlay(map, heldMemory(d));
  if (asJson) {
    // The envelope names the input; the view's own fields follow.
    const { format, byteLength, ...body } = d as DumpDescription & Record<string, unknown>;
    const container = d.format === "kdump" ? d.container : null;
    const baseGpa = d.format === "raw" ? d.baseGpa : undefined;
    delete body.container;
    delete body.baseGpa;
    await io.out(reportJson("inspect", {
      input: {
        path,
        format,
        container,
        byteLength,
        ...(baseGpa !== undefined ? { baseGpa } : {}),
      },
      verdict: "done",
    }, { ...body, ...(overlay ? { memoryByPlugState: overlay } : {}) }));
    return;
  }
  let out = "";
  if (d.format === "elf") out += renderElf(path, d);
  else if (d.format === "kdump") out += renderKdump(path, d);
  else out += renderRaw(path, d);
  if (d.format !== "raw") out += renderProvenance(d.provenance);
  if (overlay) out += renderOverlay(overlay);
  await io.out(out);
}

function ranges(list: readonly GpaRange[], indent = "  "): string {
  if (list.length === 0) return `${indent}none\n`;
  let out = "";
  for (const r of list.slice(0, TEXT_RANGE_LIMIT)) {
    out += `${indent}${formatGpaRange(r)} (${formatByteCount(r.byteLength)})\n`;
  }
  if (list.length > TEXT_RANGE_LIMIT) {
    out += `${indent}… ${grouped(list.length - TEXT_RANGE_LIMIT)} more (--json lists them all)\n`;
  }
  return out;
}

function total(list: readonly GpaRange[]): number {
  return list.reduce((n, r) => n + r.byteLength, 0);
}

function renderVmcoreinfo(v: VmcoreinfoSummary | null): string {
  if (v === null) {
    return "kernel:   no VMCOREINFO (crash and makedumpfile need the kernel's own then)\n";
  }
  const parts = [
    v.release ?? "release unknown",
    `page size ${v.pageSize ?? "?"}`,
    ...(v.buildId ? [`build id ${v.buildId}`] : []),
    ...(v.physBase !== null ? [`phys_base ${v.physBase}`] : []),
    ...(v.kernelOffset !== null ? [`KERNELOFFSET ${v.kernelOffset}`] : []),
  ];
  let out = `kernel:   ${parts.join(", ")} (${v.keyCount} VMCOREINFO keys)\n`;
  out += `PG_offline: ${
    v.pgOffline === null
      ? "not exported (dump tools cannot tell which pages the guest took offline)"
      : `${v.pgOffline.key}=${v.pgOffline.value} (makedumpfile leaves offline pages out)`
  }\n`;
  if (v.crashTime !== null) out += `crash time: ${new Date(v.crashTime * 1000).toISOString()}\n`;
  return out;
}

function renderNotes(notes: readonly ElfNoteDescription[]): string {
  const byName = new Map<string, { count: number; bytes: number; kind: string }>();
  for (const n of notes) {
    const key = `${n.name}/${n.type}`;
    const e = byName.get(key) ?? { count: 0, bytes: 0, kind: n.kind };
    e.count++;
    e.bytes += n.descByteLength;
    byName.set(key, e);
  }
  let out = `notes (${notes.length}):\n`;
  if (notes.length === 0) return out + "  none\n";
  for (const [key, e] of byName) {
    out += `  ${key}${e.count > 1 ? ` ×${e.count}` : ""}${
      e.kind === "other" ? "" : ` (${e.kind})`
    }, ${grouped(e.bytes)} bytes\n`;
  }
  return out;
}

function renderElf(path: string, d: ElfDumpDescription): string {
  let out = `dump:     ${path} (${grouped(d.byteLength)} bytes)\n`;
  out += `format:   ELF${d.elfClass} ${
    d.littleEndian ? "little" : "big"
  }-endian ${d.machineName} core, ${
    d.layout === "qemu"
      ? "QEMU >= 7.2 layout (section headers first; makedumpfile 1.7.2 cannot read it: convert --to elf)"
      : "classic layout"
  }\n`;
  out += `headers:  ${d.phdrCount} program headers at ${hex(d.phdrFileOffset)}${
    d.extendedNumbering ? " (extended numbering)" : ""
  }, data from ${hex(d.headersEnd)}\n`;
  out += renderVmcoreinfo(d.vmcoreinfo);
  out += `cpus:     ${d.cpuCount}\n`;
  out += `memory:   ${grouped(d.memoryByteLength)} bytes in ${d.memory.length} ranges\n`;
  out += ranges(d.memory);
  out += `\nPT_LOADs (${d.loads.length}):\n`;
  out += table(
    ["idx", "gpa", "memsz", "file offset", "filesz"],
    d.loads.map((l) => [
      l.index,
      l.gpa === null ? "-" : hex(l.gpa),
      hex(l.byteLength),
      l.fileOffset === null ? "-" : hex(l.fileOffset),
      hex(l.fileByteLength),
    ]),
  );
  out += "\n" + renderNotes(d.notes);
  return out;
}

function renderKdump(path: string, d: KdumpDumpDescription): string {
  const h = d.header;
  let out = `dump:     ${path} (${grouped(d.byteLength)} bytes, ${
    d.container === "flattened" ? "flattened container" : "plain file"
  })\n`;
  out += `format:   kdump-compressed (${h.signature.trim()}), header version ${h.headerVersion}, ${
    h.wordSize * 8
  }-bit ${h.littleEndian ? "little" : "big"}-endian, page size ${h.pageSize}\n`;
  out += `compression: ${d.compression}${d.incomplete ? ", INCOMPLETE dump (cut short)" : ""}${
    d.excludedVmemmap ? ", vmemmap excluded" : ""
  }\n`;
  out += `dump level: ${d.subHeader.dumpLevel}${
    d.dumpLevelExcludes.length ? ` (filters ${d.dumpLevelExcludes.join(", ")})` : " (no filter)"
  }\n`;
  const u = h.utsname;
  out += `utsname:  ${
    [u.sysname, u.nodename, u.release, u.version, u.machine].map((s) => s || "-").join(" | ")
  }\n`;
  out += renderVmcoreinfo(d.vmcoreinfo);
  out += `cpus:     ${h.nrCpus}, phys_base ${d.subHeader.physBase}${
    d.subHeader.split
      ? `, split file: pfns ${hex(d.subHeader.startPfn)}-${hex(d.subHeader.endPfn)}`
      : ""
  }\n`;
  out += `pages:    ${grouped(d.presentPages)} present, ${grouped(d.dumpedPages)} with data${
    d.subHeader.split ? " in this file" : ""
  }, ${grouped(d.excludedPages)} left out${d.subHeader.split ? " by the set" : ""} (max pfn ${
    hex(d.maxMapnr)
  })\n`;
  out += `present (1st bitmap): ${grouped(total(d.present))} bytes in ${d.present.length} ranges\n`;
  out += ranges(d.present);
  out += `with data (2nd bitmap${d.subHeader.split ? ", this file's range" : ""}): ${
    grouped(total(d.dumped))
  } bytes in ${d.dumped.length} ranges\n`;
  out += ranges(d.dumped);
  out += `layout:   descriptors at ${hex(d.descTableOffset)}, page data from ${
    hex(d.dataOffset)
  }\n`;
  out += "\n" + renderNotes(d.notes);
  return out;
}

function renderRaw(path: string, d: RawImageDescription): string {
  let out = `dump:     ${path} (${grouped(d.byteLength)} bytes)\n`;
  out += `format:   raw image of guest-physical memory at ${hex(d.baseGpa)} (given by --base)\n`;
  out += `memory:   ${grouped(d.byteLength)} bytes\n`;
  out += ranges(d.memory);
  return out;
}

function renderProvenance(p: Provenance | null): string {
  if (p === null) return "\nprovenance: none (not rewritten by vmem-dump)\n";
  let out = `\nprovenance (VMEMDUMP note, ${p.steps.length} ${
    p.steps.length === 1 ? "step" : "steps"
  }):\n`;
  for (const s of p.steps) {
    const removed = total(s.removed);
    out += `  ${s.tool.name} ${s.tool.version} ${s.command} -> ${s.output.format}: ${
      removed === 0 ? "removed nothing" : `removed ${grouped(removed)} bytes (${s.reason})`
    }${s.zeroPagesExcluded ? ", zero pages excluded" : ""}\n`;
    out += `    input ${s.input.name}, ${
      grouped(s.input.byteLength)
    } bytes, sha256 ${s.input.sha256}\n`;
    if (s.removed.length > 0) out += ranges(s.removed, "    ");
  }
  const all = provenanceRemoved(p);
  if (p.steps.length > 1 && all.length > 0) {
    out += `  absent because unplugged, all steps: ${grouped(total(all))} bytes\n`;
  }
  return out;
}

function renderOverlay(o: PlugOverlay): string {
  let out = `\nplug map:\n`;
  out += `  plugged memory in the dump:   ${grouped(o.pluggedByteLength)} bytes\n`;
  out += `  unplugged memory in the dump: ${grouped(o.unpluggedByteLength)} bytes${
    o.unpluggedByteLength > 0 ? " (strip removes it)" : ""
  }\n`;
  out += ranges(o.unplugged, "    ");
  out += `  outside virtio-mem devices:   ${grouped(o.outsideByteLength)} bytes\n`;
  out += `  plugged but not in the dump:  ${grouped(o.pluggedAbsentByteLength)} bytes${
    o.pluggedAbsentByteLength > 0 ? " (filtered, or the dump is incomplete)" : ""
  }\n`;
  out += ranges(o.pluggedAbsent, "    ");
  return out;
}
