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

import { FormatError, UnexpectedEofError, UnsupportedFeatureError } from "../errors.ts";
import { getSafeU64 } from "../io/endian.ts";
import { isPowerOfTwo } from "../io/bits.ts";
import { latin1Decode } from "../io/text.ts";
import { VIRTIO_MEM_MAX_BLOCKS } from "../vmem/vmem_device.ts";
import * as C from "./constants.ts";
import {
  isPageRecord,
  type MigrationRecord,
  type SectionHeaderRecord,
  type VirtioMemEarlyRecord,
} from "./types.ts";
import { parseVirtioMemDeviceBody } from "./virtio_mem_device.ts";
import { parseCommand } from "./_commands.ts";
import { parseConfiguration } from "./_configuration.ts";
import { RamState } from "./_ram_records.ts";
import { idstrMisreading } from "./_section_identity.ts";
import {
  type EarlySectionInfo,
  findAmbiguity,
  findVmdescAtEnd,
  MAX_VMDESC,
  TailBuffer,
  TailPlan,
  type TailProblem,
  type VmdescAtEnd,
} from "./_tail.ts";
import type { VmdescSection } from "./vmdesc.ts";
import { bad, MAX_BATCH, ParseWindow } from "./_window.ts";

/** Options of the parser (the decoder's options with their defaults applied). */
export interface ParserOptions {
  /** Target page size given by the caller, or `undefined` to take it from the stream. */
  pageSize: number | undefined;
  /** Most bytes of device-state tail held until the vmdesc at the end. */
  tailCap: number;
  /** `prove`: a tail that cannot be accounted for is an error; `describe`: records say what was found. */
  deviceState: "prove" | "describe";
  /** Size of `opaque` records. */
  opaqueChunk: number;
  /** Decode mapped-ram files (else the capability is refused). */
  mappedRam: boolean;
  /** Jump from the item at stream offset `from` to stream offset `to` without decoding between. */
  skipRange: { from: number; to: number } | undefined;
}

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
  | "drain"
  | "after-eof"
  | "after-vmdesc"
  | "done";

/** Where the walk over the buffered tail is. */
interface Walk {
  /** The tail up to and including QEMU_VM_EOF, as a window that has ended. */
  w: ParseWindow;
  /** Its vmdesc entries and what the walk found. */
  plan: TailPlan;
  /** Problems to report before QEMU_VM_EOF (describe mode). */
  problems: TailProblem[];
  /** A trial run: stop at QEMU_VM_EOF (nothing after it is parsed). */
  trial: boolean;
}

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
  /** Early sections before the device-state tail, in stream order (they take the first vmdesc entries). */
  #earlySections: EarlySectionInfo[] = [];
  /** The vmdesc entry of the early section being read inside the tail. */
  #earlyEntry: VmdescSection | undefined;
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
  /** The device-state tail, collected until its vmdesc. */
  #tail: TailBuffer | undefined;
  /** The walk over the collected tail, while it runs. */
  #walk: Walk | undefined;
  /** Records to hand out before going on (an undelimited tail in describe mode). */
  #queue: MigrationRecord[] = [];
  /** The phase after the queue is drained. */
  #afterQueue: Phase = "done";
  /** Whether the `skipRange` jump was made. */
  #skipped = false;

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
   * The device-state tail is collected (nothing of it is emitted) until its
   * vmdesc arrives; then it is walked from the collected bytes, batch by
   * batch, while the reader's window is left alone.
   *
   * @throws {FormatError} for malformed input, with the offset of the bad field; code
   *   `unproven` for a device-state tail that cannot be accounted for (in `prove` mode).
   * @throws {UnexpectedEofError} when the window is the end of the input and a structure is cut.
   * @throws {UnsupportedFeatureError} for RDMA hooks, mapped-ram (unless allowed) and iterable
   *   sections other than `ram`.
   */
  parse(out: MigrationRecord[]): void {
    for (;;) {
      const walk = this.#walk;
      const w = walk?.w ?? this.window;
      if (w.needed !== 0 || w.skipping !== 0 || out.length >= MAX_BATCH) {
        if (walk !== undefined && w.skipping !== 0) {
          throw bad("a region to jump over inside the device state", "unproven", w.offset());
        }
        return;
      }
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
          if (w.left > 0 && w.bytes[w.pos] === C.QEMU_VM_CONFIGURATION) {
            this.#phase = "configuration";
          } else if (w.left > 0 && this.#options.deviceState === "prove") {
            // Only a destination with send-configuration off loads such a stream, and it then
            // checks none of its own capabilities against it: with x-ignore-shared or mapped-ram
            // set there it reads the RAMBlock list (and so everything after it) differently.
            throw bad(
              "no configuration section: only a destination with send-configuration off loads " +
                "the stream, and it reads the RAMBlock list by capabilities the stream does not " +
                "state (x-ignore-shared, mapped-ram), so what it loads cannot be told",
              "unproven",
              w.offset(),
            );
          } else this.#phase = "items";
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
        case "tail":
          this.#collectTail(w);
          break;
        case "drain": {
          const n = Math.min(this.#queue.length, MAX_BATCH - out.length);
          for (let i = 0; i < n; i++) out.push(this.#queue[i]!);
          this.#queue.splice(0, n);
          if (this.#queue.length === 0) this.#phase = this.#afterQueue;
          if (n > 0 && !isPageRecord(out[out.length - 1]!)) return;
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
    const walk = this.#walk;
    if (walk !== undefined && this.#limit === undefined && at === walk.plan.eofAt) {
      this.#endWalk(walk, out);
      return;
    }
    const skip = this.#options.skipRange;
    if (
      skip !== undefined && !this.#skipped && walk === undefined && this.#limit === undefined &&
      w.offset(at) === skip.from
    ) {
      this.#skipped = true;
      if (skip.to > skip.from) {
        w.skip(skip.to - skip.from, "the RAM sections the caller skips");
        return;
      }
    }
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
          ...(walk !== undefined ? { afterDeviceState: true as const } : {}),
        });
        w.pos = at + SHORT_HEADER;
        this.#enterRam(false, sectionId);
        return;
      }
      case C.QEMU_VM_COMMAND: {
        const r = parseCommand(w);
        if (r === undefined) return;
        if (walk !== undefined && r.command === C.MIG_CMD_PACKAGED) r.afterDeviceState = true;
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
        if (walk !== undefined) {
          throw bad(
            `QEMU_VM_EOF ${walk.plan.eofAt - at} bytes before the one the vmdesc follows: ` +
              "the bytes between are not accounted for",
            "unproven",
            w.offset(at),
          );
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
    // What this decoder takes the section for must be what QEMU's loader takes it for.
    const misread = idstrMisreading(idstr);
    if (misread !== undefined) {
      throw bad(
        `section idstr ${JSON.stringify(idstr)} ${misread}`,
        "bad-section",
        w.offset(at + 5),
      );
    }
    const header: SectionHeaderRecord = {
      kind: type === C.QEMU_VM_SECTION_START ? "section-start" : "section-full",
      streamOffset: w.offset(at),
      sectionId,
      idstr,
      instanceId: w.u32(at + 6 + idLen),
      versionId: w.u32(at + 10 + idLen),
    };
    const walk = this.#walk;
    walk?.plan.noteSection(sectionId, idstr);
    // QEMU loads a FULL `ram` section like a START one (it never sends one): inside the tail
    // it is RAM loaded after device state.
    const ramFull = type === C.QEMU_VM_SECTION_FULL && idstr === C.RAM_SECTION_IDSTR &&
      (walk !== undefined || this.#limit !== undefined);
    if (type === C.QEMU_VM_SECTION_START || ramFull) {
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
      if (walk !== undefined) header.afterDeviceState = true;
      out.push(header);
      w.pos = at + headerLength;
      this.#enterRam(true, sectionId);
      return;
    }
    if (idstr.endsWith(C.VIRTIO_MEM_EARLY_SUFFIX) && header.versionId === 1) {
      if (walk !== undefined) this.#earlyEntry = walk.plan.take(header, w.offset(at));
      else {
        this.#earlySections.push({
          sectionId,
          idstr,
          instanceId: header.instanceId,
          versionId: header.versionId,
          bodyLength: -1, // set when the body is read
          streamOffset: w.offset(at),
        });
      }
      out.push(header);
      w.pos = at + headerLength;
      this.#earlyPath = idstr.slice(0, -C.VIRTIO_MEM_EARLY_SUFFIX.length);
      this.#footerFor = sectionId;
      this.#phase = "early";
      return;
    }
    if (this.#limit !== undefined) {
      // Inside PACKAGED (postcopy) device state runs to the end of the blob: nothing delimits it.
      if (this.#options.deviceState === "prove") {
        throw bad(
          `device state inside PACKAGED (section ${
            JSON.stringify(idstr)
          }) cannot be delimited: nothing gives its size`,
          "unproven",
          w.offset(at),
        );
      }
      out.push(header);
      w.pos = at + headerLength;
      this.#passLeft = this.#limit - w.offset();
      this.#phase = "packaged-device";
      return;
    }
    if (walk !== undefined) {
      this.#deviceSection(w, walk, header, headerLength, out);
      return;
    }
    // The device-state tail, from this header on: collected until the vmdesc at its end.
    this.#tail = new TailBuffer(w.offset(at), this.#options.tailCap);
    this.#phase = "tail";
  }

  /**
   * A device section inside the walk: its body is as long as the vmdesc
   * says (the `P/virtio-mem` body: as long as its structure, compared with
   * the vmdesc), and its footer must follow.
   */
  #deviceSection(
    w: ParseWindow,
    walk: Walk,
    header: SectionHeaderRecord,
    headerLength: number,
    out: MigrationRecord[],
  ): void {
    const at = w.pos;
    const entry = walk.plan.take(header, header.streamOffset);
    const bodyAt = at + headerLength;
    let bodyLength = entry.bodyLength;
    let body: MigrationRecord;
    if (header.idstr.endsWith(C.VIRTIO_MEM_DEVICE_SUFFIX)) {
      const devicePath = header.idstr.slice(0, -C.VIRTIO_MEM_DEVICE_SUFFIX.length);
      const parsed = parseVirtioMemDeviceBody(w.bytes.subarray(bodyAt), {
        devicePath,
        ramBlocks: this.#ram.blocks,
        early: this.#early.get(devicePath),
        bodyStreamOffset: w.offset(bodyAt),
        sectionId: header.sectionId,
      });
      if (parsed === undefined) {
        throw new FormatError(
          `Cannot decode migration stream: section ${
            JSON.stringify(header.idstr)
          } is not a virtio-mem device state this decoder recognises (virtio-pci transport, ` +
            "a RAMBlock of its region size), so the plug state it sets is unknown",
          { format: "migration", code: "bad-virtio-mem", offset: w.offset(bodyAt) },
        );
      }
      if (parsed.bodyLength !== bodyLength) {
        walk.plan.sizeMismatch(header.idstr, parsed.bodyLength, bodyLength, w.offset(bodyAt));
        bodyLength = parsed.bodyLength;
      }
      body = {
        kind: "virtio-mem-device",
        streamOffset: w.offset(bodyAt),
        devicePath,
        data: w.bytes.subarray(bodyAt, bodyAt + bodyLength),
        state: parsed.state,
      };
    } else {
      if (w.left < headerLength + bodyLength) {
        w.need(headerLength + bodyLength, `the body of ${JSON.stringify(header.idstr)}`);
        return;
      }
      body = {
        kind: "device-state",
        streamOffset: w.offset(bodyAt),
        sectionId: header.sectionId,
        idstr: header.idstr,
        data: w.bytes.subarray(bodyAt, bodyAt + bodyLength),
      };
    }
    out.push(header, body);
    w.pos = bodyAt + bodyLength;
    this.#footerFor = header.sectionId;
    this.#phase = "footer";
  }

  /** Collect the tail until its vmdesc (at the end of the input, or of what a live source sent). */
  #collectTail(w: ParseWindow): void {
    const tail = this.#tail!;
    const chunk = w.bytes.subarray(w.pos);
    tail.append(chunk);
    w.pos = w.bytes.byteLength;
    // A live source may keep its connection open after its vmdesc (with a return path it
    // waits for the destination's answer): a complete EOF + vmdesc whose JSON parses at the
    // end of what arrived is the end. (Checked only when the bytes end with "}".)
    const live = !w.atEnd && chunk.byteLength > 0 && chunk[chunk.byteLength - 1] === 0x7d
      ? findVmdescAtEnd(tail.bytes, true)
      : undefined;
    if (w.atEnd) this.#finishTail(findVmdescAtEnd(tail.bytes, false));
    else if (live !== undefined) this.#finishTail(live);
    else w.need(1, "the device state");
  }

  /**
   * The tail is complete: prove it (a trial walk, the ambiguity search) and
   * then walk it for real, or report what keeps it from being proven.
   */
  #finishTail(found: VmdescAtEnd | undefined): void {
    const tail = this.#tail!;
    const bytes = tail.bytes;
    const prove = this.#options.deviceState === "prove";
    let problem: TailProblem | undefined;
    let plan: TailPlan | undefined;
    if (found === undefined) {
      if (bytes[bytes.byteLength - 1] !== C.QEMU_VM_EOF || prove) {
        throw new UnexpectedEofError(
          "Cannot decode migration stream: input ended in the device state, without " +
            "QEMU_VM_EOF and the vmdesc that gives the device sections' sizes (it was cut, or " +
            "its producer sent none)",
          "migration",
          tail.base + bytes.byteLength,
        );
      }
      problem = {
        code: "no-vmdesc",
        message: "the stream ends at QEMU_VM_EOF without a vmdesc: nothing gives the sizes of " +
          "the device sections",
        // Where the vmdesc would begin: the same offset as the truncation error in prove mode.
        streamOffset: tail.base + bytes.byteLength,
      };
    } else if (this.#footers === false) {
      problem = {
        code: "no-footers",
        message: "the stream has no section footers (QEMU <= 2.3 machine types), so no device " +
          "section's end can be checked",
        streamOffset: tail.base,
      };
    } else if (found.sections === undefined) {
      problem = {
        code: "bad-vmdesc",
        message: found.parsed === undefined
          ? "the vmdesc is not valid JSON"
          : "the vmdesc is not shaped as QEMU writes it (devices with names, instance ids and field sizes)",
        streamOffset: tail.base + found.eofAt + 1,
      };
    } else {
      const trial = this.#trialWalk(found as VmdescAtEnd & { sections: VmdescSection[] });
      if (trial.error !== undefined) {
        // A recognised but impossible plug state is a plain error, as anywhere else.
        if (prove && trial.error.code === "bad-virtio-mem") throw trial.error;
        problem = {
          code: "undelimited",
          message: trial.error.message.replace(/^Cannot decode migration stream: /, "")
            .replace(/ at offset 0x[0-9a-f]+$/, ""),
          streamOffset: trial.error.offset,
        };
      } else {
        plan = trial.plan;
      }
    }
    if (problem !== undefined) {
      if (prove) throw unproven(problem);
      this.#describeUndelimited(found, problem);
      return;
    }
    const problems = [...plan!.mismatches];
    const ambiguity = findAmbiguity(bytes, plan!);
    if (ambiguity !== undefined) problems.push(ambiguity);
    if (prove && problems.length > 0) throw unproven(problems[0]!);
    // The walk for real, over the same bytes from the same state as the trial.
    this.#walk = this.#startWalk(found!, problems, false);
    this.#phase = "items";
  }

  /** A window over the tail through its EOF byte, and a fresh plan with the early sections' entries taken. */
  #startWalk(found: VmdescAtEnd, problems: TailProblem[], trial: boolean): Walk {
    const tail = this.#tail!;
    const plan = new TailPlan(found as VmdescAtEnd & { sections: VmdescSection[] }, tail.base);
    for (const [id, s] of this.#sections) plan.noteSection(id, s.idstr);
    for (const e of this.#earlySections) {
      const entry = plan.take(e, e.streamOffset);
      if (entry.bodyLength !== e.bodyLength) {
        plan.sizeMismatch(e.idstr, e.bodyLength, entry.bodyLength, e.streamOffset);
      }
    }
    const w = new ParseWindow();
    w.reset(tail.bytes.subarray(0, found.eofAt + 1), tail.base, true);
    return { w, plan, problems, trial };
  }

  /**
   * Walk the tail once on a copy of this parser's state, records thrown
   * away: whether it can be walked to QEMU_VM_EOF, and what it found.
   */
  #trialWalk(
    found: VmdescAtEnd & { sections: VmdescSection[] },
  ): { plan: TailPlan; error?: undefined } | { error: FormatError; plan?: undefined } {
    const t = new MigrationParser(this.#options);
    t.#ram = this.#ram.clone();
    t.#sections = new Map(this.#sections);
    t.#footers = this.#footers;
    t.#early = new Map(this.#early);
    t.#earlySections = this.#earlySections;
    t.#tail = this.#tail;
    t.#phase = "items";
    const scratch: MigrationRecord[] = [];
    try {
      const walk = t.#walk = t.#startWalk(found, [], true);
      while (!t.done) {
        scratch.length = 0;
        t.parse(scratch);
        if (!t.done && scratch.length === 0) {
          throw bad("the device state walk stopped", "unproven", walk.w.offset());
        }
      }
      return { plan: walk.plan };
    } catch (e) {
      if (e instanceof FormatError) return { error: e };
      throw e;
    }
  }

  /** The walk reached QEMU_VM_EOF: the problems (describe mode), EOF and the vmdesc. */
  #endWalk(walk: Walk, out: MigrationRecord[]): void {
    walk.plan.finish();
    const base = walk.plan.base;
    const { eofAt, json, parsed } = walk.plan.vmdesc;
    this.#walk = undefined;
    if (walk.trial) {
      this.#phase = "done";
      return;
    }
    for (const p of walk.problems) out.push(problemRecord(p));
    out.push({ kind: "eof", streamOffset: base + eofAt });
    out.push({ kind: "vmdesc", streamOffset: base + eofAt + 1, json, parsed });
    this.#phase = "after-vmdesc";
  }

  /** Describe mode: the tail as opaque bytes, what keeps it from being proven, then EOF and vmdesc. */
  #describeUndelimited(found: VmdescAtEnd | undefined, problem: TailProblem): void {
    const tail = this.#tail!;
    const bytes = tail.bytes;
    const end = found !== undefined ? found.eofAt : bytes.byteLength - 1;
    const chunk = this.#options.opaqueChunk;
    for (let at = 0; at < end; at += chunk) {
      this.#queue.push({
        kind: "opaque",
        streamOffset: tail.base + at,
        data: bytes.subarray(at, Math.min(end, at + chunk)),
      });
    }
    this.#queue.push(problemRecord(problem));
    this.#queue.push({ kind: "eof", streamOffset: tail.base + end });
    if (found !== undefined) {
      this.#queue.push({
        kind: "vmdesc",
        streamOffset: tail.base + end + 1,
        json: found.json,
        parsed: found.parsed,
      });
    }
    this.#afterQueue = "after-vmdesc";
    this.#phase = "drain";
  }

  #enterRam(isStart: boolean, sectionId: number): void {
    this.#ramIsStart = isStart;
    this.#footerFor = sectionId;
    this.#phase = "ram";
  }

  /** The footer of the section just read, when the stream has footers (in the tail it must). */
  #footer(w: ParseWindow, out: MigrationRecord[]): void {
    const walk = this.#walk;
    if (this.#footers === false && walk === undefined) {
      this.#phase = "items";
      return;
    }
    const at = w.pos;
    if (walk !== undefined && (w.left < 1 || w.bytes[at] !== C.QEMU_VM_SECTION_FOOTER)) {
      throw bad(
        `no section footer after section ${this.#footerFor} (the tail's sections are delimited ` +
          "by their footers)",
        "bad-footer",
        w.offset(at),
      );
    }
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
    walk?.plan.footers.add(w.offset(at));
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
    const bodyLength = EARLY_FIELDS + bitmapLength;
    const walk = this.#walk;
    if (walk !== undefined) {
      const entry = this.#earlyEntry!;
      if (entry.bodyLength !== bodyLength) {
        walk.plan.sizeMismatch(early.devicePath, bodyLength, entry.bodyLength, early.streamOffset);
      }
    } else {
      const info = this.#earlySections[this.#earlySections.length - 1];
      if (info !== undefined && info.bodyLength < 0) info.bodyLength = bodyLength;
    }
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

/** The record that reports a problem (describe mode). */
function problemRecord(p: TailProblem): MigrationRecord {
  return { kind: "tail-problem", streamOffset: p.streamOffset, code: p.code, message: p.message };
}

/** The error that reports a problem (prove mode). */
function unproven(p: TailProblem): FormatError {
  return new FormatError(
    `Cannot prove what QEMU loads from the device state after the RAM: ${p.message}`,
    { format: "migration", code: "unproven", offset: p.streamOffset },
  );
}
