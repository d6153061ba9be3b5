//! virtio-blk against a driver-side virtqueue in guest memory.

use std::io::Write;

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::virtio::testing::{rd, wr, Buf, TestDriver, BUFFERS, QUEUE_SIZE};

const HDR: u64 = BUFFERS;
const DATA: u64 = BUFFERS + 0x1000;
const STATUS: u64 = BUFFERS + 0x3000;

fn disk(contents: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents).unwrap();
    f
}

fn driver(file: &tempfile::NamedTempFile, read_only: bool, features: Option<u64>) -> TestDriver {
    let block = Block::open(file.path(), read_only, "capsa-disk0").unwrap();
    TestDriver::new(Box::new(block), features)
}

fn header(d: &TestDriver, kind: u32, sector: u64) {
    let mut h = kind.to_le_bytes().to_vec();
    h.extend([0u8; 4]);
    h.extend(sector.to_le_bytes());
    d.write_bytes(HDR, &h);
    d.write_bytes(STATUS, &[0xff]);
}

fn status(d: &TestDriver) -> u8 {
    d.read_bytes(STATUS, 1)[0]
}

fn sectors(n: usize) -> Vec<u8> {
    (0..n * 512).map(|i| (i / 512) as u8 + 1).collect()
}

#[test]
fn reads_writes_and_flushes_through_a_three_descriptor_chain() {
    let file = disk(&sectors(8));
    let mut d = driver(&file, false, None);
    header(&d, 0, 2);
    let head = d.add_chain(0, &[rd(HDR, 16), wr(DATA, 1024), wr(STATUS, 1)]);
    d.kick(0);
    assert_eq!(d.take_used(0), vec![(u32::from(head), 1025)]);
    assert_eq!(status(&d), 0);
    assert_eq!(d.read_bytes(DATA, 1024), sectors(8)[1024..2048]);

    d.write_bytes(DATA, &[0xab; 512]);
    header(&d, 1, 7);
    d.add_chain(0, &[rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)]);
    header(&d, 1, 7);
    d.kick(0);
    assert_eq!(d.take_used(0).len(), 1);
    assert_eq!(status(&d), 0);
    assert_eq!(std::fs::read(file.path()).unwrap()[7 * 512..], [0xab; 512]);

    header(&d, 4, 0);
    d.add_chain(0, &[rd(HDR, 16), wr(STATUS, 1)]);
    d.kick(0);
    assert_eq!(d.take_used(0)[0].1, 1);
    assert_eq!(status(&d), 0);
}

#[test]
fn data_split_over_many_descriptors_and_indirect_tables() {
    let file = disk(&sectors(4));
    let mut d = driver(&file, false, None);
    header(&d, 0, 0);
    let parts: Vec<Buf> = [rd(HDR, 16)]
        .into_iter()
        .chain((0..4).map(|i| wr(DATA + i * 0x200, 512)))
        .chain([wr(STATUS, 1)])
        .collect();
    d.add_chain(0, &parts);
    d.kick(0);
    assert_eq!(d.take_used(0)[0].1, 2049);
    assert_eq!(d.read_bytes(DATA, 2048), sectors(4));

    d.write_bytes(DATA, &[0; 2048]);
    header(&d, 0, 1);
    let head = d.add_indirect(
        0,
        BUFFERS + 0x8000,
        &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)],
    );
    d.kick(0);
    assert_eq!(d.take_used(0), vec![(u32::from(head), 513)]);
    assert_eq!(d.read_bytes(DATA, 512), sectors(4)[512..1024]);
}

#[test]
fn requests_past_the_end_or_unknown_fail_with_a_status_not_a_stop() {
    let file = disk(&sectors(2));
    let mut d = driver(&file, false, None);
    header(&d, 0, 2);
    d.add_chain(0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    d.kick(0);
    d.take_used(0);
    assert_eq!(status(&d), 1, "read past the end is an I/O error");
    header(&d, 0, u64::MAX);
    d.add_chain(0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    d.kick(0);
    d.take_used(0);
    assert_eq!(
        status(&d),
        1,
        "a sector number that overflows is an I/O error"
    );
    header(&d, 77, 0);
    d.add_chain(0, &[rd(HDR, 16), wr(STATUS, 1)]);
    d.kick(0);
    d.take_used(0);
    assert_eq!(status(&d), 2, "unknown request types are unsupported");
    assert!(d.transport.is_active());
}

#[test]
fn a_read_only_disk_offers_ro_and_refuses_writes() {
    let file = disk(&sectors(2));
    let mut d = driver(&file, true, None);
    assert_ne!(d.offered_features() & VIRTIO_BLK_F_RO, 0);
    header(&d, 1, 0);
    d.add_chain(0, &[rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)]);
    d.kick(0);
    d.take_used(0);
    assert_eq!(status(&d), 1);
    assert_eq!(std::fs::read(file.path()).unwrap(), sectors(2));
}

#[test]
fn get_id_returns_the_serial() {
    let file = disk(&sectors(1));
    let mut d = driver(&file, false, None);
    header(&d, 8, 0);
    d.add_chain(0, &[rd(HDR, 16), wr(DATA, 20), wr(STATUS, 1)]);
    d.kick(0);
    assert_eq!(d.take_used(0)[0].1, 21);
    assert_eq!(&d.read_bytes(DATA, 11), b"capsa-disk0");
}

#[test]
fn malformed_chains_are_answered_empty_and_the_device_goes_on() {
    let file = disk(&sectors(2));
    let mut d = driver(&file, false, None);
    // No device-writable status byte.
    header(&d, 0, 0);
    d.add_chain(0, &[rd(HDR, 16)]);
    // A header too short.
    d.add_chain(0, &[rd(HDR, 4), wr(STATUS, 1)]);
    // A buffer outside guest memory.
    d.add_chain(0, &[rd(HDR, 16), wr(1 << 40, 512), wr(STATUS, 1)]);
    d.kick(0);
    let used = d.take_used(0);
    assert_eq!(used.len(), 3, "{used:?}");
    assert!(used.iter().all(|(_, len)| *len == 0), "{used:?}");
    // A descriptor whose `next` loops back to itself: the walk stops, nothing hangs.
    let table = d.desc_table(0);
    d.write_desc(table, 10, HDR, 16, 1, 10);
    d.publish(0, 10);
    d.kick(0);
    d.take_used(0);
    // A good request afterwards still works.
    header(&d, 0, 1);
    d.add_chain(0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    d.kick(0);
    assert_eq!(d.take_used(0).last().map(|u| u.1), Some(513));
    assert_eq!(status(&d), 0);
}

#[test]
fn no_interrupt_flag_suppresses_notifications() {
    let file = disk(&sectors(1));
    // Without EVENT_IDX the avail ring's NO_INTERRUPT flag rules.
    let mut d = driver(
        &file,
        false,
        Some(crate::devices::virtio::VIRTIO_F_VERSION_1),
    );
    d.set_avail_flags(0, 1);
    header(&d, 0, 0);
    d.add_chain(0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    d.kick(0);
    assert_eq!(d.take_used(0).len(), 1);
    assert_eq!(d.interrupts(), 0);
    d.set_avail_flags(0, 0);
    d.add_chain(0, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    d.kick(0);
    assert_eq!(d.interrupts(), 1);
    assert_eq!(d.read_reg(0x60) & 1, 1, "InterruptStatus says used ring");
    d.write_reg(0x64, 1);
    assert_eq!(d.read_reg(0x60), 0);
}

#[test]
fn negotiation_and_queue_placement_are_checked() {
    let file = disk(&sectors(1));
    let mut d = TestDriver::unready(Box::new(Block::open(file.path(), false, "x").unwrap()));
    assert_eq!(d.read_reg(0x0), 0x7472_6976);
    assert_eq!(d.read_reg(0x8), 2);
    assert_eq!(d.read_reg(0x34), 256);
    assert_eq!(u64::from(d.read_reg(0x100)), 1, "capacity in sectors");
    // A feature the device never offered: FEATURES_OK does not stick.
    assert_eq!(
        d.negotiate((1 << 40) | crate::devices::virtio::VIRTIO_F_VERSION_1) & 8,
        0
    );
    // A queue that lies outside guest memory: the device refuses to start and asks for reset.
    let offered = d.offered_features();
    assert_ne!(d.negotiate(offered) & 8, 0);
    d.place_queue(0, 1 << 40, 1 << 40, 1 << 40);
    d.write_reg(0x70, 0xf);
    assert_ne!(d.read_reg(0x70) & 0x40, 0, "DEVICE_NEEDS_RESET");
    assert!(!d.transport.is_active());
    // After a reset the driver can set it up properly.
    d.negotiate(offered);
    d.setup_queues();
    d.write_reg(0x70, 0xf);
    assert!(d.transport.is_active());
    let _ = QUEUE_SIZE;
}

#[test]
fn garbage_in_mmio_space_never_panics_and_a_reset_recovers() {
    let file = disk(&sectors(2));
    let mut d = driver(&file, false, None);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        // xorshift: offsets across the window, all access sizes, any value
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = x % 0x1000;
        let size = [1usize, 2, 4, 8][(x >> 20) as usize % 4];
        let bytes = x.to_le_bytes();
        if x & 1 == 0 {
            d.transport.write(offset, &bytes[..size]);
        } else {
            let mut buf = vec![0u8; size];
            d.transport.read(offset, &mut buf);
        }
        if offset == 0x50 {
            d.transport.handle_event(
                crate::devices::virtio::QUEUE_TOKEN_BASE,
                vmm_sys_util::epoll::EventSet::IN,
            );
        }
    }
    // The driver resets and sets the device up again: it works.
    let offered = d.offered_features();
    d.negotiate(offered);
    d.setup_queues();
    d.write_reg(0x70, 0xf);
    assert!(d.transport.is_active());
}
