/**
 * The libvirt save image header as `inspect` shows it (text and JSON), before
 * the report of the migration stream inside.
 *
 * @module
 */

import { libvirtCompressionName, type LibvirtSaveHeader } from "../src/container/libvirt_save.ts";
import { grouped } from "./_format.ts";

/** The libvirt save image header, for `inspect` of such an image (JSON view). */
export function describeLibvirtHeader(h: LibvirtSaveHeader): Record<string, unknown> {
  return {
    magic: h.magic,
    version: h.version,
    littleEndian: h.littleEndian,
    dataByteLength: h.dataLength,
    wasRunning: h.wasRunning === 1,
    compression: libvirtCompressionName(h.compression),
    cookieOffset: h.cookieOffset,
    headerByteLength: h.headerBytes.byteLength,
    xml: h.xml,
    ...(h.cookie !== undefined ? { cookie: h.cookie } : {}),
  };
}

/** The libvirt save image header as text (before the stream report). */
export function renderLibvirtHeader(h: LibvirtSaveHeader): string {
  const name = /<name>([^<]*)<\/name>/.exec(h.xml)?.[1];
  const uuid = /<uuid>([^<]*)<\/uuid>/.exec(h.xml)?.[1];
  let out = `libvirt:  ${h.magic} version ${h.version} (${
    h.littleEndian ? "little" : "big"
  }-endian), payload ${libvirtCompressionName(h.compression)}, ${
    h.wasRunning === 1 ? "was running" : "was paused"
  }, header ${grouped(h.headerBytes.byteLength)} bytes\n`;
  out += `domain:   ${name ?? "(no <name>)"}${uuid ? ` ${uuid}` : ""}, XML ${
    grouped(h.xml.length)
  } chars${
    h.cookie !== undefined ? `, cookie ${grouped(h.cookie.length)} chars` : ", no cookie"
  }\n`;
  return out;
}
