//! The report's data: what the JSON holds, and what the Markdown, the plots, the terminal
//! summary and `--compare-to` are made from. Every scenario has an entry for every subject:
//! its figures, or the error that stopped it, or the reason it does not apply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::memory::ProcessMemory;
use super::stats::Summary;
use super::subjects::SubjectInfo;

/// Bumped when a field changes meaning; `--compare-to` refuses other versions.
pub const SCHEMA: u32 = 1;

pub const SCENARIOS: [&str; 4] = ["start", "memory", "density", "overhead"];

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
