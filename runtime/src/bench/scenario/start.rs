//! Start latency: a fresh instance that prints a line and exits, timed from the spawn of the
//! command a user would type to the line's arrival and to the command's exit, with the CPU
//! time of its whole process tree. Runs of the subjects are interleaved, so drift of the
//! machine (page cache, thermal, other load) falls on all of them alike.

use std::collections::BTreeMap;

use super::Context;
use crate::bench::error::BenchError;
use crate::bench::report::{Outcome, StartResult, StartSamples};
use crate::bench::stats::summarize;
use crate::bench::subjects::{OneShot, Subject, Workload};
use crate::bench::timing::{timed_run, MARKER};

struct Progress {
    runs: usize,
    warmup: usize,
    done: usize,
    samples: StartSamples,
    error: Option<String>,
}

/// One run of `subject`: (first output ms, exit ms, cpu ms), or why it failed.
fn once(subject: &dyn Subject) -> Result<(f64, f64, f64), BenchError> {
    let OneShot {
        command,
        cleanup,
        stderr_shows,
    } = subject.one_shot(&Workload::Marker)?;
    let result = timed_run(command, MARKER);
    if let Some(cleanup) = cleanup {
        cleanup();
    }
    let r = result?;
    OneShot::check_stderr(stderr_shows, &r.stderr)?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    match r.first_output {
        Some(first) if r.exit == 0 => Ok((ms(first), ms(r.total), ms(r.cpu))),
        _ => Err(BenchError::StartRun {
            exit: r.exit,
            marker_seen: r.first_output.is_some(),
            stderr: tail(&r.stderr),
        }),
    }
}

/// The last lines of an error output, for a report.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

pub fn run(subjects: &[&dyn Subject], ctx: &Context) -> BTreeMap<String, Outcome<StartResult>> {
    let mut state: Vec<Progress> = subjects
        .iter()
        .map(|s| Progress {
            runs: ctx.plan.start_runs(s.info()),
            warmup: ctx.plan.warmup(s.info()),
            done: 0,
            samples: StartSamples::default(),
            error: s.info().unavailable.is_some().then(String::new),
        })
        .collect();
    let rounds = state.iter().map(|p| p.runs + p.warmup).max().unwrap_or(0);
    for round in 0..rounds {
        for (s, p) in subjects.iter().zip(state.iter_mut()) {
            if p.error.is_some() || round >= p.runs + p.warmup {
                continue;
            }
            ctx.progress.doing(format!(
                "start: {} {}/{}",
                s.info().name,
                round + 1,
                p.runs + p.warmup
            ));
            match once(*s) {
                Ok((first, exit, cpu)) if round >= p.warmup => {
                    p.samples.first_output_ms.push(first);
                    p.samples.exit_ms.push(exit);
                    p.samples.cpu_ms.push(cpu);
                }
                Ok(_) => {}
                Err(e) => p.error = Some(format!("run {}: {e}", round + 1)),
            }
            p.done += 1;
            ctx.progress.advance(1);
        }
    }
    let mut out = BTreeMap::new();
    for (s, p) in subjects.iter().zip(state) {
        // What a subject that stopped early did not run still counts as progress.
        ctx.progress
            .advance((p.runs + p.warmup).saturating_sub(p.done) as u64);
        let outcome = match (&s.info().unavailable, p.error) {
            (Some(why), _) => Outcome::Skipped {
                reason: format!("not available here: {why}"),
            },
            (None, Some(error)) => Outcome::Failed { error },
            (None, None) => match (
                summarize(&p.samples.first_output_ms),
                summarize(&p.samples.exit_ms),
                summarize(&p.samples.cpu_ms),
            ) {
                (Some(first_output_ms), Some(exit_ms), Some(cpu_ms)) => Outcome::Ok(StartResult {
                    warmup: p.warmup,
                    first_output_ms,
                    exit_ms,
                    cpu_ms,
                    samples: p.samples,
                }),
                _ => Outcome::Failed {
                    error: "no run completed".into(),
                },
            },
        };
        if let Some(why) = outcome.why_not() {
            ctx.progress.note(format!("start {}: {why}", s.info().name));
        }
        out.insert(s.info().name.clone(), outcome);
    }
    out
}

/// Total progress units this scenario will report.
pub fn units(subjects: &[&dyn Subject], plan: &crate::bench::plan::Plan) -> u64 {
    subjects
        .iter()
        .map(|s| (plan.start_runs(s.info()) + plan.warmup(s.info())) as u64)
        .sum()
}
