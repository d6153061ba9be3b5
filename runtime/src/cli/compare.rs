//! `capsa compare IMAGE [CMD...]`: the same image and command once per isolation (and per VM
//! engine this host can run), side by side: time to first output, total time, peak memory of
//! the largest host process, exit status, whether the outputs match, and what ran the VM.
//! Each run is this binary's own `run --rm`, timed from outside as a user would time it.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        match why_not {
            Some(why) => skipped.push(format!("vm ({name}): not run: {why}")),
            None => columns.push((
                format!("vm ({name})"),
                vec![
                    "--isolation".into(),
                    "vm".into(),
                    "--vmm".into(),
                    name.clone(),
                ],
                String::new(),
            )),
        }
    }
    let mut samples = Vec::new();
    for (label, flags, engine_label) in columns {
        eprintln!("capsa compare: running {label} ...");
        match run_once(root, &flags, &args) {
            Ok(mut s) => {
                s.label = label;
                s.engine = if engine_label.is_empty() {
                    engine_of(&s.stderr)
                } else {
                    engine_label
                };
                samples.push(s);
            }
            Err(e) => {
                eprintln!("capsa compare: {label}: {e}");
                return super::EXIT_FAILURE;
            }
        }
    }
    print_table(&samples, &skipped);
    0
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

/// The engine line `run --isolation vm` printed ("capsa: vm isolation: qemu (tcg): ...").
fn engine_of(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("capsa: vm isolation: "))
        .and_then(|l| l.split(':').next())
        .unwrap_or("?")
        .to_string()
}

fn run_once(root: &Path, flags: &[String], args: &CompareArgs) -> Result<Sample, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .args(["run", "--rm", "--network", "none"])
        .args(flags);
    if let Some(m) = &args.memory {
        cmd.args(["-m", m]);
    }
    cmd.arg(&args.image).args(&args.command);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run capsa: {e}"))?;
    let pid = child.id() as i32;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut err = child.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut stdout = Vec::new();
    let mut first_output = None;
    let mut buf = [0u8; 8192];
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                first_output.get_or_insert_with(|| start.elapsed());
                stdout.extend_from_slice(&buf[..n]);
            }
        }
    }
    let (status, rusage) = wait4(pid)?;
    let total = start.elapsed();
    let stderr = err_reader.join().unwrap_or_default();
    let exit = match std::process::ExitStatus::from_raw(status) {
        s if s.code().is_some() => s.code().unwrap_or(-1).to_string(),
        s => format!("signal {}", s.signal().unwrap_or(0)),
    };
    Ok(Sample {
        label: String::new(),
        engine: String::new(),
        first_output,
        total,
        peak_rss_kib: rusage.ru_maxrss,
        exit,
        stdout,
        stderr,
    })
}

/// wait4(2): the status and the resource use of the child and its reaped descendants.
fn wait4(pid: i32) -> Result<(i32, libc::rusage), String> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers to locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok((status, usage))
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
        let last = s.stderr.lines().last().unwrap_or("");
        println!("{}: {last}", s.label);
    }
}
