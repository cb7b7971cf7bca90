/**
 * The synchronous record parser of a migration stream: a state machine over
 * the buffered bytes that emits every record it can and otherwise says how
 * many bytes it needs (see `_window.ts`). It knows the stream's top level
 * (header, sections, footers, EOF, vmdesc) and hands the parts to their
 * own modules: configuration, RAM records, commands, device-state tail.
 * Private to the decoder; `decoder.ts` drives it.
 *
 * @module
 */

import { UnexpectedEofError, UnsupportedFeatureError } from "../errors.ts";
import { getSafeU64 } from "../io/endian.ts";
import { isPowerOfTwo } from "../io/bits.ts";
import { latin1Decode } from "../io/text.ts";
import { VIRTIO_MEM_MAX_BLOCKS } from "../vmem/plug_map.ts";
import * as C from "./constants.ts";
import {
  isPageRecord,
  type MigrationRecord,
  type SectionHeaderRecord,
  type VirtioMemEarlyRecord,
} from "./types.ts";
import { parseCommand } from "./_commands.ts";
import { parseConfiguration } from "./_configuration.ts";
import { RamState } from "./_ram_records.ts";
import { TailScanner } from "./_tail.ts";
import { bad, MAX_BATCH, ParseWindow } from "./_window.ts";

/** Options of the parser (the decoder's options with their defaults applied). */
export interface ParserOptions {
  /** Target page size given by the caller, or `undefined` to take it from the stream. */
  pageSize: number | undefined;
  /** Bytes of device-state tail held back to find the virtio-mem section and the vmdesc. */
  tailWindow: number;
  /** Treat a tail without vmdesc as truncated. */
  requireVmdesc: boolean;
  /** Size of `opaque` records. */
  opaqueChunk: number;
  /** Decode mapped-ram files (else the capability is refused). */
  mappedRam: boolean;
}

/** Largest vmdesc JSON accepted. */
const MAX_VMDESC = 64 << 20;
/** Bytes of the stream header: magic and version. */
const STREAM_HEADER = 8;
/** Bytes of a short section header (PART, END): type and be32 id. */
const SHORT_HEADER = 5;
/** Bytes of a section footer: 0x7E and be32 id. */
const FOOTER = 5;
/** Bytes of the early virtio-mem section's fields before its bitmap. */
const EARLY_FIELDS = 36;

type Phase =
  | "header"
  | "configuration?"
  | "configuration"
  | "items"
  | "ram"
  | "footer"
  | "early"
  | "packaged-device"
  | "tail"
  | "after-eof"
  | "after-vmdesc"
  | "done";

/** The parser. Feed it windows through {@linkcode MigrationParser.window}, run {@linkcode MigrationParser.parse}. */
export class MigrationParser {
  /** The bytes the next {@linkcode MigrationParser.parse} works on. */
  readonly window: ParseWindow = new ParseWindow();
  #options: ParserOptions;
  #phase: Phase = "header";
  #ram: RamState;
  /** Sections opened by START, by id. */
  #sections = new Map<number, { idstr: string; instanceId: number; versionId: number }>();
  /** Whether the stream has section footers (QEMU <= 2.3 machine types have none); unknown until the first section ends. */
  #footers: boolean | undefined;
  /** Early virtio-mem sections by device path. */
  #early = new Map<string, VirtioMemEarlyRecord>();
  /** Inside PACKAGED: stream offset where the blob ends. */
  #limit: number | undefined;
  /** The `ram` section being read is a START section. */
  #ramIsStart = false;
  /** Id of the section whose footer comes next. */
  #footerFor = 0;
  /** Device path of the early section being read. */
  #earlyPath = "";
  /** Inside PACKAGED: device-state bytes still to pass through. */
  #passLeft = 0;
  #tail: TailScanner | undefined;

  /** @param options The decoder's options, defaults applied. */
  constructor(options: ParserOptions) {
    this.#options = options;
    this.#ram = new RamState(options.pageSize ?? C.DEFAULT_PAGE_SIZE);
  }

  /** The stream ended (EOF, vmdesc) and nothing more may follow. */
  get done(): boolean {
    return this.#phase === "done";
  }

  /**
   * Parse records from the window into `out`: until the stream is done, the
   * batch is full, a record other than a page record was emitted, the
   * window ends inside a structure (then `window.needed` is the number of
   * bytes to buffer from `window.pos`), or the stream jumps over a region
   * (then `window.skipping` is its length).
   *
   * Ending a batch at every other record (section headers and footers,
   * commands, the block list, EOS) lets a consumer stop or refuse there
   * before anything after it was parsed; it costs a few batches per section.
   *
   * @throws {FormatError} for malformed input, with the offset of the bad field.
   * @throws {UnexpectedEofError} when the window is the end of the input and a structure is cut.
   * @throws {UnsupportedFeatureError} for RDMA hooks, mapped-ram (unless allowed) and iterable
   *   sections other than `ram`.
   */
  parse(out: MigrationRecord[]): void {
    const w = this.window;
    while (w.needed === 0 && w.skipping === 0 && out.length < MAX_BATCH) {
      const last = out[out.length - 1];
      if (last !== undefined && !isPageRecord(last)) return;
      switch (this.#phase) {
        case "header":
          this.#header(w, out);
          break;
        case "configuration?":
          if (w.left < 1 && !w.atEnd) {
            w.need(1, "the stream");
            break;
          }
          this.#phase = w.left > 0 && w.bytes[w.pos] === C.QEMU_VM_CONFIGURATION
            ? "configuration"
            : "items";
          break;
        case "configuration": {
          const r = parseConfiguration(w, this.#options.mappedRam);
          if (r === undefined) break;
          if (this.#options.pageSize === undefined && r.targetPageBits !== undefined) {
            this.#ram.pageSize = 1 << r.targetPageBits;
          }
          this.#ram.capabilities = r.capabilities;
          out.push(r);
          this.#phase = "items";
          break;
        }
        case "items":
          this.#item(w, out);
          break;
        case "ram":
          if (this.#ram.parseBody(w, this.#ramIsStart, out)) this.#phase = "footer";
          break;
        case "footer":
          this.#footer(w, out);
          break;
        case "early":
          this.#earlySection(w, out);
          break;
        case "packaged-device":
          this.#passPackaged(w, out);
          break;
        case "tail": {
          const tail = this.#tail!;
          out.push(...tail.push(w.bytes.subarray(w.pos)));
          w.pos = w.bytes.byteLength;
          if (w.atEnd) {
            out.push(...tail.end());
            this.#phase = "done";
          } else {
            // A live source may keep its connection open after the vmdesc (return path).
            const rest = tail.endIfComplete();
            if (rest === undefined) w.need(1, "the device state");
            else {
              out.push(...rest);
              this.#phase = "after-vmdesc";
            }
          }
          break;
        }
        case "after-eof":
          this.#afterEof(w, out);
          break;
        case "after-vmdesc":
          if (w.left > 0) {
            throw bad("trailing bytes after the vmdesc", "bad-section", w.offset());
          }
          if (w.atEnd) this.#phase = "done";
          else w.need(1, "the end of the stream");
          break;
        case "done":
          return;
      }
    }
  }

  #header(w: ParseWindow, out: MigrationRecord[]): void {
    if (w.left < STREAM_HEADER) {
      w.need(STREAM_HEADER, "the stream header");
      return;
    }
    const at = w.pos;
    const magic = w.u32(at);
    if (magic !== C.QEMU_VM_FILE_MAGIC) {
      throw bad(
        `bad magic 0x${magic.toString(16).padStart(8, "0")}, expected QEVM`,
        "bad-magic",
        w.offset(at),
      );
    }
    const version = w.u32(at + 4);
    if (version !== C.QEMU_VM_FILE_VERSION) {
      throw bad(
        `unsupported stream version ${version}, expected 3`,
        "bad-version",
        w.offset(at + 4),
      );
    }
    out.push({ kind: "header", streamOffset: w.offset(at), version });
    w.pos = at + STREAM_HEADER;
    this.#phase = "configuration?";
  }

  /** One top-level item (inside PACKAGED: one item of the nested stream). */
  #item(w: ParseWindow, out: MigrationRecord[]): void {
    if (this.#limit !== undefined && w.offset() >= this.#limit) {
      if (w.offset() > this.#limit) {
        throw bad("a record crosses the end of its PACKAGED blob", "bad-command", this.#limit);
      }
      this.#limit = undefined;
      return;
    }
    const at = w.pos;
    if (w.left < 1) {
      if (w.atEnd) {
        throw new UnexpectedEofError(
          "Cannot decode migration stream: input ended before QEMU_VM_EOF",
          "migration",
          w.offset(at),
        );
      }
      w.need(1, "a section");
      return;
    }
    const type = w.bytes[at]!;
    switch (type) {
      case C.QEMU_VM_SECTION_START:
      case C.QEMU_VM_SECTION_FULL:
        this.#longSection(w, type, out);
        return;
      case C.QEMU_VM_SECTION_PART:
      case C.QEMU_VM_SECTION_END: {
        if (w.left < SHORT_HEADER) {
          w.need(SHORT_HEADER, "a section header");
          return;
        }
        const sectionId = w.u32(at + 1);
        const known = this.#sections.get(sectionId);
        if (known === undefined) {
          throw bad(`section id ${sectionId} was never started`, "bad-section", w.offset(at + 1));
        }
        out.push({
          kind: type === C.QEMU_VM_SECTION_PART ? "section-part" : "section-end",
          streamOffset: w.offset(at),
          sectionId,
          ...known,
        });
        w.pos = at + SHORT_HEADER;
        this.#enterRam(false, sectionId);
        return;
      }
      case C.QEMU_VM_COMMAND: {
        const r = parseCommand(w);
        if (r === undefined) return;
        out.push(r);
        if (r.command === C.MIG_CMD_POSTCOPY_ADVISE && r.payload.byteLength === 16) {
          this.#ram.postcopyPageSummary = getSafeU64(
            new DataView(r.payload.buffer, r.payload.byteOffset, 16),
            0,
            false,
            { format: "migration", offset: w.offset(at + 5) },
          );
        }
        if (r.command === C.MIG_CMD_PACKAGED) {
          if (this.#limit !== undefined) {
            throw bad("PACKAGED inside PACKAGED", "bad-command", w.offset(at));
          }
          const blobLength = new DataView(r.payload.buffer, r.payload.byteOffset, 4).getUint32(0);
          this.#limit = w.offset() + blobLength;
        }
        return;
      }
      case C.QEMU_VM_EOF:
        if (this.#limit !== undefined) {
          throw bad("QEMU_VM_EOF inside PACKAGED", "bad-section", w.offset(at));
        }
        out.push({ kind: "eof", streamOffset: w.offset(at) });
        w.pos = at + 1;
        this.#phase = "after-eof";
        return;
      default:
        throw bad(`unknown section type 0x${type.toString(16)}`, "bad-section", w.offset(at));
    }
  }

  /** A START or FULL section header, and what its body is. */
  #longSection(w: ParseWindow, type: number, out: MigrationRecord[]): void {
    const at = w.pos;
    if (w.left < 6) {
      w.need(6, "a section header");
      return;
    }
    const idLen = w.bytes[at + 5]!;
    const headerLength = 6 + idLen + 8;
    if (w.left < headerLength) {
      w.need(headerLength, "a section header");
      return;
    }
    const sectionId = w.u32(at + 1);
    const idstr = latin1Decode(w.bytes.subarray(at + 6, at + 6 + idLen));
    const header: SectionHeaderRecord = {
      kind: type === C.QEMU_VM_SECTION_START ? "section-start" : "section-full",
      streamOffset: w.offset(at),
      sectionId,
      idstr,
      instanceId: w.u32(at + 6 + idLen),
      versionId: w.u32(at + 10 + idLen),
    };
    if (type === C.QEMU_VM_SECTION_START) {
      if (idstr !== C.RAM_SECTION_IDSTR) {
        throw new UnsupportedFeatureError(
          `Cannot decode migration stream: iterable section ${
            JSON.stringify(idstr)
          } cannot be delimited`,
          "migration",
          w.offset(at),
        );
      }
      if (header.versionId !== C.RAM_SECTION_VERSION) {
        throw bad(
          `ram section version ${header.versionId}, expected 4`,
          "bad-version",
          w.offset(at + 10 + idLen),
        );
      }
      this.#sections.set(sectionId, {
        idstr,
        instanceId: header.instanceId,
        versionId: header.versionId,
      });
      out.push(header);
      w.pos = at + headerLength;
      this.#enterRam(true, sectionId);
      return;
    }
    if (idstr.endsWith(C.VIRTIO_MEM_EARLY_SUFFIX) && header.versionId === 1) {
      out.push(header);
      w.pos = at + headerLength;
      this.#earlyPath = idstr.slice(0, -C.VIRTIO_MEM_EARLY_SUFFIX.length);
      this.#footerFor = sectionId;
      this.#phase = "early";
      return;
    }
    if (this.#limit !== undefined) {
      // Inside PACKAGED (postcopy) device state runs to the end of the blob.
      out.push(header);
      w.pos = at + headerLength;
      this.#passLeft = this.#limit - w.offset();
      this.#phase = "packaged-device";
      return;
    }
    // The device-state tail, from this header on.
    this.#tail = new TailScanner(w.offset(at), {
      ramBlocks: this.#ram.blocks,
      early: this.#early,
      window: this.#options.tailWindow,
      requireVmdesc: this.#options.requireVmdesc,
      opaqueChunk: this.#options.opaqueChunk,
    });
    this.#phase = "tail";
  }

  #enterRam(isStart: boolean, sectionId: number): void {
    this.#ramIsStart = isStart;
    this.#footerFor = sectionId;
    this.#phase = "ram";
  }

  /** The footer of the section just read, when the stream has footers. */
  #footer(w: ParseWindow, out: MigrationRecord[]): void {
    if (this.#footers === false) {
      this.#phase = "items";
      return;
    }
    const at = w.pos;
    if (w.left < 1 && !w.atEnd) {
      w.need(1, "a section footer");
      return;
    }
    if (w.left < 1 || w.bytes[at] !== C.QEMU_VM_SECTION_FOOTER) {
      if (this.#footers === undefined) {
        this.#footers = false; // QEMU <= 2.3 machine types send none, for the whole stream
        this.#phase = "items";
        return;
      }
      if (w.left < 1) {
        throw new UnexpectedEofError(
          "Cannot read a section footer: input ended",
          "migration",
          w.offset(at),
        );
      }
      throw bad(
        `expected section footer 0x7e, found 0x${w.bytes[at]!.toString(16)}`,
        "bad-footer",
        w.offset(at),
      );
    }
    this.#footers = true;
    if (w.left < FOOTER) {
      w.need(FOOTER, "a section footer");
      return;
    }
    const id = w.u32(at + 1);
    if (id !== this.#footerFor) {
      throw bad(
        `section footer for id ${id} closes section ${this.#footerFor}`,
        "bad-footer",
        w.offset(at + 1),
      );
    }
    out.push({ kind: "section-footer", streamOffset: w.offset(at), sectionId: id });
    w.pos = at + FOOTER;
    this.#phase = "items";
  }

  /** The body of a `P/virtio-mem-device-early` section (hw/virtio/virtio-mem.c `vmstate_virtio_mem_device_early`). */
  #earlySection(w: ParseWindow, out: MigrationRecord[]): void {
    const at = w.pos;
    if (w.left < EARLY_FIELDS) {
      w.need(EARLY_FIELDS, "the virtio-mem early section");
      return;
    }
    const gpa = w.u64(at);
    const regionSize = w.u64(at + 8);
    const blockSize = w.u64(at + 16);
    const node = w.u32(at + 24);
    const size = w.u64(at + 28);
    if (!isPowerOfTwo(blockSize) || regionSize % blockSize !== 0) {
      throw bad(
        `virtio-mem block size 0x${blockSize.toString(16)} does not divide region size 0x${
          regionSize.toString(16)
        }`,
        "bad-virtio-mem",
        w.offset(at + 16),
      );
    }
    const bits = regionSize / blockSize;
    if (bits > VIRTIO_MEM_MAX_BLOCKS) {
      throw bad(`virtio-mem bitmap of ${bits} bits is too large`, "too-large", w.offset(at + 8));
    }
    const bitmapLength = 8 * Math.ceil(bits / 64);
    if (w.left < EARLY_FIELDS + bitmapLength) {
      w.need(EARLY_FIELDS + bitmapLength, "the virtio-mem bitmap");
      return;
    }
    const early: VirtioMemEarlyRecord = {
      kind: "virtio-mem-early",
      streamOffset: w.offset(at),
      devicePath: this.#earlyPath,
      gpa,
      regionSize,
      blockSize,
      node,
      size,
      bitmap: w.bytes.slice(at + EARLY_FIELDS, at + EARLY_FIELDS + bitmapLength),
    };
    this.#early.set(early.devicePath, early);
    out.push(early);
    w.pos = at + EARLY_FIELDS + bitmapLength;
    this.#phase = "footer";
  }

  /** Device state inside PACKAGED: passed through as opaque records up to the end of the blob. */
  #passPackaged(w: ParseWindow, out: MigrationRecord[]): void {
    if (this.#passLeft <= 0) {
      this.#phase = "items";
      return;
    }
    if (w.left < 1) {
      w.need(1, "PACKAGED device state");
      return;
    }
    const n = Math.min(this.#passLeft, w.left, this.#options.opaqueChunk);
    out.push({
      kind: "opaque",
      streamOffset: w.offset(),
      data: w.bytes.slice(w.pos, w.pos + n),
    });
    w.pos += n;
    this.#passLeft -= n;
  }

  /** After QEMU_VM_EOF: the end of the input, or the vmdesc JSON (0x06, be32 length, JSON). */
  #afterEof(w: ParseWindow, out: MigrationRecord[]): void {
    const at = w.pos;
    if (w.left < 1) {
      // Streams without a vmdesc (Xen machines, device-state-only saves) end at EOF.
      if (w.atEnd) this.#phase = "done";
      else w.need(1, "the end of the stream");
      return;
    }
    if (w.bytes[at] !== C.QEMU_VM_VMDESCRIPTION) {
      throw bad(
        `unexpected byte 0x${w.bytes[at]!.toString(16)} after QEMU_VM_EOF`,
        "bad-section",
        w.offset(at),
      );
    }
    if (w.left < 5) {
      w.need(5, "the vmdesc length");
      return;
    }
    const length = w.u32(at + 1);
    if (length > MAX_VMDESC) {
      throw bad(`vmdesc of ${length} bytes is too large`, "too-large", w.offset(at + 1));
    }
    if (w.left < 5 + length) {
      w.need(5 + length, "the vmdesc JSON");
      return;
    }
    const json = w.bytes.slice(at + 5, at + 5 + length);
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder().decode(json));
    } catch {
      parsed = undefined;
    }
    out.push({ kind: "vmdesc", streamOffset: w.offset(at), json, parsed });
    w.pos = at + 5 + length;
    this.#phase = "after-vmdesc";
  }
}
