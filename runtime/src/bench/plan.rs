//! How much each scenario does for each subject: the full suite, or `--quick`. VMs that boot
//! under TCG (a guest kernel emulated, 3-4 s per run here) get 50 runs instead of 100 and
//! density steps up to 20: 100 runs of the two TCG VM subjects alone would take about 12 of
//! the 15 minutes the whole suite may take on a 2-core machine. `--runs` overrides.

use std::time::Duration;

use super::subjects::{Relaxation, SubjectInfo};

#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// `--runs`: start-latency runs for every subject.
    pub runs: Option<usize>,
}

/// Whether each start of this subject boots an emulated guest kernel.
fn emulated(info: &SubjectInfo) -> bool {
    info.accelerator.as_deref() == Some("tcg")
}

/// Whether each start of this subject restores the VM template instead of booting: its
/// density goes to 100 as a container's does (issue 20's measure).
fn from_template(info: &SubjectInfo) -> bool {
    info.vm_start.as_deref() == Some(super::subjects::FROM_TEMPLATE)
}

impl Plan {
    pub fn start_runs(&self, info: &SubjectInfo) -> usize {
        if let Some(n) = self.runs {
            return n.max(1);
        }
        match (self.quick, emulated(info)) {
            (false, false) => 100,
            (false, true) => 50,
            (true, false) => 10,
            (true, true) => 3,
        }
    }

    pub fn warmup(&self, info: &SubjectInfo) -> usize {
        if self.quick || emulated(info) {
            1
        } else {
            3
        }
    }

    /// Instance counts at which density is measured.
    pub fn density_steps(&self, info: &SubjectInfo) -> Vec<usize> {
        if from_template(info) {
            return if self.quick {
                vec![1, 3]
            } else {
                vec![1, 10, 20, 50, 100]
            };
        }
        match (self.quick, emulated(info)) {
            (false, false) => vec![1, 10, 50, 100],
            (false, true) => vec![1, 5, 10, 20],
            (true, false) => vec![1, 3],
            (true, true) => vec![1, 2],
        }
    }

    /// Wall time one subject's density may take before it stops at the step it reached
    /// (100 VMs from a template under TCG take about 2 minutes here, on a quiet machine).
    pub fn density_time_budget(&self, info: &SubjectInfo) -> Duration {
        Duration::from_secs(match (self.quick, from_template(info)) {
            (true, _) => 45,
            (false, false) => 180,
            (false, true) => 300,
        })
    }

    /// Round trips and bytes for the TCP figures.
    pub fn tcp_round_trips(&self) -> usize {
        if self.quick {
            200
        } else {
            2000
        }
    }

    pub fn tcp_mib(&self) -> usize {
        if self.quick {
            16
        } else {
            64
        }
    }

    /// The reruns with layers removed the isolation matrix makes. A VM under TCG boots for
    /// each one, so `--quick` keeps only the one that removes everything (the layer is then
    /// named from the errno, marked inferred).
    pub fn isolation_relaxations(
        &self,
        info: &SubjectInfo,
        offered: &[Relaxation],
    ) -> Vec<Relaxation> {
        if self.quick && emulated(info) {
            offered
                .iter()
                .copied()
                .filter(|r| *r == Relaxation::Privileged)
                .collect()
        } else {
            offered.to_vec()
        }
    }

    /// Processes the exec ptrace window watcher waits for (one `exec` each), and how long.
    pub fn exec_window(&self, info: &SubjectInfo) -> (usize, Duration) {
        match (self.quick, emulated(info)) {
            (false, false) => (60, Duration::from_secs(120)),
            (true, false) => (30, Duration::from_secs(60)),
            (false, true) => (10, Duration::from_secs(300)),
            (true, true) => (4, Duration::from_secs(180)),
        }
    }
}
