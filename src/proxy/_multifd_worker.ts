/**
 * The Worker of one proxied multifd channel: a `MultifdPipeline` fed with
 * the input chunks the main thread reads from the source socket, writing
 * output chunks back for the main thread to send to the destination. The
 * pipeline's work (decoding, page checks, packet rewriting, encoding) runs
 * here, so the channels of a migration use every core.
 *
 * After the channel's input ended the Worker still takes plug-state
 * records (the main channel's late device section may come after it) until
 * the main thread terminates it.
 *
 * Flow control: an input chunk goes back to the main thread (for reuse)
 * once the decoder has moved past it; the main thread reads only while it
 * has free chunks. Output waits while more than `maxOutputInFlight` bytes
 * were posted and not yet written to the destination.
 *
 * Private to src/proxy.
 *
 * @module
 */

import { PullByteReader } from "../io/byte_reader.ts";
import { MultifdPipeline } from "../migration/multifd/pipeline.ts";
import { PlugMap } from "../vmem/plug_map.ts";
import {
  type FromMultifdWorker,
  serializeError,
  type ToMultifdWorker,
} from "./_multifd_messages.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<ToMultifdWorker>) => void) | null;
  postMessage(message: FromMultifdWorker, transfer?: Transferable[]): void;
}

const scope = globalThis as unknown as WorkerScope;
const post = (m: FromMultifdWorker, transfer: Transferable[] = []) =>
  scope.postMessage(m, transfer);

let pipeline: MultifdPipeline | undefined;
let failed = false;
const inputs: Uint8Array<ArrayBuffer>[] = [];
let inputEnded = false;
let wakeInput: (() => void) | undefined;
let current: Uint8Array<ArrayBuffer> | undefined;
let outputInFlight = 0;
let maxOutputInFlight = 4 << 20;
let wakeOutput: (() => void) | undefined;
/** Output buffers the main thread gave back after writing them. */
const freeOutput: Uint8Array<ArrayBuffer>[] = [];
const OUTPUT_CHUNK_SIZE = 1 << 20;

function fail(e: unknown): void {
  if (failed) return;
  failed = true;
  post({ type: "error", error: serializeError(e), channel: pipeline?.progress.channel });
}

/** Input chunks the decoder is past, going back to the main thread in batches. */
let released: Uint8Array<ArrayBuffer>[] = [];

function sendReleased(): void {
  if (released.length === 0) return;
  post({ type: "release", chunks: released }, released.map((c) => c.buffer));
  released = [];
}

/** The last progress posted: the main thread hears only what its EOF gate and labels need. */
let reported = { channel: -1, syncPackets: -1, controls: -1, violations: -1 };

function reportProgress(force = false): void {
  const p = pipeline!.progress;
  if (
    !force && p.channel === reported.channel && p.syncPackets === reported.syncPackets &&
    p.controls === reported.controls && p.violations === reported.violations
  ) return;
  reported = {
    channel: p.channel ?? -1,
    syncPackets: p.syncPackets,
    controls: p.controls,
    violations: p.violations,
  };
  post({ type: "progress", progress: p });
}

/** The next input chunk; the one before goes back to the main thread (the decoder is past it). */
async function pull(): Promise<Uint8Array | undefined> {
  if (current !== undefined) {
    released.push(current);
    current = undefined;
    if (released.length >= 4) sendReleased();
  }
  while (inputs.length === 0 && !inputEnded) {
    sendReleased();
    reportProgress();
    pipeline?.sendBuffered();
    await new Promise<void>((resolve) => (wakeInput = resolve));
    wakeInput = undefined;
  }
  current = inputs.shift();
  return current;
}

async function output(chunk: Uint8Array<ArrayBuffer>): Promise<void> {
  outputInFlight += chunk.byteLength;
  post({ type: "output", chunk }, [chunk.buffer]);
  while (outputInFlight > maxOutputInFlight && !failed) {
    await new Promise<void>((resolve) => (wakeOutput = resolve));
    wakeOutput = undefined;
  }
}

function start(m: Extract<ToMultifdWorker, { type: "start" }>): void {
  maxOutputInFlight = m.maxOutputInFlight;
  const plugMap = m.plugMapDevices ? new PlugMap(m.plugMapDevices) : undefined;
  const p = new MultifdPipeline(new PullByteReader(pull), {
    mode: m.mode,
    ...(plugMap ? { plugMap } : {}),
    output,
    chunkSize: OUTPUT_CHUNK_SIZE,
    reuseChunks: false, // output chunks are transferred; they come back in "written"
    allocateChunk: () => freeOutput.pop() ?? new Uint8Array(OUTPUT_CHUNK_SIZE),
    onViolations: (violations) => post({ type: "violations", violations }),
    onBatch: () => reportProgress(),
  });
  pipeline = p;
  p.run().then((result) => {
    if (current !== undefined) released.push(current);
    current = undefined;
    sendReleased();
    post({ type: "done", result });
  }, fail);
}

post({ type: "ready" });

scope.onmessage = (e) => {
  if (failed) return;
  const m = e.data;
  try {
    switch (m.type) {
      case "start":
        start(m);
        return;
      case "page-size":
        pipeline!.setPageSize(m.pageSize);
        return;
      case "control":
        pipeline!.control(m.record);
        reportProgress(true);
        return;
      case "setup-complete":
        pipeline!.setupComplete();
        reportProgress(true);
        return;
      case "input":
        inputs.push(m.chunk);
        wakeInput?.();
        return;
      case "input-end":
        inputEnded = true;
        wakeInput?.();
        return;
      case "main-complete":
        pipeline!.mainComplete();
        return;
      case "strip":
        pipeline!.stripPages();
        return;
      case "written":
        outputInFlight -= m.chunk.byteLength;
        if (m.chunk.buffer.byteLength === OUTPUT_CHUNK_SIZE) {
          freeOutput.push(new Uint8Array(m.chunk.buffer));
        }
        if (outputInFlight <= maxOutputInFlight) wakeOutput?.();
        return;
    }
  } catch (err) {
    fail(err);
  }
};
