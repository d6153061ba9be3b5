//! Hypervisor engines: our `capsa-vmm`, and QEMU's microvm machine (KVM where the host has
//! hardware virtualization, TCG otherwise). Both boot the same kernel and initramfs with the
//! same disks and the agent on a virtio-console port named `capsa.agent`.

use std::path::PathBuf;
use std::process::Command;

use super::protocol::AGENT_PORT_NAME;
use super::VmError;

/// One disk of the VM, named by serial for the agent.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub serial: String,
    pub read_only: bool,
}

/// What the engine is asked to start.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub mem_mib: u64,
    pub vcpus: u32,
    pub disks: Vec<Disk>,
    /// The agent's Unix socket.
    pub agent_socket: PathBuf,
    /// Where the guest's serial console is written.
    pub console_log: PathBuf,
    /// A network device on a tap the engine creates: (tap name, MAC).
    pub nic: Option<(String, [u8; 6])>,
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Who listens on the agent socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSocket {
    /// capsa listens, the engine connects at start (QEMU's chardev client).
    CapsaListens,
    /// The engine listens, capsa connects (capsa-vmm's console port).
    EngineListens,
}

pub trait Engine {
    /// `capsa-vmm` or `qemu`.
    fn name(&self) -> &'static str;
    /// `kvm` or `tcg`.
    fn accelerator(&self) -> &'static str;
    fn agent_socket(&self) -> AgentSocket;
    fn command(&self, vm: &VmSpec) -> Command;
    /// The engine's version, for reports.
    fn version(&self) -> String;
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
        Ok(Box::new(Qemu { binary, kvm: hw }))
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
    binary: PathBuf,
    kvm: bool,
}

impl Engine for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn accelerator(&self) -> &'static str {
        if self.kvm {
            "kvm"
        } else {
            "tcg"
        }
    }

    fn agent_socket(&self) -> AgentSocket {
        AgentSocket::CapsaListens
    }

    fn command(&self, vm: &VmSpec) -> Command {
        let mut c = qemu_microvm(&self.binary, self.kvm);
        c.arg("-nographic");
        c.arg("-m")
            .arg(format!("{}M", vm.mem_mib))
            .arg("-smp")
            .arg(vm.vcpus.to_string());
        c.arg("-kernel")
            .arg(&vm.kernel)
            .arg("-initrd")
            .arg(&vm.initramfs)
            .arg("-append")
            .arg(&vm.cmdline);
        c.arg("-serial")
            .arg(format!("file:{}", vm.console_log.display()));
        for (i, d) in vm.disks.iter().enumerate() {
            let ro = if d.read_only { ",readonly=on" } else { "" };
            c.arg("-drive").arg(format!(
                "id=d{i},file={},format=raw,if=none{ro}",
                d.path.display()
            ));
            c.arg("-device")
                .arg(format!("virtio-blk-device,drive=d{i},serial={}", d.serial));
        }
        if let Some((tap, mac)) = &vm.nic {
            c.arg("-netdev")
                .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
            c.arg("-device")
                .arg(format!("virtio-net-device,netdev=n0,mac={}", mac_text(mac)));
        }
        c.args(["-device", "virtio-serial-device"]);
        c.arg("-chardev").arg(format!(
            "socket,id=agent,path={},server=off",
            vm.agent_socket.display()
        ));
        c.arg("-device").arg(format!(
            "virtserialport,chardev=agent,name={AGENT_PORT_NAME}"
        ));
        c
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

    fn accelerator(&self) -> &'static str {
        "kvm"
    }

    fn agent_socket(&self) -> AgentSocket {
        AgentSocket::EngineListens
    }

    fn command(&self, vm: &VmSpec) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--kernel")
            .arg(&vm.kernel)
            .arg("--initrd")
            .arg(&vm.initramfs)
            .arg("--cmdline")
            .arg(&vm.cmdline);
        c.arg("--mem")
            .arg(format!("{}M", vm.mem_mib))
            .arg("--vcpus")
            .arg(vm.vcpus.to_string());
        for d in &vm.disks {
            let ro = if d.read_only { ",ro" } else { "" };
            c.arg("--disk")
                .arg(format!("{}{ro},id={}", d.path.display(), d.serial));
        }
        c.arg("--console").arg(format!(
            "name={AGENT_PORT_NAME},uds={}",
            vm.agent_socket.display()
        ));
        c.arg("--serial")
            .arg(format!("file={}", vm.console_log.display()));
        c
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
