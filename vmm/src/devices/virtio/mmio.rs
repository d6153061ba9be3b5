//! The virtio-mmio transport (version 2): the register window a driver programs, feature
//! negotiation, queue set-up, device status, and delivery of kicks and events to the device.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{Context, EventOps, Interrupt, VirtioDevice, INT_CONFIG, QUEUE_TOKEN_BASE};
use crate::devices::bus::BusDevice;
use crate::vstate::memory::GuestMemory;

mod saved;
pub use saved::TransportState;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4153_5043; // "CPSA"

mod status {
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// The device's view of the transport, borrowing fields disjointly from `self.device`.
macro_rules! context {
    ($t:expr) => {
        Context {
            mem: &$t.mem,
            queues: &mut $t.queues,
            interrupt: &$t.interrupt,
            ops: &$t.ops,
        }
    };
}

/// One device behind its MMIO window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    ops: EventOps,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    /// Set when the device failed: it ignores the guest until reset.
    broken: bool,
    name: String,
}

impl MmioTransport {
    /// `name` labels the device in messages (e.g. "virtio-blk at 0xd0000000").
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
        ops: EventOps,
        name: String,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut queue_events = Vec::new();
        for &max in device.queue_max_sizes() {
            queues.push(Queue::new(max).map_err(|e| std::io::Error::other(e.to_string()))?);
            queue_events.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        Ok(Self {
            device,
            mem,
            interrupt,
            ops,
            queues,
            queue_events,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            broken: false,
            name,
        })
    }

    /// The eventfd a write of `index` to QueueNotify signals (registered as an ioeventfd).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    pub fn is_active(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && !self.broken
    }

    /// Dispatches an event-loop wake-up to the device: a queue kick or one of its own fds.
    pub fn handle_event(&mut self, token: u32, events: EventSet) {
        if token >= QUEUE_TOKEN_BASE {
            let index = (token - QUEUE_TOKEN_BASE) as usize;
            if let Some(evt) = self.queue_events.get(index) {
                let _ = evt.read(); // drain; several kicks coalesce into one pass
            }
            if self.is_active() && index < self.queues.len() {
                let result = self.device.process_queue(index, context!(self));
                self.check(result);
            }
        } else if self.is_active() {
            let result = self.device.process_event(token, events, context!(self));
            self.check(result);
        }
    }

    /// A device error stops the device (NEEDS_RESET, config interrupt) and is reported once.
    fn check(&mut self, result: Result<(), super::DeviceError>) {
        if let Err(e) = result {
            eprintln!(
                "capsa-vmm: {}: {e}; device stopped until the driver resets it",
                self.name
            );
            self.broken = true;
            self.status |= status::NEEDS_RESET;
            self.interrupt.signal(INT_CONFIG);
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR,
            0x010 => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            0x034 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x044 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt.status(),
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let setting_up = self.status & status::DRIVER_OK == 0;
        match offset {
            0x014 => self.device_features_select = value,
            0x020 => self.set_driver_features(value),
            0x024 => self.driver_features_select = value,
            0x030 => self.queue_select = value,
            0x050 => {
                if let Some(evt) = self.queue_events.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            0x064 => self.interrupt.ack(value),
            0x070 => self.set_status(value),
            0x038 | 0x044 | 0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 if setting_up => {
                self.write_queue_register(offset, value)
            }
            _ => {}
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        let Some(q) = self.selected_queue() else {
            return;
        };
        match offset {
            0x038 => q.set_size(value as u16),
            0x044 => q.set_ready(value == 1),
            0x080 => q.set_desc_table_address(Some(value), None),
            0x084 => q.set_desc_table_address(None, Some(value)),
            0x090 => q.set_avail_ring_address(Some(value), None),
            0x094 => q.set_avail_ring_address(None, Some(value)),
            0x0a0 => q.set_used_ring_address(Some(value), None),
            0x0a4 => q.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn set_driver_features(&mut self, value: u32) {
        if self.status & status::FEATURES_OK != 0 {
            return; // frozen once accepted
        }
        let shift = match self.driver_features_select {
            0 => 0,
            1 => 32,
            _ => return,
        };
        let mask = 0xffff_ffffu64 << shift;
        self.driver_features = (self.driver_features & !mask) | (u64::from(value) << shift);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let newly = value & !self.status;
        if newly & status::FEATURES_OK != 0 && self.driver_features & !self.device.features() != 0 {
            // The driver accepted features the device never offered: refuse FEATURES_OK.
            self.status = value & !status::FEATURES_OK;
            return;
        }
        self.status = value;
        if newly & status::DRIVER_OK != 0 && value & status::FAILED == 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & super::VIRTIO_RING_F_EVENT_IDX != 0;
        for q in &mut self.queues {
            q.set_event_idx(event_idx);
        }
        let invalid = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(&self.mem));
        if let Some(i) = invalid {
            let e = super::DeviceError::Guest(format!(
                "queue {i} is ready but lies outside guest memory or is misaligned"
            ));
            self.check(Err(e));
            return;
        }
        let features = self.driver_features;
        let result = self.device.activate(features, context!(self));
        self.check(result);
    }

    fn reset(&mut self) {
        self.device.reset(&self.ops);
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.broken = false;
        self.interrupt.ack(u32::MAX);
        self.config_generation = self.config_generation.wrapping_add(1);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
        } else if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 0x100 {
            self.device.write_config(offset - 0x100, data);
        } else if let (Ok(bytes), true) = (<[u8; 4]>::try_from(data), offset % 4 == 0) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        }
    }
}
