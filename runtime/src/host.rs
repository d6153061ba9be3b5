//! What this machine offers, for `capsa info` and for labelling every measurement: kernel,
//! cgroup mode, KVM and its kind, hypervisor engines, guest kernel.

use crate::linux::cgroups::CgroupMode;
use crate::root::StateRoot;
use serde::Serialize;
use std::path::Path;

/// How KVM is available here.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub enum KvmKind {
    /// /dev/kvm with vmx or svm in the CPU flags: guests run at full speed.
    Hardware(String),
    /// /dev/kvm without vmx/svm (e.g. nested PVM): a Linux guest kernel is emulated.
    WithoutVirtualizationExtensions,
    /// No /dev/kvm.
    Absent,
}

impl KvmKind {
    /// Detects it from /dev/kvm and /proc/cpuinfo.
    pub fn detect() -> KvmKind {
        if !Path::new("/dev/kvm").exists() {
            return KvmKind::Absent;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or("");
        for ext in ["vmx", "svm"] {
            if flags.split_whitespace().any(|f| f == ext) {
                return KvmKind::Hardware(ext.to_string());
            }
        }
        KvmKind::WithoutVirtualizationExtensions
    }

    /// One line for `info`.
    pub fn describe(&self) -> String {
        match self {
            KvmKind::Hardware(ext) => format!("/dev/kvm with hardware virtualization ({ext})"),
            KvmKind::WithoutVirtualizationExtensions => {
                "/dev/kvm without vmx/svm (nested PVM or similar): guest kernels run emulated"
                    .into()
            }
            KvmKind::Absent => "absent (no /dev/kvm)".into(),
        }
    }
}

/// Everything `info` reports about the host.
#[derive(Debug, Serialize)]
pub struct HostInfo {
    /// `uname -r`.
    pub kernel: String,
    /// OS name from /etc/os-release.
    pub os: String,
    /// CPUs online.
    pub cpus: usize,
    /// Memory in bytes.
    pub memory: u64,
    /// cgroup mode.
    pub cgroup_mode: Option<CgroupMode>,
    /// KVM.
    pub kvm: KvmKind,
    /// Hypervisor engines found on PATH.
    pub engines: Vec<String>,
    /// Whether the guest kernel is built.
    pub guest_kernel: Option<String>,
}

impl HostInfo {
    /// Gathers the facts.
    pub fn gather(root: &StateRoot) -> HostInfo {
        let uts = nix::sys::utsname::uname().ok();
        let kernel = uts
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let engines = ["qemu-system-x86_64", "capsa-vmm"]
            .iter()
            .filter(|e| which(e).is_some())
            .map(|e| e.to_string())
            .collect();
        HostInfo {
            kernel,
            os,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory,
            cgroup_mode: CgroupMode::detect(),
            kvm: KvmKind::detect(),
            engines,
            guest_kernel: crate::vm::artifacts::kernel(root)
                .ok()
                .map(|p| p.display().to_string()),
        }
    }

    /// Whether `--isolation vm` can run here, and if not, why.
    pub fn vm_isolation(&self) -> Result<(), Unavailable> {
        crate::vm::engine::select(None)
            .map(|_| ())
            .map_err(Unavailable::NoEngine)
    }

    /// Whether `--isolation container` can run here, and if not, why.
    pub fn container_isolation(&self) -> Result<(), Unavailable> {
        match self.cgroup_mode {
            Some(_) => Ok(()),
            None => Err(Unavailable::NoCgroups),
        }
    }
}

/// Why an isolation cannot run on this host.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// No VM engine can run here.
    #[error(transparent)]
    NoEngine(crate::vm::VmError),
    #[error("no cgroup file system is mounted at /sys/fs/cgroup")]
    NoCgroups,
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// `info`'s facts under Docker's field names (`info --format`, the API's `/info`).
pub fn docker_info(
    host: &HostInfo,
    root: &StateRoot,
    containers: &[crate::container::State],
    images: usize,
) -> serde_json::Value {
    let running = containers
        .iter()
        .filter(|c| c.status == crate::container::Status::Running && !c.paused)
        .count();
    let paused = containers.iter().filter(|c| c.paused).count();
    serde_json::json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": containers.len() - running - paused,
        "Images": images,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Driver": "overlayfs",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": match host.cgroup_mode {
            Some(crate::linux::cgroups::CgroupMode::Unified) => "2",
            Some(_) => "1",
            None => "",
        },
        "KernelVersion": host.kernel,
        "OperatingSystem": host.os,
        "OSType": std::env::consts::OS,
        "Architecture": std::env::consts::ARCH,
        "NCPU": host.cpus,
        "MemTotal": host.memory,
        "DockerRootDir": root.dir(),
    })
}
