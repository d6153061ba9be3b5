//! The boot timer (Firecracker's method): the guest writes 123 to port 0x3f0 once it is ready;
//! the VMM logs the wall and CPU time since it started, and keeps the mark for its caller.

use std::sync::{Arc, Mutex};

use crate::devices::bus::{lock, BusDevice};
use crate::timing::{Mark, StartTime};

pub const PORT: u64 = 0x3f0;
pub const MAGIC: u8 = 123;

pub struct BootTimer {
    start: StartTime,
    ready: Arc<Mutex<Option<Mark>>>,
}

impl BootTimer {
    pub fn new(start: StartTime, ready: Arc<Mutex<Option<Mark>>>) -> Self {
        Self { start, ready }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _offset: u64, data: &[u8]) {
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
