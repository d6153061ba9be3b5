//! Overhead: capsa-probe, the same static binary everywhere, measures syscall cost, a CPU
//! loop, memory bandwidth and file I/O inside a fresh instance of each subject, and serves
//! the TCP figures through a port published on 127.0.0.1. The probe run on the host without
//! isolation is the baseline the others are read against.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{per_subject, start::tail, Context};
use crate::bench::error::BenchError;
use crate::bench::report::{Outcome, OverheadResult};
use crate::bench::stats::summarize;
use crate::bench::subjects::{Subject, Workload};
use crate::bench::timing::timed_run;

/// How long a TCP probe server may take to answer after its instance started (a VM under TCG
/// boots in seconds).
const SERVER_READY: Duration = Duration::from_secs(120);

pub fn run(subjects: &[&dyn Subject], ctx: &Context) -> BTreeMap<String, Outcome<OverheadResult>> {
    per_subject(subjects, ctx, "overhead", |s| {
        let outcome = measure(s, ctx);
        ctx.progress.advance(1);
        outcome
    })
}

fn measure(s: &dyn Subject, ctx: &Context) -> Outcome<OverheadResult> {
    let shot = match s.one_shot(&Workload::Probe {
        quick: ctx.plan.quick,
    }) {
        Ok(shot) => shot,
        Err(error) => {
            return Outcome::Failed {
                error: error.to_string(),
            }
        }
    };
    let run = timed_run(shot.command, "{");
    if let Some(cleanup) = shot.cleanup {
        cleanup();
    }
    let mut result = match run.and_then(figures) {
        Ok(res) => res,
        Err(error) => {
            return Outcome::Failed {
                error: error.to_string(),
            }
        }
    };
    for (key, why) in s.unmeasurable() {
        match key {
            "file_write_fsync_mib_s" => result.file_write_fsync_mib_s = None,
            "file_read_cached_mib_s" => result.file_read_cached_mib_s = None,
            _ => {}
        }
        result.not_measured.insert(key.into(), why);
    }
    ctx.progress.doing(format!(
        "overhead: {} TCP through a published port",
        s.info().name
    ));
    match s.can_publish() {
        Err(why) => {
            for key in ["tcp_rtt_us", "tcp_mib_s"] {
                result.not_measured.insert(key.into(), why.to_string());
            }
        }
        Ok(()) => {
            if let Err(e) = tcp(s, ctx, &mut result) {
                for key in ["tcp_rtt_us", "tcp_mib_s"] {
                    result
                        .not_measured
                        .insert(key.into(), format!("failed: {e}"));
                }
            }
        }
    }
    Outcome::Ok(result)
}

/// The figures of a finished probe run, or why there are none.
fn figures(run: crate::bench::timing::TimedRun) -> Result<OverheadResult, BenchError> {
    if run.exit != 0 {
        return Err(BenchError::ProbeExited {
            exit: run.exit,
            stderr: tail(&run.stderr),
        });
    }
    parse(&run.stdout)
}

/// The probe's JSON line among the instance's output (an engine may print around it).
fn parse(stdout: &str) -> Result<OverheadResult, BenchError> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('{') && l.contains("getpid_ns"))
        .ok_or_else(|| BenchError::NoFigures(tail(stdout)))?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|source| BenchError::Figures {
            line: line.to_string(),
            source,
        })?;
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let mut r = OverheadResult {
        getpid_ns: num("getpid_ns"),
        cpu_mips: num("cpu_mips"),
        memory_copy_gib_s: num("memory_copy_gib_s"),
        file_write_fsync_mib_s: num("file_write_fsync_mib_s"),
        file_read_cached_mib_s: num("file_read_cached_mib_s"),
        ..Default::default()
    };
    if let Some(e) = v.get("file_error").and_then(|e| e.as_str()) {
        for key in ["file_write_fsync_mib_s", "file_read_cached_mib_s"] {
            r.not_measured.insert(key.into(), format!("failed: {e}"));
        }
    }
    Ok(r)
}

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16, BenchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(BenchError::NoFreePort)
}

fn tcp(s: &dyn Subject, ctx: &Context, result: &mut OverheadResult) -> Result<(), BenchError> {
    let port = free_port()?;
    let instance = s.start(&Workload::ProbeServer, Some(port))?;
    let figures = drive(port, ctx);
    s.remove(instance);
    let (rtts, mib_s) = figures?;
    result.tcp_rtt_us = summarize(&rtts);
    result.tcp_mib_s = Some(mib_s);
    Ok(())
}

/// Round trips and throughput against the probe server published on `port`, once it answers.
fn drive(port: u16, ctx: &Context) -> Result<(Vec<f64>, f64), BenchError> {
    let addr = ("127.0.0.1", port);
    let began = Instant::now();
    loop {
        match capsa_probe::tcp::round_trips(addr, 1) {
            Ok(_) => break,
            Err(source) if began.elapsed() > SERVER_READY => {
                return Err(BenchError::ServerSilent {
                    port,
                    secs: SERVER_READY.as_secs(),
                    source,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let rtts = capsa_probe::tcp::round_trips(addr, ctx.plan.tcp_round_trips())
        .map_err(BenchError::RoundTrips)?;
    let mib_s =
        capsa_probe::tcp::throughput(addr, ctx.plan.tcp_mib()).map_err(BenchError::Throughput)?;
    Ok((rtts, mib_s))
}

/// The probe on the host itself: the figures without any isolation.
pub fn baseline(probe: &Path, ctx: &Context) -> Outcome<OverheadResult> {
    ctx.progress.doing("overhead: host baseline".into());
    // A fresh private directory: a predictable name in /tmp could be made first by another
    // user, and the probe (run as root) would then write where they chose.
    let scratch = match tempfile::Builder::new().prefix("capsa-bench-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Outcome::Failed {
                error: format!("scratch directory: {e}"),
            }
        }
    };
    let dir = scratch.path().join("files");
    let mut cmd = Command::new(probe);
    cmd.arg("all").arg("--dir").arg(&dir);
    if ctx.plan.quick {
        cmd.arg("--quick");
    }
    let run = timed_run(cmd, "{");
    drop(scratch);
    let mut result = match run.and_then(figures) {
        Ok(res) => res,
        Err(error) => {
            return Outcome::Failed {
                error: error.to_string(),
            }
        }
    };
    let served = free_port().and_then(|port| {
        let mut server = Command::new(probe)
            .args(["serve", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .map_err(BenchError::file(probe))?;
        let figures = drive(port, ctx);
        let _ = server.kill();
        let _ = server.wait();
        figures
    });
    match served {
        Ok((rtts, mib_s)) => {
            result.tcp_rtt_us = summarize(&rtts);
            result.tcp_mib_s = Some(mib_s);
        }
        Err(e) => {
            for key in ["tcp_rtt_us", "tcp_mib_s"] {
                result
                    .not_measured
                    .insert(key.into(), format!("failed: {e}"));
            }
        }
    }
    ctx.progress.advance(1);
    Outcome::Ok(result)
}
