//! The boot timer (Firecracker's method): the guest writes 123 to port 0x3f0 once it is ready;
//! the VMM logs the wall and CPU time since it started, and keeps the mark for its caller.
//! Writing [`SNAPSHOT_MAGIC`] marks the guest's snapshot point: in a VM run with a snapshot
//! directory it stops the VM for the snapshot; otherwise the write is ignored.

use std::sync::{Arc, Mutex};

use crate::devices::bus::{lock, BusDevice};
use crate::timing::{Mark, StartTime};
use crate::vstate::vcpu::{ExitReason, StopSignal};

pub const PORT: u64 = 0x3f0;
pub const MAGIC: u8 = 123;
pub const SNAPSHOT_MAGIC: u8 = 124;

pub struct BootTimer {
    start: StartTime,
    ready: Arc<Mutex<Option<Mark>>>,
    /// Set when the VM runs with a snapshot directory.
    snapshot: Option<Arc<StopSignal>>,
}

impl BootTimer {
    pub fn new(
        start: StartTime,
        ready: Arc<Mutex<Option<Mark>>>,
        snapshot: Option<Arc<StopSignal>>,
    ) -> Self {
        Self {
            start,
            ready,
            snapshot,
        }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() == Some(&SNAPSHOT_MAGIC) {
            match &self.snapshot {
                Some(stop) => stop.stop(ExitReason::Snapshot),
                None => eprintln!("capsa-vmm: guest at its snapshot point (no snapshot asked)"),
            }
            return;
        }
        if data.first() != Some(&MAGIC) {
            return;
        }
        let mark = Mark::now(&self.start);
        let mut ready = lock(&self.ready);
        if ready.is_none() {
            eprintln!("capsa-vmm: guest ready (boot timer): {mark}");
            *ready = Some(mark);
        }
    }
}
