//! `capsa bench`: the same image and workloads under each isolation and each peer installed
//! here, in one run (ANCHORS.md's methods):
//! - `subjects/`: capsa's two isolations and the peers (runc, runsc, bare QEMU) behind one
//!   trait;
//! - `scenario/`: start latency, memory per instance, density, overhead, the isolation
//!   matrix;
//! - `timing`, `memory`, `stats`: how one figure is taken (wait4, smaps_rollup, percentiles);
//! - `plan`: how much each scenario does, full or `--quick`;
//! - `report`: the data; `markdown`, `svg`, `compare`: what is made of it.

pub mod compare;
pub mod error;
pub mod markdown;
pub mod memory;
pub mod plan;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod subjects;
pub mod svg;
pub mod timing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::root::StateRoot;
pub use error::BenchError;
use plan::Plan;
use progress::Progress;
use report::{Machine, Outcome, Report};
use scenario::Context;
use subjects::{CapsaSubject, OciPeer, QemuPeer, Subject};

/// What `capsa bench` was asked.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `container`, `vm` (from the VM template), `vm-cold` (booting its kernel).
    pub isolations: Vec<String>,
    /// `runc`, `runsc`, `qemu`.
    pub peers: Vec<String>,
    pub image: String,
    pub runs: Option<usize>,
    /// Scenario names; empty for all.
    pub scenarios: Vec<String>,
    pub quick: bool,
    /// Forced VM engine for `capsa-vm`.
    pub vmm: Option<String>,
    /// Cgroup parent of every instance capsa and the OCI peers create.
    pub cgroup_parent: Option<String>,
    /// The command line, for the report.
    pub command: String,
}

/// A static binary built by scripts/build-agent.sh: `$VAR`, or `<name>-static` beside capsa.
fn static_binary(var: &'static str, name: &'static str) -> Result<PathBuf, BenchError> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.join(format!("{name}-static")))
        })
        .filter(|p| p.is_file())
        .ok_or(BenchError::NoStaticBinary { name, var })
}

/// The static probes built by scripts/build-agent.sh, in a directory of their own that
/// instances mount read-only: the directory, and the escape probe's path in it (or why it
/// is missing).
fn stage_probe(root: &StateRoot) -> Result<(PathBuf, Result<PathBuf, BenchError>), BenchError> {
    let source = static_binary("CAPSA_PROBE", "capsa-probe")?;
    let dir = root.dir().join("bench").join("probe");
    std::fs::create_dir_all(&dir).map_err(BenchError::file(&dir))?;
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        match std::fs::copy(from, &to) {
            Ok(_) => Ok(to),
            Err(source) => Err(BenchError::Copy {
                from: from.to_path_buf(),
                to,
                source,
            }),
        }
    };
    copy(&source, "capsa-probe")?;
    let escape =
        static_binary("CAPSA_ESCAPE", "capsa-escape").and_then(|e| copy(&e, "capsa-escape"));
    Ok((dir, escape))
}

fn machine(root: &StateRoot) -> Machine {
    let info = crate::host::HostInfo::gather(root);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        cpus: info.cpus,
        memory_gib: (info.memory as f64 / (1u64 << 30) as f64 * 10.0).round() / 10.0,
        os: info.os,
        host_kernel: info.kernel,
        kvm: info.kvm.describe(),
        cgroup: info
            .cgroup_mode
            .map(|m| format!("{m:?}").to_lowercase())
            .unwrap_or_else(|| "none".into()),
    }
}

/// Refuses unknown isolations, peers and scenarios before anything is started.
fn check_names(opts: &BenchOptions) -> Result<(), BenchError> {
    let known: [(&'static str, &Vec<String>, &[&'static str]); 3] = [
        (
            "--isolation",
            &opts.isolations,
            &["container", "vm", "vm-cold"],
        ),
        ("--peers", &opts.peers, &["runc", "runsc", "qemu"]),
        ("--scenario", &opts.scenarios, &report::SCENARIOS),
    ];
    for (flag, given, allowed) in known {
        if let Some(bad) = given.iter().find(|g| !allowed.contains(&g.as_str())) {
            return Err(BenchError::UnknownName {
                flag,
                given: bad.clone(),
                allowed: allowed.to_vec(),
            });
        }
    }
    Ok(())
}

/// Runs the suite. Errors only for what stops it as a whole (no such image); a subject or
/// scenario that fails is recorded in the report.
pub fn run(root: &StateRoot, opts: &BenchOptions) -> Result<Report, BenchError> {
    check_names(opts)?;
    let began = Instant::now();
    let started = crate::timefmt::rfc3339(std::time::SystemTime::now());
    let image = crate::image::ImageStore::new(root)
        .resolve(&opts.image)
        .map_err(|source| BenchError::NoImage {
            name: opts.image.clone(),
            source,
        })?;
    let work = root
        .dir()
        .join("bench")
        .join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(BenchError::file(&work))?;
    let staged = stage_probe(root);
    let probe_dir = staged.as_ref().map(|(d, _)| d);
    let escape = match &staged {
        Ok((_, escape)) => escape.as_ref(),
        Err(e) => Err(e),
    };
    let probe = probe_dir.ok().map(|d| d.join("capsa-probe"));
    let owned = make_subjects(
        root,
        opts,
        &opts.image,
        &image.layer_dirs,
        &work,
        probe_dir.ok().cloned(),
    );
    let subjects: Vec<&dyn Subject> = owned.iter().map(|b| b.as_ref()).collect();
    // The cold-booting VM is the template VM's guest started another way: it is measured
    // for start and memory, and the probes run in the template VM alone.
    let probed: Vec<&dyn Subject> = subjects
        .iter()
        .copied()
        .filter(|s| !s.info().is_cold_twin())
        .collect();
    let wanted = |s: &str| opts.scenarios.is_empty() || opts.scenarios.iter().any(|w| w == s);
    let plan = Plan {
        quick: opts.quick,
        runs: opts.runs,
    };
    let n = subjects.len() as u64;
    let p = probed.len() as u64;
    let total = if wanted("start") {
        scenario::start::units(&subjects, &plan)
    } else {
        0
    } + if wanted("memory") { n } else { 0 }
        + if wanted("density") { n } else { 0 }
        + if wanted("overhead") { p + 1 } else { 0 }
        + if wanted("isolation") { p } else { 0 };
    let progress = Progress::new(total);
    let ctx = Context {
        plan: &plan,
        progress: &progress,
    };
    let mut not_run = BTreeMap::new();
    for s in report::SCENARIOS {
        if !wanted(s) {
            not_run.insert(s.to_string(), "not asked (--scenario)".to_string());
        }
    }
    let mut report = Report {
        schema: report::SCHEMA,
        command: opts.command.clone(),
        started,
        duration_s: 0.0,
        machine: machine(root),
        image: opts.image.clone(),
        quick: opts.quick,
        subjects: subjects.iter().map(|s| s.info().clone()).collect(),
        not_run,
        start: BTreeMap::new(),
        memory: BTreeMap::new(),
        density: BTreeMap::new(),
        overhead: BTreeMap::new(),
        overhead_baseline: None,
        isolation: BTreeMap::new(),
        isolation_baseline: None,
    };
    if wanted("start") {
        report.start = scenario::start::run(&subjects, &ctx);
    }
    if wanted("memory") {
        report.memory = scenario::memory::run(&subjects, &ctx);
    }
    if wanted("density") {
        report.density = scenario::density::run(&subjects, &ctx);
    }
    if wanted("overhead") {
        match &probe {
            Some(p) => {
                report.overhead_baseline = Some(scenario::overhead::baseline(p, &ctx));
                report.overhead = scenario::overhead::run(&probed, &ctx);
            }
            None => {
                let error = probe_dir.err().map(ToString::to_string).unwrap_or_default();
                report.overhead_baseline = Some(Outcome::Failed {
                    error: error.clone(),
                });
                for s in &probed {
                    report.overhead.insert(
                        s.info().name.clone(),
                        Outcome::Failed {
                            error: error.clone(),
                        },
                    );
                }
            }
        }
    }
    if wanted("isolation") {
        isolation(
            root,
            opts,
            &probed,
            &image.layer_dirs,
            &work,
            probe_dir,
            escape,
            &ctx,
            &mut report,
        );
    }
    for s in subjects.iter().filter(|s| s.info().is_cold_twin()) {
        let reason = "the same guest as capsa-vm, booted cold: measured for start and memory only";
        let name = &s.info().name;
        if wanted("overhead") {
            let skipped = Outcome::Skipped {
                reason: reason.into(),
            };
            report.overhead.insert(name.clone(), skipped);
        }
        if wanted("isolation") {
            let skipped = Outcome::Skipped {
                reason: reason.into(),
            };
            report.isolation.insert(name.clone(), skipped);
        }
    }
    progress.finish();
    drop(owned);
    let _ = std::fs::remove_dir_all(&work);
    if opts.cgroup_parent.is_none() {
        remove_default_cgroup_parent();
    }
    report.duration_s = began.elapsed().as_secs_f64();
    Ok(report)
}

/// Builds the subjects asked for, each running `image_name` (its layers `layer_dirs` for the
/// peers).
fn make_subjects(
    root: &StateRoot,
    opts: &BenchOptions,
    image_name: &str,
    layer_dirs: &[PathBuf],
    work: &Path,
    probe_dir: Option<PathBuf>,
) -> Vec<Box<dyn Subject>> {
    let mut owned: Vec<Box<dyn Subject>> = Vec::new();
    for isolation in &opts.isolations {
        let dir = probe_dir.clone();
        owned.push(match isolation.as_str() {
            "container" => Box::new(CapsaSubject::container(
                root.clone(),
                image_name,
                opts.cgroup_parent.clone(),
                dir,
            )),
            "vm" | "vm-cold" => Box::new(CapsaSubject::vm(
                root.clone(),
                image_name,
                opts.vmm.clone(),
                isolation == "vm",
                opts.cgroup_parent.clone(),
                dir,
            )),
            _ => continue, // refused by check_names
        });
    }
    for peer in &opts.peers {
        owned.push(match peer.as_str() {
            "runc" | "runsc" => Box::new(OciPeer::new(
                peer,
                layer_dirs,
                work,
                opts.cgroup_parent.as_deref(),
                probe_dir.clone(),
            )),
            "qemu" => Box::new(QemuPeer::new(root, layer_dirs, work, probe_dir.clone())),
            _ => continue, // refused by check_names
        });
    }
    owned
}

/// The isolation matrix: the host baseline, the hostile image and its subjects, then the
/// scenario.
#[allow(clippy::too_many_arguments)]
fn isolation(
    root: &StateRoot,
    opts: &BenchOptions,
    subjects: &[&dyn Subject],
    layer_dirs: &[PathBuf],
    work: &Path,
    probe_dir: Result<&PathBuf, &BenchError>,
    escape: Result<&PathBuf, &BenchError>,
    ctx: &Context,
    report: &mut Report,
) {
    use scenario::isolation::{hostile::HostileImage, HostileSubjects, Setup};
    let escape = match escape {
        Ok(e) => e,
        Err(error) => {
            let error = error.to_string();
            report.isolation_baseline = Some(Outcome::Failed {
                error: error.clone(),
            });
            for s in subjects {
                report.isolation.insert(
                    s.info().name.clone(),
                    Outcome::Failed {
                        error: error.clone(),
                    },
                );
            }
            return;
        }
    };
    ctx.progress
        .doing("isolation: the probe on the host".into());
    let setup = Setup::new(escape, work);
    report.isolation_baseline = Some(match &setup.baseline {
        Ok(f) => Outcome::Ok(f.clone()),
        Err(error) => Outcome::Failed {
            error: error.to_string(),
        },
    });
    let hostile_image = HostileImage::prepare(root, work).map_err(std::sync::Arc::new);
    let hostile_owned = match &hostile_image {
        Ok(h) => {
            // The peers get it over the image's own layers (bare QEMU's /init is a shell
            // script); capsa runs it alone, as imported.
            let mut layers = layer_dirs.to_vec();
            layers.push(h.layer.clone());
            make_subjects(
                root,
                opts,
                &h.image,
                &layers,
                &work.join("hostile-subjects"),
                probe_dir.ok().cloned(),
            )
        }
        Err(_) => Vec::new(),
    };
    let hostile = HostileSubjects {
        image: hostile_image.as_ref().map_err(std::sync::Arc::clone),
        subjects: hostile_owned.iter().map(|b| b.as_ref()).collect(),
    };
    report.isolation = scenario::isolation::run(subjects, &hostile, ctx, &setup);
}

/// The OCI peers' instances go under /capsa-bench/<id> when no parent is given; runc removes
/// the instance's cgroup but not the parent.
fn remove_default_cgroup_parent() {
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
        for d in dirs.flatten() {
            let _ = std::fs::remove_dir(d.path().join("capsa-bench"));
        }
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/capsa-bench");
}

/// Writes bench.json, bench.md and the plots into `out`; returns the paths written.
pub fn write(report: &Report, out: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(out).map_err(BenchError::file(out))?;
    let json = serde_json::to_string_pretty(report).map_err(BenchError::Report)?;
    let files = [
        ("bench.json", json),
        ("bench.md", markdown::render(report)),
        ("bench-start-cdf.svg", svg::start_cdf(report)),
        ("bench-density.svg", svg::density(report)),
        ("bench-overhead.svg", svg::overhead(report)),
        ("bench-isolation.svg", svg::isolation(report)),
    ];
    let mut written = Vec::new();
    for (name, content) in files {
        let path = out.join(name);
        std::fs::write(&path, content).map_err(BenchError::file(&path))?;
        written.push(path);
    }
    Ok(written)
}
