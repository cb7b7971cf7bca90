/*
 * vmemtiny - a bare-metal x86 guest (32-bit, multiboot) that drives one
 * virtio-mem-pci device through its real virtio 1.x PCI interface, so that a
 * real QEMU produces migration streams with plugged and unplugged virtio-mem
 * blocks but without a Linux kernel's ~50 MB of boot RAM content.
 *
 * Written for vmem-dump's bundled demo data (scripts/make-demo-stream.ts).
 * Serial ports, the same shape as the Linux test guest (tests/_util/guest.ts):
 *   COM1 (ttyS0) log output; it prints "VMEM-GUEST: READY" when set up;
 *   COM2 (ttyS1) line protocol, each reply ends with "DONE <cmd> rc=<n>":
 *     ping
 *     info                    device config (block size, addr, sizes)
 *     plug FIRST COUNT        VIRTIO_MEM_REQ_PLUG for device blocks FIRST..
 *     unplug FIRST COUNT      VIRTIO_MEM_REQ_UNPLUG
 *     write FIRST COUNT       one marker page at the start of each block
 *                             (the blocks must be plugged)
 *
 * Memory above 4 GiB is reached through PAE paging: virtual 1-2 GiB maps the
 * device region in 2 MiB pages; 0-1 GiB and 3-4 GiB are identity-mapped.
 *
 * Build: gcc -m32 -ffreestanding -fno-pic -fno-stack-protector -nostdlib
 *        -O2 -static -Wl,-T,link.ld -Wl,-m,elf_i386 -o vmemtiny.elf vmemtiny.c
 * No 64-bit division is used (there is no 32-bit libgcc to link).
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

__asm__(
    ".section .multiboot, \"a\"\n"
    ".align 4\n"
    ".long 0x1BADB002\n"          /* multiboot v1 magic */
    ".long 0\n"                   /* flags: nothing requested */
    ".long -0x1BADB002\n"         /* checksum */
    ".text\n"
    ".globl _start\n"
    "_start:\n"
    "    cli\n"
    "    mov $stack_top, %esp\n"
    "    call guest_main\n"
    "1:  hlt\n"
    "    jmp 1b\n"
    ".section .bss\n"
    ".align 16\n"
    "stack: .skip 16384\n"
    "stack_top:\n"
    ".text\n");

extern u8 bss_start[], bss_end[];

#define barrier() __asm__ volatile("" ::: "memory")

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* ------------------------------------------------------------------ serial */
#define COM1 0x3f8
#define COM2 0x2f8

static void uart_init(u16 base)
{
    outb(base + 1, 0x00);   /* no interrupts */
    outb(base + 3, 0x80);   /* DLAB */
    outb(base + 0, 0x01);   /* 115200 baud */
    outb(base + 1, 0x00);
    outb(base + 3, 0x03);   /* 8N1 */
    outb(base + 2, 0xc7);   /* FIFO on, cleared */
    outb(base + 4, 0x03);   /* DTR, RTS */
}

static void uart_putc(u16 base, char c)
{
    while (!(inb(base + 5) & 0x20)) {}
    outb(base, (u8)c);
}

static char uart_getc(u16 base)
{
    while (!(inb(base + 5) & 0x01)) __asm__ volatile("pause");
    return (char)inb(base);
}

/* output goes to the log port and, while a command runs, to the command port too */
static int echo_cmd;

static void putc_both(char c)
{
    uart_putc(COM1, c);
    if (echo_cmd) uart_putc(COM2, c);
}

static void puts_(const char *s) { while (*s) putc_both(*s++); }

static void put_hex(u64 v)
{
    int started = 0;
    puts_("0x");
    for (int shift = 60; shift >= 0; shift -= 4) {
        u32 d = (u32)(v >> shift) & 0xf;
        if (d || started || shift == 0) { putc_both("0123456789abcdef"[d]); started = 1; }
    }
}

static void put_dec(u32 v)
{
    char buf[12];
    int n = 0;
    do { buf[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) putc_both(buf[--n]);
}

/* ------------------------------------------------------------------ PCI */
static u32 pci_cfg_addr(u32 dev, u32 off) { return 0x80000000u | (dev << 11) | (off & 0xfc); }
static u32 pci_read32(u32 dev, u32 off) { outl(0xcf8, pci_cfg_addr(dev, off)); return inl(0xcfc); }
static void pci_write32(u32 dev, u32 off, u32 v) { outl(0xcf8, pci_cfg_addr(dev, off)); outl(0xcfc, v); }
static u8 pci_read8(u32 dev, u32 off) { return (u8)(pci_read32(dev, off) >> ((off & 3) * 8)); }

/* ------------------------------------------------------------------ virtio */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8

#define VIRTIO_MEM_REQ_PLUG 0
#define VIRTIO_MEM_REQ_UNPLUG 1
#define VIRTIO_MEM_RESP_ACK 0

#define QSZ 8

struct vq_desc { u64 addr; u32 len; u16 flags; u16 next; };
struct vq_avail { u16 flags; u16 idx; u16 ring[QSZ]; u16 used_event; };
struct vq_used_elem { u32 id; u32 len; };
struct vq_used { u16 flags; u16 idx; struct vq_used_elem ring[QSZ]; u16 avail_event; };

static struct vq_desc vq_desc[QSZ] __attribute__((aligned(4096)));
static struct vq_avail vq_avail __attribute__((aligned(4096)));
static struct vq_used vq_used __attribute__((aligned(4096)));
static u16 last_used;

struct mem_req { u16 type; u16 pad[3]; u64 addr; u16 nb_blocks; u16 pad2[3]; };
struct mem_resp { u16 type; u16 pad[3]; u16 state; u16 pad2[3]; };
static struct mem_req req __attribute__((aligned(64)));
static struct mem_resp resp __attribute__((aligned(64)));

static volatile u8 *common;   /* struct virtio_pci_common_cfg */
static volatile u8 *devcfg;   /* struct virtio_mem_config */
static volatile u16 *notify;

#define C8(o) (*(volatile u8 *)(common + (o)))
#define C16(o) (*(volatile u16 *)(common + (o)))
#define C32(o) (*(volatile u32 *)(common + (o)))

static u64 cfg64(u32 off)
{
    u32 lo = *(volatile u32 *)(devcfg + off);
    u32 hi = *(volatile u32 *)(devcfg + off + 4);
    return ((u64)hi << 32) | lo;
}
#define CFG_BLOCK_SIZE 0x00
#define CFG_ADDR 0x10
#define CFG_REGION_SIZE 0x18
#define CFG_USABLE 0x20
#define CFG_PLUGGED 0x28
#define CFG_REQUESTED 0x30

static u64 bar_address(u32 dev, u32 bar)
{
    u32 lo = pci_read32(dev, 0x10 + 4 * bar);
    u64 a = lo & ~0xfu;
    if ((lo & 0x6) == 0x4) a |= (u64)pci_read32(dev, 0x14 + 4 * bar) << 32;
    return a;
}

static int virtio_mem_init(void)
{
    u32 dev;
    for (dev = 0; dev < 32; dev++) {
        if (pci_read32(dev, 0) == 0x10581af4u) break;   /* 1af4:1058 virtio-mem */
    }
    if (dev == 32) { puts_("no virtio-mem device\n"); return -1; }
    pci_write32(dev, 0x04, pci_read32(dev, 0x04) | 0x6);   /* memory space + bus master */
    u32 notify_mult = 0, notify_off = 0;
    u8 cap = pci_read8(dev, 0x34);
    while (cap) {
        if (pci_read8(dev, cap) == 0x09) {   /* vendor-specific: virtio */
            u8 type = pci_read8(dev, cap + 3);
            u8 bar = pci_read8(dev, cap + 4);
            u32 off = pci_read32(dev, cap + 8);
            u64 base = bar_address(dev, bar) + off;
            if (base >> 32) { puts_("virtio BAR above 4 GiB\n"); return -1; }
            if (type == VIRTIO_PCI_CAP_COMMON_CFG) common = (volatile u8 *)(u32)base;
            if (type == VIRTIO_PCI_CAP_DEVICE_CFG) devcfg = (volatile u8 *)(u32)base;
            if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
                notify_off = (u32)base;
                notify_mult = pci_read32(dev, cap + 16);
            }
        }
        cap = pci_read8(dev, cap + 1);
    }
    if (!common || !devcfg || !notify_off) { puts_("virtio capabilities missing\n"); return -1; }

    C8(0x14) = 0;                                   /* device_status: reset */
    while (C8(0x14) != 0) {}
    C8(0x14) = STATUS_ACKNOWLEDGE;
    C8(0x14) = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
    C32(0x00) = 0;                                  /* device_feature_select */
    u32 f0 = C32(0x04);
    C32(0x00) = 1;
    u32 f1 = C32(0x04);
    C32(0x08) = 0;                                  /* driver_feature_select */
    C32(0x0c) = f0 & 0x3;                           /* ACPI_PXM, UNPLUGGED_INACCESSIBLE */
    C32(0x08) = 1;
    C32(0x0c) = f1 & 0x1;                           /* VIRTIO_F_VERSION_1 */
    C8(0x14) = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
    if (!(C8(0x14) & STATUS_FEATURES_OK)) { puts_("features rejected\n"); return -1; }

    C16(0x16) = 0;                                  /* queue_select */
    if (C16(0x18) < QSZ) { puts_("queue too small\n"); return -1; }
    C16(0x18) = QSZ;                                /* queue_size */
    C32(0x20) = (u32)vq_desc; C32(0x24) = 0;        /* queue_desc */
    C32(0x28) = (u32)&vq_avail; C32(0x2c) = 0;      /* queue_driver */
    C32(0x30) = (u32)&vq_used; C32(0x34) = 0;       /* queue_device */
    notify = (volatile u16 *)(notify_off + C16(0x1e) * notify_mult);
    C16(0x1c) = 1;                                  /* queue_enable */
    C8(0x14) = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
    puts_("virtio-mem at PCI 00:");
    put_dec(dev);
    puts_(", features ");
    put_hex(((u64)f1 << 32) | f0);
    puts_("\n");
    return 0;
}

static int mem_request(u16 type, u64 addr, u16 nb_blocks)
{
    req.type = type;
    req.addr = addr;
    req.nb_blocks = nb_blocks;
    resp.type = 0xffff;
    vq_desc[0].addr = (u32)&req; vq_desc[0].len = sizeof(req); vq_desc[0].flags = 1; vq_desc[0].next = 1;
    vq_desc[1].addr = (u32)&resp; vq_desc[1].len = sizeof(resp); vq_desc[1].flags = 2; vq_desc[1].next = 0;
    vq_avail.ring[vq_avail.idx % QSZ] = 0;
    barrier();
    vq_avail.idx++;
    barrier();
    *notify = 0;
    for (u32 spin = 0; *(volatile u16 *)&vq_used.idx == last_used; spin++) {
        if (spin > 100000000u) return -1;
        __asm__ volatile("pause");
    }
    last_used++;
    barrier();
    return resp.type;
}

/* ------------------------------------------------------------------ paging */
#define WINDOW 0x40000000u   /* virtual 1 GiB .. 2 GiB -> the device region */

static u64 pdpt[4] __attribute__((aligned(32)));
static u64 pd_low[512] __attribute__((aligned(4096)));
static u64 pd_window[512] __attribute__((aligned(4096)));
static u64 pd_high[512] __attribute__((aligned(4096)));

static void paging_init(u64 region_gpa)
{
    for (u32 i = 0; i < 512; i++) {
        pd_low[i] = ((u64)i << 21) | 0x83;                          /* present, rw, 2 MiB */
        pd_high[i] = (0xc0000000ull + ((u64)i << 21)) | 0x9b;       /* + PWT, PCD */
        pd_window[i] = (region_gpa + ((u64)i << 21)) | 0x83;
    }
    pdpt[0] = (u32)pd_low | 1;
    pdpt[1] = (u32)pd_window | 1;
    pdpt[3] = (u32)pd_high | 1;
    __asm__ volatile(
        "mov %0, %%cr3\n"
        "mov %%cr4, %%eax\n"
        "or $0x20, %%eax\n"          /* CR4.PAE */
        "mov %%eax, %%cr4\n"
        "mov %%cr0, %%eax\n"
        "or $0x80000000, %%eax\n"    /* CR0.PG */
        "mov %%eax, %%cr0\n"
        : : "r"((u32)pdpt) : "eax", "memory");
}

/* ------------------------------------------------------------------ commands */
static u32 parse_u32(const char **p)
{
    u32 v = 0;
    while (**p == ' ') (*p)++;
    while (**p >= '0' && **p <= '9') v = v * 10 + (u32)(*(*p)++ - '0');
    return v;
}

static int starts(const char *s, const char *word)
{
    while (*word) if (*s++ != *word++) return 0;
    return *s == 0 || *s == ' ';
}

/* one 4 KiB page: 64 lines "DATA block=NNN gpa=0x... line=NN ####\n" */
static void write_marker(u32 block, u64 gpa, volatile u8 *dst)
{
    static const char hex[] = "0123456789abcdef";
    for (u32 line = 0; line < 64; line++) {
        char l[64];
        u32 n = 0;
        const char *head = "DATA block=";
        while (*head) l[n++] = *head++;
        l[n++] = (char)('0' + block / 100 % 10); l[n++] = (char)('0' + block / 10 % 10);
        l[n++] = (char)('0' + block % 10);
        head = " gpa=0x";
        while (*head) l[n++] = *head++;
        for (int s = 44; s >= 0; s -= 4) l[n++] = hex[(u32)(gpa >> s) & 0xf];
        head = " line=";
        while (*head) l[n++] = *head++;
        l[n++] = (char)('0' + line / 10); l[n++] = (char)('0' + line % 10);
        l[n++] = ' ';
        while (n < 63) l[n++] = '#';
        l[63] = '\n';
        for (u32 i = 0; i < 64; i++) dst[line * 64 + i] = (u8)l[i];
    }
}

static int run(const char *cmd)
{
    const char *p = cmd;
    while (*p && *p != ' ') p++;
    u64 block_size = cfg64(CFG_BLOCK_SIZE);
    u64 base = cfg64(CFG_ADDR);
    if (starts(cmd, "ping")) return 0;
    if (starts(cmd, "info")) {
        puts_("block-size "); put_hex(block_size);
        puts_(" addr "); put_hex(base);
        puts_(" region-size "); put_hex(cfg64(CFG_REGION_SIZE));
        puts_(" usable-region-size "); put_hex(cfg64(CFG_USABLE));
        puts_(" plugged-size "); put_hex(cfg64(CFG_PLUGGED));
        puts_(" requested-size "); put_hex(cfg64(CFG_REQUESTED));
        puts_("\n");
        return 0;
    }
    u32 first = parse_u32(&p);
    u32 count = parse_u32(&p);
    if (count == 0 || count > 65535) { puts_("bad block count\n"); return 2; }
    if (starts(cmd, "plug") || starts(cmd, "unplug")) {
        int plug = starts(cmd, "plug");
        int r = mem_request(plug ? VIRTIO_MEM_REQ_PLUG : VIRTIO_MEM_REQ_UNPLUG,
                            base + (u64)first * block_size, (u16)count);
        puts_(plug ? "plug " : "unplug ");
        put_dec(first); puts_("+"); put_dec(count);
        puts_(r == VIRTIO_MEM_RESP_ACK ? " ack\n" : " refused\n");
        return r == VIRTIO_MEM_RESP_ACK ? 0 : 1;
    }
    if (starts(cmd, "write")) {
        if ((u64)(first + count) * block_size > 0x40000000ull) { puts_("beyond window\n"); return 2; }
        for (u32 b = first; b < first + count; b++) {
            u32 off = b * (u32)block_size;
            write_marker(b, base + off, (volatile u8 *)(WINDOW + off));
        }
        puts_("wrote "); put_dec(count); puts_(" pages\n");
        return 0;
    }
    puts_("unknown command\n");
    return 127;
}

void guest_main(void)
{
    for (u8 *p = bss_start; p < bss_end; p++) *p = 0;
    uart_init(COM1);
    uart_init(COM2);
    puts_("VMEM-GUEST: vmemtiny started\n");
    if (virtio_mem_init() != 0) { puts_("VMEM-GUEST: FAILED\n"); return; }
    paging_init(cfg64(CFG_ADDR));
    puts_("VMEM-GUEST: READY\n");
    char line[80];
    for (;;) {
        u32 n = 0;
        for (;;) {
            char c = uart_getc(COM2);
            if (c == '\r') continue;
            if (c == '\n') break;
            if (n < sizeof(line) - 1) line[n++] = c;
        }
        line[n] = 0;
        u32 w = 0;
        while (line[w] && line[w] != ' ') w++;
        puts_("VMEM-GUEST: command ");
        puts_(line);
        puts_("\n");
        echo_cmd = 1;
        int rc = run(line);
        echo_cmd = 0;
        line[w] = 0;
        const char *done = "DONE ";
        while (*done) uart_putc(COM2, *done++);
        for (const char *s = line; *s; s++) uart_putc(COM2, *s);
        const char *rcs = " rc=";
        while (*rcs) uart_putc(COM2, *rcs++);
        char d[4]; int k = 0; u32 v = (u32)rc;
        do { d[k++] = (char)('0' + v % 10); v /= 10; } while (v && k < 4);
        while (k) uart_putc(COM2, d[--k]);
        uart_putc(COM2, '\n');
    }
}
