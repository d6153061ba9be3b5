//! The VMM thread's epoll loop: queue kicks and device file descriptors go to their device; the
//! stop event (a vCPU's exit or the guest's i8042 reset) ends the loop.

use std::sync::{Arc, Mutex};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::devices::bus::lock;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::QUEUE_TOKEN_BASE;
use crate::vstate::vcpu::{ExitReason, StopSignal};

/// Device number 0 in the high half of an event's data is the VMM itself.
const VMM: u32 = 0;
const STOP: u32 = 0;
const RESET: u32 = 1;

pub struct EventLoop {
    pub epoll: Arc<Epoll>,
    /// Virtio devices; device number `n` in event data is `devices[n - 1]`.
    devices: Vec<Arc<Mutex<MmioTransport>>>,
    stop: Arc<StopSignal>,
    reset: vmm_sys_util::eventfd::EventFd,
}

fn data(device: u32, token: u32) -> u64 {
    (u64::from(device) << 32) | u64::from(token)
}

impl EventLoop {
    pub fn new(
        stop: Arc<StopSignal>,
        reset: vmm_sys_util::eventfd::EventFd,
    ) -> std::io::Result<Self> {
        let epoll = Arc::new(Epoll::new()?);
        epoll.ctl(
            ControlOperation::Add,
            stop.event().as_raw_fd(),
            EpollEvent::new(EventSet::IN, data(VMM, STOP)),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            reset.as_raw_fd(),
            EpollEvent::new(EventSet::IN, data(VMM, RESET)),
        )?;
        Ok(Self {
            epoll,
            devices: Vec::new(),
            stop,
            reset,
        })
    }

    /// The device number the next device will have (for its [`EventOps`]).
    pub fn next_device_number(&self) -> u32 {
        self.devices.len() as u32 + 1
    }

    /// Adds a device and listens for its queue kicks.
    pub fn add_device(&mut self, device: Arc<Mutex<MmioTransport>>) -> std::io::Result<()> {
        let number = self.next_device_number();
        for (i, evt) in lock(&device).queue_events().iter().enumerate() {
            let token = QUEUE_TOKEN_BASE + i as u32;
            self.epoll.ctl(
                ControlOperation::Add,
                evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, data(number, token)),
            )?;
        }
        self.devices.push(device);
        Ok(())
    }

    /// Serves events until something stops the VM; returns why.
    pub fn run(&mut self) -> ExitReason {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stop
                        .stop(ExitReason::VmmError(format!("epoll_wait: {e}")));
                    0
                }
            };
            for event in &events[..n] {
                let (device, token) = ((event.data() >> 32) as u32, event.data() as u32);
                if device == VMM {
                    if token == RESET {
                        let _ = self.reset.read();
                        self.stop.stop(ExitReason::GuestStop("i8042 reset"));
                    }
                } else if let Some(d) = self.devices.get(device as usize - 1) {
                    lock(d).handle_event(token, event.event_set());
                }
            }
            if self.stop.is_stopping() {
                return self
                    .stop
                    .reason()
                    .unwrap_or(ExitReason::VmmError("stopped without a reason".into()));
            }
        }
    }
}

use std::os::fd::AsRawFd;
