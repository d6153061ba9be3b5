//! virtio-vsock against a driver-side virtqueue and real host Unix sockets.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use super::packet::{op, Header, HEADER_LEN};
use super::*;
use crate::devices::virtio::testing::{rd, wr, TestDriver, BUFFERS};

const GUEST_CID: u64 = 3;
const TX_BUF: u64 = BUFFERS;
const RX_BUFS: u64 = BUFFERS + 0x10000;

struct Guest {
    d: TestDriver,
    rx_heads: HashMap<u32, u64>,
    dir: tempfile::TempDir,
    /// Credit the guest advertises.
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Guest {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vsock = Vsock::new(GUEST_CID, &dir.path().join("v.sock")).unwrap();
        let d = TestDriver::new(Box::new(vsock), None);
        let mut g = Self {
            d,
            rx_heads: HashMap::new(),
            dir,
            buf_alloc: 65536,
            fwd_cnt: 0,
        };
        for i in 0..4 {
            g.post_rx(RX_BUFS + i * 0x1000);
        }
        g
    }

    fn uds(&self) -> std::path::PathBuf {
        self.dir.path().join("v.sock")
    }

    fn post_rx(&mut self, addr: u64) {
        let head = self.d.add_chain(0, &[wr(addr, 0x1000)]);
        self.rx_heads.insert(u32::from(head), addr);
        self.d.kick(0);
    }

    fn send(&mut self, op: u16, src_port: u32, dst_port: u32, flags: u32, payload: &[u8]) {
        let h = Header {
            src_cid: GUEST_CID,
            dst_cid: 2,
            src_port,
            dst_port,
            len: payload.len() as u32,
            type_: 1,
            op,
            flags,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt,
        };
        self.send_header(h, payload);
    }

    fn send_header(&mut self, h: Header, payload: &[u8]) {
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(payload);
        self.d.write_bytes(TX_BUF, &bytes);
        self.d.add_chain(1, &[rd(TX_BUF, bytes.len() as u32)]);
        self.d.kick(1);
        assert_eq!(self.d.take_used(1).len(), 1, "tx buffer returned");
    }

    /// Packets delivered to the guest so far, pumping host events for up to 5 s until `want`.
    fn receive(&mut self, want: usize) -> Vec<(Header, Vec<u8>)> {
        self.receive_within(want, Duration::from_secs(5))
    }

    fn receive_within(&mut self, want: usize, limit: Duration) -> Vec<(Header, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            for (head, len) in self.d.take_used(0) {
                let addr = self.rx_heads.remove(&head).expect("known rx buffer");
                let bytes = self.d.read_bytes(addr, len as usize);
                let h = Header::parse(bytes[..HEADER_LEN].try_into().unwrap());
                got.push((h, bytes[HEADER_LEN..].to_vec()));
                self.post_rx(addr);
            }
            if got.len() >= want || Instant::now() > deadline {
                return got;
            }
            self.d.pump(50);
        }
    }

    /// Connects a host client to guest port `port` and accepts it on the guest side.
    fn host_connects(&mut self, port: u32) -> (UnixStream, u32) {
        let mut host = UnixStream::connect(self.uds()).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        host.write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        let got = self.receive(1);
        let (req, _) = got[0];
        assert_eq!(
            (req.op, req.src_cid, req.dst_cid, req.dst_port),
            (op::REQUEST, 2, GUEST_CID, port)
        );
        self.send(op::RESPONSE, port, req.src_port, 0, &[]);
        let mut line = [0u8; 32];
        let n = host.read(&mut line).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&line[..n]),
            format!("OK {}\n", req.src_port)
        );
        (host, req.src_port)
    }
}

#[test]
fn host_connects_and_data_flows_both_ways_then_the_guest_closes() {
    let mut g = Guest::new();
    let (mut host, host_port) = g.host_connects(1234);
    host.write_all(b"hello guest").unwrap();
    let got = g.receive(1);
    assert_eq!(
        (got[0].0.op, got[0].1.as_slice()),
        (op::RW, &b"hello guest"[..])
    );
    g.fwd_cnt += 11;
    g.send(op::RW, 1234, host_port, 0, b"hello host");
    let mut buf = [0u8; 10];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello host");
    g.send(op::SHUTDOWN, 1234, host_port, 3, &[]);
    assert_eq!(host.read(&mut buf).unwrap(), 0, "host sees EOF");
    let got = g.receive(1);
    assert_eq!(got[0].0.op, op::RST);
}

#[test]
fn host_eof_becomes_a_shutdown_for_the_guest() {
    let mut g = Guest::new();
    let (host, host_port) = g.host_connects(7);
    drop(host);
    let got = g.receive(1);
    assert_eq!(
        (got[0].0.op, got[0].0.flags, got[0].0.src_port),
        (op::SHUTDOWN, 3, host_port)
    );
    g.send(op::RST, 7, host_port, 0, &[]);
}

#[test]
fn guest_connects_to_a_host_listener_or_is_refused() {
    let mut g = Guest::new();
    g.send(op::REQUEST, 4000, 5000, 0, &[]);
    let got = g.receive(1);
    assert_eq!(
        (got[0].0.op, got[0].0.dst_port),
        (op::RST, 4000),
        "no listener at <uds>_5000"
    );

    let listener = UnixListener::bind(format!("{}_5000", g.uds().display())).unwrap();
    g.send(op::REQUEST, 4001, 5000, 0, &[]);
    let got = g.receive(1);
    assert_eq!(
        (got[0].0.op, got[0].0.src_port, got[0].0.dst_port),
        (op::RESPONSE, 5000, 4001)
    );
    let (mut accepted, _) = listener.accept().unwrap();
    accepted
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    g.send(op::RW, 4001, 5000, 0, b"from the guest");
    let mut buf = [0u8; 14];
    accepted.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from the guest");
}

#[test]
fn the_guest_credit_limits_what_the_host_sends() {
    let mut g = Guest::new();
    g.buf_alloc = 8;
    let (mut host, host_port) = g.host_connects(9);
    host.write_all(b"0123456789abcdefghij").unwrap();
    let got = g.receive(1);
    assert_eq!(got[0].1, b"01234567");
    assert!(
        g.receive_within(1, Duration::from_millis(300)).is_empty(),
        "nothing beyond the credit"
    );
    g.fwd_cnt = 8;
    g.send(op::CREDIT_UPDATE, 9, host_port, 0, &[]);
    let got = g.receive(1);
    assert_eq!(got[0].1, b"89abcdef");
}

#[test]
fn bad_packets_get_a_reset_and_a_credit_request_an_update() {
    let mut g = Guest::new();
    let mut h = Header {
        src_cid: 99,
        dst_cid: 2,
        src_port: 1,
        dst_port: 2,
        type_: 1,
        op: op::REQUEST,
        ..Default::default()
    };
    g.send_header(h, &[]);
    assert_eq!(g.receive(1)[0].0.op, op::RST, "spoofed source CID");
    h.src_cid = GUEST_CID;
    h.op = op::RW;
    g.send_header(h, &[]);
    assert_eq!(g.receive(1)[0].0.op, op::RST, "data for no connection");
    let (_host, host_port) = g.host_connects(11);
    g.send(op::CREDIT_REQUEST, 11, host_port, 0, &[]);
    let got = g.receive(1);
    assert_eq!(
        (got[0].0.op, got[0].0.buf_alloc),
        (op::CREDIT_UPDATE, connection::BUF_ALLOC)
    );
    // A truncated header: the buffer is returned, nothing is sent, the device keeps going.
    g.d.write_bytes(TX_BUF, &[0u8; 10]);
    g.d.add_chain(1, &[rd(TX_BUF, 10)]);
    g.d.kick(1);
    assert_eq!(g.d.take_used(1).len(), 1);
    assert!(g.d.transport.is_active());
}

#[test]
fn a_bad_handshake_is_dropped_and_reset_closes_connections() {
    let mut g = Guest::new();
    let mut bad = UnixStream::connect(g.uds()).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    while g.d.pump(200) > 0 {}
    let mut buf = [0u8; 8];
    assert_eq!(bad.read(&mut buf).unwrap(), 0, "a bad handshake is closed");

    let (mut host, _) = g.host_connects(12);
    g.d.write_reg(0x70, 0); // driver reset
    assert_eq!(host.read(&mut buf).unwrap(), 0, "reset closes host streams");
}

#[test]
fn a_restored_device_resets_the_guests_connections_and_serves_its_new_cid_and_socket() {
    let mut g = Guest::new();
    // The driver keeps an event buffer posted, as Linux's does.
    let event_buf = BUFFERS + 0x30000;
    g.d.write_bytes(event_buf, &[0xff; 8]);
    let head = g.d.add_chain(EVENT, &[wr(event_buf, 8)]);
    g.d.kick(EVENT);
    assert!(g.d.take_used(EVENT).is_empty(), "no event before a restore");
    let (mut old_client, _) = g.host_connects(1234);
    g.d.interrupts();

    let uds = g.dir.path().join("restored.sock");
    g.d.restore_onto(Box::new(Vsock::new(7, &uds).unwrap()))
        .unwrap();
    assert_eq!(g.d.take_used(EVENT), vec![(u32::from(head), 4)]);
    assert_eq!(
        g.d.read_bytes(event_buf, 4),
        EVENT_TRANSPORT_RESET.to_le_bytes()
    );
    assert!(g.d.interrupts() > 0, "the driver is told");
    assert_eq!(g.d.read_reg(0x100), 7, "the CID the driver reads again");
    // The snapshotted VM's host client ended with its VMM.
    let mut byte = [0u8; 1];
    assert_eq!(old_client.read(&mut byte).unwrap(), 0);

    // A host client of the restored VM reaches the guest at its new CID.
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 99\n").unwrap();
    let got = g.receive(1);
    assert_eq!(
        (got[0].0.op, got[0].0.dst_cid, got[0].0.dst_port),
        (op::REQUEST, 7, 99)
    );
}

#[test]
fn a_saved_state_of_another_device_is_refused() {
    let mut g = Guest::new();
    let err =
        g.d.restore_onto(Box::new(crate::devices::virtio::balloon::Balloon::new()))
            .unwrap_err();
    assert!(err.contains("type 19 with 3 queues"), "{err}");
}
