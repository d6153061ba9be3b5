//! The console's control queues: 8-byte `virtio_console_control` messages (port id, event,
//! value), PORT_NAME followed by the name's bytes.

use std::collections::VecDeque;
use std::io::{Read, Write};

use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};

use crate::devices::virtio::DeviceError;
use crate::vstate::memory::GuestMemory;

pub mod event {
    pub const DEVICE_READY: u16 = 0;
    pub const DEVICE_ADD: u16 = 1;
    pub const PORT_READY: u16 = 3;
    pub const PORT_OPEN: u16 = 6;
    pub const PORT_NAME: u16 = 7;
}

/// Messages waiting for the driver's control receive buffers.
#[derive(Default)]
pub struct Control {
    queue: VecDeque<Vec<u8>>,
}

impl Control {
    pub fn send(&mut self, id: u32, event: u16, value: u16, data: &[u8]) {
        let mut m = Vec::with_capacity(8 + data.len());
        m.extend(id.to_le_bytes());
        m.extend(event.to_le_bytes());
        m.extend(value.to_le_bytes());
        m.extend(data);
        self.queue.push_back(m);
    }

    /// Writes queued messages into receive buffers; true if any was used.
    pub fn flush(&mut self, mem: &GuestMemory, q: &mut Queue) -> Result<bool, DeviceError> {
        let mut used = false;
        while !self.queue.is_empty() {
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let msg = self.queue.pop_front().unwrap_or_default();
            let written = match Writer::new(mem, chain) {
                Ok(mut w) if w.available_bytes() >= msg.len() => {
                    w.write_all(&msg).map(|_| msg.len() as u32).unwrap_or(0)
                }
                _ => 0, // a buffer too small for the message: the message is lost, as the spec allows
            };
            q.add_used(mem, head, written)
                .map_err(|e| DeviceError::Guest(format!("control used ring: {e}")))?;
            used = true;
        }
        Ok(used)
    }
}

/// Reads one message from the driver: (port id, event, value).
pub fn read(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> Option<(u32, u16, u16)> {
    let mut r = Reader::new(mem, chain).ok()?;
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some((
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
    ))
}
