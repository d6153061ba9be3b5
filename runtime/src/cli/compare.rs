//! `capsa compare IMAGE [CMD...]`: the same image and command once per isolation (and per VM
//! engine this host can run), side by side: time to first output, total time, peak memory of
//! the largest host process, exit status, whether the outputs match, and what ran the VM.
//! Each run is this binary's own `run --rm`, timed from outside as a user would time it.
//! With QEMU the VM starts from the VM template, as `run` does (the template is built before
//! the clock starts and the table says which start each VM had); `--cold` adds a column
//! that boots the guest kernel instead.
//!
//! `capsa compare --isolation-matrix IMAGE` instead runs the escape probe in both isolations
//! (`capsa bench --scenario isolation` without the peers) and prints the matrix.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Args;

use crate::vm::engine;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// VM engines to run: capsa, qemu (default: each one this host can run a Linux guest with)
    #[arg(long = "vmm", value_delimiter = ',')]
    vmm: Vec<String>,
    /// Guest/container memory limit, as `run -m`
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Also run the VM booting its kernel (no VM template), beside the template's start
    #[arg(long)]
    cold: bool,
    /// Run the escape probe in both isolations and print the isolation matrix instead
    #[arg(long = "isolation-matrix")]
    isolation_matrix: bool,
    /// With --isolation-matrix: also write bench.json, bench.md and the heat map here
    #[arg(long, requires = "isolation_matrix")]
    out: Option<std::path::PathBuf>,
    /// The image
    image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// One run's figures.
struct Sample {
    label: String,
    engine: String,
    first_output: Option<Duration>,
    total: Duration,
    peak_rss_kib: i64,
    exit: String,
    stdout: Vec<u8>,
    stderr: String,
}

pub fn compare(root: &Path, args: CompareArgs) -> i32 {
    // It runs containers and removes them at the end: a closed output must not stop it.
    crate::linux::sys::set_broken_pipe_kills(false);
    if args.isolation_matrix {
        return isolation_matrix(root, &args);
    }
    let mut columns: Vec<(String, Vec<String>, String)> = vec![(
        "container".into(),
        vec!["--isolation".into(), "container".into()],
        "namespaces + cgroups".into(),
    )];
    let engines = if args.vmm.is_empty() {
        default_engines()
    } else {
        args.vmm.iter().map(|e| (e.clone(), None)).collect()
    };
    let mut skipped = Vec::new();
    for (name, why_not) in engines {
        let flags = vec![
            "--isolation".into(),
            "vm".into(),
            "--vmm".into(),
            name.clone(),
        ];
        match why_not {
            Some(why) => skipped.push(format!("vm ({name}): not run: {why}")),
            None => {
                if name == "qemu" {
                    warm_template(root, &args);
                }
                columns.push((format!("vm ({name})"), flags.clone(), String::new()));
                if args.cold && name == "qemu" {
                    columns.push((format!("vm ({name}, cold)"), flags, String::new()));
                }
            }
        }
    }
    let mut samples = Vec::new();
    for (label, flags, engine_label) in columns {
        eprintln!("capsa compare: running {label} ...");
        let cold = label.ends_with(", cold)");
        match run_once(root, &flags, &args, cold) {
            Ok(mut s) => {
                s.label = label;
                s.engine = if engine_label.is_empty() {
                    let start = if s.stderr.contains(RESTORED_LINE) {
                        "from template"
                    } else {
                        "cold boot"
                    };
                    format!("{}, {start}", engine_of(&s.stderr))
                } else {
                    engine_label
                };
                samples.push(s);
            }
            Err(e) => {
                eprintln!(
                    "capsa compare: {label}: {}",
                    crate::printable::escape_controls(&e.to_string())
                );
                return super::EXIT_FAILURE;
            }
        }
    }
    print_table(&samples, &skipped);
    0
}

/// The isolation matrix of the two isolations, as `capsa bench --scenario isolation` makes it.
fn isolation_matrix(root: &Path, args: &CompareArgs) -> i32 {
    if !args.command.is_empty() {
        eprintln!("capsa compare: --isolation-matrix runs its own probe; no command is taken");
        return super::EXIT_FAILURE;
    }
    let state = match crate::root::StateRoot::open(root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "capsa compare: state directory {}: {}",
                root.display(),
                crate::printable::escape_controls(&e.to_string())
            );
            return super::EXIT_FAILURE;
        }
    };
    let opts = crate::bench::BenchOptions {
        isolations: vec!["container".into(), "vm".into()],
        peers: Vec::new(),
        image: args.image.clone(),
        runs: None,
        scenarios: vec!["isolation".into()],
        quick: false,
        vmm: args.vmm.first().cloned(),
        cgroup_parent: None,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let report = match crate::bench::run(&state, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "capsa compare: {}",
                crate::printable::escape_controls(&e.to_string())
            );
            return super::EXIT_FAILURE;
        }
    };
    print!("{}", crate::bench::markdown::isolation_summary(&report));
    if let Some(out) = &args.out {
        match crate::bench::write(&report, out) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                println!("report: {}", names.join(", "));
            }
            Err(e) => {
                eprintln!(
                    "capsa compare: writing the report: {}",
                    crate::printable::escape_controls(&e.to_string())
                );
                return super::EXIT_FAILURE;
            }
        }
    }
    0
}

/// Builds the VM template the QEMU column starts from before its clock starts (a user's
/// second `run` finds it built), and says what the VM's start will be.
fn warm_template(root: &Path, args: &CompareArgs) {
    use crate::vm::template;
    if !template::enabled() {
        eprintln!(
            "capsa compare: vm (qemu): VM templates are off ({}=off): the VM boots cold",
            template::SWITCH_ENV
        );
        return;
    }
    let mem_mib = match &args.memory {
        Some(m) => match crate::container::options::parse_memory("--memory", m) {
            Ok(bytes) => crate::vm::run::guest_mib_for(Some(bytes)),
            Err(_) => return, // `run -m` names the bad value itself
        },
        None => crate::vm::run::DEFAULT_GUEST_MIB,
    };
    let built = crate::root::StateRoot::open(root)
        .map_err(|e| e.to_string())
        .and_then(|state| {
            let (engine, _) = engine::select(Some("qemu")).map_err(|e| e.to_string())?;
            let qemu = engine.qemu().ok_or("no QEMU")?;
            let guest = crate::vm::artifacts::locate(&state).map_err(|e| e.to_string())?;
            template::ensure(&state, qemu, &guest, mem_mib, 1).map_err(|e| e.to_string())
        });
    let what = match built {
        Ok(template::Ensured::Ready(t)) => format!("starts from the VM template {}", t.key),
        Ok(template::Ensured::Built(t, _)) => {
            format!("starts from the VM template {} (built now)", t.key)
        }
        Err(e) => format!("the VM template could not be built ({e}); `run` will boot cold"),
    };
    eprintln!(
        "capsa compare: vm (qemu): {}",
        crate::printable::escape_controls(&what)
    );
}

/// Engines to try: qemu always; capsa-vmm only where a Linux guest can run under KVM.
fn default_engines() -> Vec<(String, Option<String>)> {
    let capsa = if engine::hardware_virtualization() {
        None
    } else {
        Some("this host's KVM has no vmx/svm (nested PVM); capsa-vmm cannot run a Linux guest kernel here".to_string())
    };
    vec![("capsa".into(), capsa), ("qemu".into(), None)]
}

/// What `capsa --log-level info run --isolation vm` logs when its VM was restored from the
/// VM template.
const RESTORED_LINE: &str = "vm restored from template";

/// The last line of a run's stderr that is not one of its info-level log lines.
fn last_message(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| {
            // A log line: "   3.336035607s  INFO capsa::vm::boot: ..."
            let level = l.split_whitespace().nth(1).unwrap_or("");
            !matches!(level, "INFO" | "DEBUG" | "TRACE")
        })
        .unwrap_or("")
}

/// The engine line `run --isolation vm` printed ("capsa: vm isolation: qemu (tcg): ...").
fn engine_of(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("capsa: vm isolation: "))
        .and_then(|l| l.split(':').next())
        .unwrap_or("?")
        .to_string()
}

/// One `run --rm`; `cold`: with VM templates off. VMs log at info level, so the table can
/// say whether each one was restored from the template.
fn run_once(
    root: &Path,
    flags: &[String],
    args: &CompareArgs,
    cold: bool,
) -> Result<Sample, crate::bench::BenchError> {
    let exe = std::env::current_exe().map_err(crate::bench::BenchError::CurrentExe)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(root);
    let vm = flags.iter().any(|f| f == "vm");
    if vm {
        cmd.args(["--log-level", "info"]);
    }
    if cold {
        cmd.env(crate::vm::template::SWITCH_ENV, "off");
    }
    cmd.args(["run", "--rm", "--network", "none"]).args(flags);
    if let Some(m) = &args.memory {
        cmd.args(["-m", m]);
    }
    cmd.arg(&args.image).args(&args.command);
    let r = crate::bench::timing::timed_run(cmd, "")?;
    // As a shell reports it: a death by signal N is 128 + N.
    let exit = r.exit.to_string();
    Ok(Sample {
        label: String::new(),
        engine: String::new(),
        first_output: r.first_output,
        total: r.total,
        peak_rss_kib: r.peak_rss_kib,
        exit,
        stdout: r.stdout.into_bytes(),
        stderr: r.stderr,
    })
}

fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn print_table(samples: &[Sample], skipped: &[String]) {
    let reference = samples
        .first()
        .map(|s| s.stdout.clone())
        .unwrap_or_default();
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "time to first output",
            samples
                .iter()
                .map(|s| {
                    s.first_output
                        .map(human)
                        .unwrap_or_else(|| "(no output)".into())
                })
                .collect(),
        ),
        (
            "total time",
            samples.iter().map(|s| human(s.total)).collect(),
        ),
        (
            "peak RSS (largest process)",
            samples
                .iter()
                .map(|s| format!("{:.1} MiB", s.peak_rss_kib as f64 / 1024.0))
                .collect(),
        ),
        (
            "exit status",
            samples.iter().map(|s| s.exit.clone()).collect(),
        ),
        (
            "output",
            samples
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if i == 0 {
                        "reference".into()
                    } else if s.stdout == reference {
                        "matches".into()
                    } else {
                        "DIFFERS".into()
                    }
                })
                .collect(),
        ),
        (
            "engine / accelerator",
            samples.iter().map(|s| s.engine.clone()).collect(),
        ),
    ];
    let first_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(10);
    let widths: Vec<usize> = (0..samples.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1[i].len())
                .chain([samples[i].label.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut header = format!("{:first_width$}", "");
    for (s, w) in samples.iter().zip(&widths) {
        header.push_str(&format!("  {:w$}", s.label));
    }
    println!("{}", header.trim_end());
    for (name, cells) in rows {
        let mut line = format!("{name:first_width$}");
        for (c, w) in cells.iter().zip(&widths) {
            line.push_str(&format!("  {c:w$}"));
        }
        println!("{}", line.trim_end());
    }
    for s in skipped {
        println!("{s}");
    }
    for s in samples.iter().filter(|s| s.exit != "0") {
        println!("{}: {}", s.label, last_message(&s.stderr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_shown_is_the_last_line_that_is_not_a_log_line() {
        let stderr = "capsa: no such file: /x\n   0.811709324s  INFO capsa::vm::boot: vm agent ready ms=238\n   2.25s DEBUG capsa::container::delete: killed id=1";
        assert_eq!(last_message(stderr), "capsa: no such file: /x");
        assert_eq!(last_message(""), "");
    }
}
