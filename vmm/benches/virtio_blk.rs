//! virtio-blk device-model throughput: requests placed in guest memory by the driver-side helper,
//! processed by the transport and the block device against a page-cached file. This is the
//! device's own cost per byte (descriptor walk, copies, file I/O), with no guest running.
//!   cargo bench -p capsa-vmm --bench virtio_blk

use std::io::Write;

use capsa_vmm::devices::virtio::block::Block;
use capsa_vmm::devices::virtio::testing::{rd, wr, TestDriver, BUFFERS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const HDR: u64 = BUFFERS;
const STATUS: u64 = BUFFERS + 0x1000;
const DATA: u64 = BUFFERS + 0x10_0000;
const DISK: usize = 64 << 20;

fn request(d: &mut TestDriver, kind: u32, sector: u64, len: u32) {
    let mut h = kind.to_le_bytes().to_vec();
    h.extend([0u8; 4]);
    h.extend(sector.to_le_bytes());
    d.write_bytes(HDR, &h);
    let data = if kind == 0 {
        wr(DATA, len)
    } else {
        rd(DATA, len)
    };
    d.add_chain(0, &[rd(HDR, 16), data, wr(STATUS, 1)]);
    d.kick(0);
    assert_eq!(d.take_used(0).len(), 1);
}

fn bench(c: &mut Criterion) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&vec![7u8; DISK]).unwrap();
    let mut group = c.benchmark_group("virtio-blk");
    for (name, kind) in [("read", 0u32), ("write", 1u32)] {
        for len in [4096u32, 65536, 1 << 20] {
            let mut d = TestDriver::new(
                Box::new(Block::open(file.path(), false, "bench").unwrap()),
                None,
            );
            let sectors = (DISK as u64) / 512;
            let step = u64::from(len) / 512;
            let mut sector = 0;
            group.throughput(Throughput::Bytes(u64::from(len)));
            group.bench_function(format!("{name} {} KiB", len / 1024), |b| {
                b.iter(|| {
                    request(&mut d, kind, sector, len);
                    sector = (sector + step) % sectors;
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
