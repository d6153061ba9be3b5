//! The exec ptrace window (runc CVE-2016-9962 class): a process entering the instance
//! (`capsa exec`, `runc exec`) is born in the instance's pid namespace and only later drops
//! capabilities, installs seccomp and execs. Container root that seizes it in between runs
//! code unfiltered, or reads the host binary and environment through /proc. The watcher
//! spins on PTRACE_SEIZE of the next pid the namespace will hand out, as an attacker would,
//! and looks at each process it catches while it holds it stopped for a moment.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::findings::Finding;
use crate::sys;

pub const NAME: &str = "exec_ptrace_window";

/// What the watcher waits for.
#[derive(Debug, Clone)]
pub struct Watch {
    /// New processes to look at before reporting.
    pub processes: usize,
    pub timeout: Duration,
    /// The path the exec'd command has inside the instance; a process seized with another
    /// executable is still the runtime's.
    pub expected_exe: String,
}

/// What happened to each process.
#[derive(Debug, Default)]
struct Tally {
    seen: usize,
    /// Seized before its seccomp filter (its Seccomp field below the watcher's own).
    before_seccomp: usize,
    /// Seized while its executable was not the exec'd command (the runtime's binary).
    runtime_binary: usize,
    /// Seized only after its execve: an ordinary process of the instance.
    after_exec: usize,
    /// Refused while it had no more capabilities than the watcher and the same uid: what
    /// is left to refuse is the process being non-dumpable.
    refused_nondumpable: usize,
    /// Refused while it still held capabilities the watcher lacks.
    refused_capabilities: usize,
    /// Gone before it could be seized.
    missed: usize,
    exes: BTreeSet<String>,
    env_names: BTreeSet<String>,
}

fn ns_last_pid() -> Option<i32> {
    sys::read_line("/proc/sys/kernel/ns_last_pid")?.parse().ok()
}

/// The highest pid in the namespace now: ns_last_pid where the kernel has it (it needs
/// CONFIG_CHECKPOINT_RESTORE), else the highest in /proc.
fn last_pid() -> Option<i32> {
    ns_last_pid().or_else(|| crate::probes::pids().into_iter().max())
}

fn status_field(pid: i32, name: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn hex(v: Option<String>) -> Option<u64> {
    u64::from_str_radix(&v?, 16).ok()
}

/// Whether `pid` exists and has not exited (a zombie's seize fails with EPERM).
fn alive(pid: i32) -> bool {
    status_field(pid, "State").is_some_and(|s| !s.starts_with('Z') && !s.starts_with('X'))
}

/// Whether `pid` has no capability the watcher lacks and the watcher's uid: then only its
/// dumpable flag can refuse a seize.
fn only_dumpable_refuses(pid: i32, me: &Context) -> bool {
    let (Some(theirs), Some(mine)) = (
        hex(status_field(pid, "CapPrm")),
        u64::from_str_radix(&me.cap_eff, 16).ok(),
    ) else {
        return false;
    };
    let uid =
        status_field(pid, "Uid").and_then(|u| u.split_whitespace().nth(1)?.parse::<u32>().ok());
    theirs & !mine == 0 && uid == Some(me.uid) && alive(pid)
}

pub fn watch(w: &Watch) -> Finding {
    let me = Context::gather();
    let deadline = Instant::now() + w.timeout;
    let mut t = Tally::default();
    let Some(mut last) = last_pid() else {
        return Finding::absent(NAME, None, "no /proc to follow new pids");
    };
    while t.seen < w.processes && Instant::now() < deadline {
        let target = last + 1;
        follow(target, w, &me, deadline, &mut t);
        last = last_pid().unwrap_or(target).max(target);
    }
    report(w, &me, &t)
}

/// Spins on one pid until it is seized, gone, or the deadline passes.
fn follow(target: i32, w: &Watch, me: &Context, deadline: Instant, t: &mut Tally) {
    // How the kernel refused this process so far: (for capabilities, as non-dumpable).
    let mut refused = (false, false);
    let mut spins: u64 = 0;
    let tally = |t: &mut Tally, refused: (bool, bool)| {
        t.seen += 1;
        t.refused_capabilities += usize::from(refused.0);
        t.refused_nondumpable += usize::from(refused.1);
    };
    loop {
        // Now and then, look at the target's credentials before the attempt: capabilities
        // only ever shrink on the way to exec, so if it already had no more than the watcher
        // and its uid, a refusal right after cannot be for capabilities.
        let sampled = (spins % 64 == 0).then(|| only_dumpable_refuses(target, me));
        // SAFETY: PTRACE_SEIZE with no options; the target is inspected and detached below.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, target, 0, 0) } == 0 {
            tally(t, refused);
            inspect(target, w, me, t);
            return;
        }
        match (sys::errno(), sampled) {
            // An exiting process refuses every seize too: only a live one counts.
            (libc::EPERM, Some(true)) if alive(target) => refused.1 = true,
            (libc::EPERM, Some(true)) => {}
            (libc::EPERM, Some(false)) => refused.0 = true,
            (libc::EPERM, None) => {}
            // Not there, and a later pid was handed out: it came and went. Without
            // ns_last_pid that is a /proc scan, so only now and then.
            _ if (ns_last_pid().is_some() || spins % 256 == 0) && gone(target) => {
                tally(t, refused);
                t.missed += 1;
                return;
            }
            _ => {}
        }
        spins += 1;
        if spins % 1024 == 0 && Instant::now() >= deadline {
            return;
        }
    }
}

/// Whether `target` is not there while a later pid was handed out.
fn gone(target: i32) -> bool {
    last_pid().is_some_and(|l| l >= target)
        && !std::path::Path::new(&format!("/proc/{target}")).exists()
}

/// Stops the seized process for a moment, records what it was, lets it go.
fn inspect(pid: i32, w: &Watch, me: &Context, t: &mut Tally) {
    // SAFETY: the target is seized by this thread; PTRACE_INTERRUPT stops it, waitpid with
    // __WALL collects that stop (or its exit), PTRACE_DETACH resumes it unchanged.
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0);
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
    }
    let seccomp: u32 = status_field(pid, "Seccomp")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let before_seccomp = seccomp < me.seccomp;
    let runtime_binary = !exe.is_empty() && exe != w.expected_exe;
    if before_seccomp {
        t.before_seccomp += 1;
    }
    if runtime_binary {
        t.runtime_binary += 1;
        t.exes.insert(exe);
    }
    if before_seccomp || runtime_binary {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            for var in env.split(|b| *b == 0).filter(|v| !v.is_empty()) {
                let name = var.split(|b| *b == b'=').next().unwrap_or_default();
                t.env_names
                    .insert(String::from_utf8_lossy(name).into_owned());
            }
        }
    } else {
        t.after_exec += 1;
    }
    // SAFETY: detaches the process seized above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
}

fn report(w: &Watch, me: &Context, t: &Tally) -> Finding {
    let counts = format!(
        "{} new processes: {} seized before their seccomp filter, {} seized still running the runtime's binary, {} seized only after exec, {} refused as non-dumpable, {} refused for capabilities, {} gone first",
        t.seen, t.before_seccomp, t.runtime_binary, t.after_exec, t.refused_nondumpable, t.refused_capabilities, t.missed
    );
    let f = if t.before_seccomp + t.runtime_binary > 0 {
        Finding::reached(NAME, counts)
    } else if t.seen == 0 {
        Finding::absent(
            NAME,
            None,
            format!("no process entered within {} s", w.timeout.as_secs()),
        )
    } else if t.refused_nondumpable > 0 {
        Finding::refused(NAME, libc::EPERM, counts)
    } else {
        Finding::nothing(NAME, counts)
    };
    f.fact("processes", t.seen)
        .fact("before_seccomp", t.before_seccomp)
        .fact("runtime_binary", t.runtime_binary)
        .fact("after_exec", t.after_exec)
        .fact("refused_nondumpable", t.refused_nondumpable)
        .fact("refused_capabilities", t.refused_capabilities)
        .fact("missed", t.missed)
        .fact("watcher_seccomp", me.seccomp)
        .fact(
            "runtime_exes",
            t.exes.iter().cloned().collect::<Vec<_>>().join(","),
        )
        .fact(
            "environment_names",
            t.env_names.iter().cloned().collect::<Vec<_>>().join(","),
        )
}
