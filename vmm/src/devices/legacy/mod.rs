//! The few PC devices a microVM keeps: the COM1 serial port, the i8042 controller (whose reset
//! line is how the guest asks to stop), and the boot timer.

pub mod boot_timer;
pub mod i8042;
pub mod serial;

use vmm_sys_util::eventfd::EventFd;

/// vm-superio's interrupt and reset callbacks, as an eventfd write.
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
