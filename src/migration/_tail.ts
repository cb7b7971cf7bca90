/**
 * The device-state tail of a precopy stream: everything from the first FULL
 * section that is not an early section up to the end. Its sections carry no
 * lengths, so the tail passes through verbatim, with two exceptions found in
 * a bounded look-ahead window: a `P/virtio-mem` section that parses and
 * validates structurally, and the EOF byte plus vmdesc JSON at the very end.
 */

import { UnexpectedEofError } from "../errors.ts";
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
 * Scans the tail as its bytes arrive: {@linkcode TailScanner.push} takes
 * every byte from the header of the first tail section on and returns what
 * can be emitted (everything but the look-ahead window);
 * {@linkcode TailScanner.end} finds the EOF byte and the vmdesc at the end
 * of the input and returns the rest.
 */
export class TailScanner {
  #ctx: TailContext;
  #paths: { path: string; bytes: Uint8Array }[];
  #win = new Uint8Array(1 << 16);
  #start = 0; // first unemitted byte in win
  #end = 0; // end of valid data in win
  #base: number; // stream offset of win[0]
  #scanFrom = 0; // candidates before this index were already rejected

  /**
   * @param firstOffset Stream offset of the first tail byte (the header of the first tail section).
   * @param ctx What the stream said before the tail.
   */
  constructor(firstOffset: number, ctx: TailContext) {
    this.#ctx = ctx;
    this.#base = firstOffset;
    this.#paths = devicePaths(ctx.ramBlocks).map((p) => ({
      path: p,
      bytes: new TextEncoder().encode(p),
    }));
  }

  /** Take the next bytes of the tail (copied); returns the records that can be emitted now. */
  push(bytes: Uint8Array): MigrationRecord[] {
    this.#append(bytes);
    const out: MigrationRecord[] = [];
    const pending = this.#end - this.#start;
    if (pending > this.#ctx.window) {
      // Anything that starts this far before the end has its whole look-ahead buffered.
      const limit = this.#end - this.#ctx.window;
      this.#scan(limit, out);
      if (this.#start < limit) this.#emitOpaque(limit, out);
    }
    return out;
  }

  /**
   * Whether what arrived so far ends with a complete EOF + vmdesc (the JSON
   * parses): then the remaining records, ending with EOF and the vmdesc, and
   * the stream is over; otherwise `undefined`. A live source may keep its
   * connection open after its vmdesc (with a return path it waits for the
   * destination's answer), so the end cannot wait for the input to end.
   * Checked only when the bytes end with `}`, so it costs nothing on the
   * way. Anything that arrives afterwards is the parser's error.
   */
  endIfComplete(): MigrationRecord[] | undefined {
    if (this.#end === this.#start || this.#win[this.#end - 1] !== 0x7d) return undefined;
    const eofAt = this.#findEnd(true);
    return eofAt < 0 ? undefined : this.#finish(eofAt);
  }

  /**
   * The input ended: the remaining records, ending with EOF and the vmdesc.
   * @throws {UnexpectedEofError} when the tail does not end with EOF and a vmdesc that fits.
   */
  end(): MigrationRecord[] {
    const eofAt = this.#findEnd(false);
    if (eofAt >= 0) return this.#finish(eofAt);
    const out: MigrationRecord[] = [];
    this.#scan(this.#end, out);
    const win = this.#win;
    const end = this.#end;
    if (this.#ctx.requireVmdesc || end === this.#start || win[end - 1] !== QEMU_VM_EOF) {
      throw new UnexpectedEofError(
        "Cannot find the end of the device state: input ended without QEMU_VM_EOF and its vmdesc " +
          `(a vmdesc must fit in the ${this.#ctx.window >>> 20} MiB look-ahead)`,
        "migration",
        this.#base + end,
      );
    }
    this.#emitOpaque(end - 1, out);
    out.push({ kind: "eof", streamOffset: this.#base + end - 1 });
    return out;
  }

  /**
   * Where EOF + vmdesc start if the buffered bytes end with them (`-1`
   * otherwise): the EOF byte, 0x06, a be32 length that ends exactly at the
   * end of what was read, and the JSON's "{". Candidates are 0x06 bytes
   * (native search). `parses`: the JSON must parse too.
   */
  #findEnd(parses: boolean): number {
    const win = this.#win;
    const end = this.#end;
    const view = new DataView(win.buffer, win.byteOffset, end);
    const valid = win.subarray(0, end);
    for (let at = end - 6; at > this.#start;) {
      const six = valid.lastIndexOf(QEMU_VM_VMDESCRIPTION, at);
      if (six <= this.#start) break;
      const p = six - 1;
      if (
        win[p] === QEMU_VM_EOF && win[p + 6] === 0x7b && view.getUint32(p + 2) === end - p - 6 &&
        (!parses || parseJson(win.subarray(p + 6, end)) !== undefined)
      ) {
        return p;
      }
      at = six - 1;
    }
    return -1;
  }

  /** The records from the last emitted byte to the end, EOF at `eofAt`, then the vmdesc. */
  #finish(eofAt: number): MigrationRecord[] {
    const out: MigrationRecord[] = [];
    this.#scan(eofAt, out);
    this.#emitOpaque(eofAt, out);
    const base = this.#base;
    out.push({ kind: "eof", streamOffset: base + eofAt });
    const json = this.#win.slice(eofAt + 6, this.#end);
    out.push({ kind: "vmdesc", streamOffset: base + eofAt + 1, json, parsed: parseJson(json) });
    this.#start = this.#end;
    return out;
  }

  #append(bytes: Uint8Array): void {
    if (this.#end + bytes.byteLength > this.#win.byteLength) {
      // Compact, then grow only if one chunk still does not fit (bounded by window + chunk).
      this.#win.copyWithin(0, this.#start, this.#end);
      this.#base += this.#start;
      this.#end -= this.#start;
      this.#scanFrom -= this.#start;
      this.#start = 0;
      if (this.#end + bytes.byteLength > this.#win.byteLength) {
        const bigger = new Uint8Array(
          Math.max(this.#end + bytes.byteLength, this.#win.byteLength * 2),
        );
        bigger.set(this.#win.subarray(0, this.#end));
        this.#win = bigger;
      }
    }
    this.#win.set(bytes, this.#end);
    this.#end += bytes.byteLength;
  }

  #emitOpaque(upto: number, out: MigrationRecord[]): void {
    while (this.#start < upto) {
      const n = Math.min(upto - this.#start, this.#ctx.opaqueChunk);
      out.push({
        kind: "opaque",
        streamOffset: this.#base + this.#start,
        data: this.#win.slice(this.#start, this.#start + n),
      });
      this.#start += n;
    }
  }

  /** Try to parse a virtio-mem section whose idstr suffix starts at `q`; returns records or undefined. */
  #tryDevice(
    q: number,
  ): { records: MigrationRecord[]; hdr: number; next: number } | undefined {
    const win = this.#win;
    const end = this.#end;
    const base = this.#base;
    for (const { path, bytes } of this.#paths) {
      const idstrStart = q - bytes.byteLength;
      const hdr = idstrStart - 6;
      if (hdr < this.#start) continue;
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
        ramBlocks: this.#ctx.ramBlocks,
        early: this.#ctx.early.get(path),
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
  #scan(limit: number, out: MigrationRecord[]): void {
    const win = this.#win;
    let i = Math.max(this.#scanFrom, this.#start);
    while (i < limit) {
      const rel = win.subarray(i, limit).indexOf(SLASH);
      if (rel < 0) break;
      const slash = i + rel;
      i = slash + 1;
      if (slash + SUFFIX.byteLength > this.#end) break;
      let match = true;
      for (let k = 1; k < SUFFIX.byteLength; k++) {
        if (win[slash + k] !== SUFFIX[k]) {
          match = false;
          break;
        }
      }
      if (!match) continue;
      const found = this.#tryDevice(slash);
      if (found === undefined) continue;
      this.#emitOpaque(found.hdr, out);
      out.push(...found.records);
      this.#start = found.next;
      i = this.#start;
    }
    this.#scanFrom = Math.max(this.#scanFrom, Math.min(limit, this.#end));
  }
}

/** The vmdesc JSON parsed, or `undefined` when it does not parse (QEMU only reports that). */
function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
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
