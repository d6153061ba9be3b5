//! Taking a snapshot of a stopped [`Machine`] and making a new one from a snapshot.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::{map_memory, read_state, SnapshotError, SnapshotFiles, SnapshotState};
use crate::arch::x86_64::mptable;
use crate::builder::{legacy_devices, virtio_devices, BuildError, LegacySetup, Machine};
use crate::config::{DiskConfig, SerialOutput, VmConfig};
use crate::devices::bus::{lock, Bus};
use crate::devices::virtio::mmio::MmioTransport;
use crate::event_loop::EventLoop;
use crate::timing::StartTime;
use crate::vstate::memory::GuestMemory;
use crate::vstate::saved::{VcpuState, VmState};
use crate::vstate::vcpu::{StopSignal, Vcpu};
use crate::vstate::vm::Vm;

/// Reads the stopped VM's vCPUs, in-kernel devices and COM1, and writes them with guest memory.
pub(crate) fn take(
    files: SnapshotFiles,
    machine: &Machine,
    stopped: &[(Vcpu, Result<(), String>)],
    started: usize,
) -> Result<(), String> {
    if stopped.len() != started {
        return Err(format!(
            "only {} of {started} vCPU threads stopped",
            stopped.len()
        ));
    }
    let mut vcpus = Vec::new();
    for (vcpu, completed) in stopped {
        completed.clone()?;
        vcpus.push(vcpu);
    }
    let state = SnapshotState {
        written_by: format!("capsa-vmm {}", env!("CARGO_PKG_VERSION")),
        mem_bytes: crate::vstate::memory::host_ranges(&machine.mem)
            .iter()
            .map(|(_, len)| len)
            .sum(),
        vm: VmState::save(machine.vm.fd()).map_err(|e| e.to_string())?,
        vcpus: vcpus
            .iter()
            .map(|v| VcpuState::save(&v.fd, v.index, machine.vm.msr_indices()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
        serial: lock(&machine.serial).0.state().into(),
        devices: machine.devices.iter().map(|t| lock(t).save()).collect(),
    };
    files.write(&state, &machine.mem).map_err(|e| e.to_string())
}

/// How to run a restored VM: the snapshot and the host side of what it has, supplied anew:
/// COM1's output and the disks, as many and in the order the snapshotted VM had them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreConfig {
    pub dir: PathBuf,
    pub serial: SerialOutput,
    pub disks: Vec<DiskConfig>,
    pub seccomp: bool,
}

impl Machine {
    /// A VM in the state `config.dir` holds, ready to [`run`](Machine::run) from where the
    /// guest stopped. The snapshot is checked (format, checksum, memory size) before KVM is
    /// touched.
    pub fn restore(config: &RestoreConfig, start: StartTime) -> Result<Self, BuildError> {
        let state = read_state(&config.dir)?;
        let count = state.vcpus.len();
        if count == 0 || count > usize::from(mptable::MAX_VCPUS) {
            return Err(BuildError::VcpuCount(count.min(255) as u8));
        }
        let mem = map_memory(&config.dir, state.mem_bytes)?;
        let vm = Vm::new()?;
        vm.register_memory(&mem)?;
        vm.setup_platform()?;
        state.vm.restore(vm.fd())?;

        let io = |what| move |source| BuildError::Io { what, source };
        let stop = Arc::new(StopSignal::new().map_err(io("eventfd"))?);
        let reset = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        let mut events = EventLoop::new(stop.clone(), reset.try_clone().map_err(io("eventfd"))?)
            .map_err(io("epoll"))?;
        let boot_ready = Arc::new(Mutex::new(None));
        let legacy = LegacySetup {
            serial: &config.serial,
            serial_state: Some(&state.serial),
            reset,
            start,
            boot_ready: boot_ready.clone(),
            snapshot_signal: None,
        };
        let (pio, serial) = legacy_devices(&vm, legacy)?;
        let (mmio, devices) = restore_devices(&vm, &mem, config, &state, &mut events)?;
        let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));
        let vcpus = restore_vcpus(&vm, &state, &pio, &mmio, &stop, start, config.seccomp)?;
        Ok(Self {
            vm,
            mem,
            vcpus,
            events,
            stop,
            seccomp: config.seccomp,
            boot_ready,
            serial,
            snapshot: None,
            devices,
        })
    }
}

type Transport = Arc<Mutex<MmioTransport>>;

/// The caller's disks on new virtio-blk devices at the same places, each given its saved
/// transport; a count or type that differs from the snapshot's is refused.
fn restore_devices(
    vm: &Vm,
    mem: &GuestMemory,
    config: &RestoreConfig,
    state: &SnapshotState,
    events: &mut EventLoop,
) -> Result<(Bus, Vec<Transport>), BuildError> {
    let refuse = |detail: String| SnapshotError::Devices {
        path: config.dir.clone(),
        detail,
    };
    if config.disks.len() != state.devices.len() {
        return Err(refuse(format!(
            "the snapshot's VM had {} virtio-blk disks, the restore was given {} (give each \
             --disk again, in the same order)",
            state.devices.len(),
            config.disks.len()
        ))
        .into());
    }
    let devices = VmConfig {
        kernel: PathBuf::new(),
        initrd: None,
        cmdline: String::new(),
        mem_bytes: state.mem_bytes,
        vcpus: 1,
        disks: config.disks.clone(),
        vsock: None,
        nets: Vec::new(),
        consoles: Vec::new(),
        serial: config.serial.clone(),
        seccomp: config.seccomp,
        snapshot_to: None,
    };
    let (bus, transports, _) = virtio_devices(vm, mem, &devices, events)?;
    for (transport, saved) in transports.iter().zip(&state.devices) {
        lock(transport).restore(saved).map_err(refuse)?;
    }
    Ok((bus, transports))
}

fn restore_vcpus(
    vm: &Vm,
    state: &SnapshotState,
    pio: &Arc<Bus>,
    mmio: &Arc<Bus>,
    stop: &Arc<StopSignal>,
    start: StartTime,
    seccomp: bool,
) -> Result<Vec<Vcpu>, BuildError> {
    let mut vcpus = Vec::new();
    for (index, saved) in state.vcpus.iter().enumerate() {
        let index = index as u8;
        let fd = vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(|source| BuildError::Kvm {
                what: "KVM_CREATE_VCPU",
                source,
            })?;
        saved.restore(&fd, index)?;
        vcpus.push(Vcpu {
            fd,
            index,
            pio: pio.clone(),
            mmio: mmio.clone(),
            stop: stop.clone(),
            start,
            seccomp,
        });
    }
    Ok(vcpus)
}
