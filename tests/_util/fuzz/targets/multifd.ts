/**
 * Campaign target `multifd`: mutated real multifd channels (QEMU 7.2 with
 * zstd, QEMU 10.0 without compression; testdata/multifd/, made by
 * scripts/make-multifd-channels.ts), decoded with `decodeMultifdChannel`,
 * re-encoded, and every packet verified and filtered against the capture's
 * block list and plug state.
 *
 * The anatomy comes from the library's own field tables (layout.ts): every
 * header field of every packet, the first offset slots, and each packet as
 * a span.
 *
 * Oracles: a typed error with an offset inside the input, or a channel that
 * re-encodes to the input byte for byte and whose packets the verifier and
 * the filter judge with typed errors only; a filtered packet decodes to the
 * pages it kept.
 *
 * @module
 */

import {
  MULTIFD_OFFSET_SLOT_SIZE,
  MultifdChannelFilter,
  MultifdChannelVerifier,
  type MultifdRecord,
} from "../../../../src/migration/multifd/mod.ts";
import { MULTIFD_INIT, MULTIFD_PACKET } from "../../../../src/migration/multifd/layout.ts";
import { parsePlugMapSource } from "../../../../src/vmem/mod.ts";
import { concatBytes } from "../../chunkings.ts";
import { decodeMultifdBytes, encodeMultifdBytes } from "../../multifd_codec.ts";
import type { Anatomy, Field, Span } from "../mutate.ts";
import { agree, typedErrorLabel } from "../oracle.ts";
import type { FuzzTarget, SeedInput } from "../target.ts";

const TESTDATA = new URL("../../../../testdata/multifd/", import.meta.url);
const SEEDS = ["q72-zstd", "q10-none"] as const;

/**
 * Offsets worth trying in an offset slot: a page of block 40 of the
 * virtio-mem device (unplugged in the captures' s2/s3 shape, 2 MiB blocks),
 * and one not page-aligned.
 */
const UNPLUGGED_OFFSETS = [40n * 0x200000n + 0x1000n, 40n * 0x200000n + 0x800n];

interface CaptureState {
  pageSize: number;
  ramBlocks: { idstr: string; usedLength: number }[];
  plugMap: unknown;
}

/** Fields and packets of a channel, from the library's field tables. */
function multifdAnatomy(records: readonly MultifdRecord[]): Anatomy {
  const fields: Field[] = [];
  const spans: Span[] = [];
  const add = (
    at: number,
    width: number,
    name: string,
    role: Field["role"],
    values?: readonly bigint[],
  ) => {
    if (width === 1 || width === 2 || width === 4 || width === 8) {
      fields.push({
        offset: at,
        width,
        littleEndian: false,
        name,
        role,
        ...(values ? { values } : {}),
      });
    }
  };
  const I = MULTIFD_INIT.fields;
  add(I.magic.offset, 4, "init magic", "id");
  add(I.version.offset, 4, "init version", "id");
  add(I.channelId.offset, 1, "init id", "id");
  const P = MULTIFD_PACKET.fields;
  for (const r of records) {
    if (r.kind !== "multifd-ram-packet") continue;
    const at = r.streamOffset;
    const n = `packet@${at.toString(16)}`;
    add(at + P.magic.offset, 4, `${n}.magic`, "id");
    add(at + P.flags.offset, 4, `${n}.flags`, "flags");
    add(at + P.pagesAlloc.offset, 4, `${n}.pages_alloc`, "count");
    add(at + P.normalPages.offset, 4, `${n}.normal_pages`, "count");
    add(at + P.nextPacketSize.offset, 4, `${n}.next_packet_size`, "length");
    add(at + P.packetNum.offset, 8, `${n}.packet_num`, "other");
    add(at + P.zeroPages.offset, 4, `${n}.zero_pages`, "count");
    const used = r.normalRamOffsets.length + r.zeroRamOffsets.length;
    for (let i = 0; i < Math.min(used + 1, 4); i++) {
      add(
        at + MULTIFD_PACKET.byteLength + MULTIFD_OFFSET_SLOT_SIZE * i,
        8,
        `${n}.offset[${i}]`,
        "offset",
        UNPLUGGED_OFFSETS,
      );
    }
    spans.push({ start: at, end: at + r.header.byteLength + r.data.byteLength, name: n });
  }
  return { fields, spans };
}

let states: Map<string, CaptureState> | undefined;

async function multifdSeeds(): Promise<SeedInput[]> {
  states = new Map();
  const seeds: SeedInput[] = [];
  for (const name of SEEDS) {
    const bytes = await Deno.readFile(new URL(`${name}-channel0.bin`, TESTDATA));
    states.set(
      name,
      JSON.parse(await Deno.readTextFile(new URL(`${name}-state.json`, TESTDATA))) as CaptureState,
    );
    seeds.push({ name, bytes, anatomy: multifdAnatomy(await decodeMultifdBytes(bytes)) });
  }
  return seeds;
}

/** Decode, re-encode, verify and filter one (mutated) channel. */
async function runMultifd(input: Uint8Array, seedName: string): Promise<string> {
  const state = states!.get(seedName)!;
  const plugMap = parsePlugMapSource(JSON.stringify(state.plugMap)).map;
  const memSize = {
    kind: "ram-mem-size" as const,
    streamOffset: 0,
    totalBytes: state.ramBlocks.reduce((a, b) => a + b.usedLength, 0),
    blocks: state.ramBlocks,
  };
  let records: MultifdRecord[];
  try {
    records = await decodeMultifdBytes(input);
  } catch (e) {
    return `decode ${typedErrorLabel(e, { maxOffset: { migration: input.length } })}`;
  }
  const again = await encodeMultifdBytes(records);
  agree(
    again.byteLength === input.byteLength && again.every((b, i) => b === input[i]),
    "a decoded channel does not re-encode to its bytes",
  );
  const init = records[0]!;
  if (init.kind !== "multifd-init") throw new TypeError("a channel starts with its initial packet");
  const channel = init.channelId;
  const verifier = new MultifdChannelVerifier({ channel, pageSize: state.pageSize, plugMap });
  const filter = new MultifdChannelFilter({ channel, pageSize: state.pageSize, plugMap });
  verifier.control(memSize);
  filter.control(memSize);
  let outcome = "clean";
  try {
    for (const r of records) {
      if (r.kind !== "multifd-ram-packet") continue;
      if (!verifier.checkPacket(r)) outcome = "violation";
      const out = filter.filterPacket(r);
      if (out !== r) {
        const [, kept] = await decodeMultifdBytes(concatBytes([init.bytes, out.header, out.data]));
        agree(
          kept?.kind === "multifd-ram-packet" &&
            kept.normalRamOffsets.join() === out.normalRamOffsets.join() &&
            kept.zeroRamOffsets.join() === out.zeroRamOffsets.join(),
          "a filtered packet does not decode to the pages it kept",
        );
      }
    }
  } catch (e) {
    return `check ${typedErrorLabel(e, { maxOffset: { migration: input.length } })}`;
  }
  return `decoded, ${outcome}`;
}

/** The target. */
export const multifdTarget: FuzzTarget = {
  name: "multifd",
  description:
    "real multifd channels (QEMU 7.2 zstd, 10.0): decode, re-encode, verify and filter each packet",
  timeoutMs: 10_000,
  seeds: multifdSeeds,
  run: (input, context) => runMultifd(input, context.seed.name),
};
