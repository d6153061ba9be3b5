//! One vsock stream between a guest port and a host Unix-socket stream, with virtio-vsock's
//! credit accounting in both directions.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use super::packet::{Header, HOST_CID, TYPE_STREAM};

/// How much guest data we buffer for a host peer that is slow to read.
pub const BUF_ALLOC: u32 = 256 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The host connected and asked for a guest port; waiting for the guest's RESPONSE.
    HostConnecting,
    Established,
    /// We sent SHUTDOWN to the guest after the host side closed; waiting for its RST.
    Closing,
}

pub struct Connection {
    pub stream: UnixStream,
    pub state: State,
    pub guest_cid: u64,
    /// Host-side port (ours) and guest-side port (the peer's).
    pub local_port: u32,
    pub peer_port: u32,
    /// The host stream has data or EOF to deliver (set on EPOLLIN, cleared on EAGAIN).
    pub readable: bool,
    /// Guest data the host stream has not accepted yet.
    pending: Vec<u8>,
    /// Host data read but not yet delivered (no rx buffer was free).
    staged: Vec<u8>,
    /// Bytes of guest data forwarded to the host stream, and the count last told to the guest.
    fwd_cnt: u32,
    fwd_cnt_told: u32,
    /// The guest's buffer, what it has consumed, and what we have sent it.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
}

impl Connection {
    pub fn new(
        stream: UnixStream,
        state: State,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
    ) -> Self {
        Self {
            stream,
            state,
            guest_cid,
            local_port,
            peer_port,
            readable: false,
            pending: Vec::new(),
            staged: Vec::new(),
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
        }
    }

    /// A header from us to the guest on this connection.
    pub fn header(&mut self, op: u16, len: u32) -> Header {
        self.fwd_cnt_told = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Records the credit the guest advertises in every packet it sends.
    pub fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
    }

    /// How many bytes the guest can take now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the guest should hear about our consumed bytes without waiting for a data packet.
    pub fn owes_credit_update(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_told) >= BUF_ALLOC / 2
    }

    /// Forwards guest data to the host stream, keeping what it cannot take yet.
    /// Fails if the guest sent more than the credit we gave it.
    pub fn send_to_host(&mut self, data: &[u8]) -> Result<(), &'static str> {
        if self.pending.len() + data.len() > BUF_ALLOC as usize {
            return Err("guest sent beyond the credit it was given");
        }
        if self.pending.is_empty() {
            let n = write_some(&mut self.stream, data).map_err(|_| "host stream write failed")?;
            self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
            self.pending.extend_from_slice(&data[n..]);
        } else {
            self.pending.extend_from_slice(data);
        }
        Ok(())
    }

    /// Writes buffered guest data now that the host stream is writable; true when all is out.
    pub fn flush_pending(&mut self) -> std::io::Result<bool> {
        let n = write_some(&mut self.stream, &self.pending)?;
        self.pending.drain(..n);
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        Ok(self.pending.is_empty())
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads what the host sent, at most `max` bytes (staged bytes first); Ok(None) when
    /// nothing is there now, an empty Vec at EOF. What is returned counts as sent to the guest.
    pub fn read_from_host(&mut self, max: usize) -> std::io::Result<Option<Vec<u8>>> {
        let data = if !self.staged.is_empty() {
            let n = max.min(self.staged.len());
            self.staged.drain(..n).collect()
        } else {
            let mut buf = vec![0u8; max];
            match self.stream.read(&mut buf) {
                Ok(n) => buf.truncate(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(None),
                Err(e) => return Err(e),
            }
            buf
        };
        self.tx_cnt = self.tx_cnt.wrapping_add(data.len() as u32);
        Ok(Some(data))
    }

    /// Takes back data `read_from_host` returned that could not be delivered.
    pub fn unread(&mut self, mut data: Vec<u8>) {
        self.tx_cnt = self.tx_cnt.wrapping_sub(data.len() as u32);
        data.append(&mut self.staged);
        self.staged = data;
        self.readable = true;
    }
}

fn write_some(stream: &mut UnixStream, data: &[u8]) -> std::io::Result<usize> {
    if data.is_empty() {
        return Ok(0);
    }
    match stream.write(data) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}
