//! virtio devices over the MMIO transport. A device implements [`VirtioDevice`]; the transport
//! ([`mmio::MmioTransport`]) owns the registers, feature negotiation and the queues, and calls
//! the device when a queue is kicked or one of the device's own file descriptors is ready.

pub mod balloon;
pub mod block;
pub mod console;
pub mod mmio;
pub mod net;
pub mod vsock;

#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::vstate::memory::GuestMemory;

/// Feature bit every modern device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Buffers may be described by indirect tables.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// The used/avail event index fields suppress notifications.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Device IDs from the virtio spec.
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;
    pub const BALLOON: u32 = 5;
    pub const VSOCK: u32 = 19;
}

/// Why a device stopped working: a guest that broke the protocol, or the host side failing.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("guest broke the virtio protocol: {0}")]
    Guest(String),
    #[error("host I/O failed: {0}")]
    Host(#[from] std::io::Error),
}

/// The device's interrupt line: an irqfd plus the MMIO InterruptStatus bits it reports.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

impl Interrupt {
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Sets the status a snapshot saved; the line's level is in the restored IOAPIC.
    pub fn restore_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Raises the line for `bits` (used ring or config change).
    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        // An irqfd write fails only if the counter would overflow, i.e. the guest is already
        // far behind on this interrupt; it will see the status bits when it catches up.
        let _ = self.irqfd.write(1);
    }
}

/// Adds and removes the device's own file descriptors in the event loop, tagged with tokens the
/// device chooses (below [`QUEUE_TOKEN_BASE`], which the transport keeps for queue kicks).
#[derive(Clone)]
pub struct EventOps {
    epoll: Arc<Epoll>,
    device: u32,
}

/// Tokens from here up are the transport's queue-notify events.
pub const QUEUE_TOKEN_BASE: u32 = 0xffff_0000;

impl EventOps {
    pub fn new(epoll: Arc<Epoll>, device: u32) -> Self {
        Self { epoll, device }
    }

    fn data(&self, token: u32) -> u64 {
        (u64::from(self.device) << 32) | u64::from(token)
    }

    pub fn add(&self, fd: RawFd, token: u32, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events, self.data(token)),
        )
    }

    pub fn modify(&self, fd: RawFd, token: u32, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Modify,
            fd,
            EpollEvent::new(events, self.data(token)),
        )
    }

    pub fn remove(&self, fd: RawFd) -> std::io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }
}

/// What a device works with once the driver has set it up.
pub struct Context<'a> {
    pub mem: &'a GuestMemory,
    pub queues: &'a mut [Queue],
    pub interrupt: &'a Interrupt,
    pub ops: &'a EventOps,
}

impl Context<'_> {
    /// Signals the guest about `queue` unless it asked not to be: with EVENT_IDX through the
    /// used-event index (virtio-queue decides), otherwise through the avail ring's NO_INTERRUPT
    /// flag, which virtio-queue leaves to the device.
    pub fn notify(&mut self, queue: usize) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let needed = if q.event_idx_enabled() {
            q.needs_notification(self.mem).unwrap_or(true)
        } else {
            let flags: u16 = self.mem.read_obj(GuestAddress(q.avail_ring())).unwrap_or(0);
            flags & VRING_AVAIL_F_NO_INTERRUPT == 0
        };
        if needed {
            self.interrupt.signal(INT_USED_RING);
        }
    }
}

const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// What a snapshot keeps of a device beyond its transport (queues, features, status) and its
/// backend, which the restore supplies anew.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeviceState {
    /// virtio-blk and the balloon: nothing beyond the transport.
    Stateless,
    /// The MAC the guest's driver read at probe time and keeps.
    Net { mac: [u8; 6] },
    /// The CID the guest had; its connections end with the snapshot.
    Vsock { cid: u64 },
    /// The driver's progress through the control protocol, port by port.
    Console {
        driver_ready: bool,
        ports: Vec<SavedPort>,
    },
}

/// A console port as the guest last knew it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPort {
    pub name: String,
    pub guest_ready: bool,
    pub guest_open: bool,
    /// Whether the guest was told a host client was connected (PORT_OPEN 1).
    pub host_connected: bool,
}

/// One virtio device model.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Feature bits offered (VERSION_1 included).
    fn features(&self) -> u64;
    /// The largest size of each queue; the count is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads from the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes to the configuration space (most devices ignore them).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK with `features` accepted: start serving.
    fn activate(&mut self, features: u64, ctx: Context<'_>) -> Result<(), DeviceError>;
    /// The driver kicked `queue`.
    fn process_queue(&mut self, queue: usize, ctx: Context<'_>) -> Result<(), DeviceError>;
    /// One of the device's own descriptors is ready.
    fn process_event(
        &mut self,
        _token: u32,
        _events: EventSet,
        _ctx: Context<'_>,
    ) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The driver reset the device: drop connections and in-flight state.
    fn reset(&mut self, _ops: &EventOps) {}
    /// What a snapshot keeps of the device (the VM is stopped).
    fn save_state(&self) -> DeviceState {
        DeviceState::Stateless
    }
    /// Takes back what [`save_state`](Self::save_state) kept, on a device made anew with the
    /// restore's host side, before the transport starts it again; the error says what does
    /// not fit.
    fn restore_state(&mut self, saved: &DeviceState) -> Result<(), String> {
        match saved {
            DeviceState::Stateless => Ok(()),
            other => Err(format!("saved state {other:?} is not this device's")),
        }
    }
}

/// Copies `len` bytes of `data` into a config-space read at `offset`, as far as they overlap.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    let start = offset as usize;
    if start >= config.len() {
        return;
    }
    let end = (start + data.len()).min(config.len());
    data[..end - start].copy_from_slice(&config[start..end]);
}
