/**
 * The body of `inspect --json` for a migration stream and a mapped-ram file
 * (schemas/inspect-report.schema.json, docs/migration.md): the library's
 * {@linkcode InspectReport} in the glossary's names.
 *
 * @module
 */

import type { InspectReport } from "../src/migration/inspect.ts";
import type { MappedRamInspectReport } from "../src/migration/mapped_ram/inspect.ts";

/**
 * The stream fields of an `inspect` report.
 *
 * @param r The library's report.
 * @returns The report body (after the envelope).
 */
export function inspectStreamBody(r: InspectReport): Record<string, unknown> {
  return {
    streamVersion: r.version,
    machineType: r.machineType,
    capabilities: r.capabilities,
    streamByteLength: r.byteLength,
    commands: r.commands,
    sections: r.sections,
    ramBlocks: r.ramBlocks.map((b) => ({
      ramblock: b.idstr,
      usedLength: b.usedLength,
      zeroPages: b.zeroPages,
      pages: b.pages,
      xbzrlePages: b.xbzrlePages,
      compressedPages: b.compressedPages,
      recordByteLength: b.recordBytes,
    })),
    virtioMem: r.virtioMem.map((v) => {
      // A section carries some of the device keys: the early one the geometry and bitmap,
      // the device one also usable and requested size.
      const o: Record<string, unknown> = {
        section: v.section,
        streamOffset: v.streamOffset,
        path: v.devicePath,
      };
      if (v.gpa !== undefined) o.memaddr = v.gpa;
      if (v.regionSize !== undefined) o["region-size"] = v.regionSize;
      if (v.blockSize !== undefined) o["block-size"] = v.blockSize;
      if (v.usableRegionSize !== undefined) o["usable-region-size"] = v.usableRegionSize;
      if (v.size !== undefined) o.size = v.size;
      if (v.requestedSize !== undefined) o["requested-size"] = v.requestedSize;
      if (v.pluggedBlocks !== undefined) o.pluggedBlocks = v.pluggedBlocks;
      return o;
    }),
    eof: r.eof,
    vmdescByteLength: r.vmdescBytes,
    tailMatchesVmdesc: r.tailMatchesVmdesc,
    tailProblems: r.tailProblems,
  };
}

/**
 * The fields of an `inspect` report of a mapped-ram file: the stream's, and
 * `mappedRam` with every block's header and the pages present.
 *
 * @param r The library's report.
 * @returns The report body.
 */
export function inspectMappedRamBody(r: MappedRamInspectReport): Record<string, unknown> {
  const m = r.mappedRam;
  return {
    ...inspectStreamBody(r),
    mappedRam: {
      payloadFileOffset: m.payloadOffset,
      pageSize: m.pageSize,
      pagesPresent: m.pagesPresent,
      blocks: m.blocks.map((b) => ({
        load: b.load,
        ramblock: b.idstr,
        usedLength: b.usedLength,
        headerFileOffset: b.headerOffset,
        headerVersion: b.version,
        pageSize: b.pageSize,
        ignored: b.ignored,
        bitmapFileOffset: b.bitmapOffset,
        bitmapByteLength: b.bitmapByteLength,
        pagesFileOffset: b.pagesOffset,
        pageCount: b.pageCount,
        pagesPresent: b.pagesPresent,
        endFileOffset: b.areaEnd,
      })),
    },
  };
}
