//! From a [`VmConfig`] to a running VM: memory, KVM, kernel, devices, vCPU threads, then the
//! event loop until the VM stops.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::Address;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::boot;
use crate::arch::x86_64::layout::{
    FIRST_VIRTIO_IRQ, HIMEM, LAST_IRQ, SERIAL_IRQ, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE,
};
use crate::arch::x86_64::{cpuid, mptable, msr, regs};
use crate::config::VmConfig;
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::boot_timer::{self, BootTimer};
use crate::devices::legacy::i8042::{self, I8042};
use crate::devices::legacy::serial::{self, SerialDevice, Sink};
use crate::devices::legacy::EventFdTrigger;
use crate::devices::virtio::balloon::Balloon;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::console::{Console, PortHost};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{EventOps, Interrupt, VirtioDevice};
use crate::event_loop::EventLoop;
use crate::snapshot::SnapshotFiles;
use crate::timing::{Mark, StartTime};
use crate::vstate::memory::{self, GuestMemory};
use crate::vstate::vcpu::{self, ExitReason, StopSignal, Vcpu};
use crate::vstate::vm::Vm;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Vm(#[from] crate::vstate::vm::VmError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Msr(#[from] msr::MsrError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error(transparent)]
    Block(#[from] crate::devices::virtio::block::BlockError),
    #[error(transparent)]
    Console(#[from] crate::devices::virtio::console::ConsoleError),
    #[error(transparent)]
    Net(#[from] crate::devices::virtio::net::NetError),
    #[error(transparent)]
    Vsock(#[from] crate::devices::virtio::vsock::VsockError),
    #[error("vCPU count {0} is outside 1..={max}", max = mptable::MAX_VCPUS)]
    VcpuCount(u8),
    #[error(
        "too many virtio devices: interrupt lines {FIRST_VIRTIO_IRQ}..={LAST_IRQ} are all used"
    )]
    TooManyDevices,
    #[error("cannot open serial output: {0}")]
    Serial(std::io::Error),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    SavedState(#[from] crate::vstate::saved::StateError),
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> BuildError {
    move |source| BuildError::Io { what, source }
}

/// A VM ready to run: its vCPUs set up and not yet started.
pub struct Machine {
    pub(crate) vm: Vm,
    pub(crate) mem: GuestMemory,
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) events: EventLoop,
    pub(crate) stop: Arc<StopSignal>,
    pub(crate) seccomp: bool,
    pub(crate) boot_ready: Arc<Mutex<Option<Mark>>>,
    pub(crate) serial: Arc<Mutex<SerialDevice>>,
    /// Where the guest's snapshot point writes the snapshot, if anywhere.
    pub(crate) snapshot: Option<SnapshotFiles>,
    pub(crate) devices: Vec<Arc<Mutex<MmioTransport>>>,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    pub reason: ExitReason,
    /// The guest's boot-timer write, if it made one.
    pub boot_ready: Option<Mark>,
}

impl Machine {
    pub fn build(config: &VmConfig, start: StartTime) -> Result<Self, BuildError> {
        if config.vcpus == 0 || config.vcpus > mptable::MAX_VCPUS {
            return Err(BuildError::VcpuCount(config.vcpus));
        }
        let snapshot = match &config.snapshot_to {
            Some(dir) => Some(SnapshotFiles::create(dir)?),
            None => None,
        };
        let mem = memory::create(config.mem_bytes)?;
        let vm = Vm::new()?;
        vm.register_memory(&mem)?;
        vm.setup_platform()?;

        let stop = Arc::new(StopSignal::new().map_err(io("eventfd"))?);
        let reset = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        let mut events = EventLoop::new(stop.clone(), reset.try_clone().map_err(io("eventfd"))?)
            .map_err(io("epoll"))?;

        let boot_ready = Arc::new(Mutex::new(None));
        let legacy = LegacySetup {
            serial: &config.serial,
            serial_state: None,
            reset,
            start,
            boot_ready: boot_ready.clone(),
            snapshot_signal: snapshot.as_ref().map(|_| stop.clone()),
        };
        let (pio, serial) = legacy_devices(&vm, legacy)?;
        let (mmio, devices, device_args) = virtio_devices(&vm, &mem, config, &mut events)?;

        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(p) => Some(boot::load_initrd(&mem, p, kernel_end(&mem))?),
            None => None,
        };
        let cmdline = format!("{} {}", config.cmdline.trim(), device_args.join(" "));
        let cmdline_len = boot::write_cmdline(&mem, cmdline.trim())?;
        mptable::write(&mem, config.vcpus)?;
        boot::configure(&mem, &kernel, cmdline_len, initrd)?;

        let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));
        let base_cpuid = cpuid::supported(vm.kvm()).map_err(|source| BuildError::Kvm {
            what: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
        let mut vcpus = Vec::new();
        for index in 0..config.vcpus {
            let fd = vm
                .fd()
                .create_vcpu(u64::from(index))
                .map_err(|source| BuildError::Kvm {
                    what: "KVM_CREATE_VCPU",
                    source,
                })?;
            fd.set_cpuid2(&cpuid::for_vcpu(&base_cpuid, index, config.vcpus))
                .map_err(|source| BuildError::Kvm {
                    what: "KVM_SET_CPUID2",
                    source,
                })?;
            msr::setup_msrs(&fd)?;
            msr::setup_lapic(&fd)?;
            regs::setup_fpu(&fd)?;
            if index == 0 {
                regs::setup_regs(&fd, kernel.entry.raw_value(), kernel.protocol)?;
                regs::setup_sregs(&mem, &fd, kernel.protocol)?;
            }
            vcpus.push(Vcpu {
                fd,
                index,
                pio: pio.clone(),
                mmio: mmio.clone(),
                stop: stop.clone(),
                start,
                seccomp: config.seccomp,
            });
        }
        Ok(Self {
            vm,
            mem,
            vcpus,
            events,
            stop,
            seccomp: config.seccomp,
            boot_ready,
            serial,
            snapshot,
            devices,
        })
    }

    /// The host address ranges of guest memory (to tell VMM memory from guest memory).
    pub fn guest_memory_ranges(&self) -> Vec<(u64, u64)> {
        memory::host_ranges(&self.mem)
    }

    /// Starts the vCPUs and serves devices until the VM stops.
    pub fn run(mut self) -> Result<RunReport, BuildError> {
        vcpu::install_kick_handler().map_err(io("signal handler"))?;
        let mut threads = Vec::new();
        let started = self.vcpus.len();
        for v in std::mem::take(&mut self.vcpus) {
            let name = format!("vcpu{}", v.index);
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || v.run())
                    .map_err(io("vCPU thread"))?,
            );
        }
        if self.seccomp {
            let kind = match self.snapshot {
                Some(_) => crate::seccomp::ThreadKind::VmmSnapshotting,
                None => crate::seccomp::ThreadKind::Vmm,
            };
            if let Err(e) = crate::seccomp::apply(kind) {
                self.stop.stop(ExitReason::VmmError(e.to_string()));
            }
        }
        let mut reason = self.events.run();
        let vcpus = stop_vcpus(threads);
        if let (ExitReason::Snapshot, Some(files)) = (&reason, self.snapshot.take()) {
            reason = match crate::snapshot::take(files, &self, &vcpus, started) {
                Ok(()) => ExitReason::Snapshot,
                Err(e) => ExitReason::VmmError(format!("writing the snapshot: {e}")),
            };
        }
        let boot_ready = *crate::devices::bus::lock(&self.boot_ready);
        drop(self.vm);
        Ok(RunReport { reason, boot_ready })
    }

    pub fn stop_signal(&self) -> Arc<StopSignal> {
        self.stop.clone()
    }
}

/// Where the loaded kernel ends, conservatively: the initrd goes above everything below 64 MiB
/// only if memory allows; `load_initrd` puts it at the top of low memory anyway.
fn kernel_end(_mem: &GuestMemory) -> u64 {
    HIMEM
}

/// Knocks every vCPU out of KVM_RUN until its thread ends (bounded: a wedged thread is left)
/// and returns the vCPUs whose threads ended, each with whether its last exit was completed.
fn stop_vcpus(
    threads: Vec<JoinHandle<(Vcpu, Result<(), String>)>>,
) -> Vec<(Vcpu, Result<(), String>)> {
    use vmm_sys_util::signal::Killable;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut vcpus = Vec::new();
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            let _ = t.kill(vcpu::kick_signal());
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            if let Ok(v) = t.join() {
                vcpus.push(v);
            }
        }
    }
    vcpus
}

type PortDevice = (u64, u64, Arc<Mutex<dyn BusDevice>>);

/// What the legacy devices are made from, at boot and at restore.
pub(crate) struct LegacySetup<'a> {
    pub serial: &'a crate::config::SerialOutput,
    /// COM1's registers from a snapshot; a fresh UART at boot.
    pub serial_state: Option<&'a crate::snapshot::SerialState>,
    pub reset: EventFd,
    pub start: StartTime,
    pub boot_ready: Arc<Mutex<Option<Mark>>>,
    /// The stop signal, when the guest's snapshot point should stop the VM.
    pub snapshot_signal: Option<Arc<StopSignal>>,
}

/// COM1, the i8042 and the boot timer on the port bus; also returns COM1 (for its state).
pub(crate) fn legacy_devices(
    vm: &Vm,
    setup: LegacySetup<'_>,
) -> Result<(Bus, Arc<Mutex<SerialDevice>>), BuildError> {
    let mut pio = Bus::default();
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
    vm.register_irqfd(&serial_irq, SERIAL_IRQ)?;
    let sink = Sink::open(setup.serial).map_err(BuildError::Serial)?;
    let uart = match setup.serial_state {
        None => vm_superio::Serial::new(EventFdTrigger(serial_irq), sink),
        Some(state) => vm_superio::Serial::from_state(
            &state.into(),
            EventFdTrigger(serial_irq),
            vm_superio::serial::NoEvents,
            sink,
        )
        .map_err(|e| BuildError::Io {
            what: "serial state",
            source: std::io::Error::other(format!("{e:?}")),
        })?,
    };
    let serial = Arc::new(Mutex::new(SerialDevice(uart)));
    let devices: [PortDevice; 3] = [
        (serial::PORT_BASE, serial::PORT_LEN, serial.clone()),
        (
            i8042::PORT_BASE,
            i8042::PORT_LEN,
            Arc::new(Mutex::new(I8042(vm_superio::I8042Device::new(
                EventFdTrigger(setup.reset),
            )))),
        ),
        (
            boot_timer::PORT,
            1,
            Arc::new(Mutex::new(BootTimer::new(
                setup.start,
                setup.boot_ready,
                setup.snapshot_signal,
            ))),
        ),
    ];
    for (base, len, dev) in devices {
        pio.insert(base, len, dev).map_err(|e| BuildError::Io {
            what: "port bus",
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok((pio, serial))
}

pub(crate) type VirtioSet = (Bus, Vec<Arc<Mutex<MmioTransport>>>, Vec<String>);

/// Disks, network devices, the console, vsock, then the balloon, each in its own MMIO window
/// with its own interrupt line; returns the bus, the transports and the `virtio_mmio.device=`
/// arguments that tell the kernel where they are. A snapshot's devices are in this order too.
pub(crate) fn virtio_devices(
    vm: &Vm,
    mem: &GuestMemory,
    config: &VmConfig,
    events: &mut EventLoop,
) -> Result<VirtioSet, BuildError> {
    let mut models: Vec<(Box<dyn VirtioDevice>, String)> = Vec::new();
    for (i, d) in config.disks.iter().enumerate() {
        let serial = d.id.clone().unwrap_or_else(|| format!("capsa-disk{i}"));
        let block = match d.fd {
            Some(fd) => {
                let file = crate::handed::take(fd).map_err(io("disk descriptor"))?;
                Block::from_file(
                    file,
                    std::path::Path::new(&format!("fd {fd}")),
                    d.read_only,
                    &serial,
                )?
            }
            None => Block::open(&d.path, d.read_only, &serial)?,
        };
        models.push((Box::new(block), format!("virtio-blk {}", d.path.display())));
    }
    for (i, n) in config.nets.iter().enumerate() {
        let mac = if n.mac == [0; 6] {
            crate::config::default_mac(i)
        } else {
            n.mac
        };
        let net = match n.fd {
            Some(fd) => {
                let tap = crate::handed::take(fd).map_err(io("tap descriptor"))?;
                Net::from_tap(tap, &n.tap, mac)?
            }
            None => Net::new(&n.tap, mac)?,
        };
        models.push((Box::new(net), format!("virtio-net {}", n.tap)));
    }
    if !config.consoles.is_empty() {
        let mut ports = Vec::new();
        for c in &config.consoles {
            let host = match c.fd {
                Some(fd) => PortHost::Connected(std::os::unix::net::UnixStream::from(
                    std::os::fd::OwnedFd::from(
                        crate::handed::take(fd).map_err(io("console descriptor"))?,
                    ),
                )),
                None => PortHost::Listen(c.uds.as_path()),
            };
            ports.push((c.name.clone(), host));
        }
        models.push((
            Box::new(Console::with_hosts(ports)?),
            "virtio-console".to_string(),
        ));
    }
    if let Some(v) = &config.vsock {
        models.push((
            Box::new(Vsock::new(v.cid, &v.uds)?),
            format!("virtio-vsock {}", v.uds.display()),
        ));
    }
    if config.free_page_reporting {
        models.push((Box::new(Balloon::new()), "virtio-balloon".to_string()));
    }
    let mut bus = Bus::default();
    let mut transports = Vec::new();
    let mut args = Vec::new();
    for (i, (model, label)) in models.into_iter().enumerate() {
        let irq = FIRST_VIRTIO_IRQ + i as u32;
        if irq > LAST_IRQ {
            return Err(BuildError::TooManyDevices);
        }
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        vm.register_irqfd(&irqfd, irq)?;
        let ops = EventOps::new(events.epoll.clone(), events.next_device_number());
        let name = format!("{label} at {base:#x}");
        let transport = MmioTransport::new(
            model,
            mem.clone(),
            Arc::new(Interrupt::new(irqfd)),
            ops,
            name,
        )
        .map_err(io("virtio queues"))?;
        for (q, evt) in transport.queue_events().iter().enumerate() {
            vm.register_ioevent(evt, base + 0x50, q as u32)?;
        }
        let transport = Arc::new(Mutex::new(transport));
        events.add_device(transport.clone()).map_err(io("epoll"))?;
        bus.insert(base, VIRTIO_MMIO_SIZE, transport.clone())
            .map_err(|e| BuildError::Io {
                what: "MMIO bus",
                source: std::io::Error::other(e.to_string()),
            })?;
        args.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
        transports.push(transport);
    }
    Ok((bus, transports, args))
}
