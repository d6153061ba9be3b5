/*
 * capsa-vmm's freestanding test guest. Entered in 64-bit mode with %rsi pointing at the Linux
 * zero page, it finds the virtio-mmio devices named on the command line, reads and writes a
 * sector of the virtio-blk disk, echoes a message over vsock to a host client and opens a
 * connection of its own to the host, writes to a named virtio-console port, signals the boot
 * timer and resets through the i8042. With capsa.test=snapshot it instead fills memory (and
 * reads its disk, opens a vsock connection to the host and dirties a block to free, for the
 * devices it has), asks for a snapshot at its snapshot point (124 to the boot-timer port)
 * and, running again (after a restore, or at once when no snapshot was asked for), checks its
 * memory and a register, writes and reads the disk, waits for vsock's transport reset and
 * connects again, and reports the block free to the balloon. With capsa.test=reporting it
 * dirties a block, reports it free and checks it reads as zeros.
 * Everything it checks is printed on COM1 as "ok: ..." or "FAIL: ..."; the host test reads it.
 * Guest kernel code is emulated slowly on nested-PVM hosts, so the work is kept small.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

__asm__(".section .text.start\n"
        ".global _start\n"
        "_start:\n"
        "  mov stack_top(%rip), %rsp\n"
        "  mov %rsi, %rdi\n"
        "  call guest_main\n"
        "1: hlt\n"
        "  jmp 1b\n");

static u8 stack[16384] __attribute__((aligned(16)));
u8 *stack_top = stack + sizeof(stack);

/* ---- port and MMIO access ---------------------------------------------------------------- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read(u64 base, u32 off) { return *(volatile u32 *)(base + off); }
static inline void mmio_write(u64 base, u32 off, u32 v) { *(volatile u32 *)(base + off) = v; }
static inline void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }

/* ---- console ------------------------------------------------------------------------------ */
static void putc(char c) {
  for (int i = 0; i < 1000 && !(inb(0x3f8 + 5) & 0x20); i++) {}
  outb(0x3f8, (u8)c);
}
static void puts(const char *s) { while (*s) putc(*s++); }
static void poweroff(void) {
  outb(0x64, 0xfe); /* i8042 reset: the VMM stops the VM */
  for (;;) __asm__ volatile("hlt");
}
static int failures;
static void check(int ok, const char *what) {
  puts(ok ? "ok: " : "FAIL: ");
  puts(what);
  putc('\n');
  if (!ok) failures++;
}

static void *memcpy_(void *d, const void *s, u64 n) { u8 *a = d; const u8 *b = s; while (n--) *a++ = *b++; return d; }
static int memeq(const void *x, const void *y, u64 n) { const u8 *a = x, *b = y; while (n--) if (*a++ != *b++) return 0; return 1; }
static u64 strlen_(const char *s) { u64 n = 0; while (s[n]) n++; return n; }

/* ---- the command line: virtio_mmio.device=4K@0xADDR:IRQ --------------------------------- */
static u64 parse_hex(const char **p) {
  u64 v = 0;
  for (;;) {
    char c = **p;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return v;
    v = v * 16 + (u64)d;
    (*p)++;
  }
}
static int find_devices(const char *cmdline, u64 *bases, int max) {
  const char *key = "virtio_mmio.device=4K@0x";
  u64 klen = strlen_(key);
  int n = 0;
  for (const char *p = cmdline; *p && n < max; p++) {
    if (memeq(p, key, klen)) {
      p += klen;
      bases[n++] = parse_hex(&p);
    }
  }
  return n;
}

/* ---- virtio-mmio and split virtqueues ------------------------------------------------------ */
#define QSIZE 8
struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QSIZE]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QSIZE]; u16 avail_event; };
struct queue {
  struct desc desc[QSIZE] __attribute__((aligned(16)));
  struct avail avail __attribute__((aligned(2)));
  struct used used __attribute__((aligned(4)));
  u16 last_used;
  u64 base;
  u32 index;
};
#define F_NEXT 1
#define F_WRITE 2

static int device_init(u64 base, struct queue *qs, int nq, u32 features_low) {
  mmio_write(base, 0x70, 0);
  mmio_write(base, 0x70, 1 | 2);
  mmio_write(base, 0x14, 1);
  if (!(mmio_read(base, 0x10) & 1)) return 0; /* VERSION_1 */
  mmio_write(base, 0x24, 0);
  mmio_write(base, 0x20, features_low);
  mmio_write(base, 0x24, 1);
  mmio_write(base, 0x20, 1);
  mmio_write(base, 0x70, 1 | 2 | 8);
  if (!(mmio_read(base, 0x70) & 8)) return 0;
  for (int i = 0; i < nq; i++) {
    struct queue *q = &qs[i];
    q->base = base;
    q->index = (u32)i;
    mmio_write(base, 0x30, (u32)i);
    if (mmio_read(base, 0x34) < QSIZE) return 0;
    mmio_write(base, 0x38, QSIZE);
    mmio_write(base, 0x80, (u32)(u64)q->desc);
    mmio_write(base, 0x84, (u32)((u64)q->desc >> 32));
    mmio_write(base, 0x90, (u32)(u64)&q->avail);
    mmio_write(base, 0x94, (u32)((u64)&q->avail >> 32));
    mmio_write(base, 0xa0, (u32)(u64)&q->used);
    mmio_write(base, 0xa4, (u32)((u64)&q->used >> 32));
    mmio_write(base, 0x44, 1);
  }
  mmio_write(base, 0x70, 1 | 2 | 8 | 4);
  return (mmio_read(base, 0x70) & 0x40) == 0;
}

/* Makes descriptor `head` available and kicks the device. */
static void submit(struct queue *q, u16 head) {
  q->avail.ring[q->avail.idx % QSIZE] = head;
  barrier();
  q->avail.idx++;
  barrier();
  mmio_write(q->base, 0x50, q->index);
}

/* Waits for the next used element; returns its index in the used ring, or -1 on timeout. */
static int wait_used(struct queue *q, u64 cycles) {
  u64 deadline = rdtsc() + cycles;
  while (*(volatile u16 *)&q->used.idx == q->last_used) {
    if (rdtsc() > deadline) return -1;
    __asm__ volatile("pause");
  }
  barrier();
  return q->last_used++ % QSIZE;
}

#define SECONDS(n) ((u64)(n) * 3000000000ul)

/* ---- virtio-blk ---------------------------------------------------------------------------- */
static struct queue blkq;
static struct { u32 type; u32 reserved; u64 sector; } blk_hdr;
static u8 sector_buf[512];
static u8 blk_status;

static int blk_request(u32 type, u64 sector, int with_data) {
  blk_hdr.type = type;
  blk_hdr.sector = sector;
  blk_status = 0xff;
  blkq.desc[0] = (struct desc){(u64)&blk_hdr, sizeof(blk_hdr), F_NEXT, 1};
  u16 status_desc = 1;
  if (with_data) {
    blkq.desc[1] = (struct desc){(u64)sector_buf, 512, (u16)(F_NEXT | (type == 0 ? F_WRITE : 0)), 2};
    status_desc = 2;
  }
  blkq.desc[status_desc] = (struct desc){(u64)&blk_status, 1, F_WRITE, 0};
  submit(&blkq, 0);
  return wait_used(&blkq, SECONDS(10)) >= 0 && blk_status == 0;
}

static void test_block(u64 base) {
  if (!device_init(base, &blkq, 1, 0)) { check(0, "virtio-blk set-up"); return; }
  check(blk_request(0, 0, 1) && memeq(sector_buf, "CAPSA-TEST-DISK", 15), "virtio-blk read sector 0");
  memcpy_(sector_buf, "WRITTEN-BY-GUEST", 16);
  check(blk_request(1, 1, 1), "virtio-blk write sector 1");
  check(blk_request(4, 0, 0), "virtio-blk flush");
}

/* ---- virtio-vsock -------------------------------------------------------------------------- */
struct vsock_hdr {
  u64 src_cid, dst_cid;
  u32 src_port, dst_port, len;
  u16 type, op;
  u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));
enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST };

static struct queue vq[3];
static u8 rx_bufs[QSIZE][512];
static u8 tx_buf[512];
static u64 guest_cid;

static void rx_post(u16 i) {
  vq[0].desc[i] = (struct desc){(u64)rx_bufs[i], sizeof(rx_bufs[i]), F_WRITE, 0};
  submit(&vq[0], i);
}

/* Waits for a packet with operation `op` (others are dropped); copies it to `out`. */
static int vsock_recv(u16 op, struct vsock_hdr *out, u8 *payload, u32 max) {
  for (;;) {
    int slot = wait_used(&vq[0], SECONDS(30));
    if (slot < 0) return 0;
    u16 id = (u16)vq[0].used.ring[slot].id;
    struct vsock_hdr *h = (struct vsock_hdr *)rx_bufs[id];
    int match = h->op == op;
    if (match) {
      memcpy_(out, h, sizeof(*h));
      if (payload) memcpy_(payload, rx_bufs[id] + sizeof(*h), h->len < max ? h->len : max);
    }
    rx_post(id);
    if (match) return 1;
  }
}

static u32 fwd_cnt;
static void vsock_send(u32 src_port, u32 dst_port, u16 op, u32 flags, const void *data, u32 len) {
  struct vsock_hdr h = {guest_cid, 2, src_port, dst_port, len, 1, op, flags, 65536, fwd_cnt};
  memcpy_(tx_buf, &h, sizeof(h));
  memcpy_(tx_buf + sizeof(h), data, len);
  vq[1].desc[0] = (struct desc){(u64)tx_buf, (u32)sizeof(h) + len, 0, 0};
  submit(&vq[1], 0);
  wait_used(&vq[1], SECONDS(10));
}

/* Connects from guest port `port` to host port 5000 and sends `msg`; closes it if `close`. */
static int vsock_hello(u32 port, const char *msg, int close) {
  struct vsock_hdr h;
  vsock_send(port, 5000, OP_REQUEST, 0, 0, 0);
  if (!vsock_recv(OP_RESPONSE, &h, 0, 0) || h.src_port != 5000) return 0;
  vsock_send(port, 5000, OP_RW, 0, msg, (u32)strlen_(msg));
  if (!close) return 1;
  vsock_send(port, 5000, OP_SHUTDOWN, 3, 0, 0);
  return vsock_recv(OP_RST, &h, 0, 0) && h.src_port == 5000;
}

static void test_vsock(u64 base) {
  if (!device_init(base, vq, 3, 0)) { check(0, "virtio-vsock set-up"); return; }
  guest_cid = mmio_read(base, 0x100) | ((u64)mmio_read(base, 0x104) << 32);
  check(guest_cid == 3, "virtio-vsock guest CID is 3");
  for (u16 i = 0; i < QSIZE; i++) rx_post(i);

  /* Host to guest: a host client asked for port 1234; accept it and echo what it sends. */
  struct vsock_hdr h;
  u8 msg[64];
  if (!vsock_recv(OP_REQUEST, &h, 0, 0) || h.dst_port != 1234) { check(0, "vsock: host connects to port 1234"); return; }
  u32 host_port = h.src_port;
  vsock_send(1234, host_port, OP_RESPONSE, 0, 0, 0);
  if (!vsock_recv(OP_RW, &h, msg, sizeof(msg))) { check(0, "vsock: data from the host"); return; }
  fwd_cnt += h.len;
  vsock_send(1234, host_port, OP_RW, 0, msg, h.len);
  check(1, "vsock: echoed the host's message");

  /* Guest to host: connect to host port 5000 and say hello. */
  check(vsock_hello(4000, "hello from guest", 1), "vsock: connected to host port 5000, sent, closed");
}

/* ---- virtio-console: one named port ---------------------------------------------------- */
enum { C_DEVICE_READY = 0, C_DEVICE_ADD = 1, C_PORT_READY = 3, C_PORT_OPEN = 6, C_PORT_NAME = 7 };
struct ctrl { u32 id; u16 event, value; } __attribute__((packed));
static struct queue cq[6];
static u8 ctrl_rx[QSIZE][64];
static struct ctrl ctrl_tx;
static u8 port_tx[64];

static void ctrl_post(u16 i) {
  cq[2].desc[i] = (struct desc){(u64)ctrl_rx[i], sizeof(ctrl_rx[i]), F_WRITE, 0};
  submit(&cq[2], i);
}

static void ctrl_send(u32 id, u16 event, u16 value) {
  ctrl_tx = (struct ctrl){id, event, value};
  cq[3].desc[0] = (struct desc){(u64)&ctrl_tx, sizeof(ctrl_tx), 0, 0};
  submit(&cq[3], 0);
  wait_used(&cq[3], SECONDS(10));
}

/* Waits for control `event` with `value` (others dropped); copies up to 63 extra bytes to `extra`. */
static int ctrl_recv(u16 event, u16 value, char *extra) {
  for (;;) {
    int slot = wait_used(&cq[2], SECONDS(30));
    if (slot < 0) return 0;
    u16 id = (u16)cq[2].used.ring[slot].id;
    u32 len = cq[2].used.ring[slot].len;
    struct ctrl *m = (struct ctrl *)ctrl_rx[id];
    int match = m->event == event && m->value == value;
    if (match && extra) {
      u32 n = len > 8 ? len - 8 : 0;
      memcpy_(extra, ctrl_rx[id] + 8, n);
      extra[n] = 0;
    }
    ctrl_post(id);
    if (match) return 1;
  }
}

static void test_console(u64 base) {
  if (!device_init(base, cq, 6, 2 /* MULTIPORT */)) { check(0, "virtio-console set-up"); return; }
  for (u16 i = 0; i < 4; i++) ctrl_post(i);
  char name[64];
  ctrl_send(0, C_DEVICE_READY, 1);
  if (!ctrl_recv(C_DEVICE_ADD, 1, 0)) { check(0, "console: a port is added"); return; }
  ctrl_send(1, C_PORT_READY, 1);
  check(ctrl_recv(C_PORT_NAME, 0, name) && memeq(name, "capsa.test", 11), "console: port 1 is named capsa.test");
  if (!ctrl_recv(C_PORT_OPEN, 1, 0)) { check(0, "console: the host opened the port"); return; }
  ctrl_send(1, C_PORT_OPEN, 1);
  const char *msg = "hello over the console port";
  memcpy_(port_tx, msg, strlen_(msg));
  cq[5].desc[0] = (struct desc){(u64)port_tx, (u32)strlen_(msg), 0, 0};
  submit(&cq[5], 0);
  check(wait_used(&cq[5], SECONDS(10)) >= 0, "console: wrote to the port");
}

/* ---- snapshot point ------------------------------------------------------------------------ */
static void put_dec(u64 v) {
  char digits[20];
  int n = 0;
  do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  while (n) putc(digits[--n]);
}

#define PATTERN_WORDS 16384
static u32 pattern[PATTERN_WORDS]; /* 64 KiB the guest fills before its snapshot point */
static volatile u64 counter;

/* The first virtio device of type `id` on the command line, or 0. */
static u64 find_device(const char *cmdline, u32 id) {
  u64 bases[8];
  int n = find_devices(cmdline, bases, 8);
  for (int i = 0; i < n; i++)
    if (mmio_read(bases[i], 0) == 0x74726976 && mmio_read(bases[i], 8) == id) return bases[i];
  return 0;
}

/* ---- virtio-balloon: free page reporting ----------------------------------------------- */
#define BLOCK_BYTES (2ul << 20)
static u8 freed[BLOCK_BYTES] __attribute__((aligned(BLOCK_BYTES))); /* a block as Linux reports */
static struct queue bq[3];

/* One word in each 4 KiB page is enough to tell a page's fate, and keeps the guest quick:
 * every touch of guest memory is slow on nested-PVM hosts. */
#define WORD(page) (*(volatile u64 *)(freed + (page) * 4096ul + 8 * ((page) % 512)))
static void fill_block(u64 v) { for (u64 p = 0; p < BLOCK_BYTES / 4096; p++) WORD(p) = v * 1000003 + p; }
static int block_is(u64 v) {
  for (u64 p = 0; p < BLOCK_BYTES / 4096; p++) if (WORD(p) != v * 1000003 + p) return 0;
  return 1;
}
static int block_is_zero(void) { for (u64 p = 0; p < BLOCK_BYTES / 4096; p++) if (WORD(p)) return 0; return 1; }

/* Reports `freed` free on the reporting queue (the third: only REPORTING is negotiated). */
static int report_free(void) {
  bq[2].desc[0] = (struct desc){(u64)freed, (u32)BLOCK_BYTES, F_WRITE, 0};
  submit(&bq[2], 0);
  return wait_used(&bq[2], SECONDS(10)) >= 0;
}

static void reporting_test(const char *cmdline) {
  u64 base = find_device(cmdline, 5);
  check(base && device_init(base, bq, 3, 1u << 5), "reporting: balloon set up with free page reporting");
  fill_block(7);
  check(report_free(), "reporting: the block was reported free");
  check(block_is_zero(), "reporting: the reported block reads as zeros");
  puts(failures ? "test guest: FAILED\n" : "test guest: all ok\n");
  poweroff();
}

static int read_sector0(void) { return blk_request(0, 0, 1) && memeq(sector_buf, "CAPSA-TEST-DISK", 15); }

static void snapshot_test(const char *cmdline) {
  u64 blk = find_device(cmdline, 2), vsock = find_device(cmdline, 19), balloon = find_device(cmdline, 5);
  if (blk) check(device_init(blk, &blkq, 1, 0) && read_sector0(), "snapshot: disk read before");
  static u32 vsock_event[2];
  if (vsock) {
    int up = device_init(vsock, vq, 3, 0);
    guest_cid = mmio_read(vsock, 0x100);
    for (u16 i = 0; up && i < QSIZE; i++) rx_post(i);
    /* An event buffer posted, as Linux's driver keeps one; a connection left open. */
    vq[2].desc[0] = (struct desc){(u64)vsock_event, sizeof(vsock_event), F_WRITE, 0};
    if (up) submit(&vq[2], 0);
    check(up && vsock_hello(4000, "open at the snapshot", 0), "snapshot: vsock connection open before");
  }
  if (balloon) {
    check(device_init(balloon, bq, 3, 1u << 5), "snapshot: balloon set up before");
    fill_block(1);
  }
  for (u32 i = 0; i < PATTERN_WORDS; i++) pattern[i] = i * 2654435761u;
  counter = 41;
  puts("snapshot: memory filled, counter 41\n");
  /* A value held in a register across the snapshot point, and the RIP after it. */
  u64 kept = 0x1234567887654321ul, after;
  __asm__ volatile("mov %1, %%r12\n\toutb %%al, %%dx\n\tmov %%r12, %0"
                   : "=r"(after)
                   : "r"(kept), "a"((u8)124), "d"((u16)0x3f0)
                   : "r12", "memory");
  outb(0x3f0, 123); /* boot timer: the guest's first act after the snapshot point */
  puts("snapshot: resumed\n");
  counter++;
  int same = 1;
  for (u32 i = 0; i < PATTERN_WORDS; i++) same &= pattern[i] == i * 2654435761u;
  check(same, "snapshot: memory survived");
  check(after == kept, "snapshot: register survived");
  if (blk) {
    memcpy_(sector_buf, "WRITTEN-BY-GUEST", 16);
    check(blk_request(1, 1, 1) && blk_request(4, 0, 0), "snapshot: disk written after");
    check(read_sector0(), "snapshot: disk read after");
  }
  if (vsock) {
    /* Restored: the device says every connection is gone; the CID is read again. */
    int reset = wait_used(&vq[2], SECONDS(10)) >= 0 && vsock_event[0] == 0;
    check(reset, "snapshot: vsock transport reset");
    guest_cid = mmio_read(vsock, 0x100);
    puts("snapshot: vsock cid ");
    put_dec(guest_cid);
    putc('\n');
    check(vsock_hello(4001, "hello after the restore", 1), "snapshot: vsock connected after");
  }
  if (balloon) {
    /* Written after the snapshot point, then freed: the pages fall back to the snapshot's. */
    fill_block(2);
    check(report_free() && block_is(1), "snapshot: a reported block reads as the snapshot's again");
  }
  puts("snapshot: counter ");
  put_dec(counter);
  putc('\n');
  puts(failures ? "test guest: FAILED\n" : "test guest: all ok\n");
  poweroff();
}

/* ---- main ---------------------------------------------------------------------------------- */
void guest_main(u8 *zero_page) {
  puts("capsa test guest\n");
  const char *cmdline = (const char *)(u64) * (u32 *)(zero_page + 0x228);
  /* Benchmark modes: signal the boot timer at once, then stop (boot) or stay halted (idle). */
  for (const char *p = cmdline; *p; p++) {
    if (memeq(p, "capsa.bench=boot", 16)) { outb(0x3f0, 123); poweroff(); }
    if (memeq(p, "capsa.bench=idle", 16)) {
      outb(0x3f0, 123);
      for (;;) __asm__ volatile("cli; hlt");
    }
    if (memeq(p, "capsa.test=snapshot", 19)) snapshot_test(cmdline);
    if (memeq(p, "capsa.test=reporting", 20)) reporting_test(cmdline);
  }
  u64 bases[8];
  int n = find_devices(cmdline, bases, 8);
  check(n == 3, "three virtio-mmio devices on the command line");
  for (int i = 0; i < n; i++) {
    if (mmio_read(bases[i], 0) != 0x74726976 || mmio_read(bases[i], 4) != 2) {
      check(0, "virtio-mmio magic and version");
      continue;
    }
    u32 id = mmio_read(bases[i], 8);
    if (id == 2) test_block(bases[i]);
    else if (id == 19) test_vsock(bases[i]);
    else if (id == 3) test_console(bases[i]);
  }
  outb(0x3f0, 123); /* boot timer */
  puts(failures ? "test guest: FAILED\n" : "test guest: all ok\n");
  poweroff();
}
