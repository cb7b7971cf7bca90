/**
 * `vmem-dump inspect FILE|-`: summarise a migration stream.
 *
 * @module
 */

import { decodeMigrationBatches } from "../../src/migration/decoder.ts";
import { inspectMigration, type InspectReport } from "../../src/migration/inspect.ts";
import { openMappedRam, openStreamInput } from "../_stream_input.ts";
import { byteCount, count, grouped, hex, table } from "../_format.ts";
import { inputProgress, summaryLine } from "../_progress.ts";
import { reportJson } from "../_report.ts";
import { inspectStreamBody } from "../_inspect_report.ts";
import { type CliIo, UsageError } from "../io.ts";
import {
  checkPlugMapOptions,
  JSON_OPTION,
  loadPlugMapOption,
  parseCommandArgs,
  parseSize,
  PLUGMAP_OPTIONS,
} from "../_args.ts";
import { lazyImport } from "../_lazy.ts";
import { describeLibvirtHeader, renderLibvirtHeader } from "../_inspect_libvirt.ts";
import { sniffDump } from "../../src/dumps/detect.ts";
import { openPositional } from "../../src/io/positional.ts";
import { requireRegularFile } from "../_dump_input.ts";

const HELP = `usage: vmem-dump inspect FILE|- [--json]
       vmem-dump inspect DUMP [--base GPA] [--plugmap F | --plugmap-from STREAM] [--json]

Summarise a QEMU migration stream (raw, gzip, zstd or a libvirt save image):
header and machine type, every section with its size, the RAM blocks with
their record counts, the virtio-mem sections, and whether the device state
after the RAM could be accounted for (and if not, why; docs/security.md). A
mapped-ram file (QEMU file: migration with mapped-ram, libvirt "sparse" image)
is read in place, with its blocks' headers and pages present
(docs/mapped-ram.md). For a libvirt save image its header (version, payload
compression, domain XML) comes first.

A guest memory dump is recognised by its magic and described instead:
ELF (class, layout, PT_LOADs with gpa and file ranges, notes, VMCOREINFO:
release, page size, PG_offline), kdump-compressed (header, compression,
dump level, pages present and with data by range, notes, VMCOREINFO), or
with --base a raw image of guest memory; and vmem-dump's provenance note
(what a strip or convert removed and why). With a plug map, which memory
the dump holds is plugged, unplugged or outside virtio-mem, and which
plugged memory it lacks.

  --json                 print the report as JSON (docs/migration.md, docs/dumps.md,
                         docs/glossary.md)
  --base GPA             DUMP is a raw image whose first byte is at GPA
  --plugmap FILE         dumps: show the dump's memory by plug state
  --plugmap-from STREAM  dumps: take that plug map from a migration stream

Exit status: 0 described, 1 error (bad input), 2 usage error.
`;

/** Run `inspect`. */
export async function run(args: string[], io: CliIo): Promise<number> {
  const parsed = await parseCommandArgs(args, io, {
    options: { ...JSON_OPTION, ...PLUGMAP_OPTIONS, base: { type: "string" } },
    help: HELP,
    positionals: 1,
    usage: "inspect takes exactly one input (a file or -)",
  });
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  // Dumps are chosen by magic (or --base); everything else is a stream.
  const path = positionals[0]!;
  const baseGpa = values.base === undefined ? undefined : parseSize(values.base, "--base");
  const dumpOnly = baseGpa !== undefined || values.plugmap !== undefined ||
    values["plugmap-from"] !== undefined;
  if (baseGpa !== undefined || await looksLikeDump(path)) {
    if (path === "-") throw new UsageError("inspect --base needs a file, not standard input");
    await requireRegularFile(path, "inspect --base");
    checkPlugMapOptions(values);
    // The dump readers load only for dumps (a stream's inspect starts fast).
    const d = await lazyImport<typeof import("../_inspect_dump.ts")>(
      "../_inspect_dump.ts",
      import.meta.url,
    );
    const description = await d.describeDump(path, baseGpa);
    const map = await loadPlugMapOption(values);
    await d.printDump(io, path, description, map, values.json ?? false);
    return 0;
  }
  if (dumpOnly) {
    throw new UsageError(
      "--base, --plugmap and --plugmap-from apply to dumps; this input is a migration stream",
    );
  }
  const progress = inputProgress(io, "inspect");
  const input = await openStreamInput(path, {
    recycle: true,
    command: "inspect",
    onChunk: progress.onChunk,
    // Only a dump that is not a regular file gets here (a file's was told by looksLikeDump).
    dumpError: (kind) =>
      new UsageError(
        `inspect reads ${kind === "elf" ? "an ELF" : "a kdump"} dump at random offsets: ${
          path === "-" ? "standard input is not a file" : `${path} is not a regular file`
        } (copy it to a file first)`,
      ),
  });
  if (input.kind === "mapped-ram") {
    await progress.end(); // its own summary follows; the detection read drew the line
    using mapped = await openMappedRam(input);
    return await mapped.branch.inspectMappedRamCommand(mapped, values, io, render);
  }
  let report: InspectReport;
  try {
    progress.setTotal(input.byteLength);
    // Describe, do not vouch: device state that cannot be proven is reported, not an error.
    report = await inspectMigration(
      decodeMigrationBatches(input.reader, { deviceState: "describe" }),
    );
  } finally {
    input.close();
    await progress.end();
  }
  {
    const container = input.container;
    const libvirt = input.libvirt;
    if (values.json) {
      await io.out(reportJson("inspect", {
        input: {
          path: positionals[0]!,
          format: "migration",
          container,
          byteLength: input.byteLength ?? null,
          ...(libvirt ? { libvirt: describeLibvirtHeader(libvirt) } : {}),
        },
        verdict: "done",
      }, inspectStreamBody(report)));
    } else {
      await io.out(
        (libvirt ? renderLibvirtHeader(libvirt) : "") + render(positionals[0]!, container, report),
      );
      await summaryLine(
        io,
        `inspect: ${positionals[0]}`,
        progress.bytes,
        progress.seconds,
        `${count(report.sections.length, "section")}, device state ${
          report.tailMatchesVmdesc === false ? "NOT proven" : "accounted for"
        }`,
      );
    }
    return 0;
  }
}

function render(path: string, container: unknown, r: InspectReport): string {
  let out = `stream:   ${path} (${byteCount(r.byteLength)}, container ${
    JSON.stringify(container)
  })\n`;
  out += `header:   QEVM version ${r.version}, machine ${
    r.machineType ?? "(no configuration section)"
  }\n`;
  out += `capabilities: ${r.capabilities.length ? r.capabilities.join(", ") : "none"}\n`;
  out += `end:      ${r.eof ? "QEMU_VM_EOF" : "no EOF"}, vmdesc ${
    r.vmdescBytes === null ? "absent" : byteCount(r.vmdescBytes)
  }\n`;
  out += `device state: ${
    r.tailMatchesVmdesc === null
      ? "none after the RAM"
      : r.tailMatchesVmdesc
      ? "accounted for section by section (vmdesc sizes, footers)"
      : "NOT proven"
  }\n`;
  for (const p of r.tailProblems) {
    out += `  ${p.code} at ${hex(p.streamOffset)}: ${p.message}\n`;
  }
  const late = r.sections.filter((s) => s.afterDeviceState);
  if (late.length > 0) {
    out += `RAM after device state: ${
      late.map((s) => `${s.type} ${JSON.stringify(s.idstr)}@${hex(s.streamOffset)}`).join(", ")
    }\n`;
  }
  if (r.commands.length) {
    out += `commands: ${r.commands.map((c) => `${c.name}@${hex(c.streamOffset)}`).join(", ")}\n`;
  }
  out += `\nsections (${r.sections.length}):\n`;
  out += table(
    ["id", "type", "idstr", "inst", "ver", "offset", "bytes"],
    r.sections.map((s) => [
      s.sectionId,
      s.type,
      s.idstr,
      s.instanceId,
      s.versionId,
      hex(s.streamOffset),
      grouped(s.byteLength),
    ]),
  );
  out += `\nRAM blocks (${r.ramBlocks.length}):\n`;
  out += table(
    ["idstr", "used_length", "zero", "page", "xbzrle", "compress", "record bytes"],
    r.ramBlocks.map((b) => [
      b.idstr,
      hex(b.usedLength),
      grouped(b.zeroPages),
      grouped(b.pages),
      grouped(b.xbzrlePages),
      grouped(b.compressedPages),
      grouped(b.recordBytes),
    ]),
  );
  out += `\nvirtio-mem (${count(r.virtioMem.length, "section")}):\n`;
  if (r.virtioMem.length === 0) out += "  none\n";
  for (const v of r.virtioMem) {
    const parts = [`${v.section} section of ${v.devicePath} at ${hex(v.streamOffset)}`];
    if (v.gpa !== undefined) parts.push(`memaddr ${hex(v.gpa)}`);
    if (v.regionSize !== undefined) parts.push(`region ${hex(v.regionSize)}`);
    if (v.blockSize !== undefined) parts.push(`block ${hex(v.blockSize)}`);
    if (v.size !== undefined) parts.push(`size ${hex(v.size)}`);
    if (v.pluggedBlocks !== undefined) parts.push(`${count(v.pluggedBlocks, "block")} plugged`);
    if (v.usableRegionSize !== undefined) parts.push(`usable ${hex(v.usableRegionSize)}`);
    if (v.requestedSize !== undefined) parts.push(`requested ${hex(v.requestedSize)}`);
    out += `  ${parts.join(", ")}\n`;
  }
  return out;
}

/** Whether `path` starts like a dump (ELF, kdump, flattened kdump). */
async function looksLikeDump(path: string): Promise<boolean> {
  if (path === "-") return false;
  try {
    using r = await openPositional(path);
    return (await sniffDump(r)) !== undefined;
  } catch {
    return false; // not a readable regular file: the stream path reports it
  }
}
