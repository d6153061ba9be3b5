//! virtio-vsock as Firecracker's hybrid vsock: the guest's vsock streams meet host Unix sockets.
//! - host to guest: a host program connects to the device's socket and writes `CONNECT <port>\n`;
//!   once the guest accepts, it reads `OK <host port>\n` and the stream is the connection;
//! - guest to host: a guest connection to CID 2, port P is connected to `<socket>_P`.
//!
//! A snapshot keeps no connection: a restored device tells the guest's driver with a
//! TRANSPORT_RESET event, as Firecracker's does, and the driver then drops its connections and
//! reads the guest CID again (a restore may give another).

mod connection;
pub mod packet;

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_queue::{DescriptorChain, QueueT, Reader, Writer};
use vmm_sys_util::epoll::EventSet;

use super::{
    device_type, Context, DeviceError, DeviceState, EventOps, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::vstate::memory::GuestMemory;
use connection::{Connection, State};
use packet::{op, Header, HEADER_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
/// `virtio_vsock_event.id` of the one event there is.
const EVENT_TRANSPORT_RESET: u32 = 0;
const QUEUE_SIZES: [u16; 3] = [256, 256, 256];
const LISTENER: u32 = 0;
/// The most payload one packet carries, whatever the guest's buffers allow.
const MAX_PAYLOAD: usize = 64 << 10;
/// Host ports we hand out for host-initiated connections start here, away from guest services.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
const MAX_HANDSHAKE: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved (use 3 or more)")]
    ReservedCid(u64),
    #[error("cannot listen on vsock socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A host client that has connected but not yet said which guest port it wants.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

pub struct Vsock {
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    listening: bool,
    handshakes: BTreeMap<u32, Handshake>,
    conns: BTreeMap<u32, Connection>,
    /// Packets without payload (RESPONSE, RST, SHUTDOWN, CREDIT_UPDATE, REQUEST) for the guest.
    control: VecDeque<Header>,
    next_token: u32,
    next_local_port: u32,
    /// Restored from a snapshot: the guest still thinks its old connections exist until a
    /// TRANSPORT_RESET reaches it.
    reset_pending: bool,
}

impl Vsock {
    /// Listens on `uds` (replacing a stale socket file) for a guest with CID `cid`.
    pub fn new(cid: u64, uds: &Path) -> Result<Self, VsockError> {
        if cid < 3 || cid > u64::from(u32::MAX) {
            return Err(VsockError::ReservedCid(cid));
        }
        let listen_err = |source| VsockError::Listen {
            path: uds.into(),
            source,
        };
        if std::fs::symlink_metadata(uds)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(uds).map_err(listen_err)?;
        }
        let listener = UnixListener::bind(uds).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        Ok(Self {
            cid,
            uds: uds.into(),
            listener,
            listening: false,
            handshakes: BTreeMap::new(),
            conns: BTreeMap::new(),
            control: VecDeque::new(),
            next_token: 1,
            next_local_port: FIRST_LOCAL_PORT,
            reset_pending: false,
        })
    }

    fn token(&mut self) -> u32 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1) % super::QUEUE_TOKEN_BASE;
        t
    }

    fn find(&self, local_port: u32, peer_port: u32) -> Option<u32> {
        self.conns
            .iter()
            .find(|(_, c)| c.local_port == local_port && c.peer_port == peer_port)
            .map(|(t, _)| *t)
    }

    fn rst_for(&self, h: &Header) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Default::default()
        }
    }

    fn drop_conn(&mut self, token: u32, ops: &EventOps) {
        if let Some(c) = self.conns.remove(&token) {
            let _ = ops.remove(c.stream.as_raw_fd());
        }
    }

    /// Ends a connection from our side: RST to the guest, the host stream closed.
    fn reset_conn(&mut self, token: u32, ops: &EventOps) {
        if let Some(c) = self.conns.get_mut(&token) {
            let h = c.header(op::RST, 0);
            self.control.push_back(h);
        }
        self.drop_conn(token, ops);
    }

    // ---- host side -------------------------------------------------------------------------

    fn accept(&mut self, ops: &EventOps) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.token();
            if ops.add(stream.as_raw_fd(), token, EventSet::IN).is_ok() {
                self.handshakes.insert(
                    token,
                    Handshake {
                        stream,
                        line: Vec::new(),
                    },
                );
            }
        }
    }

    /// Reads a host client's `CONNECT <port>\n` and asks the guest for that port.
    fn handshake(&mut self, token: u32, ops: &EventOps) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let done = loop {
            match hs.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break true,
                Ok(1) if hs.line.len() < MAX_HANDSHAKE => hs.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                _ => break false, // EOF, error, or a line too long
            }
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        let port = done
            .then(|| {
                std::str::from_utf8(&hs.line)
                    .ok()?
                    .strip_prefix("CONNECT ")?
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
            .flatten();
        let Some(peer_port) = port else {
            let _ = ops.remove(hs.stream.as_raw_fd());
            return; // dropping the stream tells the client no
        };
        let local_port = self.next_local_port;
        self.next_local_port = self
            .next_local_port
            .checked_add(1)
            .unwrap_or(FIRST_LOCAL_PORT);
        let mut conn = Connection::new(
            hs.stream,
            State::HostConnecting,
            self.cid,
            local_port,
            peer_port,
        );
        let _ = ops.modify(conn.stream.as_raw_fd(), token, EventSet::empty());
        self.control.push_back(conn.header(op::REQUEST, 0));
        self.conns.insert(token, conn);
    }

    fn conn_event(&mut self, token: u32, events: EventSet, ops: &EventOps) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if events
            .intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP)
        {
            c.readable = true;
        }
        if events.contains(EventSet::OUT) && c.flush_pending().is_err() {
            self.reset_conn(token, ops);
            return;
        }
        self.rearm(token, ops);
    }

    /// Sets a connection's epoll interest: IN while it has nothing staged, OUT while guest data
    /// waits for the host, nothing once the host side has closed.
    fn rearm(&mut self, token: u32, ops: &EventOps) {
        let Some(c) = self.conns.get(&token) else {
            return;
        };
        let mut set = EventSet::empty();
        if c.state == State::Established && !c.readable {
            set |= EventSet::IN;
        }
        if c.has_pending() {
            set |= EventSet::OUT;
        }
        let _ = ops.modify(c.stream.as_raw_fd(), token, set);
    }

    // ---- guest to host (tx queue) ----------------------------------------------------------

    fn process_tx(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        loop {
            while let Some(chain) = ctx.queues[TX].pop_descriptor_chain(ctx.mem) {
                let head = chain.head_index();
                if let Some((h, payload)) = read_packet(ctx.mem, chain) {
                    self.guest_packet(h, &payload, ctx.ops);
                }
                ctx.queues[TX]
                    .add_used(ctx.mem, head, 0)
                    .map_err(|e| DeviceError::Guest(format!("vsock tx used ring: {e}")))?;
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

    /// One packet from the guest.
    fn guest_packet(&mut self, h: Header, payload: &[u8], ops: &EventOps) {
        if h.src_cid != self.cid || h.dst_cid != HOST_CID || h.type_ != TYPE_STREAM {
            if h.op != op::RST {
                self.control.push_back(self.rst_for(&h));
            }
            return;
        }
        let token = self.find(h.dst_port, h.src_port);
        if let Some(c) = token.and_then(|t| self.conns.get_mut(&t)) {
            c.update_peer_credit(&h);
        }
        match (h.op, token) {
            (op::REQUEST, None) => self.guest_connect(&h, ops),
            (op::RESPONSE, Some(t)) => self.guest_accepted(t, ops),
            (op::RW, Some(t)) => {
                let failed = self
                    .conns
                    .get_mut(&t)
                    .map(|c| c.send_to_host(payload).is_err());
                if failed == Some(true) {
                    self.reset_conn(t, ops);
                } else {
                    self.rearm(t, ops);
                }
            }
            (op::SHUTDOWN, Some(t)) => self.guest_shutdown(t, h.flags, ops),
            (op::RST, Some(t)) => self.drop_conn(t, ops),
            (op::CREDIT_REQUEST, Some(t)) => {
                if let Some(c) = self.conns.get_mut(&t) {
                    let reply = c.header(op::CREDIT_UPDATE, 0);
                    self.control.push_back(reply);
                }
            }
            (op::CREDIT_UPDATE, Some(_)) => {}
            (op::RST, None) => {}
            // A packet for a connection that does not exist, or a REQUEST for one that does.
            (_, _) => self.control.push_back(self.rst_for(&h)),
        }
        for c in self.conns.values_mut() {
            if c.owes_credit_update() {
                let update = c.header(op::CREDIT_UPDATE, 0);
                self.control.push_back(update);
            }
        }
    }

    /// The guest connects to host port P: connect to `<uds>_P`.
    fn guest_connect(&mut self, h: &Header, ops: &EventOps) {
        let path = format!("{}_{}", self.uds.display(), h.dst_port);
        let stream = UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|_| s));
        let Ok(stream) = stream else {
            self.control.push_back(self.rst_for(h));
            return;
        };
        let token = self.token();
        let mut conn =
            Connection::new(stream, State::Established, self.cid, h.dst_port, h.src_port);
        conn.update_peer_credit(h);
        if ops
            .add(conn.stream.as_raw_fd(), token, EventSet::IN)
            .is_err()
        {
            self.control.push_back(self.rst_for(h));
            return;
        }
        self.control.push_back(conn.header(op::RESPONSE, 0));
        self.conns.insert(token, conn);
    }

    /// The guest accepted a host-initiated connection: tell the host client.
    fn guest_accepted(&mut self, token: u32, ops: &EventOps) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if c.state != State::HostConnecting {
            self.reset_conn(token, ops);
            return;
        }
        c.state = State::Established;
        let reply = format!("OK {}\n", c.local_port);
        if c.stream.write_all(reply.as_bytes()).is_err() {
            self.reset_conn(token, ops);
            return;
        }
        self.rearm(token, ops);
    }

    fn guest_shutdown(&mut self, token: u32, flags: u32, ops: &EventOps) {
        let both = SHUTDOWN_RCV | SHUTDOWN_SEND;
        if flags & both == both {
            self.reset_conn(token, ops);
        } else if flags & SHUTDOWN_SEND != 0 {
            if let Some(c) = self.conns.get(&token) {
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }

    // ---- host to guest (rx queue) ----------------------------------------------------------

    /// Fills guest rx buffers: control packets first, then data from readable connections.
    fn process_rx(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        let mut used = false;
        while let Some((header, data, token)) = self.next_packet(ctx.ops) {
            let Some(chain) = ctx.queues[RX].pop_descriptor_chain(ctx.mem) else {
                self.unsend(header, data, token);
                break;
            };
            let head = chain.head_index();
            let written = write_packet(ctx.mem, chain, header, &data);
            if written == 0 {
                self.unsend(header, data, token);
            }
            ctx.queues[RX]
                .add_used(ctx.mem, head, written)
                .map_err(|e| DeviceError::Guest(format!("vsock rx used ring: {e}")))?;
            used = true;
        }
        if used {
            ctx.notify(RX);
        }
        Ok(())
    }

    /// The next packet for the guest, if any: a control packet, or up to `MAX_PAYLOAD` bytes a
    /// readable connection has and the guest has credit for.
    fn next_packet(&mut self, ops: &EventOps) -> Option<(Header, Vec<u8>, Option<u32>)> {
        if let Some(h) = self.control.pop_front() {
            return Some((h, Vec::new(), None));
        }
        let tokens: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.readable && c.state == State::Established)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            let credit = c.peer_credit() as usize;
            if credit == 0 {
                continue; // the guest's CREDIT_UPDATE brings us back
            }
            match c.read_from_host(credit.min(MAX_PAYLOAD)) {
                Ok(Some(data)) if !data.is_empty() => {
                    let h = c.header(op::RW, data.len() as u32);
                    return Some((h, data, Some(token)));
                }
                Ok(Some(_)) => {
                    // EOF: the host will send no more; the guest's RST or SHUTDOWN ends it.
                    let mut h = c.header(op::SHUTDOWN, 0);
                    h.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                    c.state = State::Closing;
                    c.readable = false;
                    let _ = ops.remove(c.stream.as_raw_fd());
                    return Some((h, Vec::new(), None));
                }
                Ok(None) => {
                    c.readable = false;
                    self.rearm(token, ops);
                }
                Err(_) => {
                    self.reset_conn(token, ops);
                    return self.control.pop_front().map(|h| (h, Vec::new(), None));
                }
            }
        }
        None
    }

    /// Tells a restored guest that every connection it had is gone, in the first event buffer
    /// it offers (one too small for the event is returned empty and the next one tried).
    fn deliver_reset(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        let mut used = false;
        while self.reset_pending {
            let Some(chain) = ctx.queues[EVENT].pop_descriptor_chain(ctx.mem) else {
                break;
            };
            let head = chain.head_index();
            let event = EVENT_TRANSPORT_RESET.to_le_bytes();
            let written = match Writer::new(ctx.mem, chain) {
                Ok(mut w) if w.available_bytes() >= event.len() => {
                    w.write_all(&event).map(|_| event.len() as u32).unwrap_or(0)
                }
                _ => 0,
            };
            ctx.queues[EVENT]
                .add_used(ctx.mem, head, written)
                .map_err(|e| DeviceError::Guest(format!("vsock event used ring: {e}")))?;
            self.reset_pending = written == 0;
            used = true;
        }
        if used {
            ctx.notify(EVENT);
        }
        Ok(())
    }

    /// Puts back a packet no rx buffer could take.
    fn unsend(&mut self, header: Header, data: Vec<u8>, token: Option<u32>) {
        match token.and_then(|t| self.conns.get_mut(&t)) {
            Some(c) => c.unread(data),
            None => self.control.push_front(header),
        }
    }
}

/// Reads one packet (header and, for RW, its payload) from a tx chain.
fn read_packet(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Option<(Header, Vec<u8>)> {
    let mut reader = Reader::new(mem, chain).ok()?;
    let mut raw = [0u8; HEADER_LEN];
    reader.read_exact(&mut raw).ok()?;
    let h = Header::parse(&raw);
    let len = h.len as usize;
    if h.op != op::RW || len == 0 {
        return Some((h, Vec::new()));
    }
    if len > MAX_PAYLOAD || len > reader.available_bytes() {
        return None;
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).ok()?;
    Some((h, payload))
}

/// Writes a packet into an rx chain; returns the bytes written, 0 if it does not fit.
fn write_packet(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    h: Header,
    data: &[u8],
) -> u32 {
    let Ok(mut writer) = Writer::new(mem, chain) else {
        return 0;
    };
    if writer.available_bytes() < HEADER_LEN + data.len() {
        return 0;
    }
    if writer
        .write_all(&h.to_bytes())
        .and_then(|_| writer.write_all(data))
        .is_err()
    {
        return 0;
    }
    writer.bytes_written() as u32
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, _features: u64, ctx: Context<'_>) -> Result<(), DeviceError> {
        if !self.listening {
            ctx.ops
                .add(self.listener.as_raw_fd(), LISTENER, EventSet::IN)?;
            self.listening = true;
        }
        Ok(())
    }

    fn process_queue(&mut self, queue: usize, mut ctx: Context<'_>) -> Result<(), DeviceError> {
        if queue == EVENT {
            return self.deliver_reset(&mut ctx);
        }
        if queue == TX {
            self.process_tx(&mut ctx)?;
        }
        // New rx buffers, or tx that produced replies: deliver what waits.
        self.process_rx(&mut ctx)
    }

    fn process_event(
        &mut self,
        token: u32,
        events: EventSet,
        mut ctx: Context<'_>,
    ) -> Result<(), DeviceError> {
        if token == LISTENER {
            self.accept(ctx.ops);
        } else if self.handshakes.contains_key(&token) {
            self.handshake(token, ctx.ops);
        } else {
            self.conn_event(token, events, ctx.ops);
        }
        self.process_rx(&mut ctx)
    }

    fn reset(&mut self, ops: &EventOps) {
        for (_, hs) in std::mem::take(&mut self.handshakes) {
            let _ = ops.remove(hs.stream.as_raw_fd());
        }
        for (_, c) in std::mem::take(&mut self.conns) {
            let _ = ops.remove(c.stream.as_raw_fd());
        }
        self.control.clear();
        self.reset_pending = false;
    }

    fn save_state(&self) -> DeviceState {
        DeviceState::Vsock { cid: self.cid }
    }

    /// Any CID: the guest reads it again after the reset.
    fn restore_state(&mut self, saved: &DeviceState) -> Result<(), String> {
        match saved {
            DeviceState::Vsock { .. } => {
                self.reset_pending = true;
                Ok(())
            }
            other => Err(format!(
                "saved state {other:?} is not a virtio-vsock device's"
            )),
        }
    }
}

#[cfg(test)]
mod tests;
