//! The report's data: what the JSON holds, and what the Markdown, the plots, the terminal
//! summary and `--compare-to` are made from. Every scenario has an entry for every subject:
//! its figures, or the error that stopped it, or the reason it does not apply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use capsa_escape::findings::Findings;

use super::memory::ProcessMemory;
use super::stats::Summary;
use super::subjects::{Relaxation, SubjectInfo};

/// Bumped when a field changes meaning; `--compare-to` refuses other versions.
pub const SCHEMA: u32 = 1;

pub const SCENARIOS: [&str; 5] = ["start", "memory", "density", "overhead", "isolation"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    /// The command line that produced it.
    pub command: String,
    pub started: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub image: String,
    pub quick: bool,
    pub subjects: Vec<SubjectInfo>,
    /// Scenarios run; the others are listed in `not_run` with the reason.
    pub not_run: BTreeMap<String, String>,
    pub start: BTreeMap<String, Outcome<StartResult>>,
    pub memory: BTreeMap<String, Outcome<MemoryResult>>,
    pub density: BTreeMap<String, Outcome<DensityResult>>,
    pub overhead: BTreeMap<String, Outcome<OverheadResult>>,
    /// The probe run on the host itself, without isolation: the overhead scenario's baseline.
    pub overhead_baseline: Option<Outcome<OverheadResult>>,
    /// The isolation matrix: per subject, each escape probe's verdict and what stopped it.
    #[serde(default)]
    pub isolation: BTreeMap<String, Outcome<IsolationResult>>,
    /// The escape probe run on the host itself, without isolation: what the host allows.
    #[serde(default)]
    pub isolation_baseline: Option<Outcome<Findings>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub os: String,
    pub host_kernel: String,
    pub kvm: String,
    pub cgroup: String,
}

/// One subject's result in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome<T> {
    Ok(T),
    /// It was tried and failed: the error as the subject gave it.
    Failed {
        error: String,
    },
    /// It does not apply to this subject, or the subject is not available here.
    Skipped {
        reason: String,
    },
}

impl<T> Outcome<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Outcome::Ok(t) => Some(t),
            _ => None,
        }
    }

    /// "failed: ..." / "skipped: ..." for tables; None when it has figures.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Failed { error } => Some(format!("failed: {error}")),
            Outcome::Skipped { reason } => Some(format!("skipped: {reason}")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StartResult {
    pub warmup: usize,
    /// Spawn of the CLI to the workload's first output line, ms.
    pub first_output_ms: Summary,
    /// Spawn to exit of the CLI, ms.
    pub exit_ms: Summary,
    /// User + system CPU of the whole process tree, ms.
    pub cpu_ms: Summary,
    pub samples: StartSamples,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StartSamples {
    pub first_output_ms: Vec<f64>,
    pub exit_ms: Vec<f64>,
    pub cpu_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryResult {
    /// Sum of the PSS of the instance's host processes (for a VM this includes the guest
    /// memory its VMM has touched).
    pub pss_kib: u64,
    pub cgroup_kib: Option<u64>,
    /// Resident guest RAM in the VMM (part of pss_kib).
    pub guest_touched_kib: Option<u64>,
    pub processes: Vec<ProcessMemory>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DensityStep {
    pub n: usize,
    pub pss_per_instance_kib: u64,
    pub cgroup_per_instance_kib: Option<u64>,
    /// Time to start the Nth instance (until its start command returned), ms.
    pub start_nth_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DensityResult {
    pub steps: Vec<DensityStep>,
    /// Why it did not go further: the last step reached, the memory or time budget, or the
    /// first failure.
    pub stopped: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OverheadResult {
    pub getpid_ns: Option<f64>,
    pub cpu_mips: Option<f64>,
    pub memory_copy_gib_s: Option<f64>,
    pub file_write_fsync_mib_s: Option<f64>,
    pub file_read_cached_mib_s: Option<f64>,
    /// One-byte round trips through the published port, µs.
    pub tcp_rtt_us: Option<Summary>,
    pub tcp_mib_s: Option<f64>,
    /// Figures not measured, with the reason.
    pub not_measured: BTreeMap<String, String>,
}

/// The overhead figures by name, in the order tables show them; `higher` says whether a
/// higher value is better.
pub struct OverheadFigure {
    pub key: &'static str,
    pub label: &'static str,
    /// For the plot's axis.
    pub short: &'static str,
    pub higher_is_better: bool,
    pub value: fn(&OverheadResult) -> Option<f64>,
}

pub const OVERHEAD_FIGURES: [OverheadFigure; 7] = [
    OverheadFigure {
        key: "getpid_ns",
        label: "getpid (ns)",
        short: "getpid",
        higher_is_better: false,
        value: |o| o.getpid_ns,
    },
    OverheadFigure {
        key: "cpu_mips",
        label: "CPU loop (M it/s)",
        short: "CPU loop",
        higher_is_better: true,
        value: |o| o.cpu_mips,
    },
    OverheadFigure {
        key: "memory_copy_gib_s",
        label: "memory copy (GiB/s)",
        short: "mem copy",
        higher_is_better: true,
        value: |o| o.memory_copy_gib_s,
    },
    OverheadFigure {
        key: "file_write_fsync_mib_s",
        label: "file write+fsync (MiB/s)",
        short: "file write",
        higher_is_better: true,
        value: |o| o.file_write_fsync_mib_s,
    },
    OverheadFigure {
        key: "file_read_cached_mib_s",
        label: "file read, cached (MiB/s)",
        short: "file read",
        higher_is_better: true,
        value: |o| o.file_read_cached_mib_s,
    },
    OverheadFigure {
        key: "tcp_rtt_us",
        label: "TCP round trip p50 (µs)",
        short: "TCP RTT",
        higher_is_better: false,
        value: |o| o.tcp_rtt_us.as_ref().map(|s| s.p50),
    },
    OverheadFigure {
        key: "tcp_mib_s",
        label: "TCP throughput (MiB/s)",
        short: "TCP MiB/s",
        higher_is_better: true,
        value: |o| o.tcp_mib_s,
    },
];

/// One subject's isolation matrix column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IsolationResult {
    /// What the probe saw of itself in the default configuration.
    pub context: capsa_escape::context::Context,
    /// Whether the probe ran on the host's kernel (same boot_id).
    pub same_kernel: bool,
    /// Namespaces the probe shared with the host (the same inode; in a guest, that means the
    /// guest's initial namespace of that kind, whose inode is the same on every kernel).
    pub shared_namespaces: Vec<String>,
    /// The configurations the probes were rerun in to find what stopped them.
    pub reruns: Vec<Rerun>,
    /// Probe name -> verdict.
    pub cells: BTreeMap<String, Cell>,
    /// How many host syscalls the workload can make (for a VM: its engine process).
    pub host_syscalls: Outcome<SyscallReach>,
    /// The VM engine process as the host sees it.
    pub engine: Option<EngineProcess>,
}

/// A rerun with layers removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rerun {
    pub relaxation: Relaxation,
    /// The flags or spec change that removed them.
    pub how: String,
    /// Probes rerun (those the default configuration did not let through).
    pub probes: Vec<String>,
    /// None when it ran; else the error or why it was not run.
    pub error: Option<String>,
}

/// What a probe did in one subject.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It reached the host: its kernel's global state, a host file, a host process.
    Allowed,
    /// It succeeded, but on the instance's own copy: its namespace, or the guest's kernel.
    Contained,
    /// It was refused.
    Blocked,
    /// It does not exist here (not in the kernel, or the host refuses it without isolation).
    NotApplicable,
    /// The probe could not be run; `detail` says why.
    Unmeasured,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "ALLOWED",
            Verdict::Contained => "contained",
            Verdict::Blocked => "blocked",
            Verdict::NotApplicable => "n/a",
            Verdict::Unmeasured => "not measured",
        }
    }
}

/// A layer that stops or contains an escape.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Namespace,
    Capability,
    Seccomp,
    DeviceCgroup,
    ReadOnlyPath,
    MaskedPath,
    /// What the runtime does itself: descriptors closed, non-dumpable entry, paths resolved
    /// inside the root.
    Runtime,
    /// Host file modes (the store).
    FilePermissions,
    Hypervisor,
    /// Refused, and no rerun showed by what.
    Unattributed,
}

impl Layer {
    pub fn label(self) -> &'static str {
        match self {
            Layer::Namespace => "namespace",
            Layer::Capability => "capability",
            Layer::Seccomp => "seccomp",
            Layer::DeviceCgroup => "device cgroup",
            Layer::ReadOnlyPath => "read-only path",
            Layer::MaskedPath => "masked path",
            Layer::Runtime => "runtime",
            Layer::FilePermissions => "file permissions",
            Layer::Hypervisor => "hypervisor",
            Layer::Unattributed => "not attributed",
        }
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub verdict: Verdict,
    /// What stopped (or contained) it, innermost first.
    pub by: Vec<Layer>,
    /// True when a layer is named from the errno and the one rerun that let it through (all
    /// layers removed at once), not from a rerun that removed that layer alone.
    pub inferred: bool,
    /// The default configuration's errno.
    pub errno: Option<String>,
    /// What the probe saw, and how the layer was found.
    pub detail: String,
}

/// Host syscalls reachable, measured from the running process's own seccomp filters
/// (PTRACE_SECCOMP_GET_FILTER, every thread), each evaluated for every x86_64 syscall.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyscallReach {
    /// The process measured.
    pub process: String,
    /// x86_64 syscalls in the table evaluated.
    pub table: usize,
    /// Allowed for some argument values.
    pub reachable: usize,
    /// Allowed whatever the arguments.
    pub unconditional: usize,
    /// Stacked filters found (0: no seccomp).
    pub filters: usize,
    /// Whether i386 or x32 syscalls get through too.
    pub other_abis: bool,
}

/// A VM engine process as the host sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineProcess {
    pub command: String,
    pub pid: i32,
    pub uid: u32,
    pub cap_eff: String,
    pub seccomp: u32,
    pub no_new_privs: bool,
    /// Namespaces it shares with the host (with capsa).
    pub shared_namespaces: Vec<String>,
}

impl Report {
    /// Problems that make the report incomplete or inconsistent (empty when it is sound):
    /// every scenario run has an entry for every subject, percentiles are ordered.
    pub fn consistency_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for scenario in SCENARIOS {
            if self.not_run.contains_key(scenario) {
                continue;
            }
            for s in &self.subjects {
                let present = match scenario {
                    "start" => self.start.contains_key(&s.name),
                    "memory" => self.memory.contains_key(&s.name),
                    "density" => self.density.contains_key(&s.name),
                    "isolation" => self.isolation.contains_key(&s.name),
                    _ => self.overhead.contains_key(&s.name),
                };
                if !present {
                    problems.push(format!("{scenario}: no entry for {}", s.name));
                }
            }
        }
        for (name, outcome) in &self.start {
            if let Some(r) = outcome.ok() {
                for (what, s) in [
                    ("first output", &r.first_output_ms),
                    ("exit", &r.exit_ms),
                    ("cpu", &r.cpu_ms),
                ] {
                    if !(s.min <= s.p50 && s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max) {
                        problems.push(format!("start {name} {what}: percentiles out of order"));
                    }
                }
                if r.first_output_ms.n != r.samples.first_output_ms.len() {
                    problems.push(format!("start {name}: summary and samples disagree"));
                }
            }
        }
        problems
    }
}
