//! A driver's side of a virtio device, for testing device models in-process: it programs the
//! MMIO transport as a guest driver would, lays out split virtqueues in guest memory, adds
//! descriptor chains (direct, indirect or deliberately malformed) and reads the used ring.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::mmio::MmioTransport;
use super::{EventOps, Interrupt, VirtioDevice, QUEUE_TOKEN_BASE};
use crate::devices::bus::BusDevice;
use crate::vstate::memory::GuestMemory;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;
pub const QUEUE_SIZE: u16 = 16;
/// Where test buffers may go: above the rings.
pub const BUFFERS: u64 = 0x10_0000;

/// One buffer of a chain: guest address, length, device-writable or not.
#[derive(Clone, Copy)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

pub fn rd(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: false,
    }
}

pub fn wr(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: true,
    }
}

struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

pub struct TestDriver {
    pub mem: GuestMemory,
    pub transport: MmioTransport,
    pub epoll: Arc<Epoll>,
    irq: EventFd,
    rings: Vec<Ring>,
}

impl TestDriver {
    /// Sets the device up as a driver would, accepting `features` (None: all it offers).
    pub fn new(device: Box<dyn VirtioDevice>, features: Option<u64>) -> Self {
        let mut d = Self::unready(device);
        let features = features.unwrap_or_else(|| d.offered_features());
        d.negotiate(features);
        d.setup_queues();
        d.write_reg(0x70, 0xf);
        d
    }

    /// The transport before any driver touched it.
    pub fn unready(device: Box<dyn VirtioDevice>) -> Self {
        let mem = crate::vstate::memory::create(16 << 20).unwrap();
        let epoll = Arc::new(Epoll::new().unwrap());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let ops = EventOps::new(epoll.clone(), 1);
        let nq = device.queue_max_sizes().len() as u64;
        let transport =
            MmioTransport::new(device, mem.clone(), interrupt, ops, "test device".into()).unwrap();
        let rings = (0..nq)
            .map(|i| {
                let base = 0x1_0000 + i * 0x4000;
                Ring {
                    desc: base,
                    avail: base + 0x1000,
                    used: base + 0x2000,
                    next_desc: 0,
                    avail_idx: 0,
                    used_seen: 0,
                }
            })
            .collect();
        Self {
            mem,
            transport,
            epoll,
            irq,
            rings,
        }
    }

    /// Snapshots the transport (through the JSON a snapshot file holds) and puts `device`, made
    /// anew as a restore makes it, behind a new transport restored from it, with a new event
    /// loop; guest memory, the rings and the interrupt line stay, as a restored guest's do.
    /// The queue passes the restore asks for are served, as the event loop would.
    pub fn restore_onto(&mut self, device: Box<dyn VirtioDevice>) -> Result<(), String> {
        let json = serde_json::to_string(&self.transport.save()).unwrap();
        let saved: super::mmio::TransportState = serde_json::from_str(&json).unwrap();
        let epoll = Arc::new(Epoll::new().unwrap());
        let interrupt = Arc::new(Interrupt::new(self.irq.try_clone().unwrap()));
        let ops = EventOps::new(epoll.clone(), 1);
        let mut transport = MmioTransport::new(
            device,
            self.mem.clone(),
            interrupt,
            ops,
            "restored test device".into(),
        )
        .unwrap();
        transport.restore(&saved)?;
        self.transport = transport;
        self.epoll = epoll;
        for q in 0..self.rings.len() {
            self.transport.handle_event(
                QUEUE_TOKEN_BASE + q as u32,
                vmm_sys_util::epoll::EventSet::IN,
            );
        }
        Ok(())
    }

    pub fn write_reg(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    pub fn read_reg(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn offered_features(&mut self) -> u64 {
        self.write_reg(0x14, 0);
        let low = self.read_reg(0x10);
        self.write_reg(0x14, 1);
        u64::from(low) | (u64::from(self.read_reg(0x10)) << 32)
    }

    /// ACKNOWLEDGE, DRIVER, the feature words, FEATURES_OK; returns the status read back.
    pub fn negotiate(&mut self, features: u64) -> u32 {
        self.write_reg(0x70, 0);
        self.write_reg(0x70, 3);
        self.write_reg(0x24, 0);
        self.write_reg(0x20, features as u32);
        self.write_reg(0x24, 1);
        self.write_reg(0x20, (features >> 32) as u32);
        self.write_reg(0x70, 0xb);
        self.read_reg(0x70)
    }

    pub fn setup_queues(&mut self) {
        for i in 0..self.rings.len() {
            let (desc, avail, used) = (self.rings[i].desc, self.rings[i].avail, self.rings[i].used);
            self.place_queue(i as u32, desc, avail, used);
        }
    }

    pub fn place_queue(&mut self, index: u32, desc: u64, avail: u64, used: u64) {
        self.write_reg(0x30, index);
        self.write_reg(0x38, u32::from(QUEUE_SIZE));
        for (reg, addr) in [(0x80, desc), (0x90, avail), (0xa0, used)] {
            self.write_reg(reg, addr as u32);
            self.write_reg(reg + 4, (addr >> 32) as u32);
        }
        self.write_reg(0x44, 1);
    }

    pub fn write_desc(&self, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(table + u64::from(index) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
    }

    /// Puts `head` in the avail ring.
    pub fn publish(&mut self, q: usize, head: u16) {
        let r = &mut self.rings[q];
        let slot = r.avail + 4 + u64::from(r.avail_idx % QUEUE_SIZE) * 2;
        r.avail_idx = r.avail_idx.wrapping_add(1);
        let (idx, avail) = (r.avail_idx, r.avail);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
    }

    /// Adds a chain of direct descriptors; returns its head.
    pub fn add_chain(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let table = self.rings[q].desc;
        let head = self.rings[q].next_desc;
        for (i, b) in bufs.iter().enumerate() {
            let index = (head + i as u16) % QUEUE_SIZE;
            let last = i + 1 == bufs.len();
            let flags = if b.write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(table, index, b.addr, b.len, flags, (index + 1) % QUEUE_SIZE);
        }
        self.rings[q].next_desc = (head + bufs.len() as u16) % QUEUE_SIZE;
        self.publish(q, head);
        head
    }

    /// Adds one descriptor pointing at an indirect table (written at `table`) holding `bufs`.
    pub fn add_indirect(&mut self, q: usize, table: u64, bufs: &[Buf]) -> u16 {
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let flags = if b.write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(table, i as u16, b.addr, b.len, flags, i as u16 + 1);
        }
        let head = self.rings[q].next_desc;
        self.write_desc(
            self.rings[q].desc,
            head,
            table,
            16 * bufs.len() as u32,
            F_INDIRECT,
            0,
        );
        self.rings[q].next_desc = (head + 1) % QUEUE_SIZE;
        self.publish(q, head);
        head
    }

    pub fn desc_table(&self, q: usize) -> u64 {
        self.rings[q].desc
    }

    /// Sets the avail ring's flags (1 = VRING_AVAIL_F_NO_INTERRUPT).
    pub fn set_avail_flags(&self, q: usize, flags: u16) {
        self.mem
            .write_obj(flags, GuestAddress(self.rings[q].avail))
            .unwrap();
    }

    /// Writes QueueNotify and lets the transport process the kick.
    pub fn kick(&mut self, q: usize) {
        self.write_reg(0x50, q as u32);
        self.transport.handle_event(
            QUEUE_TOKEN_BASE + q as u32,
            vmm_sys_util::epoll::EventSet::IN,
        );
    }

    /// Used elements added since the last call: (head, bytes written).
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let r = &mut self.rings[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(r.used + 2)).unwrap();
        let mut out = Vec::new();
        while r.used_seen != idx {
            let elem = r.used + 4 + u64::from(r.used_seen % QUEUE_SIZE) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(elem)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).unwrap();
            out.push((id, len));
            r.used_seen = r.used_seen.wrapping_add(1);
        }
        out
    }

    /// Interrupts raised since the last call.
    pub fn interrupts(&self) -> u64 {
        self.irq.read().unwrap_or(0)
    }

    /// Delivers ready device file descriptors (sockets) to the device, waiting up to `ms`.
    pub fn pump(&mut self, ms: i32) -> usize {
        let mut events = vec![EpollEvent::default(); 16];
        let n = self.epoll.wait(ms, &mut events).unwrap_or(0);
        for e in &events[..n] {
            self.transport.handle_event(e.data() as u32, e.event_set());
        }
        n
    }

    pub fn write_bytes(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}
