//! Hypervisor engines: our `capsa-vmm`, and QEMU's microvm machine (KVM where the host has
//! hardware virtualization, TCG otherwise). Both boot the same kernel and initramfs with the
//! same disks and the agent on a virtio-console port named `capsa.agent`, jailed
//! ([`super::jail`]): they open no host path, they are handed descriptors.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::jail::{EngineCommand, INITRAMFS, KERNEL, TCG_CACHE_MIB};
use super::protocol::AGENT_PORT_NAME;
use super::VmError;

/// One disk of the VM, named by serial for the agent.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub serial: String,
    pub read_only: bool,
}

/// What the engine is asked to start. The engine opens no host path itself: it is handed
/// descriptors (opened here, by the monitor) and finds the kernel and initramfs at
/// [`KERNEL`] and [`INITRAMFS`] in its jail.
#[derive(Debug)]
pub struct VmSpec {
    pub cmdline: String,
    pub mem_mib: u64,
    pub vcpus: u32,
    pub disks: Vec<Disk>,
    /// The engine's end of the agent's connection (a connected stream socket).
    pub agent: OwnedFd,
    /// Where the guest's serial console is written: a pipe the monitor drains into a log of
    /// bounded size ([`super::console`]).
    pub console: OwnedFd,
    /// A network device on an open tap: (tap, MAC).
    pub nic: Option<(OwnedFd, [u8; 6])>,
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Opens a disk for the engine: read-only, or read-write.
/// QEMU's arguments for disk `i` (descriptor set i+1: set 0 is the console): a read-only
/// descriptor (QEMU probes an image read-only first) and, for a writable disk, a read-write
/// one, both passed to the engine through `c`, then the drive and its virtio-blk device.
pub(super) fn disk_args(c: &mut EngineCommand, i: usize, d: &Disk) -> Result<Vec<String>, VmError> {
    let set = i + 1;
    let mut args = Vec::new();
    let ro = c.pass(open_disk(&d.path, false)?);
    args.extend(["-add-fd".into(), format!("fd={ro},set={set}")]);
    if !d.read_only {
        let rw = c.pass(open_disk(&d.path, true)?);
        args.extend(["-add-fd".into(), format!("fd={rw},set={set}")]);
    }
    let ro = if d.read_only { ",readonly=on" } else { "" };
    args.extend([
        "-drive".into(),
        format!("id=d{i},file=/dev/fdset/{set},format=raw,if=none{ro}"),
        "-device".into(),
        format!("virtio-blk-device,drive=d{i},serial={}", d.serial),
    ]);
    Ok(args)
}

pub(super) fn open_disk(path: &Path, write: bool) -> Result<OwnedFd, VmError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| VmError::Io(format!("disk {}: {e}", path.display())))
}

pub trait Engine {
    /// `capsa-vmm` or `qemu`.
    fn name(&self) -> &'static str;
    /// `kvm` or `tcg`.
    fn accelerator(&self) -> &'static str;
    /// The jailed command for `vm`: its arguments and the descriptors it is handed.
    fn command(&self, vm: VmSpec) -> Result<EngineCommand, VmError>;
    /// Memory the engine needs beyond guest RAM (its cgroup holds both), MiB.
    fn overhead_mib(&self) -> u64 {
        super::jail::ENGINE_OVERHEAD_MIB
    }
    /// The engine's version, for reports.
    fn version(&self) -> String;
    /// QEMU, which can start VMs from templates ([`super::template`]).
    fn qemu(&self) -> Option<&Qemu> {
        None
    }
    /// The most disks a VM can have beside its agent's console and, with `nic`, its NIC.
    fn max_disks(&self, nic: bool) -> usize;
}

/// virtio-mmio transports of QEMU's microvm machine (fixed in QEMU 7.2).
const MICROVM_TRANSPORTS: usize = 8;
/// Interrupt lines capsa-vmm gives virtio devices (5 to 23).
const CAPSA_VMM_DEVICES: usize = 19;

/// Opens tap `name` (created if missing) for an engine to use through its descriptor, with
/// the virtio-net header on every frame when `vnet_hdr` (a VM restored from a template has
/// a NIC that negotiated none): the jailed engine needs neither /dev/net/tun nor
/// CAP_NET_ADMIN.
pub fn open_tap(name: &str, vnet_hdr: bool) -> Result<OwnedFd, VmError> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let err = |e: std::io::Error| VmError::Io(format!("tap {name}: {e}"));
    if name.is_empty() || name.len() >= 16 {
        return Err(err(std::io::Error::other("tap names are 1 to 15 bytes")));
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(err)?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | if vnet_hdr { IFF_VNET_HDR } else { 0 },
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out (40 bytes).
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(OwnedFd::from(tun))
}

/// Whether this host's KVM has hardware virtualization (a Linux guest runs at full speed).
pub fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    }) && std::path::Path::new("/dev/kvm").exists()
}

pub fn qemu_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}

fn vmm_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CAPSA_VMM") {
        return Some(p.into());
    }
    let beside = std::env::current_exe().ok()?.with_file_name("capsa-vmm");
    beside.is_file().then_some(beside)
}

/// The engine to use: `forced` (`--vmm`), or the best this host offers; with a one-line reason.
pub fn select(forced: Option<&str>) -> Result<(Box<dyn Engine>, String), VmError> {
    let hw = hardware_virtualization();
    let qemu = || -> Result<Box<dyn Engine>, VmError> {
        let binary = qemu_binary().ok_or_else(|| {
            VmError::NoEngine(
                "qemu-system-x86_64 is not installed (apt install qemu-system-x86)".into(),
            )
        })?;
        let tcg_cache_mib = if hw { 0 } else { tcg_cache_mib()? };
        Ok(Box::new(Qemu {
            binary,
            kvm: hw,
            tcg_cache_mib,
        }))
    };
    let capsa = || -> Result<Box<dyn Engine>, VmError> {
        let binary = vmm_binary().ok_or_else(|| {
            VmError::NoEngine(
                "capsa-vmm was not found beside capsa (cargo build -p capsa-vmm) nor in $CAPSA_VMM"
                    .into(),
            )
        })?;
        Ok(Box::new(CapsaVmm { binary }))
    };
    match forced {
        Some("qemu") => Ok((qemu()?, format!("qemu ({}): as asked by --vmm", if hw { "kvm" } else { "tcg" }))),
        Some("capsa") if !hw => Err(VmError::NoEngine(
            "--vmm capsa: this host's KVM has no vmx/svm (nested PVM), where a Linux guest kernel cannot run under KVM; use --vmm qemu".into(),
        )),
        Some("capsa") => Ok((capsa()?, "capsa-vmm (kvm): as asked by --vmm".into())),
        Some(other) => Err(VmError::NoEngine(format!("--vmm {other:?}: expected capsa or qemu"))),
        None if hw => match capsa() {
            Ok(e) => Ok((e, "capsa-vmm (kvm): this host's KVM has hardware virtualization".into())),
            Err(why) => Ok((qemu()?, format!("qemu (kvm): {why}"))),
        },
        None => Ok((qemu()?, "qemu (tcg): this host's KVM has no vmx/svm, so a Linux guest boots only under QEMU's emulator".into())),
    }
}

/// `qemu-system-x86_64 -M microvm` without PCI, ACPI, RTC or default devices, stopping
/// (not rebooting) on the guest's reset, under KVM or TCG.
pub fn qemu_microvm(binary: &std::path::Path, kvm: bool) -> Command {
    let mut c = Command::new(binary);
    c.args([
        "-M",
        "microvm,acpi=off,rtc=off",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
    ]);
    if kvm {
        c.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        c.args(["-accel", "tcg"]);
    }
    c
}

pub struct Qemu {
    pub(super) binary: PathBuf,
    pub(super) kvm: bool,
    /// The TCG translation cache, in MiB (`-accel tcg,tb-size=`; unused under KVM).
    pub(super) tcg_cache_mib: u64,
}

/// `CAPSA_VM_TCG_CACHE_MIB`: the TCG translation cache of each VM, in MiB. Smaller packs
/// more idle VMs into memory and starts each slower (the guest code run at a start no
/// longer fits, so it is translated again); see docs/benchmarks/vm_template.md.
pub const TCG_CACHE_ENV: &str = "CAPSA_VM_TCG_CACHE_MIB";
/// The range `CAPSA_VM_TCG_CACHE_MIB` takes.
const TCG_CACHE_RANGE: std::ops::RangeInclusive<u64> = 8..=1024;

/// The TCG translation cache asked for by `CAPSA_VM_TCG_CACHE_MIB`, or the default.
fn tcg_cache_mib() -> Result<u64, VmError> {
    ranged_setting(
        TCG_CACHE_ENV,
        TCG_CACHE_MIB,
        TCG_CACHE_RANGE,
        "the TCG translation cache in MiB",
    )
}

/// A number an environment variable sets within `range` (`default` when unset); any other
/// value is refused naming the variable, what it sets and the range.
pub(super) fn ranged_setting<T>(
    name: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<T, VmError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let Ok(value) = std::env::var(name) else {
        return Ok(default);
    };
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            VmError::Tool(format!(
                "{name}={value:?}: expected {what}, from {} to {}",
                range.start(),
                range.end()
            ))
        })
}

/// QEMU's seccomp policy, as `-sandbox` takes it: every filter on.
pub const QEMU_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

impl Engine for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn qemu(&self) -> Option<&Qemu> {
        Some(self)
    }

    /// microvm's transports less virtio-serial (the agent) and the NIC.
    fn max_disks(&self, nic: bool) -> usize {
        MICROVM_TRANSPORTS - 1 - usize::from(nic)
    }

    fn accelerator(&self) -> &'static str {
        if self.kvm {
            "kvm"
        } else {
            "tcg"
        }
    }

    fn overhead_mib(&self) -> u64 {
        let cache = if self.kvm { 0 } else { self.tcg_cache_mib };
        super::jail::ENGINE_OVERHEAD_MIB + cache
    }

    fn command(&self, vm: VmSpec) -> Result<EngineCommand, VmError> {
        let mut c = EngineCommand {
            binary: self.binary.clone(),
            args: Vec::new(),
            fds: Vec::new(),
            // Firmware (qboot, pvh.bin); modules (TCG's accelerator) are in a library dir.
            read_only: ["/usr/share/qemu"]
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.is_dir())
                .collect(),
            read_write: Vec::new(),
            kvm: self.kvm,
            proc_fs: false,
            seccomp: format!("qemu -sandbox {QEMU_SANDBOX}"),
        };
        let mut args: Vec<String> = [
            "-M",
            "microvm,acpi=off,rtc=off",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-nographic",
            "-sandbox",
            QEMU_SANDBOX,
        ]
        .map(String::from)
        .to_vec();
        if self.kvm {
            args.extend(["-accel", "kvm", "-cpu", "host"].map(String::from));
        } else {
            let cache = self.tcg_cache_mib;
            args.extend(["-accel".into(), format!("tcg,tb-size={cache}")]);
        }
        args.extend([
            "-m".into(),
            format!("{}M", vm.mem_mib),
            "-smp".into(),
            vm.vcpus.to_string(),
            "-kernel".into(),
            KERNEL.into(),
            "-initrd".into(),
            INITRAMFS.into(),
            "-append".into(),
            vm.cmdline.clone(),
        ]);
        // Set 0 is the console; disk i is set i+1, holding a read-only descriptor (QEMU
        // probes an image read-only first) and, for a writable disk, a read-write one.
        let console = c.pass(vm.console);
        args.extend([
            "-add-fd".into(),
            format!("fd={console},set=0"),
            "-chardev".into(),
            // append: QEMU would truncate the descriptor otherwise, which a pipe refuses.
            "file,id=console,path=/dev/fdset/0,append=on".into(),
            "-serial".into(),
            "chardev:console".into(),
        ]);
        for (i, d) in vm.disks.iter().enumerate() {
            args.extend(disk_args(&mut c, i, d)?);
        }
        if let Some((tap, mac)) = vm.nic {
            let tap = c.pass(tap);
            args.extend([
                "-netdev".into(),
                format!("tap,id=n0,fd={tap}"),
                "-device".into(),
                format!("virtio-net-device,netdev=n0,mac={}", mac_text(&mac)),
            ]);
        }
        let agent = c.pass(vm.agent);
        args.extend([
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!("socket,id=agent,fd={agent}"),
            "-device".into(),
            format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"),
        ]);
        c.args = args;
        Ok(c)
    }

    fn version(&self) -> String {
        first_line(Command::new(&self.binary).arg("--version"))
    }
}

pub struct CapsaVmm {
    binary: PathBuf,
}

impl Engine for CapsaVmm {
    fn name(&self) -> &'static str {
        "capsa-vmm"
    }

    /// Its device lines less the console (the agent) and the NIC.
    fn max_disks(&self, nic: bool) -> usize {
        CAPSA_VMM_DEVICES - 1 - usize::from(nic)
    }

    fn accelerator(&self) -> &'static str {
        "kvm"
    }

    fn command(&self, vm: VmSpec) -> Result<EngineCommand, VmError> {
        let mut c = EngineCommand {
            binary: self.binary.clone(),
            args: Vec::new(),
            fds: Vec::new(),
            read_only: Vec::new(),
            read_write: Vec::new(),
            kvm: true,
            proc_fs: false,
            seccomp: "capsa-vmm's per-thread filters (VMM thread, vCPU threads)".into(),
        };
        let mut args: Vec<String> = vec![
            "--kernel".into(),
            KERNEL.into(),
            "--initrd".into(),
            INITRAMFS.into(),
            "--cmdline".into(),
            vm.cmdline.clone(),
            "--mem".into(),
            format!("{}M", vm.mem_mib),
            "--vcpus".into(),
            vm.vcpus.to_string(),
        ];
        for d in &vm.disks {
            let fd = c.pass(open_disk(&d.path, !d.read_only)?);
            let ro = if d.read_only { ",ro" } else { "" };
            args.extend(["--disk".into(), format!("fd={fd}{ro},id={}", d.serial)]);
        }
        if let Some((tap, mac)) = vm.nic {
            let tap = c.pass(tap);
            args.extend(["--net".into(), format!("fd={tap},mac={}", mac_text(&mac))]);
        }
        let agent = c.pass(vm.agent);
        args.extend([
            "--console".into(),
            format!("name={AGENT_PORT_NAME},fd={agent}"),
        ]);
        let console = c.pass(vm.console);
        args.extend(["--serial".into(), format!("fd={console}")]);
        c.args = args;
        Ok(c)
    }

    fn version(&self) -> String {
        first_line(Command::new(&self.binary).arg("--version"))
    }
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}
