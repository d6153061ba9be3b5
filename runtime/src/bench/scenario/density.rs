//! Density: idle instances started one after another; at each step (N = 1, 10, 50, 100...)
//! the memory per instance (PSS of all their host processes over N) and the time the Nth took
//! to start. It stops at the last step, before a step that would exceed the memory budget
//! (half of what the machine had available), at the time budget, or at the first failure, and
//! says which.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{per_subject, Context};
use crate::bench::memory::available_kib;
use crate::bench::report::{DensityResult, DensityStep, Outcome};
use crate::bench::subjects::{Instance, Subject, Workload};

/// Time idle instances get to settle before a step is measured.
const SETTLE: Duration = Duration::from_secs(1);

pub fn run(subjects: &[&dyn Subject], ctx: &Context) -> BTreeMap<String, Outcome<DensityResult>> {
    let budget_kib = available_kib() / 2;
    per_subject(subjects, ctx, "density", |s| {
        let mut instances = Vec::new();
        let result = grow(s, ctx, budget_kib, &mut instances);
        ctx.progress.doing(format!(
            "density: {}: removing {} instances",
            s.info().name,
            instances.len()
        ));
        for i in instances {
            s.remove(i);
        }
        ctx.progress.advance(1);
        result
    })
}

fn grow(
    s: &dyn Subject,
    ctx: &Context,
    budget_kib: u64,
    instances: &mut Vec<Instance>,
) -> Outcome<DensityResult> {
    let steps = ctx.plan.density_steps(s.info());
    let began = Instant::now();
    let mut result = DensityResult {
        steps: Vec::new(),
        stopped: String::new(),
    };
    for &n in &steps {
        if let Some(last) = result.steps.last() {
            let projected = last.pss_per_instance_kib * n as u64;
            if projected > budget_kib {
                result.stopped = format!(
                    "N={n} would need about {} MiB, over the memory budget of {} MiB (half of what was available)",
                    projected / 1024,
                    budget_kib / 1024
                );
                return Outcome::Ok(result);
            }
        }
        let mut nth_ms = 0.0;
        while instances.len() < n {
            if began.elapsed() > ctx.plan.density_time_budget(s.info()) {
                result.stopped = format!(
                    "time budget of {} s reached at {} instances, before N={n}",
                    ctx.plan.density_time_budget(s.info()).as_secs(),
                    instances.len()
                );
                return Outcome::Ok(result);
            }
            ctx.progress.doing(format!(
                "density: {} instance {}/{n}",
                s.info().name,
                instances.len() + 1
            ));
            let t = Instant::now();
            match s.start(&Workload::Idle, None) {
                Ok(i) => instances.push(i),
                Err(e) => {
                    let stopped = format!("starting instance {} failed: {e}", instances.len() + 1);
                    if result.steps.is_empty() {
                        return Outcome::Failed { error: stopped };
                    }
                    result.stopped = stopped;
                    return Outcome::Ok(result);
                }
            }
            nth_ms = t.elapsed().as_secs_f64() * 1000.0;
        }
        std::thread::sleep(SETTLE);
        let memory: Vec<_> = instances.iter().map(|i| i.memory()).collect();
        let pss: u64 = memory.iter().map(|m| m.pss_kib).sum();
        let cgroup: Option<u64> = memory.iter().map(|m| m.cgroup_kib).sum();
        result.steps.push(DensityStep {
            n,
            pss_per_instance_kib: pss / n as u64,
            cgroup_per_instance_kib: cgroup.map(|c| c / n as u64),
            start_nth_ms: nth_ms,
        });
    }
    result.stopped = format!(
        "reached the last step, N={}",
        steps.last().copied().unwrap_or(0)
    );
    Outcome::Ok(result)
}
