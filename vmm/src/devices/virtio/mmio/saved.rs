//! A transport's registers and queues, as a snapshot keeps them, with what the device behind
//! it keeps of its own ([`DeviceState`]).

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState};

use super::{status, MmioTransport};
use crate::devices::virtio::DeviceState;

/// One split virtqueue (virtio-queue's `QueueState`, which has no serde of its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedQueue {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub queues: Vec<SavedQueue>,
    pub queue_select: u32,
    pub device_features_select: u32,
    pub driver_features_select: u32,
    pub driver_features: u64,
    pub status: u32,
    pub config_generation: u32,
    pub broken: bool,
    pub interrupt_status: u32,
    pub device: DeviceState,
}

impl MmioTransport {
    pub fn save(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            queues: self
                .queues
                .iter()
                .map(|q| {
                    let s = q.state();
                    SavedQueue {
                        max_size: s.max_size,
                        next_avail: s.next_avail,
                        next_used: s.next_used,
                        event_idx_enabled: s.event_idx_enabled,
                        size: s.size,
                        ready: s.ready,
                        desc_table: s.desc_table,
                        avail_ring: s.avail_ring,
                        used_ring: s.used_ring,
                    }
                })
                .collect(),
            queue_select: self.queue_select,
            device_features_select: self.device_features_select,
            driver_features_select: self.driver_features_select,
            driver_features: self.driver_features,
            status: self.status,
            config_generation: self.config_generation,
            broken: self.broken,
            interrupt_status: self.interrupt.status(),
            device: self.device.save_state(),
        }
    }

    /// Puts a saved transport back on a new device of the same type with the same queues; a
    /// device the driver had started is started again (its queues checked against memory).
    pub fn restore(&mut self, saved: &TransportState) -> Result<(), String> {
        if saved.device_type != self.device.device_type() || saved.queues.len() != self.queues.len()
        {
            return Err(format!(
                "{}: the snapshot has a device of type {} with {} queues here",
                self.name,
                saved.device_type,
                saved.queues.len()
            ));
        }
        self.device
            .restore_state(&saved.device)
            .map_err(|e| format!("{}: {e}", self.name))?;
        let mut queues = Vec::new();
        for (i, q) in saved.queues.iter().enumerate() {
            let state = QueueState {
                max_size: q.max_size,
                next_avail: q.next_avail,
                next_used: q.next_used,
                event_idx_enabled: q.event_idx_enabled,
                size: q.size,
                ready: q.ready,
                desc_table: q.desc_table,
                avail_ring: q.avail_ring,
                used_ring: q.used_ring,
            };
            queues.push(
                Queue::try_from(state)
                    .map_err(|e| format!("{}: saved queue {i}: {e}", self.name))?,
            );
        }
        self.queues = queues;
        self.queue_select = saved.queue_select;
        self.device_features_select = saved.device_features_select;
        self.driver_features_select = saved.driver_features_select;
        self.driver_features = saved.driver_features;
        self.status = saved.status;
        self.config_generation = saved.config_generation;
        self.broken = saved.broken;
        self.interrupt.restore_status(saved.interrupt_status);
        if self.is_active() && self.status & status::FAILED == 0 {
            self.activate();
            // A kick the old event loop had not served yet was lost with its eventfd: one
            // pass over every queue serves what the driver made available meanwhile.
            for evt in &self.queue_events {
                let _ = evt.write(1);
            }
        }
        Ok(())
    }
}
