//! virtio-net on a tap device: the guest's transmit queue is written to the tap frame by frame,
//! frames read from the tap fill the receive queue. No offloads are offered, so frames pass
//! through whole with a plain header.

mod tap;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use virtio_queue::{QueueT, Reader, Writer};
use vmm_sys_util::epoll::EventSet;

use super::{
    device_type, Context, DeviceError, DeviceState, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
pub use tap::VNET_HDR_LEN;

const RX: usize = 0;
const TX: usize = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const TAP: u32 = 0;
/// The largest frame with its header: 64 KiB plus an Ethernet header and VLAN tag.
const MAX_FRAME: usize = VNET_HDR_LEN + 65_550;

#[derive(Debug, thiserror::Error)]
#[error("cannot open tap device {name}: {source}")]
pub struct NetError {
    name: String,
    source: std::io::Error,
}

pub struct Net {
    tap: File,
    mac: [u8; 6],
    /// A frame read from the tap that no rx buffer has taken yet.
    pending: Option<Vec<u8>>,
    /// EPOLLIN on the tap is armed (off while a frame waits for guest buffers).
    reading: bool,
    _name: PathBuf,
}

impl Net {
    pub fn new(tap_name: &str, mac: [u8; 6]) -> Result<Self, NetError> {
        let tap = tap::open(tap_name).map_err(|source| NetError {
            name: tap_name.into(),
            source,
        })?;
        Ok(Self {
            tap,
            mac,
            pending: None,
            reading: false,
            _name: tap_name.into(),
        })
    }

    /// The device on a handed tap descriptor (opened with IFF_TAP, IFF_NO_PI, IFF_VNET_HDR).
    pub fn from_tap(tap: File, label: &str, mac: [u8; 6]) -> Result<Self, NetError> {
        let err = |source| NetError {
            name: label.into(),
            source,
        };
        tap::adopt(&tap).map_err(err)?;
        Ok(Self {
            tap,
            mac,
            pending: None,
            reading: false,
            _name: label.into(),
        })
    }

    fn process_tx(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        loop {
            while let Some(chain) = ctx.queues[TX].pop_descriptor_chain(ctx.mem) {
                let head = chain.head_index();
                if let Ok(mut reader) = Reader::new(ctx.mem, chain) {
                    let len = reader.available_bytes();
                    if (VNET_HDR_LEN..=MAX_FRAME).contains(&len) {
                        let mut frame = vec![0u8; len];
                        if reader.read_exact(&mut frame).is_ok() {
                            // A full tap queue drops the frame, as a NIC would.
                            let _ = self.tap.write(&frame);
                        }
                    }
                }
                ctx.queues[TX]
                    .add_used(ctx.mem, head, 0)
                    .map_err(|e| DeviceError::Guest(format!("tx used ring: {e}")))?;
            }
            if !ctx.queues[TX]
                .enable_notification(ctx.mem)
                .map_err(|e| DeviceError::Guest(e.to_string()))?
            {
                break;
            }
        }
        ctx.notify(TX);
        Ok(())
    }

    /// Moves frames from the tap into rx buffers until either runs out.
    fn process_rx(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        let mut used = false;
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => match self.read_frame()? {
                    Some(f) => f,
                    None => break,
                },
            };
            let Some(chain) = ctx.queues[RX].pop_descriptor_chain(ctx.mem) else {
                self.pending = Some(frame);
                break;
            };
            let head = chain.head_index();
            let written = match Writer::new(ctx.mem, chain) {
                Ok(mut w) if w.available_bytes() >= frame.len() => {
                    w.write_all(&frame).map(|_| frame.len() as u32).unwrap_or(0)
                }
                _ => 0, // a buffer too small for the frame: the frame is dropped
            };
            ctx.queues[RX]
                .add_used(ctx.mem, head, written)
                .map_err(|e| DeviceError::Guest(format!("rx used ring: {e}")))?;
            used = true;
        }
        if used {
            ctx.notify(RX);
        }
        self.arm(ctx, self.pending.is_none())
    }

    fn read_frame(&mut self) -> Result<Option<Vec<u8>>, DeviceError> {
        let mut buf = vec![0u8; MAX_FRAME];
        match self.tap.read(&mut buf) {
            Ok(n) if n >= VNET_HDR_LEN => {
                buf.truncate(n);
                // num_buffers: one buffer per frame (MRG_RXBUF is not offered).
                buf[10..12].copy_from_slice(&1u16.to_le_bytes());
                Ok(Some(buf))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                Ok(None)
            }
            Err(e) => Err(DeviceError::Host(e)),
        }
    }

    /// Listens to the tap only while frames can go somewhere, so a guest without rx buffers
    /// leaves frames queued in the tap (and the kernel drops beyond its queue) instead of
    /// waking the loop.
    fn arm(&mut self, ctx: &mut Context<'_>, on: bool) -> Result<(), DeviceError> {
        if on != self.reading {
            let set = if on { EventSet::IN } else { EventSet::empty() };
            ctx.ops.modify(self.tap.as_raw_fd(), TAP, set)?;
            self.reading = on;
        }
        Ok(())
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | VIRTIO_NET_F_MAC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.mac, offset, data);
    }

    fn activate(&mut self, _features: u64, mut ctx: Context<'_>) -> Result<(), DeviceError> {
        ctx.ops.add(self.tap.as_raw_fd(), TAP, EventSet::IN)?;
        self.reading = true;
        self.process_rx(&mut ctx)
    }

    fn process_queue(&mut self, queue: usize, mut ctx: Context<'_>) -> Result<(), DeviceError> {
        if queue == TX {
            self.process_tx(&mut ctx)?;
        }
        self.process_rx(&mut ctx)
    }

    fn process_event(
        &mut self,
        _token: u32,
        _events: EventSet,
        mut ctx: Context<'_>,
    ) -> Result<(), DeviceError> {
        self.process_rx(&mut ctx)
    }

    fn reset(&mut self, ops: &super::EventOps) {
        let _ = ops.remove(self.tap.as_raw_fd());
        self.reading = false;
        self.pending = None;
    }

    /// Frames in flight are not kept: a frame read from the tap and not yet delivered is
    /// lost with the snapshot, as a NIC drops one.
    fn save_state(&self) -> DeviceState {
        DeviceState::Net { mac: self.mac }
    }

    /// The guest's driver read its MAC at probe time and keeps it: the restored device must
    /// show the same one.
    fn restore_state(&mut self, saved: &DeviceState) -> Result<(), String> {
        match saved {
            DeviceState::Net { mac } if *mac == self.mac => Ok(()),
            DeviceState::Net { mac } => Err(format!(
                "the snapshot's guest has MAC {}, the restore gives {} (a restored guest keeps \
                 its MAC: give none, or that one)",
                format_mac(mac),
                format_mac(&self.mac)
            )),
            other => Err(format!(
                "saved state {other:?} is not a virtio-net device's"
            )),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2))
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

#[cfg(test)]
mod tests;
