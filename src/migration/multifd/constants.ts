/**
 * Wire constants of QEMU's multifd channels, named as in QEMU's
 * migration/multifd.h (7.2 and 10.0) so they grep.
 *
 * @module
 */

/** First be32 of a channel's initial packet and of every packet (MULTIFD_MAGIC). */
export const MULTIFD_MAGIC = 0x11223344;
/** The only version QEMU 7.2 to 10.x send and accept (MULTIFD_VERSION). */
export const MULTIFD_VERSION = 1;

/** The packet ends a sync round; the main channel's EOS or MULTIFD_FLUSH waits for it. */
export const MULTIFD_FLAG_SYNC = 1 << 0;
/** The five compression bits (QEMU 7.2 reserved three of them). */
export const MULTIFD_FLAG_COMPRESSION_MASK = 0x1f << 1;
/** No compression (also what packets without page data carry). */
export const MULTIFD_FLAG_NOCOMP = 0 << 1;
/** zlib: one deflate stream per channel, `Z_SYNC_FLUSH` at the end of every packet. */
export const MULTIFD_FLAG_ZLIB = 1 << 1;
/** zstd: one zstd stream per channel, `ZSTD_e_flush` at the end of every packet. */
export const MULTIFD_FLAG_ZSTD = 2 << 1;
/** Intel QPL (QEMU >= 9.1). */
export const MULTIFD_FLAG_QPL = 4 << 1;
/** Huawei UADK (QEMU >= 9.1). */
export const MULTIFD_FLAG_UADK = 8 << 1;
/** Intel QATzip (QEMU >= 9.2). */
export const MULTIFD_FLAG_QATZIP = 16 << 1;
/** The packet carries device state (`MultiFDPacketDeviceState_t`, QEMU >= 10.0, VFIO). */
export const MULTIFD_FLAG_DEVICE_STATE = 32 << 1;
/** Every flag bit QEMU defines; any other bit is refused. */
export const MULTIFD_KNOWN_FLAGS = MULTIFD_FLAG_SYNC | MULTIFD_FLAG_COMPRESSION_MASK |
  MULTIFD_FLAG_DEVICE_STATE;

/** Page data per packet: the offset table has `MULTIFD_PACKET_SIZE / pageSize` slots. */
export const MULTIFD_PACKET_SIZE = 512 * 1024;

/** Size of the `ramblock` name field. */
export const MULTIFD_RAMBLOCK_NAME_SIZE = 256;

/**
 * Largest compressed payload accepted after a packet header. QEMU sizes its
 * buffers with `compressBound(MULTIFD_PACKET_SIZE)` (zlib, zstd), a little
 * more than the packet; twice the packet leaves room for every codec.
 */
export const MULTIFD_MAX_COMPRESSED_BYTES = 2 * MULTIFD_PACKET_SIZE;

/**
 * Largest device-state payload accepted after a device-state packet header
 * (QEMU's VFIO sends the device state in chunks of at most a few MiB).
 */
export const MULTIFD_MAX_DEVICE_STATE_BYTES = 64 << 20;

/** A compression method of a multifd packet. */
export type MultifdCompression = "none" | "zlib" | "zstd" | "qpl" | "uadk" | "qatzip";

/** Compression bits (`flags & MULTIFD_FLAG_COMPRESSION_MASK`) to method. */
export const MULTIFD_COMPRESSION_BY_FLAG: ReadonlyMap<number, MultifdCompression> = new Map([
  [MULTIFD_FLAG_NOCOMP, "none"],
  [MULTIFD_FLAG_ZLIB, "zlib"],
  [MULTIFD_FLAG_ZSTD, "zstd"],
  [MULTIFD_FLAG_QPL, "qpl"],
  [MULTIFD_FLAG_UADK, "uadk"],
  [MULTIFD_FLAG_QATZIP, "qatzip"],
]);
