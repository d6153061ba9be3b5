//! The isolation matrix: capsa-escape, the same static probe in every subject, tries each
//! escape with harmless arguments; the harness decides what stopped each one and prints
//! probe x subject -> allowed / contained / blocked (by what) / not applicable, plus the
//! host syscalls each subject's workload (or VM engine) can reach.
//!
//! - `attribution`: from findings to a cell (verdict and layers);
//! - `live`: what needs a running instance (the exec ptrace window, the syscall count, the
//!   engine's confinement, the records another local user could read);
//! - `reach`: seccomp filters read from a process and evaluated per syscall;
//! - `hostile`: the image whose /dev points at a host directory.
//!
//! Per subject: the probe runs once as the subject runs by default, then again, for the
//! probes that did not get through, in each configuration the subject can make with layers
//! removed (`Subject::relaxations`). The probe also runs on the host without isolation: a
//! probe the host itself refuses says nothing about an isolation.

pub mod attribution;
pub mod hostile;
pub mod live;
pub mod reach;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use capsa_escape::context::Context as ProbeContext;
use capsa_escape::findings::{Finding, Findings, Reach};
use capsa_escape::probes::{Scope, CATALOGUE};

use super::start::tail;
use super::{per_subject, Context};
use crate::bench::error::BenchError;
use crate::bench::report::{Cell, IsolationResult, Outcome, Rerun, Verdict};
use crate::bench::subjects::{Relaxation, Subject, Workload};
use crate::bench::timing::timed_run;
use attribution::{judge, Evidence};
use hostile::HostileImage;

/// One row of the matrix.
pub struct Row {
    pub name: &'static str,
    pub label: &'static str,
    pub scope: Scope,
}

/// The rows the harness itself drives, beyond the probe's catalogue.
const HARNESS_ROWS: [Row; 3] = [
    Row {
        name: capsa_escape::window::NAME,
        label: "ptrace a process entering by exec before its seccomp filter",
        scope: Scope::Kernel,
    },
    Row {
        name: hostile::NAME,
        label: "an image whose /dev points at a host directory",
        scope: Scope::HostObject,
    },
    Row {
        name: "store_local_user",
        label: "another local user reads the instance's records on the host",
        scope: Scope::HostObject,
    },
];

/// Every row, in the order tables show them.
pub fn rows() -> Vec<Row> {
    CATALOGUE
        .iter()
        .map(|p| Row {
            name: p.name,
            label: p.label,
            scope: p.scope,
        })
        .chain(HARNESS_ROWS)
        .collect()
}

/// What every subject's run shares: the host's identity, the marker, the baseline.
pub struct Setup {
    /// The harness's own view: what "the host" is.
    pub host: ProbeContext,
    marker: PathBuf,
    token: String,
    /// The probe run on the host without isolation.
    pub baseline: Result<Findings, BenchError>,
    /// First-sector fingerprint -> host disk, for the disks the host lets capsa read.
    pub host_disks: BTreeMap<String, String>,
}

impl Setup {
    /// Plants the marker and runs the probe on the host (`escape` is the static probe).
    pub fn new(escape: &Path, work: &Path) -> Setup {
        let token = format!(
            "capsa-bench-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let marker = PathBuf::from(format!("/run/capsa-bench-marker-{}", std::process::id()));
        let planted = std::fs::write(&marker, &token);
        let scratch = work.join("host-scratch");
        let baseline = planted
            .map_err(BenchError::file(&marker))
            .and_then(|()| std::fs::create_dir_all(&scratch).map_err(BenchError::file(&scratch)))
            .and_then(|()| {
                let mut c = Command::new(escape);
                c.arg("all")
                    .arg("--marker")
                    .arg(format!("{}:{token}", marker.display()))
                    .arg("--scratch")
                    .arg(&scratch);
                let run = timed_run(c, "")?;
                Findings::find_in(&run.stdout)
                    .ok_or_else(|| BenchError::NoHostFindings(tail(&run.stderr)))
            });
        Setup {
            host: ProbeContext::gather(),
            marker,
            token,
            baseline,
            host_disks: host_disks(),
        }
    }

    fn marker_arg(&self) -> String {
        format!("{}:{}", self.marker.display(), self.token)
    }

    fn baseline_of(&self, name: &str) -> Option<&Finding> {
        self.baseline.as_ref().ok()?.get(name)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// The host's disks by the fingerprint of their start (those capsa may read).
fn host_disks() -> BTreeMap<String, String> {
    let mut disks = BTreeMap::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut buf = vec![0u8; capsa_escape::SECTOR_BYTES];
        let read = std::fs::File::open(format!("/dev/{name}"))
            .and_then(|mut f| std::io::Read::read(&mut f, &mut buf));
        if let Ok(n) = read {
            if n > 0 {
                disks.insert(capsa_escape::fingerprint(&buf[..n]), name);
            }
        }
    }
    disks
}

/// The hostile image and each subject's counterpart running it (same name), or why there
/// is none.
pub struct HostileSubjects<'a> {
    pub image: Result<&'a HostileImage, Arc<BenchError>>,
    pub subjects: Vec<&'a dyn Subject>,
}

pub fn run(
    subjects: &[&dyn Subject],
    hostile: &HostileSubjects,
    ctx: &Context,
    setup: &Setup,
) -> BTreeMap<String, Outcome<IsolationResult>> {
    per_subject(subjects, ctx, "isolation", |s| {
        let twin = hostile
            .subjects
            .iter()
            .copied()
            .find(|h| h.info().name == s.info().name);
        let hostile = match (&hostile.image, twin) {
            (Ok(image), Some(twin)) => Ok((*image, twin)),
            (Err(e), _) => Err(BenchError::Shared(e.clone())),
            (Ok(_), None) => Err(BenchError::NoCounterpart),
        };
        let outcome = measure(s, hostile, ctx, setup);
        ctx.progress.advance(1);
        outcome
    })
}

/// The probe once in `s`, as it runs by default or with `relax`.
fn run_escape(
    s: &dyn Subject,
    relax: Option<Relaxation>,
    args: Vec<String>,
) -> Result<Findings, BenchError> {
    let workload = Workload::Escape(args);
    let shot = match relax {
        None => s.one_shot(&workload)?,
        Some(r) => s.one_shot_relaxed(&workload, r)?,
    };
    let run = timed_run(shot.command, "");
    if let Some(cleanup) = shot.cleanup {
        cleanup();
    }
    let run = run?;
    Findings::find_in(&run.stdout).ok_or_else(|| BenchError::NoFindings {
        exit: run.exit,
        stderr: tail(&run.stderr),
    })
}

/// The probe's arguments: every probe (or `only` those), with the host's marker.
fn probe_args(setup: &Setup, only: &[String]) -> Vec<String> {
    let mut a = vec![
        "all".to_string(),
        "--marker".to_string(),
        setup.marker_arg(),
    ];
    if !only.is_empty() {
        a.push("--only".into());
        a.push(only.join(","));
    }
    a
}

fn measure(
    s: &dyn Subject,
    hostile: Result<(&HostileImage, &dyn Subject), BenchError>,
    ctx: &Context,
    setup: &Setup,
) -> Outcome<IsolationResult> {
    let name = s.info().name.clone();
    ctx.progress.doing(format!("isolation: {name}"));
    let default = match run_escape(s, None, probe_args(setup, &[])) {
        Ok(f) => f,
        Err(error) => {
            return Outcome::Failed {
                error: error.to_string(),
            }
        }
    };
    let guest = !default.context.same_kernel(&setup.host);
    // On the host's kernel, what the host itself refuses cannot get through anywhere.
    let pending: Vec<String> = default
        .probes
        .iter()
        .filter(|f| f.reach != Reach::Reached)
        .filter(|f| {
            guest
                || setup
                    .baseline_of(&f.name)
                    .is_none_or(|b| b.reach == Reach::Reached)
        })
        .map(|f| f.name.clone())
        .collect();
    let (reruns, rerun_findings) = rerun(s, ctx, setup, &pending);
    let live = live::measure(s, ctx);
    let hostile_finding = hostile.and_then(|(image, twin)| {
        ctx.progress
            .doing(format!("isolation: {name}, hostile image"));
        image.check(twin)
    });
    let cells = cells(&default, &rerun_findings, &live, &hostile_finding, setup);
    Outcome::Ok(IsolationResult {
        same_kernel: !guest,
        shared_namespaces: capsa_escape::context::NAMESPACES
            .iter()
            .filter(|k| default.context.shares(&setup.host, k))
            .map(|k| k.to_string())
            .collect(),
        context: default.context,
        reruns,
        cells,
        host_syscalls: live.reach,
        engine: live.engine,
    })
}

/// The `pending` probes again in each configuration with layers removed that the subject
/// offers and the plan keeps: what the report says of each rerun, and what it found.
fn rerun(
    s: &dyn Subject,
    ctx: &Context,
    setup: &Setup,
    pending: &[String],
) -> (Vec<Rerun>, Vec<(Relaxation, Option<Findings>)>) {
    let offered = s.relaxations();
    let chosen = ctx.plan.isolation_relaxations(
        s.info(),
        &offered.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
    );
    let mut reruns = Vec::new();
    let mut found = Vec::new();
    for (relaxation, how) in offered {
        let error = if !chosen.contains(&relaxation) {
            Some("not run (--quick on an emulated VM: only the privileged rerun)".to_string())
        } else if pending.is_empty() {
            Some("not needed: no probe left to explain".to_string())
        } else {
            ctx.progress.doing(format!(
                "isolation: {}, {}",
                s.info().name,
                relaxation.describe()
            ));
            let result = run_escape(s, Some(relaxation), probe_args(setup, pending));
            let error = result.as_ref().err().map(ToString::to_string);
            found.push((relaxation, result.ok()));
            error
        };
        reruns.push(Rerun {
            relaxation,
            how,
            probes: if error.is_none() {
                pending.to_vec()
            } else {
                Vec::new()
            },
            error,
        });
    }
    (reruns, found)
}

/// A row the probe's findings lack.
static NOT_REPORTED: BenchError = BenchError::NotReported;

/// Every row's cell.
fn cells(
    default: &Findings,
    reruns: &[(Relaxation, Option<Findings>)],
    live: &live::Live,
    hostile: &Result<(Finding, Option<ProbeContext>), BenchError>,
    setup: &Setup,
) -> BTreeMap<String, Cell> {
    let mut cells = BTreeMap::new();
    for row in rows() {
        // (finding, the probe's view of itself when it made it)
        let found: Result<(&Finding, &ProbeContext), &BenchError> = match row.name {
            capsa_escape::window::NAME if !live.window_applicable => {
                cells.insert(
                    row.name.to_string(),
                    not_measured(Verdict::NotApplicable, "no exec into a running instance"),
                );
                continue;
            }
            capsa_escape::window::NAME => live.window.as_ref().map(|f| (f, &default.context)),
            hostile::NAME => hostile
                .as_ref()
                .map(|(f, c)| (f, c.as_ref().unwrap_or(&default.context))),
            "store_local_user" => match &live.store {
                Ok(f) => Ok((f, &setup.host)),
                Err(e) => {
                    cells.insert(
                        row.name.to_string(),
                        not_measured(Verdict::NotApplicable, &e.to_string()),
                    );
                    continue;
                }
            },
            name => default
                .get(name)
                .map(|f| (f, &default.context))
                .ok_or(&NOT_REPORTED),
        };
        let cell = match found {
            Ok((finding, probe)) => {
                let rerun: Vec<(Relaxation, Option<&Finding>)> = reruns
                    .iter()
                    .map(|(r, f)| (*r, f.as_ref().and_then(|f| f.get(row.name))))
                    .filter(|(_, f)| f.is_some())
                    .collect();
                judge(&Evidence {
                    name: row.name,
                    scope: row.scope,
                    default: finding,
                    probe,
                    host: &setup.host,
                    reruns: &rerun,
                    baseline: setup.baseline_of(row.name),
                    host_disks: &setup.host_disks,
                })
            }
            Err(e) => not_measured(Verdict::Unmeasured, &e.to_string()),
        };
        cells.insert(row.name.to_string(), cell);
    }
    cells
}

fn not_measured(verdict: Verdict, why: &str) -> Cell {
    Cell {
        verdict,
        by: Vec::new(),
        inferred: false,
        errno: None,
        detail: why.to_string(),
    }
}
