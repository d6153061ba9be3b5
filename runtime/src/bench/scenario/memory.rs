//! Memory per instance: one idle instance of each subject, measured once it has settled.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{per_subject, Context};
use crate::bench::report::{MemoryResult, Outcome};
use crate::bench::subjects::{Subject, Workload};

/// How long an idle instance is left before measuring: long enough for the start's transient
/// allocations (page cache of the CLI, a VM's boot) to settle into what idling costs.
const SETTLE: Duration = Duration::from_secs(2);

pub fn run(subjects: &[&dyn Subject], ctx: &Context) -> BTreeMap<String, Outcome<MemoryResult>> {
    per_subject(subjects, ctx, "memory", |s| {
        let outcome = match s.start(&Workload::Idle, None) {
            Ok(instance) => {
                std::thread::sleep(SETTLE);
                let m = instance.memory();
                s.remove(instance);
                if m.processes.is_empty() {
                    Outcome::Failed {
                        error: "the instance had no live host process to measure".into(),
                    }
                } else {
                    Outcome::Ok(MemoryResult {
                        pss_kib: m.pss_kib,
                        cgroup_kib: m.cgroup_kib,
                        guest_touched_kib: m.guest_touched_kib,
                        processes: m.processes,
                    })
                }
            }
            Err(error) => Outcome::Failed {
                error: error.to_string(),
            },
        };
        ctx.progress.advance(1);
        outcome
    })
}
