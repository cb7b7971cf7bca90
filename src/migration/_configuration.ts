/**
 * The configuration section (`QEMU_VM_CONFIGURATION`, 0x07) after the stream
 * header: be32 length and machine type name, then subsections (0x05, cstr8
 * name, be32 version, body) for target page bits, capabilities and the uuid
 * (migration/savevm.c `vmstate_configuration`). Private to the decoder.
 *
 * @module
 */

import { UnsupportedFeatureError } from "../errors.ts";
import { latin1Decode } from "../io/text.ts";
import { QEMU_VM_SUBSECTION } from "./constants.ts";
import type { ConfigurationRecord, ConfigurationSubsection } from "./types.ts";
import { bad, type ParseWindow } from "./_window.ts";
import { nulMisreading } from "./_section_identity.ts";

/** Longest machine type name accepted. */
const MAX_MACHINE_NAME = 256;
/** Most capabilities accepted. */
const MAX_CAPABILITIES = 256;
/** Target page bits QEMU can send: 1 KiB to 64 KiB pages. */
const MIN_TARGET_PAGE_BITS = 10;
const MAX_TARGET_PAGE_BITS = 16;

/**
 * Parse the whole configuration section at `w.pos` and consume it. The
 * section is small (a few hundred bytes), so a short window is answered by
 * asking for the bytes up to the next field and parsing again from the start.
 * Returns `undefined` after asking for more bytes.
 *
 * @param w The window, at the section's first byte.
 * @param mappedRam Whether mapped-ram files are decoded (the decoder's `mappedRam` option).
 * @throws {FormatError} (code `bad-section`) for a name too long, an unknown subsection,
 *   target page bits out of range or a capability name with a NUL byte.
 * @throws {UnsupportedFeatureError} for the mapped-ram capability unless `mappedRam`.
 */
export function parseConfiguration(
  w: ParseWindow,
  mappedRam: boolean,
): ConfigurationRecord | undefined {
  const at = w.pos;
  const b = w.bytes;
  const have = (n: number) => w.left >= n;
  if (!have(5)) return void w.need(5, "the configuration section");
  const nameLength = w.u32(at + 1);
  if (nameLength > MAX_MACHINE_NAME) {
    throw bad(
      `machine type name of ${nameLength} bytes is too long`,
      "bad-section",
      w.offset(at + 1),
    );
  }
  let p = at + 5;
  if (!have(5 + nameLength)) return void w.need(5 + nameLength, "the machine type");
  const machineType = latin1Decode(b.subarray(p, p + nameLength));
  p += nameLength;
  const subsections: ConfigurationSubsection[] = [];
  let capabilities: string[] = [];
  let targetPageBits: number | undefined;
  for (;;) {
    // Subsections follow while the next byte is 0x05; the input may also end here.
    if (p >= b.byteLength) {
      if (w.atEnd) break;
      return void w.need(p - at + 1, "the configuration section");
    }
    if (b[p] !== QEMU_VM_SUBSECTION) break;
    const subAt = p;
    if (!have(p - at + 2)) return void w.need(p - at + 2, "a configuration subsection");
    const nameLen = b[p + 1]!;
    if (!have(p - at + 2 + nameLen + 4)) {
      return void w.need(p - at + 2 + nameLen + 4, "a configuration subsection");
    }
    const name = latin1Decode(b.subarray(p + 2, p + 2 + nameLen));
    const versionId = w.u32(p + 2 + nameLen);
    p += 2 + nameLen + 4;
    const bodyAt = p;
    let bodyLength: number;
    if (name === "configuration/target-page-bits") {
      bodyLength = 4;
      if (!have(p - at + 4)) return void w.need(p - at + 4, "target-page-bits");
      targetPageBits = w.u32(p);
      if (targetPageBits < MIN_TARGET_PAGE_BITS || targetPageBits > MAX_TARGET_PAGE_BITS) {
        throw bad(`target page bits ${targetPageBits} out of range`, "bad-section", w.offset(p));
      }
    } else if (name === "configuration/capabilities") {
      if (!have(p - at + 4)) return void w.need(p - at + 4, "the capability count");
      const count = w.u32(p);
      if (count > MAX_CAPABILITIES) {
        throw bad(`${count} capabilities is too many`, "bad-section", w.offset(p));
      }
      let q = p + 4;
      capabilities = [];
      for (let i = 0; i < count; i++) {
        if (!have(q - at + 1)) return void w.need(q - at + 1, "a capability name");
        const len = b[q]!;
        if (!have(q - at + 1 + len)) return void w.need(q - at + 1 + len, "a capability name");
        const capability = latin1Decode(b.subarray(q + 1, q + 1 + len));
        // QEMU looks the name up as a C string (savevm.c `get_capability`): `mapped-ram\0x` is
        // mapped-ram to it. Two capabilities change how the RAMBlock list is read.
        const misread = nulMisreading(capability);
        if (misread !== undefined) {
          throw bad(
            `capability ${JSON.stringify(capability)} ${misread}`,
            "bad-section",
            w.offset(q),
          );
        }
        capabilities.push(capability);
        q += 1 + len;
      }
      bodyLength = q - p;
    } else if (name === "configuration/uuid") {
      bodyLength = 16;
      if (!have(p - at + 16)) return void w.need(p - at + 16, "the uuid");
    } else {
      throw bad(
        `unknown configuration subsection ${JSON.stringify(name)}`,
        "bad-section",
        w.offset(subAt),
      );
    }
    subsections.push({ name, versionId, body: b.slice(bodyAt, bodyAt + bodyLength) });
    p = bodyAt + bodyLength;
  }
  if (!mappedRam && capabilities.includes("mapped-ram")) {
    throw new UnsupportedFeatureError(
      "Cannot decode migration stream: it is a mapped-ram file (RAM pages at fixed file " +
        "offsets), which is read from an uncompressed regular file, not as a stream",
      "migration",
      w.offset(at),
    );
  }
  w.pos = p;
  return {
    kind: "configuration",
    streamOffset: w.offset(at),
    machineType,
    subsections,
    capabilities,
    targetPageBits,
  };
}
