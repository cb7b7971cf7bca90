/**
 * The device-state tail of a precopy stream: everything from the first FULL
 * section that is not an early section up to the end. Its sections carry no
 * lengths, so the tail passes through verbatim, with two exceptions found in
 * a bounded look-ahead window: a `P/virtio-mem` section that parses and
 * validates structurally, and the EOF byte plus vmdesc JSON at the very end.
 */

import { UnexpectedEofError } from "../errors.ts";
import type { ByteReader } from "../io/byte_reader.ts";
import {
  QEMU_VM_EOF,
  QEMU_VM_SECTION_FOOTER,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_VMDESCRIPTION,
} from "./constants.ts";
import type { MigrationRecord, RamBlockInfo, VirtioMemEarlyRecord } from "./types.ts";
import { parseVirtioMemDeviceBody } from "./virtio_mem_device.ts";

/** What the tail scanner knows from earlier in the stream. */
export interface TailContext {
  /** The MEM_SIZE block list (device paths come from it). */
  ramBlocks: readonly RamBlockInfo[];
  /** Early sections seen, by device path. */
  early: ReadonlyMap<string, VirtioMemEarlyRecord>;
  /** Bytes held back at most (the look-ahead). */
  window: number;
  /** Whether a missing vmdesc means truncation. */
  requireVmdesc: boolean;
  /** Chunk size of emitted opaque records. */
  opaqueChunk: number;
}

const SUFFIX = new TextEncoder().encode("/virtio-mem");
const SLASH = 0x2f;

/** Device paths that may own a virtio-mem device: every RAMBlock idstr prefix before its last `/`. */
function devicePaths(blocks: readonly RamBlockInfo[]): string[] {
  const paths = new Set<string>();
  for (const b of blocks) {
    const cut = b.idstr.lastIndexOf("/");
    if (cut > 0) paths.add(b.idstr.slice(0, cut));
  }
  return [...paths];
}

/**
 * Decode the tail. `first` holds the bytes already consumed by the caller
 * (the header of the first tail section, re-encoded byte-exact), starting at
 * stream offset `firstOffset`.
 */
export async function* decodeTail(
  reader: ByteReader,
  first: Uint8Array,
  firstOffset: number,
  ctx: TailContext,
): AsyncGenerator<MigrationRecord> {
  const paths = devicePaths(ctx.ramBlocks).map((p) => ({
    path: p,
    bytes: new TextEncoder().encode(p),
  }));
  let win = new Uint8Array(1 << 16);
  let start = 0; // first unemitted byte in win
  let end = 0; // end of valid data in win
  let base = firstOffset; // stream offset of win[0]
  let scanFrom = 0; // candidates before this index were already rejected
  const append = (bytes: Uint8Array) => {
    if (end + bytes.byteLength > win.byteLength) {
      // Compact, then grow only if one chunk still does not fit (bounded by window + chunk).
      win.copyWithin(0, start, end);
      base += start;
      end -= start;
      scanFrom -= start;
      start = 0;
      if (end + bytes.byteLength > win.byteLength) {
        const bigger = new Uint8Array(Math.max(end + bytes.byteLength, win.byteLength * 2));
        bigger.set(win.subarray(0, end));
        win = bigger;
      }
    }
    win.set(bytes, end);
    end += bytes.byteLength;
  };
  append(first);

  function* emitOpaque(upto: number): Generator<MigrationRecord> {
    while (start < upto) {
      const n = Math.min(upto - start, ctx.opaqueChunk);
      yield { kind: "opaque", streamOffset: base + start, data: win.slice(start, start + n) };
      start += n;
    }
  }

  /** Try to parse a virtio-mem section whose idstr suffix starts at `q`; returns records or undefined. */
  function tryDevice(
    q: number,
  ): { records: MigrationRecord[]; hdr: number; next: number } | undefined {
    for (const { path, bytes } of paths) {
      const idstrStart = q - bytes.byteLength;
      const hdr = idstrStart - 6;
      if (hdr < start) continue;
      if (win[hdr] !== QEMU_VM_SECTION_FULL) continue;
      if (win[idstrStart - 1] !== bytes.byteLength + SUFFIX.byteLength) continue;
      let same = true;
      for (let i = 0; i < bytes.byteLength; i++) {
        if (win[idstrStart + i] !== bytes[i]) {
          same = false;
          break;
        }
      }
      if (!same) continue;
      const view = new DataView(win.buffer, win.byteOffset, end);
      const afterIdstr = q + SUFFIX.byteLength;
      if (afterIdstr + 8 > end) continue;
      const sectionId = view.getUint32(hdr + 1);
      const instanceId = view.getUint32(afterIdstr);
      const versionId = view.getUint32(afterIdstr + 4);
      const bodyStart = afterIdstr + 8;
      const parsed = parseVirtioMemDeviceBody(win.subarray(bodyStart, end), {
        devicePath: path,
        ramBlocks: ctx.ramBlocks,
        early: ctx.early.get(path),
        bodyStreamOffset: base + bodyStart,
        sectionId,
      });
      if (parsed === undefined) continue;
      const footer = bodyStart + parsed.bodyLength;
      if (footer + 5 > end) continue;
      if (win[footer] !== QEMU_VM_SECTION_FOOTER || view.getUint32(footer + 1) !== sectionId) {
        continue;
      }
      const records: MigrationRecord[] = [
        {
          kind: "section-full",
          streamOffset: base + hdr,
          sectionId,
          idstr: path + "/virtio-mem",
          instanceId,
          versionId,
        },
        {
          kind: "virtio-mem-device",
          streamOffset: base + bodyStart,
          devicePath: path,
          data: win.slice(bodyStart, footer),
          state: {
            ...parsed.state,
            ...(parsed.state.bitmap ? { bitmap: parsed.state.bitmap.slice() } : {}),
          },
        },
        { kind: "section-footer", streamOffset: base + footer, sectionId },
      ];
      return { records, hdr, next: footer + 5 };
    }
    return undefined;
  }

  /** Scan [scanFrom, limit) for devices, emitting opaque bytes before each one found. */
  function* scan(limit: number): Generator<MigrationRecord> {
    let i = Math.max(scanFrom, start);
    while (i < limit) {
      const rel = win.subarray(i, limit).indexOf(SLASH);
      if (rel < 0) break;
      const slash = i + rel;
      i = slash + 1;
      if (slash + SUFFIX.byteLength > end) break;
      let match = true;
      for (let k = 1; k < SUFFIX.byteLength; k++) {
        if (win[slash + k] !== SUFFIX[k]) {
          match = false;
          break;
        }
      }
      if (!match) continue;
      const found = tryDevice(slash);
      if (found === undefined) continue;
      yield* emitOpaque(found.hdr);
      yield* found.records;
      start = found.next;
      i = start;
    }
    scanFrom = Math.max(scanFrom, Math.min(limit, end));
  }

  for (;;) {
    const chunk = await reader.readChunk(1 << 20);
    if (chunk === undefined) break;
    append(chunk);
    const pending = end - start;
    if (pending > ctx.window) {
      // Anything that starts this far before the end has its whole look-ahead buffered.
      const limit = end - ctx.window;
      yield* scan(limit);
      if (start < limit) yield* emitOpaque(limit);
    }
  }
  yield* scan(end);

  // The end: EOF byte, then optionally 0x06 + be32 length + JSON that ends the input.
  const view = new DataView(win.buffer, win.byteOffset, end);
  let eofAt = -1;
  const valid = win.subarray(0, end);
  // Candidates are 0x06 bytes (native search), then the EOF byte before, the
  // length that ends exactly at the input's end, and the JSON's "{".
  for (let at = end - 6; at > start;) {
    const six = valid.lastIndexOf(QEMU_VM_VMDESCRIPTION, at);
    if (six <= start) break;
    const p = six - 1;
    if (win[p] === QEMU_VM_EOF && win[p + 6] === 0x7b && view.getUint32(p + 2) === end - p - 6) {
      eofAt = p;
      break;
    }
    at = six - 1;
  }
  if (eofAt < 0) {
    if (ctx.requireVmdesc || end === start || win[end - 1] !== QEMU_VM_EOF) {
      throw new UnexpectedEofError(
        "Cannot find the end of the device state: input ended without QEMU_VM_EOF and its vmdesc " +
          `(a vmdesc must fit in the ${ctx.window >>> 20} MiB look-ahead)`,
        "migration",
        base + end,
      );
    }
    yield* emitOpaque(end - 1);
    yield { kind: "eof", streamOffset: base + end - 1 };
    return;
  }
  yield* emitOpaque(eofAt);
  yield { kind: "eof", streamOffset: base + eofAt };
  const json = win.slice(eofAt + 6, end);
  let parsed: unknown = undefined;
  try {
    parsed = JSON.parse(new TextDecoder().decode(json));
  } catch {
    parsed = undefined;
  }
  yield { kind: "vmdesc", streamOffset: base + eofAt + 1, json, parsed };
}

/** Re-encode a long section header byte-exact (the tail starts with one the caller consumed). */
export function encodeLongHeader(
  type: number,
  sectionId: number,
  idstrBytes: Uint8Array,
  instanceId: number,
  versionId: number,
): Uint8Array {
  const out = new Uint8Array(1 + 4 + 1 + idstrBytes.byteLength + 8);
  const v = new DataView(out.buffer);
  out[0] = type;
  v.setUint32(1, sectionId);
  out[5] = idstrBytes.byteLength;
  out.set(idstrBytes, 6);
  v.setUint32(6 + idstrBytes.byteLength, instanceId);
  v.setUint32(10 + idstrBytes.byteLength, versionId);
  return out;
}
