//! The catalogue: each probe is one function that tries one escape with harmless arguments.
//! `scope` says what a reached call touched, so the harness can say whose it was: the
//! kernel's global state (the host's, unless the probe ran in a guest), the instance's own
//! namespace of some kind, or a host object identified by a marker the harness planted.

mod devices;
mod files;
mod kernel;
mod process;

pub use files::pids;

use std::path::PathBuf;

use crate::findings::Finding;

/// What a reached probe touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Global kernel state or surface: the host's whenever the probe runs on the host kernel.
    Kernel,
    /// Something a namespace of this kind gives each instance its own copy of.
    Namespace(&'static str),
    /// A host file or object found by its marker: reaching it is always the host's.
    HostObject,
}

/// One probe of the catalogue.
pub struct Probe {
    /// The row's key in reports.
    pub name: &'static str,
    /// What it tries, for tables.
    pub label: &'static str,
    pub scope: Scope,
    pub run: fn(&Env) -> Finding,
}

/// What a probe run knows beyond itself.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// A file the harness put on the host, and the token it holds.
    pub marker: Option<(PathBuf, String)>,
    /// Descriptors open when the probe started (beyond 0-2), with their targets.
    pub inherited: Vec<(i32, String)>,
    /// A writable directory for device nodes and mount points.
    pub scratch: PathBuf,
}

pub const CATALOGUE: &[Probe] = &[
    Probe {
        name: "mount",
        label: "mount a file system",
        scope: Scope::Namespace("mnt"),
        run: files::mount,
    },
    Probe {
        name: "proc_sys_write",
        label: "write a global sysctl in /proc/sys (its own value)",
        scope: Scope::Kernel,
        run: files::proc_sys_write,
    },
    Probe {
        name: "sys_write",
        label: "write a /sys attribute (its own value)",
        scope: Scope::Kernel,
        run: files::sys_write,
    },
    Probe {
        name: "masked_proc_read",
        label: "read host-wide /proc files (timer_list, sched_debug, keys)",
        scope: Scope::Kernel,
        run: files::masked_proc_read,
    },
    Probe {
        name: "device_char",
        label: "make and open a char device (/dev/kmsg, write-only)",
        scope: Scope::Kernel,
        run: devices::char_device,
    },
    Probe {
        name: "device_block",
        label: "make and open a block device (the first disk)",
        scope: Scope::Kernel,
        run: devices::block_device,
    },
    Probe {
        name: "raw_disk_read",
        label: "read a disk's first sector",
        scope: Scope::Kernel,
        run: devices::raw_disk_read,
    },
    Probe {
        name: "kernel_module",
        label: "load a kernel module (an image that does not parse)",
        scope: Scope::Kernel,
        run: kernel::module,
    },
    Probe {
        name: "kexec",
        label: "kexec_load (too many segments)",
        scope: Scope::Kernel,
        run: kernel::kexec,
    },
    Probe {
        name: "bpf",
        label: "load a BPF socket filter",
        scope: Scope::Kernel,
        run: kernel::bpf,
    },
    Probe {
        name: "perf_event",
        label: "open a system-wide perf event",
        scope: Scope::Kernel,
        run: kernel::perf_event,
    },
    Probe {
        name: "io_uring",
        label: "io_uring_setup",
        scope: Scope::Kernel,
        run: kernel::io_uring,
    },
    Probe {
        name: "userfaultfd",
        label: "userfaultfd (kernel faults too)",
        scope: Scope::Kernel,
        run: kernel::userfaultfd,
    },
    Probe {
        name: "keyctl",
        label: "reach the uid's kernel keyring",
        scope: Scope::Kernel,
        run: kernel::keyctl,
    },
    Probe {
        name: "user_namespace",
        label: "create a user namespace",
        scope: Scope::Kernel,
        run: kernel::user_namespace,
    },
    Probe {
        name: "ptrace_other_pidns",
        label: "ptrace a process of another pid namespace",
        scope: Scope::HostObject,
        run: process::ptrace_other_pidns,
    },
    Probe {
        name: "raw_socket",
        label: "open a raw socket",
        scope: Scope::Namespace("net"),
        run: kernel::raw_socket,
    },
    Probe {
        name: "host_file_proc_root",
        label: "read a host file through /proc/*/root",
        scope: Scope::HostObject,
        run: files::host_file_proc_root,
    },
    Probe {
        name: "leaked_fds",
        label: "reach host files through inherited descriptors",
        scope: Scope::HostObject,
        run: files::leaked_fds,
    },
];

/// The probe of that name.
pub fn find(name: &str) -> Option<&'static Probe> {
    CATALOGUE.iter().find(|p| p.name == name)
}

/// Descriptors open now beyond stdio, with what they point at: call first thing in main,
/// before the probe opens anything.
pub fn inherited_fds() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((fd, target.to_string_lossy().into_owned()))
                })
                .filter(|(fd, _)| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    // The read_dir's own descriptor points at /proc/<pid>/fd and is closed by now.
    fds.retain(|(fd, _)| {
        // SAFETY: F_GETFD on an integer only queries the descriptor table.
        (unsafe { libc::fcntl(*fd, libc::F_GETFD) }) >= 0
    });
    fds.sort();
    fds
}

/// Runs the named probes (all when `only` is empty), in catalogue order.
pub fn run(env: &Env, only: &[String]) -> Vec<Finding> {
    CATALOGUE
        .iter()
        .filter(|p| only.is_empty() || only.iter().any(|o| o == p.name))
        .map(|p| (p.run)(env))
        .collect()
}
