//! virtio-net against a real tap device, in a network namespace of the test's own thread.

use std::time::{Duration, Instant};

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::virtio::testing::{rd, wr, TestDriver, BUFFERS};

const MAC: [u8; 6] = [0x02, 0xca, 0x95, 0, 0, 1];
const ETHERTYPE: [u8; 2] = [0x88, 0xb5]; // local experimental: nothing else sends it

/// Moves this test's thread into a fresh network namespace (IPv6 off, so no router
/// solicitations appear on the tap) and returns a tap there, up.
fn tap_in_own_netns(name: &str) -> Net {
    // SAFETY: unshare affects only the calling thread, which is this test's own.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare(CLONE_NEWNET)"
    );
    std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").ok();
    let net = Net::new(name, MAC).unwrap();
    set_up(name);
    net
}

fn set_up(name: &str) {
    // SAFETY: a datagram socket for interface ioctls; closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one 40-byte ifreq.
    unsafe {
        assert_eq!(libc::ioctl(sock, 0x8913, req.as_mut_ptr()), 0);
        req[16] |= libc::IFF_UP as u8;
        assert_eq!(libc::ioctl(sock, 0x8914, req.as_mut_ptr()), 0);
        libc::close(sock);
    }
}

/// A raw packet socket on the tap's interface: what it receives the guest sent, what it sends
/// the guest receives.
fn wire(name: &str) -> i32 {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket/bind calls with a sockaddr_ll that lives across the call.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(fd >= 0);
        let cname = std::ffi::CString::new(name).unwrap();
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = libc::if_nametoindex(cname.as_ptr()) as i32;
        assert_eq!(
            libc::bind(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32
            ),
            0
        );
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        fd
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(MAC);
    f.extend(ETHERTYPE);
    f.extend(payload);
    f.resize(f.len().max(60), 0);
    f
}

fn recv_ours(fd: i32) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut buf = [0u8; 2048];
        // SAFETY: recv into a stack buffer of the size given.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 14 && buf[12..14] == ETHERTYPE {
            return Some(buf[..n as usize].to_vec());
        }
    }
    None
}

#[test]
fn frames_cross_between_the_guest_queues_and_the_tap() {
    std::thread::spawn(|| {
        let net = tap_in_own_netns("ctap0");
        let fd = wire("ctap0");
        let mut d = TestDriver::new(Box::new(net), None);
        let mut mac = [0u8; 6];
        d.transport.read(0x100, &mut mac);
        assert_eq!(mac, MAC);

        // Guest to wire.
        let sent = frame(b"from the guest");
        let mut bytes = vec![0u8; VNET_HDR_LEN];
        bytes.extend(&sent);
        d.write_bytes(BUFFERS, &bytes);
        d.add_chain(
            1,
            &[
                rd(BUFFERS, VNET_HDR_LEN as u32),
                rd(BUFFERS + VNET_HDR_LEN as u64, sent.len() as u32),
            ],
        );
        d.kick(1);
        assert_eq!(d.take_used(1).len(), 1);
        assert_eq!(recv_ours(fd).expect("the frame reached the wire"), sent);

        // Wire to guest, first with no rx buffer posted: the frame waits, then arrives.
        let incoming = frame(b"to the guest");
        // SAFETY: send from a live buffer on the bound packet socket.
        assert!(unsafe { libc::send(fd, incoming.as_ptr().cast(), incoming.len(), 0) } > 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            d.pump(100);
            d.add_chain(0, &[wr(BUFFERS + 0x10000, 4096)]);
            d.kick(0);
            let used = d.take_used(0);
            if let Some(&(_, len)) = used.first() {
                let got = d.read_bytes(BUFFERS + 0x10000, len as usize);
                if got[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == ETHERTYPE {
                    assert_eq!(&got[VNET_HDR_LEN..], &incoming[..]);
                    assert_eq!(&got[10..12], &[1, 0], "num_buffers");
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the frame never reached the guest"
            );
        }
        assert!(d.transport.is_active());
    })
    .join()
    .unwrap();
}

#[test]
fn macs_and_tap_names_are_checked() {
    assert_eq!(parse_mac("02:ca:95:00:00:01"), Some(MAC));
    assert_eq!(parse_mac("02:ca:95:00:00"), None);
    assert_eq!(parse_mac("02:ca:95:00:00:1"), None);
    assert_eq!(parse_mac("zz:ca:95:00:00:01"), None);
    let e = Net::new("a-name-far-too-long", MAC)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot open tap device a-name-far-too-long"),
        "{e}"
    );
}

#[test]
fn a_restored_device_keeps_the_guests_mac_and_sends_on_the_restores_tap() {
    std::thread::spawn(|| {
        let net = tap_in_own_netns("rtap0");
        let mut d = TestDriver::new(Box::new(net), None);

        let other_mac = Net::new("rtap1", [0x02, 0, 0, 0, 0, 9]).unwrap();
        let err = d.restore_onto(Box::new(other_mac)).unwrap_err();
        assert!(
            err.contains("has MAC 02:ca:95:00:00:01, the restore gives 02:00:00:00:00:09"),
            "{err}"
        );

        let restored = Net::new("rtap2", MAC).unwrap();
        set_up("rtap2");
        let new_wire = wire("rtap2");
        d.restore_onto(Box::new(restored)).unwrap();
        assert!(d.transport.is_active(), "started again without the driver");
        let sent = frame(b"after the restore");
        let mut bytes = vec![0u8; VNET_HDR_LEN];
        bytes.extend(&sent);
        d.write_bytes(BUFFERS, &bytes);
        d.add_chain(1, &[rd(BUFFERS, bytes.len() as u32)]);
        d.kick(1);
        assert_eq!(d.take_used(1).len(), 1);
        assert_eq!(recv_ours(new_wire).expect("on the restore's tap"), sent);
    })
    .join()
    .unwrap();
}
