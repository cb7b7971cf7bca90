/**
 * Wire constants of the QEMU migration stream, named as in QEMU's
 * migration/savevm.h, migration/savevm.c and migration/ram.h so they grep.
 *
 * @module
 */

/** "QEVM": first be32 of every stream (QEMU_VM_FILE_MAGIC). */
export const QEMU_VM_FILE_MAGIC = 0x5145564d;
/** The only stream version QEMU accepts (QEMU_VM_FILE_VERSION). */
export const QEMU_VM_FILE_VERSION = 3;

/** End of the main loop. */
export const QEMU_VM_EOF = 0x00;
/** Section start (long header). */
export const QEMU_VM_SECTION_START = 0x01;
/** Section part (short header). */
export const QEMU_VM_SECTION_PART = 0x02;
/** Section end (short header). */
export const QEMU_VM_SECTION_END = 0x03;
/** Full section (long header). */
export const QEMU_VM_SECTION_FULL = 0x04;
/** Subsection marker inside a vmstate body. */
export const QEMU_VM_SUBSECTION = 0x05;
/** vmdesc JSON trailer after EOF. */
export const QEMU_VM_VMDESCRIPTION = 0x06;
/** Configuration section after the header. */
export const QEMU_VM_CONFIGURATION = 0x07;
/** Command. */
export const QEMU_VM_COMMAND = 0x08;
/** Section footer marker. */
export const QEMU_VM_SECTION_FOOTER = 0x7e;

/** MIG_CMD_* values (migration/savevm.c). */
export const MIG_CMD_INVALID = 0;
/** Destination opens the return path. */
export const MIG_CMD_OPEN_RETURN_PATH = 1;
/** be32 value, answered by a PONG on the return path. */
export const MIG_CMD_PING = 2;
/** Postcopy advise: 0 or 16 bytes. */
export const MIG_CMD_POSTCOPY_ADVISE = 3;
/** Postcopy listen. */
export const MIG_CMD_POSTCOPY_LISTEN = 4;
/** Postcopy run. */
export const MIG_CMD_POSTCOPY_RUN = 5;
/** Postcopy RAM discard ranges. */
export const MIG_CMD_POSTCOPY_RAM_DISCARD = 6;
/** be32 length, then that many bytes of nested stream. */
export const MIG_CMD_PACKAGED = 7;
/** COLO. */
export const MIG_CMD_ENABLE_COLO = 8;
/** Postcopy resume. */
export const MIG_CMD_POSTCOPY_RESUME = 9;
/** Postcopy recovery bitmap request. */
export const MIG_CMD_RECV_BITMAP = 10;
/** Switchover start (QEMU >= 10.0 machine types). */
export const MIG_CMD_SWITCHOVER_START = 11;

/** RAM record flags (migration/ram.h). */
export const RAM_SAVE_FLAG_FULL = 0x001;
/** Zero page; payload u8 fill. */
export const RAM_SAVE_FLAG_ZERO = 0x002;
/** Block list (ram START only). */
export const RAM_SAVE_FLAG_MEM_SIZE = 0x004;
/** Full page. */
export const RAM_SAVE_FLAG_PAGE = 0x008;
/** End of section body. */
export const RAM_SAVE_FLAG_EOS = 0x010;
/** Same block as the previous record: idstr omitted. */
export const RAM_SAVE_FLAG_CONTINUE = 0x020;
/** XBZRLE delta page. */
export const RAM_SAVE_FLAG_XBZRLE = 0x040;
/** RDMA hook (unsupported in a byte stream). */
export const RAM_SAVE_FLAG_HOOK = 0x080;
/** zlib-compressed page (QEMU <= 9.0). */
export const RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100;
/** multifd flush barrier (QEMU >= 8.1). */
export const RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200;

/** The only XBZRLE encoding byte QEMU writes (ENCODING_FLAG_XBZRLE). */
export const ENCODING_FLAG_XBZRLE = 0x01;

/** idstr of the RAM iterable section. */
export const RAM_SECTION_IDSTR = "ram";
/** The RAM section version QEMU accepts. */
export const RAM_SECTION_VERSION = 4;
/** idstr suffix of the early virtio-mem section (QEMU >= 8.0 machine types). */
export const VIRTIO_MEM_EARLY_SUFFIX = "/virtio-mem-device-early";
/** idstr suffix of the virtio-mem device section. */
export const VIRTIO_MEM_DEVICE_SUFFIX = "/virtio-mem";
/** Target page size of x86 and of every target vmem-dump handles by default. */
export const DEFAULT_PAGE_SIZE = 4096;

/** Return-path messages, destination to source (MIG_RP_MSG_*, migration/migration.c). */
export const MIG_RP_MSG_INVALID = 0;
/** The destination sends no more messages; be32 error flag (0: loaded fine). */
export const MIG_RP_MSG_SHUT = 1;
/** Answer to a PING command: the be32 value of the PING. */
export const MIG_RP_MSG_PONG = 2;
/** Postcopy page request with a RAMBlock name: be64 start, be32 length, idstr. */
export const MIG_RP_MSG_REQ_PAGES_ID = 3;
/** Postcopy page request: be64 start, be32 length. */
export const MIG_RP_MSG_REQ_PAGES = 4;
/** Postcopy recovery: the received bitmap of a RAMBlock follows. */
export const MIG_RP_MSG_RECV_BITMAP = 5;
/** Postcopy recovery: the destination is ready to resume; be32 value. */
export const MIG_RP_MSG_RESUME_ACK = 6;
/** The destination agrees to switch over (`switchover-ack`, QEMU >= 8.1); no payload. */
export const MIG_RP_MSG_SWITCHOVER_ACK = 7;
