/**
 * `scan --extract DIR`: hand the evidence on. Every finding's page is
 * written as a file named by its gpa, and `manifest.json` lists each page
 * with its gpa, RAMBlock offset, file or stream offset, the section a stream
 * record came in, its SHA-256, plus the input's SHA-256, the verdict and the
 * tool version. The directory is written under the evidence rules of
 * `createAtomicDirectory` (built aside, renamed when complete, never over an
 * input, replaced only with force). The manifest is written as findings
 * arrive, so memory does not grow with their number.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { type AtomicDirectory, type AtomicDirectoryFile, openFileReader } from "../io/file.ts";
import { TOOL } from "../version.ts";
import type { FindingContext, FindingPageSink, PageFinding, ScanReport } from "./findings.ts";

/** Name of the manifest inside the extraction directory. */
export const EXTRACT_MANIFEST = "manifest.json";

/**
 * Version of the manifest format (docs/scan.md). 2: the glossary's names
 * (`kind`, `tool` as a string, `path` and `ramblock` per page, `input.format`,
 * `plugState` with `sources`, `pageByteLength`).
 */
export const EXTRACT_MANIFEST_VERSION = 2;

/** One page in the manifest. */
export interface ExtractedPage {
  /** The page file inside the directory, or `null` when the content is unknown (XBZRLE). */
  file: string | null;
  /** Guest-physical address of the page. */
  gpa: number;
  /** Offset inside the device's RAMBlock. */
  ramOffset: number;
  /** The device's PCI path (`""` when unknown). */
  path: string;
  /** The device's RAMBlock idstr (`""` when unknown). */
  ramblock: string;
  /** Dumps: file offset of the page in the input, when it is stored there as it is; else `null`. */
  fileOffset: number | null;
  /** Streams: stream offset of the record (in the decompressed stream); else `null`. */
  streamOffset: number | null;
  /** Streams: the section the record came in; else `null`. */
  section: PageFinding["section"];
  /** What carried the page. */
  source: PageFinding["source"];
  /** Page bytes in `file` (0 when there is no file). */
  byteLength: number;
  /** SHA-256 of the page content, or `null` when unknown. */
  sha256: string | null;
  /** Non-zero bytes in the page, or `null` when unknown. */
  nonZeroBytes: number | null;
}

/** What {@linkcode ExtractionSink.finish} adds to the manifest after the pages. */
export interface ExtractionSummary {
  /**
   * The input as reports describe it (docs/glossary.md: `path`, `format`,
   * `container`, `byteLength` …), with its SHA-256 (of the input file or of
   * the bytes read from standard input).
   */
  input: { readonly [key: string]: unknown; sha256: string };
  /** Where the plug state came from, as reports describe it (docs/glossary.md). */
  plugState: unknown;
  /** The scan's report (verdict, totals). */
  report: ScanReport;
}

const encoder = new TextEncoder();

/**
 * The file name of a finding: `gpa-0x<16 hex digits>.page`; stream records
 * add `-stream-0x<offset>` (a page may be sent more than once).
 *
 * @param page The finding.
 * @returns The name.
 */
export function extractedPageName(page: PageFinding): string {
  const gpa = page.gpa.toString(16).padStart(16, "0");
  return page.streamOffset === null
    ? `gpa-0x${gpa}.page`
    : `gpa-0x${gpa}-stream-0x${page.streamOffset.toString(16).padStart(12, "0")}.page`;
}

/**
 * A {@linkcode FindingPageSink} that writes every finding into an
 * {@linkcode AtomicDirectory}: one file per page plus `manifest.json`.
 * Call `finish` with the report when the scan ended, then commit the
 * directory (or abort it on failure).
 *
 * @example
 * ```ts ignore
 * import { createAtomicDirectory } from "../io/file.ts";
 * import { ExtractionSink, scanRawImage } from "@vmem-dump/vmem-dump/scan";
 * const dir = await createAtomicDirectory("evidence", { inputs: ["s3.raw"] });
 * const sink = await ExtractionSink.create(dir);
 * const report = await scanRawImage(image, { plugMap, baseGpa, pageSink: sink });
 * await sink.finish({
 *   input: { path: "s3.raw", format: "raw", container: "raw", byteLength: image.byteLength, sha256 },
 *   plugState: { sources: ["plugmap"], layout: null, path: "map.json" },
 *   report,
 * });
 * await dir.commit();
 * ```
 */
export class ExtractionSink implements FindingPageSink {
  #dir: AtomicDirectory;
  #manifest: AtomicDirectoryFile;
  #pending: Promise<void>[] = [];
  #failure: unknown;
  #pages = 0;
  #files = 0;
  #unknown = 0;
  #provisional = 0;
  #bytes = 0;
  #chain: Promise<void> = Promise.resolve();

  private constructor(dir: AtomicDirectory, manifest: AtomicDirectoryFile) {
    this.#dir = dir;
    this.#manifest = manifest;
  }

  /**
   * Start an extraction into `dir` (writes the head of the manifest).
   *
   * @param dir The directory, from `createAtomicDirectory`.
   * @returns The sink.
   * @throws {OutputError} when the manifest cannot be created.
   */
  static async create(dir: AtomicDirectory): Promise<ExtractionSink> {
    const manifest = await dir.createFile(EXTRACT_MANIFEST);
    await manifest.write(encoder.encode(
      `{\n  "kind": "scan-extract-manifest",\n  "version": ${EXTRACT_MANIFEST_VERSION},\n` +
        `  "tool": ${JSON.stringify(`${TOOL.name} ${TOOL.version}`)},\n  "pages": [`,
    ));
    return new ExtractionSink(dir, manifest);
  }

  /** Native SHA-256 of a page: an extraction hashes every finding. */
  hashPage(bytes: Uint8Array): string {
    return createHash("sha256").update(bytes).digest("hex");
  }

  /** Pages in the manifest so far. */
  get pages(): number {
    return this.#pages;
  }

  /** Whether provisional findings were handed over (see `FindingContext`). */
  get sawProvisional(): boolean {
    return this.#provisional > 0;
  }

  /**
   * Take one finding: queue its page file and its manifest entry.
   *
   * @param page The finding.
   * @param content Its content (copied here), or `undefined` when unknown.
   * @param context Its device and whether it is provisional.
   */
  add(page: PageFinding, content: Uint8Array | undefined, context: FindingContext): void {
    if (context.provisional) this.#provisional++;
    const file = content === undefined ? null : extractedPageName(page);
    const entry: ExtractedPage = {
      file,
      gpa: page.gpa,
      ramOffset: page.ramOffset,
      path: context.device.path,
      ramblock: context.device.ramBlock,
      fileOffset: page.fileOffset,
      streamOffset: page.streamOffset,
      section: page.section,
      source: page.source,
      byteLength: content?.byteLength ?? 0,
      sha256: page.sha256,
      nonZeroBytes: page.nonZeroBytes,
    };
    const line = `${this.#pages === 0 ? "" : ","}\n    ${JSON.stringify(entry)}`;
    this.#pages++;
    if (content === undefined) {
      this.#unknown++;
    } else {
      this.#files++;
      this.#bytes += content.byteLength;
      const copy = content.slice();
      this.#track(this.#dir.writeFile(file!, copy));
    }
    // Manifest lines are written in order, one after the other.
    this.#chain = this.#chain.then(() => this.#manifest.write(encoder.encode(line)));
    this.#track(this.#chain);
  }

  #track(p: Promise<void>): void {
    p.catch((e) => {
      this.#failure ??= e;
    });
    this.#pending.push(p);
  }

  /**
   * Wait until every queued page and manifest line is written.
   *
   * @throws {OutputError} the first write failure.
   */
  async drain(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    await Promise.allSettled(pending);
    if (this.#failure !== undefined) throw this.#failure;
  }

  /**
   * Write the end of the manifest: the input and its SHA-256, the plug
   * state, the verdict and the counts; close it. Commit the directory
   * afterwards.
   *
   * @param summary The input (with SHA-256) and the report.
   * @throws {OutputError} when writing fails.
   */
  async finish(summary: ExtractionSummary): Promise<void> {
    await this.drain();
    await this.#chain;
    const r = summary.report;
    const tail = {
      input: summary.input,
      plugState: summary.plugState,
      pageSize: r.pageSize,
      verdict: r.verdict,
      verdictReason: r.verdictReason,
      findings: r.summary.findings,
      pageFiles: this.#files,
      pageByteLength: this.#bytes,
      unknownContent: this.#unknown,
      complete: this.#pages === r.summary.findings,
    };
    const body = JSON.stringify(tail, null, 2).slice(1); // the members, without the opening brace
    await this.#manifest.write(encoder.encode(`${this.#pages === 0 ? "" : "\n  "}],${body}\n`));
    await this.#manifest.close();
  }

  /** Close the manifest without finishing it (before aborting the directory). */
  async close(): Promise<void> {
    await Promise.allSettled(this.#pending);
    await this.#chain.catch(() => {});
    await this.#manifest.close().catch(() => {});
  }
}

/**
 * The SHA-256 of a whole file (lowercase hex), read sequentially in big
 * chunks: the identity of the input an extraction came from.
 *
 * @param path A regular file.
 * @returns The digest.
 *
 * @example
 * ```ts ignore
 * import { sha256OfFile } from "@vmem-dump/vmem-dump/scan";
 * console.log(await sha256OfFile("s3-malicious.mig"));
 * ```
 */
export async function sha256OfFile(path: string): Promise<string> {
  const input = await openFileReader(path, { recycleChunks: 4 });
  try {
    const hash = createHash("sha256");
    for (let chunk; (chunk = await input.reader.readChunk(1 << 20)) !== undefined;) {
      hash.update(chunk);
    }
    return hash.digest("hex");
  } finally {
    input.close();
  }
}
