//! One timed run of a command, as a user would time it from outside: wall time to the first
//! line carrying the marker, wall time to exit, and the CPU time of the whole process tree
//! (wait4's rusage counts every descendant its parent reaped).

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::BenchError;

/// What the workload prints so that its first output is recognised among an engine's own.
pub const MARKER: &str = "capsa-bench-ready";

#[derive(Debug)]
pub struct TimedRun {
    /// Until the marker appeared on stdout (None: it never did).
    pub first_output: Option<Duration>,
    pub total: Duration,
    pub cpu: Duration,
    /// Peak RSS of the largest process of the tree, KiB.
    pub peak_rss_kib: i64,
    /// Exit code, or 128 + signal.
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end with stdin empty and stdout/stderr captured; an empty `marker` is
/// any output.
pub fn timed_run(mut cmd: Command, marker: &str) -> Result<TimedRun, BenchError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| BenchError::Spawn {
        program: cmd.get_program().to_owned(),
        source,
    })?;
    let pid = child.id() as i32;
    let mut out = child.stdout.take().ok_or(BenchError::NoPipe("stdout"))?;
    let mut err = child.stderr.take().ok_or(BenchError::NoPipe("stderr"))?;
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let mut stdout = Vec::new();
    let mut first_output = None;
    let mut buf = [0u8; 8192];
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                stdout.extend_from_slice(&buf[..n]);
                if first_output.is_none() && contains(&stdout, marker.as_bytes()) {
                    first_output = Some(start.elapsed());
                }
            }
        }
    }
    let (status, usage) = wait4(pid)?;
    let total = start.elapsed();
    let stderr = err_reader.join().unwrap_or_default();
    let status = std::process::ExitStatus::from_raw(status);
    let exit = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(TimedRun {
        first_output,
        total,
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        peak_rss_kib: usage.ru_maxrss,
        exit,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// wait4(2): the status and the resource use of the child and its reaped descendants.
pub fn wait4(pid: i32) -> Result<(i32, libc::rusage), BenchError> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers to locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        return Err(BenchError::Wait(std::io::Error::last_os_error()));
    }
    Ok((status, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_exit_and_cpu_are_seen() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo noise; echo capsa-bench-ready; exit 3"]);
        let r = timed_run(cmd, MARKER).unwrap();
        assert_eq!(r.exit, 3);
        assert!(r.first_output.unwrap() <= r.total);
        assert!(r.stdout.contains("noise"));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -9 $$"]);
        let r = timed_run(cmd, MARKER).unwrap();
        assert_eq!((r.exit, r.first_output), (137, None));
    }
}
