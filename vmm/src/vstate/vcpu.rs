//! A vCPU thread: runs KVM_RUN, hands port and MMIO exits to the buses, and turns every other
//! exit into the reason the VM stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::{lock, Bus};
use crate::timing::{Mark, StartTime};

/// Why the VM stopped; the binary's exit status follows from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest asked to stop: i8042 reset (Linux `reboot` with `reboot=k`) or a KVM system
    /// event (reset or shutdown).
    GuestStop(&'static str),
    /// The guest halted with interrupts off or triple-faulted: it crashed or has nothing to run.
    GuestCrash(String),
    /// KVM or the VMM failed while the guest ran.
    VmmError(String),
    /// The guest reached its snapshot point (boot-timer port, [`SNAPSHOT_MAGIC`]) in a VM run
    /// with a snapshot directory: the VM stops so its state can be written.
    ///
    /// [`SNAPSHOT_MAGIC`]: crate::devices::legacy::boot_timer::SNAPSHOT_MAGIC
    Snapshot,
}

impl ExitReason {
    /// 0 for a stop the guest asked for, 3 for a guest crash, 4 for a VMM failure while
    /// running (1 and 2 are set-up and usage errors, before the guest ran).
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::GuestStop(_) | ExitReason::Snapshot => 0,
            ExitReason::GuestCrash(_) => 3,
            ExitReason::VmmError(_) => 4,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::GuestStop(how) => write!(f, "guest stopped ({how})"),
            ExitReason::GuestCrash(why) => write!(f, "guest crashed: {why}"),
            ExitReason::VmmError(why) => write!(f, "VMM failed: {why}"),
            ExitReason::Snapshot => {
                write!(f, "guest stopped at its snapshot point; snapshot written")
            }
        }
    }
}

/// Where vCPUs report the first reason to stop; later reasons are dropped.
pub struct StopSignal {
    reason: Mutex<Option<ExitReason>>,
    event: EventFd,
    stopping: AtomicBool,
}

impl StopSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            event: EventFd::new(libc::EFD_NONBLOCK)?,
            stopping: AtomicBool::new(false),
        })
    }

    pub fn stop(&self, reason: ExitReason) {
        let mut r = lock(&self.reason);
        if r.is_none() {
            *r = Some(reason);
        }
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.event.write(1);
    }

    pub fn event(&self) -> &EventFd {
        &self.event
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<ExitReason> {
        lock(&self.reason).clone()
    }
}

pub struct Vcpu {
    pub fd: VcpuFd,
    pub index: u8,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub stop: Arc<StopSignal>,
    pub start: StartTime,
    /// Install the vCPU seccomp filter before the first KVM_RUN.
    pub seccomp: bool,
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

impl Vcpu {
    /// Runs until the VM stops, then hands the vCPU back (a snapshot reads its state) with
    /// whether its last exit could be completed for a snapshot. vCPU 0 logs the moment of the
    /// first KVM_RUN.
    pub fn run(mut self) -> (Self, Result<(), String>) {
        if self.seccomp {
            if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu) {
                self.stop.stop(ExitReason::VmmError(e.to_string()));
                return (self, Err(e.to_string()));
            }
        }
        if self.index == 0 {
            eprintln!("capsa-vmm: first KVM_RUN: {}", Mark::now(&self.start));
        }
        while !self.stop.is_stopping() {
            if let Some(reason) = self.run_once() {
                self.stop.stop(reason);
            }
        }
        let completed = match self.stop.reason() {
            Some(ExitReason::Snapshot) => self.complete_pending_exit(),
            _ => Ok(()),
        };
        (self, completed)
    }

    /// KVM finishes a port or MMIO exit (the instruction's result, RIP past it) only on the
    /// next KVM_RUN; with `immediate_exit` set, that KVM_RUN completes it and returns EINTR
    /// without running the guest, leaving registers that are safe to save.
    fn complete_pending_exit(&mut self) -> Result<(), String> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.fd.run().map(|_| ());
        self.fd.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(format!(
                "KVM_RUN to complete vCPU {}'s last exit: {e}",
                self.index
            )),
            Ok(()) => Err(format!(
                "vCPU {} ran although immediate_exit was set",
                self.index
            )),
        }
    }

    fn run_once(&mut self) -> Option<ExitReason> {
        let index = self.index;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                self.pio.read(u64::from(port), data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                self.pio.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                self.mmio.read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                self.mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _)) => {
                Some(ExitReason::GuestStop("reset"))
            }
            Ok(VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _)) => {
                Some(ExitReason::GuestStop("shutdown"))
            }
            Ok(VcpuExit::Hlt) => Some(ExitReason::GuestCrash(format!("vCPU {index} halted"))),
            Ok(VcpuExit::Shutdown) => {
                Some(ExitReason::GuestCrash(format!("vCPU {index} triple fault")))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(ExitReason::VmmError(format!(
                "KVM could not enter vCPU {index} (hardware reason {reason:#x}, cpu {cpu})"
            ))),
            Ok(VcpuExit::InternalError) => Some(ExitReason::GuestCrash(format!(
                "KVM internal error on vCPU {index} (emulation failed)"
            ))),
            Ok(other) => Some(ExitReason::GuestCrash(format!(
                "vCPU {index}: unexpected exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(ExitReason::VmmError(format!(
                "KVM_RUN on vCPU {index}: {e}"
            ))),
        }
    }
}

/// The signal that knocks vCPU threads out of KVM_RUN when the VM stops.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler, so the kick interrupts KVM_RUN (EINTR) instead of killing us.
pub fn install_kick_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}
