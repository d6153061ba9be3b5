//! The balloon against a driver-side virtqueue: reported and inflated pages read back as the
//! mapping's own (zeros for anonymous RAM), their neighbours keep what they held, and ranges
//! a guest could use to reach outside its memory stop the device.

use super::*;
use crate::devices::virtio::testing::{rd, wr, TestDriver, BUFFERS};

const FREE: u64 = 0x40_0000; // 4 MiB, a 2 MiB block as Linux reports them
const BLOCK: u32 = 0x20_0000;
const NEEDS_RESET: u32 = 64;

fn driver() -> TestDriver {
    TestDriver::new(Box::new(Balloon::new()), None)
}

fn fill(d: &TestDriver, addr: u64, len: usize, byte: u8) {
    d.write_bytes(addr, &vec![byte; len]);
}

#[test]
fn offers_free_page_reporting_and_no_target() {
    let mut d = TestDriver::unready(Box::new(Balloon::new()));
    assert_eq!(
        d.offered_features(),
        VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_REPORTING
    );
    assert_eq!(
        d.read_reg(0x100),
        0,
        "num_pages: the host never asks for pages"
    );
}

#[test]
fn reported_ranges_read_as_zeros_and_their_neighbours_are_kept() {
    let mut d = driver();
    fill(&d, FREE - 4096, 4096, 0x11);
    fill(&d, FREE, BLOCK as usize, 0xab);
    fill(&d, FREE + u64::from(BLOCK), 4096, 0x22);
    let head = d.add_chain(REPORTING, &[wr(FREE, BLOCK)]);
    d.kick(REPORTING);
    assert_eq!(d.take_used(REPORTING), vec![(u32::from(head), 0)]);
    assert!(d.interrupts() > 0, "the driver waits for the buffer back");
    assert!(d.read_bytes(FREE, BLOCK as usize).iter().all(|&b| b == 0));
    assert!(d.read_bytes(FREE - 4096, 4096).iter().all(|&b| b == 0x11));
    assert!(d
        .read_bytes(FREE + u64::from(BLOCK), 4096)
        .iter()
        .all(|&b| b == 0x22));
    assert_eq!(d.read_reg(0x70) & NEEDS_RESET, 0);
}

#[test]
fn inflated_pages_are_given_back_too() {
    let mut d = driver();
    fill(&d, FREE, 3 * 4096, 0xcd);
    let pfns: Vec<u8> = [FREE / 4096, FREE / 4096 + 2]
        .iter()
        .flat_map(|p| (*p as u32).to_le_bytes())
        .collect();
    d.write_bytes(BUFFERS, &pfns);
    d.add_chain(INFLATE, &[rd(BUFFERS, pfns.len() as u32)]);
    d.kick(INFLATE);
    assert_eq!(d.take_used(INFLATE).len(), 1);
    assert!(d.read_bytes(FREE, 4096).iter().all(|&b| b == 0));
    assert!(d.read_bytes(FREE + 4096, 4096).iter().all(|&b| b == 0xcd));
    assert!(d.read_bytes(FREE + 8192, 4096).iter().all(|&b| b == 0));
}

#[test]
fn ranges_outside_guest_memory_or_not_whole_pages_stop_the_device() {
    // The test guest has 16 MiB; the last range would run from its last page past the end.
    for (addr, len) in [
        (FREE + 8, 4096),
        (FREE, 100),
        (16 << 20, 4096),
        ((16 << 20) - 4096, 8192),
    ] {
        let mut d = driver();
        fill(&d, FREE, 4096, 0xab);
        d.add_chain(REPORTING, &[wr(addr, len)]);
        d.kick(REPORTING);
        assert_ne!(d.read_reg(0x70) & NEEDS_RESET, 0, "{addr:#x}+{len:#x}");
        assert!(d.read_bytes(FREE, 4096).iter().all(|&b| b == 0xab));
    }
}

#[test]
fn a_page_list_that_is_not_whole_numbers_stops_the_device() {
    let mut d = driver();
    d.add_chain(INFLATE, &[rd(BUFFERS, 6)]);
    d.kick(INFLATE);
    assert_ne!(d.read_reg(0x70) & NEEDS_RESET, 0);
}
