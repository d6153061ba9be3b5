//! What `capsa bench` measures: capsa's two isolations and the peers, behind one trait, so
//! every scenario treats them alike. Each subject runs the same image root and the same
//! workloads; a subject that cannot run here says why (`SubjectInfo::unavailable`).

mod capsa;
mod oci;
mod qemu;

pub use capsa::CapsaSubject;
pub use oci::OciPeer;
pub use qemu::QemuPeer;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::error::BenchError;
use super::memory::ProcessMemory;
use super::timing::MARKER;

/// Where the probe appears inside every instance.
pub const PROBE_DIR_INSIDE: &str = "/.capsa-probe";
/// The port the probe's TCP server listens on inside an instance.
pub const PROBE_PORT: u16 = 7000;

/// A subject as the report labels it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubjectInfo {
    /// `capsa-container`, `capsa-vm`, `runc`, `runsc`, `qemu`.
    pub name: String,
    /// `capsa` or `peer`.
    pub kind: String,
    /// `container` or `vm` in the report.
    pub isolation: crate::container::sandbox::Isolation,
    /// What runs the instance: `capsa`, `runc`, `qemu`, `capsa-vmm`...
    pub engine: String,
    /// `kvm`, `tcg`, or none for containers.
    pub accelerator: Option<String>,
    pub version: String,
    /// Why this subject cannot run here (then it is reported, never dropped).
    pub unavailable: Option<String>,
    /// How a capsa VM starts: `template` (restored from the VM template) or `cold boot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_start: Option<String>,
}

/// What `SubjectInfo::vm_start` says of a VM restored from its template.
pub const FROM_TEMPLATE: &str = "template";
/// What `SubjectInfo::vm_start` says of a VM that boots its kernel.
pub const COLD_BOOT: &str = "cold boot";

impl SubjectInfo {
    /// A capsa VM that boots cold: measured for its start and memory only, beside the one
    /// that starts from the template (everything else is the same guest).
    pub fn is_cold_twin(&self) -> bool {
        self.vm_start.as_deref() == Some(COLD_BOOT)
    }
}

/// What an instance runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Prints the marker and exits (start latency).
    Marker,
    /// Sleeps (memory, density).
    Idle,
    /// The probe's local figures.
    Probe { quick: bool },
    /// The probe's TCP server on PROBE_PORT.
    ProbeServer,
    /// The escape probe with these arguments.
    Escape(Vec<String>),
}

/// Where the escape probe appears inside every instance.
pub const ESCAPE_INSIDE: &str = "/.capsa-probe/capsa-escape";

impl Workload {
    pub fn argv(&self) -> Vec<String> {
        let probe = format!("{PROBE_DIR_INSIDE}/capsa-probe");
        if let Workload::Escape(args) = self {
            let mut v = vec![ESCAPE_INSIDE.to_string()];
            v.extend(args.iter().cloned());
            return v;
        }
        let v: Vec<&str> = match self {
            Workload::Marker => vec!["echo", MARKER],
            Workload::Idle => vec!["sleep", "1000000"],
            Workload::Probe { quick: true } => vec![&probe, "all", "--quick"],
            Workload::Probe { quick: false } => vec![&probe, "all"],
            Workload::ProbeServer => vec![&probe, "serve", "7000"],
            Workload::Escape(_) => Vec::new(), // returned above
        };
        v.into_iter().map(String::from).collect()
    }

    pub fn needs_probe(&self) -> bool {
        matches!(
            self,
            Workload::Probe { .. } | Workload::ProbeServer | Workload::Escape(_)
        )
    }
}

/// An isolation layer (or several) a subject can run without, so the isolation matrix can
/// see which layer stops a probe: the probe is run again with it removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relaxation {
    /// No seccomp filter.
    Seccomp,
    /// Every capability.
    Capabilities,
    SeccompAndCapabilities,
    /// A device rule that allows every device.
    Devices,
    CapabilitiesAndDevices,
    /// Everything the runtime can remove at once (`--privileged`): capabilities, seccomp,
    /// devices, masked and read-only paths.
    Privileged,
}

/// One of the knobs a relaxation turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Knob {
    Seccomp,
    Capabilities,
    Devices,
    Paths,
}

impl Relaxation {
    /// What it removes.
    pub fn removes(self) -> &'static [Knob] {
        match self {
            Relaxation::Seccomp => &[Knob::Seccomp],
            Relaxation::Capabilities => &[Knob::Capabilities],
            Relaxation::SeccompAndCapabilities => &[Knob::Seccomp, Knob::Capabilities],
            Relaxation::Devices => &[Knob::Devices],
            Relaxation::CapabilitiesAndDevices => &[Knob::Capabilities, Knob::Devices],
            Relaxation::Privileged => &[
                Knob::Seccomp,
                Knob::Capabilities,
                Knob::Devices,
                Knob::Paths,
            ],
        }
    }

    /// For reports.
    pub fn describe(self) -> &'static str {
        match self {
            Relaxation::Seccomp => "seccomp removed",
            Relaxation::Capabilities => "all capabilities",
            Relaxation::SeccompAndCapabilities => "seccomp removed and all capabilities",
            Relaxation::Devices => "every device allowed",
            Relaxation::CapabilitiesAndDevices => "all capabilities and every device allowed",
            Relaxation::Privileged => "privileged (every layer the runtime can remove)",
        }
    }
}

/// A command that runs one instance to its end, and what must be undone after it.
pub struct OneShot {
    pub command: Command,
    /// Dropped after the run: unmounts and removes what the run needed.
    pub cleanup: Option<Box<dyn FnOnce()>>,
    /// A line its stderr must show for the run to count: a capsa VM meant to start from
    /// its template logs its restore, and one that booted cold is an error, not a sample.
    pub stderr_shows: Option<&'static str>,
}

impl OneShot {
    pub fn plain(command: Command) -> OneShot {
        OneShot {
            command,
            cleanup: None,
            stderr_shows: None,
        }
    }

    /// Err when a run's `stderr` lacks the line it must show (`stderr_shows`).
    pub fn check_stderr(shows: Option<&str>, stderr: &str) -> Result<(), BenchError> {
        match shows {
            Some(line) if !stderr.contains(line) => Err(BenchError::NotFromTemplate(
                crate::bench::scenario::start::tail(stderr),
            )),
            _ => Ok(()),
        }
    }
}

/// A running instance started in the background.
pub struct Instance {
    pub id: String,
    /// Host processes the instance's others descend from.
    pub roots: Vec<i32>,
    /// The instance's cgroup memory charge, where the subject has a cgroup on the host.
    pub cgroup_memory: Option<PathBuf>,
    /// Guest memory size (VMs), to find the guest RAM mapping.
    pub guest_mib: Option<u64>,
    /// A child this process must reap (the bare QEMU peer).
    pub child: Option<std::process::Child>,
    /// What removing the instance must also undo.
    pub cleanup: Option<Box<dyn FnOnce()>>,
}

/// An instance's host memory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceMemory {
    pub processes: Vec<ProcessMemory>,
    pub pss_kib: u64,
    pub cgroup_kib: Option<u64>,
    pub guest_touched_kib: Option<u64>,
}

impl Instance {
    pub fn memory(&self) -> InstanceMemory {
        let processes = super::memory::processes(&super::memory::process_tree(&self.roots));
        let pss_kib = processes.iter().map(|p| p.pss_kib).sum();
        let cgroup_kib = self.cgroup_memory.as_deref().and_then(cgroup_kib);
        let guest_touched_kib = self.guest_mib.and_then(|mib| {
            processes
                .iter()
                .filter(|p| p.command.starts_with("qemu") || p.command.starts_with("capsa-vmm"))
                .find_map(|p| super::memory::guest_touched_kib(p.pid, mib))
        });
        InstanceMemory {
            processes,
            pss_kib,
            cgroup_kib,
            guest_touched_kib,
        }
    }
}

/// A cgroup's memory charge from its usage file (v1 memory.usage_in_bytes or v2 memory.current).
fn cgroup_kib(usage_file: &Path) -> Option<u64> {
    std::fs::read_to_string(usage_file)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|b| b / 1024)
}

/// The memory usage file of the cgroup at `relative` (under the v1 memory hierarchy, or the
/// unified one).
pub fn cgroup_usage_file(relative: &str) -> PathBuf {
    let relative = relative.trim_start_matches('/');
    let v1 = Path::new("/sys/fs/cgroup/memory").join(relative);
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        v1.join("memory.usage_in_bytes")
    } else {
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.current")
    }
}

/// One of the things measured.
pub trait Subject {
    fn info(&self) -> &SubjectInfo;
    /// A fresh instance that runs `workload` to its end, its output on stdout.
    fn one_shot(&self, workload: &Workload) -> Result<OneShot, BenchError>;
    /// An instance running `workload` in the background, with PROBE_PORT published on
    /// 127.0.0.1:`publish` if asked; returns once it has started.
    fn start(&self, workload: &Workload, publish: Option<u16>) -> Result<Instance, BenchError>;
    /// Stops and removes the instance, leaving nothing behind.
    fn remove(&self, instance: Instance);
    /// Whether `start` can publish a port; Err says why not.
    fn can_publish(&self) -> Result<(), BenchError> {
        Ok(())
    }
    /// Overhead figures whose measurement here would not mean what it means elsewhere, by
    /// key, with the reason.
    fn unmeasurable(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// The relaxations `one_shot_relaxed` can apply here, with the command-line or spec
    /// change each one is.
    fn relaxations(&self) -> Vec<(Relaxation, String)> {
        Vec::new()
    }
    /// Like `one_shot`, with `relax` applied.
    fn one_shot_relaxed(
        &self,
        workload: &Workload,
        relax: Relaxation,
    ) -> Result<OneShot, BenchError> {
        let _ = workload;
        Err(BenchError::CannotRelax {
            subject: self.info().name.clone(),
            relaxation: relax.describe(),
        })
    }
    /// Whether `exec` can run a command inside a running instance.
    fn can_exec(&self) -> bool {
        false
    }
    /// A command that runs `argv` inside the running `instance`, as `exec` does.
    fn exec(&self, instance: &Instance, argv: &[String]) -> Result<Command, BenchError> {
        let _ = (instance, argv);
        Err(BenchError::NoExec(self.info().name.clone()))
    }
    /// The instance's records on the host (files and directories holding its configuration,
    /// environment or writable layer), which no other local user should read.
    fn records(&self, instance: &Instance) -> Vec<PathBuf> {
        let _ = instance;
        Vec::new()
    }
}

/// A name unique to this bench run and counter.
pub fn instance_name(counter: &std::sync::atomic::AtomicUsize) -> String {
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("capsa-bench-{}-{n}", std::process::id())
}

/// First line of `binary --version`-style output, or the error.
pub fn version_of(binary: &Path, args: &[&str]) -> String {
    match Command::new(binary).args(args).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("?")
            .to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_the_line_it_must_show_is_an_error_naming_its_stderr() {
        let restored = "   0.5s  INFO capsa::vm::boot: vm restored from template template=ab\nhi";
        assert!(OneShot::check_stderr(Some("vm restored from template"), restored).is_ok());
        let cold = "capsa: vm template: no space left on device; this VM boots cold";
        let err = OneShot::check_stderr(Some("vm restored from template"), cold).unwrap_err();
        assert!(err.to_string().contains("booted cold"), "{err}");
        assert!(err.to_string().contains("no space left"), "{err}");
        assert!(OneShot::check_stderr(None, "").is_ok());
    }
}
