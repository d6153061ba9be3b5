//! virtio-console's multiport protocol against a driver-side virtqueue and a host Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::virtio::testing::{rd, wr, TestDriver, BUFFERS};

const CTRL_BUFS: u64 = BUFFERS;
const MSG: u64 = BUFFERS + 0x8000;
const DATA_RX: u64 = BUFFERS + 0x9000;
const DATA_TX: u64 = BUFFERS + 0xa000;
const PORT_RX: usize = 4;
const PORT_TX: usize = 5;

struct Guest {
    d: TestDriver,
    dir: tempfile::TempDir,
    ctrl_heads: std::collections::HashMap<u32, u64>,
}

impl Guest {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let console = Console::new(&[("capsa.agent".to_string(), path.as_path())]).unwrap();
        let d = TestDriver::new(Box::new(console), None);
        let mut g = Self {
            d,
            dir,
            ctrl_heads: Default::default(),
        };
        for i in 0..4 {
            g.post_ctrl(CTRL_BUFS + i * 0x100);
        }
        g
    }

    fn post_ctrl(&mut self, addr: u64) {
        let head = self.d.add_chain(CONTROL_RX, &[wr(addr, 0x100)]);
        self.ctrl_heads.insert(u32::from(head), addr);
        self.d.kick(CONTROL_RX);
    }

    fn send_ctrl(&mut self, id: u32, ev: u16, value: u16) {
        let mut m = id.to_le_bytes().to_vec();
        m.extend(ev.to_le_bytes());
        m.extend(value.to_le_bytes());
        self.d.write_bytes(MSG, &m);
        self.d.add_chain(CONTROL_TX, &[rd(MSG, 8)]);
        self.d.kick(CONTROL_TX);
    }

    /// The next control message for the driver: (id, event, value, extra bytes).
    fn recv_ctrl(&mut self) -> (u32, u16, u16, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(&(head, len)) = self.d.take_used(CONTROL_RX).first() {
                let addr = self.ctrl_heads.remove(&head).unwrap();
                let b = self.d.read_bytes(addr, len as usize);
                self.post_ctrl(addr);
                let id = u32::from_le_bytes(b[0..4].try_into().unwrap());
                return (
                    id,
                    u16::from_le_bytes([b[4], b[5]]),
                    u16::from_le_bytes([b[6], b[7]]),
                    b[8..].to_vec(),
                );
            }
            assert!(Instant::now() < deadline, "no control message");
            self.d.pump(50);
        }
    }

    fn connect_host(&mut self) -> UnixStream {
        let s = UnixStream::connect(self.dir.path().join("agent.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }
}

#[test]
fn named_port_handshake_and_data_both_ways() {
    let mut g = Guest::new();
    let mut cfg = [0u8; 4];
    g.d.transport.read(0x104, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg), 2, "max_nr_ports counts port 0");

    g.send_ctrl(0, event::DEVICE_READY, 1);
    assert_eq!(g.recv_ctrl(), (1, event::DEVICE_ADD, 1, vec![]));
    g.send_ctrl(1, event::PORT_READY, 1);
    assert_eq!(
        g.recv_ctrl(),
        (1, event::PORT_NAME, 0, b"capsa.agent".to_vec())
    );

    let mut host = g.connect_host();
    assert_eq!(
        g.recv_ctrl(),
        (1, event::PORT_OPEN, 1, vec![]),
        "the host side opened"
    );
    g.send_ctrl(1, event::PORT_OPEN, 1);

    g.d.write_bytes(DATA_TX, b"from the guest");
    g.d.add_chain(PORT_TX, &[rd(DATA_TX, 14)]);
    g.d.kick(PORT_TX);
    let mut buf = [0u8; 14];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from the guest");

    host.write_all(b"from the host").unwrap();
    g.d.add_chain(PORT_RX, &[wr(DATA_RX, 64)]);
    g.d.kick(PORT_RX);
    let deadline = Instant::now() + Duration::from_secs(5);
    let used = loop {
        let u = g.d.take_used(PORT_RX);
        if !u.is_empty() {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "host data never reached the guest"
        );
        g.d.pump(50);
    };
    assert_eq!(
        g.d.read_bytes(DATA_RX, used[0].1 as usize),
        b"from the host"
    );

    // A second client is turned away; the first one leaving closes the port for the guest.
    let mut second = g.connect_host();
    g.d.pump(100);
    assert_eq!(second.read(&mut buf).unwrap(), 0);
    drop(host);
    assert_eq!(g.recv_ctrl(), (1, event::PORT_OPEN, 0, vec![]));
}

#[test]
fn port_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    for bad in ["", "a\nb", &"x".repeat(65)] {
        assert!(matches!(
            Console::new(&[(bad.to_string(), path.as_path())]),
            Err(ConsoleError::BadName(_))
        ));
    }
    let e = Console::new(&[("ok".to_string(), Path::new("/nonexistent/dir/c.sock"))])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot listen on console socket /nonexistent/dir/c.sock"),
        "{e}"
    );
}

#[test]
fn a_restored_console_keeps_its_ports_and_tells_the_guest_its_client_is_gone() {
    let mut g = Guest::new();
    g.send_ctrl(0, event::DEVICE_READY, 1);
    assert_eq!(g.recv_ctrl(), (1, event::DEVICE_ADD, 1, vec![]));
    g.send_ctrl(1, event::PORT_READY, 1);
    assert_eq!(g.recv_ctrl().1, event::PORT_NAME);
    let _client = g.connect_host();
    assert_eq!(g.recv_ctrl(), (1, event::PORT_OPEN, 1, vec![]));
    g.send_ctrl(1, event::PORT_OPEN, 1);

    // Other port names: refused, naming both lists.
    let path = g.dir.path().join("restored.sock");
    let renamed = Console::new(&[("other".to_string(), path.as_path())]).unwrap();
    let err = g.d.restore_onto(Box::new(renamed)).unwrap_err();
    assert!(
        err.contains("console ports are [capsa.agent], the restore gives [other]"),
        "{err}"
    );

    let restored = Console::new(&[("capsa.agent".to_string(), path.as_path())]).unwrap();
    g.d.restore_onto(Box::new(restored)).unwrap();
    // The snapshot's client stayed with the old VMM: the port is closed for the guest...
    assert_eq!(g.recv_ctrl(), (1, event::PORT_OPEN, 0, vec![]));
    // ...and opened again when a client of the restored VM connects, without a new handshake.
    let s = UnixStream::connect(&path).unwrap();
    assert_eq!(g.recv_ctrl(), (1, event::PORT_OPEN, 1, vec![]));
    drop(s);
}
