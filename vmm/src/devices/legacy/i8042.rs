//! The i8042 keyboard controller: nothing but its reset command, which Linux (`reboot=k`) and the
//! test guest use to stop the VM.

use vm_superio::I8042Device;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

/// Data port 0x60 and command port 0x64, as one range (0x61 is the PC speaker, ignored).
pub const PORT_BASE: u64 = 0x60;
pub const PORT_LEN: u64 = 5;

pub struct I8042(pub I8042Device<EventFdTrigger>);

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let [b] = data {
            *b = match offset {
                0 | 4 => self.0.read(offset as u8),
                _ => 0,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let ([b], 0 | 4) = (data, offset) {
            // A failed reset signal leaves the guest running; the vCPU loop still sees HLT/exit.
            let _ = self.0.write(offset as u8, *b);
        }
    }
}
