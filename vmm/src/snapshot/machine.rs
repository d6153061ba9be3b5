//! Taking a snapshot of a stopped [`Machine`] and making a new one from a snapshot.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::{map_memory, read_state, SnapshotError, SnapshotFiles, SnapshotState};
use crate::arch::x86_64::mptable;
use crate::builder::{legacy_devices, virtio_devices, BuildError, LegacySetup, Machine};
use crate::config::{ConsoleConfig, DiskConfig, NetConfig, SerialOutput, VmConfig, VsockConfig};
use crate::devices::bus::{lock, Bus};
use crate::devices::virtio::mmio::{MmioTransport, TransportState};
use crate::devices::virtio::net::format_mac;
use crate::devices::virtio::{device_type, DeviceState};
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
/// COM1's output, the disks, taps, console sockets and vsock socket, as many and in the order
/// the snapshotted VM had them. A balloon needs no host side and comes back by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreConfig {
    pub dir: PathBuf,
    pub serial: SerialOutput,
    pub disks: Vec<DiskConfig>,
    pub nets: Vec<NetConfig>,
    pub consoles: Vec<ConsoleConfig>,
    pub vsock: Option<VsockConfig>,
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

/// The restore's host sides on new devices at the same places, each given its saved
/// transport and state; a count, order or port name that differs from the snapshot's is
/// refused, naming the flag to give again.
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
    let devices = devices_like(config, &state.devices).map_err(refuse)?;
    let (bus, transports, _) = virtio_devices(vm, mem, &devices, events)?;
    if transports.len() != state.devices.len() {
        return Err(refuse(format!(
            "the snapshot's VM had {} virtio devices in an order this restore cannot make",
            state.devices.len()
        ))
        .into());
    }
    for (transport, saved) in transports.iter().zip(&state.devices) {
        lock(transport).restore(saved).map_err(refuse)?;
    }
    Ok((bus, transports))
}

/// The devices to make for a restore: the caller's host sides, checked against what the
/// snapshot's VM had of each kind; a net device given no MAC shows the one its guest has.
fn devices_like(config: &RestoreConfig, saved: &[TransportState]) -> Result<VmConfig, String> {
    let count = |kind: u32| saved.iter().filter(|t| t.device_type == kind).count();
    let expect = |what: &str, flag: &str, had: usize, given: usize| {
        if had == given {
            Ok(())
        } else {
            Err(format!(
                "the snapshot's VM had {had} {what}, the restore was given {given} (give each \
                 {flag} again, in the same order)"
            ))
        }
    };
    expect(
        "virtio-blk disks",
        "--disk",
        count(device_type::BLOCK),
        config.disks.len(),
    )?;
    expect(
        "virtio-net devices",
        "--net",
        count(device_type::NET),
        config.nets.len(),
    )?;
    let saved_ports = saved.iter().find_map(|t| match &t.device {
        DeviceState::Console { ports, .. } => Some(ports.len()),
        _ => None,
    });
    expect(
        "console ports",
        "--console",
        saved_ports.unwrap_or(0),
        config.consoles.len(),
    )?;
    expect(
        "vsock devices",
        "--vsock",
        count(device_type::VSOCK),
        usize::from(config.vsock.is_some()),
    )?;
    let macs = saved.iter().filter_map(|t| match t.device {
        DeviceState::Net { mac } => Some(mac),
        _ => None,
    });
    let mut nets = Vec::new();
    for (net, mac) in config.nets.iter().zip(macs) {
        let mut net = net.clone();
        if net.mac == [0; 6] {
            net.mac = mac;
        } else if net.mac != mac {
            return Err(format!(
                "net {}: the snapshot's guest has MAC {}, the restore gives {} (a restored guest \
                 keeps its MAC: give none, or that one)",
                net.tap,
                format_mac(&mac),
                format_mac(&net.mac)
            ));
        }
        nets.push(net);
    }
    Ok(VmConfig {
        kernel: PathBuf::new(),
        initrd: None,
        cmdline: String::new(),
        mem_bytes: 0,
        vcpus: 1,
        disks: config.disks.clone(),
        vsock: config.vsock.clone(),
        nets,
        consoles: config.consoles.clone(),
        free_page_reporting: count(device_type::BALLOON) > 0,
        serial: config.serial.clone(),
        seccomp: config.seccomp,
        snapshot_to: None,
    })
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
