//! One named console port: its host Unix socket (listener and at most one client) and the
//! bytes in flight each way.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vmm_sys_util::epoll::EventSet;

use super::ConsoleError;
use crate::devices::virtio::{DeviceError, EventOps};
use crate::vstate::memory::GuestMemory;

/// Most guest bytes buffered for a host client that is not reading.
const MAX_PENDING: usize = 1 << 20;

/// Event tokens: listener and client of port index `i`.
pub fn listener_token(i: usize) -> u32 {
    2 * i as u32
}

fn client_token(i: usize) -> u32 {
    2 * i as u32 + 1
}

/// (port index, is the listener).
pub fn decode_token(token: u32) -> (usize, bool) {
    ((token / 2) as usize, token % 2 == 0)
}

pub struct Port {
    pub id: u32,
    pub name: String,
    /// None for a port handed its one host connection.
    listener: Option<UnixListener>,
    client: Option<(UnixStream, usize)>,
    pub guest_ready: bool,
    pub guest_open: bool,
    /// Guest output the host client has not taken yet.
    pending: Vec<u8>,
    /// Host input read but not yet placed in guest buffers.
    staged: Vec<u8>,
    host_readable: bool,
}

impl Port {
    pub fn listen(id: u32, name: &str, path: &Path) -> Result<Self, ConsoleError> {
        let err = |source| ConsoleError::Listen {
            path: path.into(),
            source,
        };
        if std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(path).map_err(err)?;
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        Ok(Self {
            id,
            name: name.into(),
            listener: Some(listener),
            client: None,
            guest_ready: false,
            guest_open: false,
            pending: Vec::new(),
            staged: Vec::new(),
            host_readable: false,
        })
    }

    /// A port whose host side is `stream`, connected already (handed by the VMM's parent):
    /// it serves that one connection.
    pub fn connected(id: u32, name: &str, stream: UnixStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            id,
            name: name.into(),
            listener: None,
            // Its index is set when the device activates.
            client: Some((stream, 0)),
            guest_ready: false,
            guest_open: false,
            pending: Vec::new(),
            staged: Vec::new(),
            host_readable: false,
        })
    }

    /// Registers the port's host side with the event loop as port `index`.
    pub fn activate(&mut self, index: usize, ops: &EventOps) -> std::io::Result<()> {
        if let Some(l) = &self.listener {
            ops.add(l.as_raw_fd(), listener_token(index), EventSet::IN)?;
        }
        if let Some((s, i)) = &mut self.client {
            *i = index;
            ops.add(s.as_raw_fd(), client_token(index), EventSet::IN)?;
        }
        Ok(())
    }

    pub fn host_connected(&self) -> bool {
        self.client.is_some()
    }

    /// Takes a host client if none is connected; a second one is turned away.
    pub fn accept(&mut self, index: usize, ops: &EventOps) {
        let Some(listener) = &self.listener else {
            return;
        };
        while let Ok((stream, _)) = listener.accept() {
            if self.client.is_some() || stream.set_nonblocking(true).is_err() {
                continue; // dropped: one client per port
            }
            if ops
                .add(stream.as_raw_fd(), client_token(index), EventSet::IN)
                .is_ok()
            {
                self.client = Some((stream, index));
                self.host_readable = false;
            }
        }
    }

    pub fn host_event(&mut self, events: EventSet, ops: &EventOps) {
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
            self.host_readable = true;
        }
        if events.contains(EventSet::OUT) {
            self.flush_to_host(ops);
        }
        self.rearm(ops);
    }

    fn drop_client(&mut self, ops: &EventOps) {
        if let Some((s, _)) = self.client.take() {
            let _ = ops.remove(s.as_raw_fd());
        }
        self.pending.clear();
        self.staged.clear();
        self.host_readable = false;
    }

    /// Interest: IN while there is room to take host input, OUT while guest output waits.
    pub fn rearm(&mut self, ops: &EventOps) {
        let Some((s, index)) = &self.client else {
            return;
        };
        let mut set = EventSet::empty();
        if !self.host_readable {
            set |= EventSet::IN;
        }
        if !self.pending.is_empty() {
            set |= EventSet::OUT;
        }
        let _ = ops.modify(s.as_raw_fd(), client_token(*index), set);
    }

    fn flush_to_host(&mut self, ops: &EventOps) {
        let Some((s, _)) = &mut self.client else {
            self.pending.clear();
            return;
        };
        match s.write(&self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.drop_client(ops),
        }
    }

    /// Guest output on the port's tx queue goes to the host client (dropped when none).
    pub fn forward_guest_output(
        &mut self,
        mem: &GuestMemory,
        q: &mut Queue,
        ops: &EventOps,
    ) -> Result<(), DeviceError> {
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            if let Ok(mut r) = Reader::new(mem, chain) {
                let mut data = vec![0u8; r.available_bytes()];
                if r.read_exact(&mut data).is_ok()
                    && self.client.is_some()
                    && self.pending.len() + data.len() <= MAX_PENDING
                {
                    self.pending.extend_from_slice(&data);
                }
            }
            q.add_used(mem, head, 0)
                .map_err(|e| DeviceError::Guest(format!("console tx used ring: {e}")))?;
        }
        self.flush_to_host(ops);
        self.rearm(ops);
        Ok(())
    }

    /// Host input into the port's rx buffers while the guest has the port open; true if any
    /// buffer was used.
    pub fn deliver_host_input(
        &mut self,
        mem: &GuestMemory,
        q: &mut Queue,
        ops: &EventOps,
    ) -> Result<bool, DeviceError> {
        let mut used = false;
        while self.guest_open {
            if self.staged.is_empty() && self.host_readable {
                self.read_host(ops);
            }
            if self.staged.is_empty() {
                break;
            }
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let written = match Writer::new(mem, chain) {
                Ok(mut w) => {
                    let n = w.available_bytes().min(self.staged.len());
                    w.write_all(&self.staged[..n]).map(|_| n).unwrap_or(0)
                }
                Err(_) => 0,
            };
            self.staged.drain(..written);
            q.add_used(mem, head, written as u32)
                .map_err(|e| DeviceError::Guest(format!("console rx used ring: {e}")))?;
            used = true;
        }
        self.rearm(ops);
        Ok(used)
    }

    fn read_host(&mut self, ops: &EventOps) {
        let Some((s, _)) = &mut self.client else {
            return;
        };
        let mut buf = vec![0u8; 64 << 10];
        match s.read(&mut buf) {
            Ok(0) => self.drop_client(ops),
            Ok(n) => self.staged.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                self.host_readable = false
            }
            Err(_) => self.drop_client(ops),
        }
    }

    pub fn reset(&mut self, ops: &EventOps) {
        self.drop_client(ops);
        if let Some(l) = &self.listener {
            let _ = ops.remove(l.as_raw_fd());
        }
        self.guest_ready = false;
        self.guest_open = false;
    }
}
