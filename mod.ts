/**
 * vmem-dump: read, rewrite and check QEMU migration streams and guest memory
 * dumps while knowing which virtio-mem memory is unplugged.
 *
 * @example Decode a stream and count its RAM pages
 * ```ts ignore
 * import { decodeMigration, openInput } from "@vmem-dump/vmem-dump";
 * const input = await openInput("s1.mig");
 * let pages = 0;
 * for await (const r of decodeMigration(input.reader)) if (r.kind === "ram-page") pages++;
 * input.close();
 * console.log(pages);
 * ```
 *
 * @module
 */

export * from "./src/errors.ts";
export * from "./src/io/byte_reader.ts";
export * from "./src/io/byte_writer.ts";
export * from "./src/io/endian.ts";
export * from "./src/io/file.ts";
export * from "./src/io/ordered_sink.ts";
export * from "./src/io/endpoint.ts";
export * from "./src/io/socket.ts";
export * from "./src/migration/mod.ts";
export * from "./src/vmem/mod.ts";
export * from "./src/io/positional.ts";
export * from "./src/io/wire.ts";
export * from "./src/io/positional_byte_reader.ts";
export * from "./src/io/hash.ts";
export * from "./src/elf/mod.ts";
export * from "./src/kdump/mod.ts";
export * from "./src/raw/mod.ts";
export * from "./src/dumps/mod.ts";
export * from "./src/scan/mod.ts";
export * from "./src/container/mod.ts";
export * from "./src/proxy/mod.ts";
export * from "./src/input/mod.ts";
