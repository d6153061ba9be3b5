//! ptrace across the instance's boundary: seize a process that lives in another pid or mount
//! namespace than the probe's own (one the instance should not be able to see at all).

use super::files::pids;
use super::Env;
use crate::findings::Finding;
use crate::sys::{self, describe};

fn ns(pid: i32, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// PTRACE_SEIZE of `pid` from a forked child that exits at once: the seize does not stop the
/// target and the kernel detaches it when the child exits.
pub fn seize_from_child(pid: i32) -> Result<(), i32> {
    match sys::in_child(|| {
        // SAFETY: PTRACE_SEIZE with no options leaves the target running.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } == 0 {
            0
        } else {
            sys::errno()
        }
    }) {
        Ok(0) => Ok(()),
        Ok(e) | Err(e) => Err(e),
    }
}

pub fn ptrace_other_pidns(_: &Env) -> Finding {
    const NAME: &str = "ptrace_other_pidns";
    let me = std::process::id() as i32;
    let (own_pid, own_mnt) = (ns(me, "pid"), ns(me, "mnt"));
    let visible = pids();
    // User processes only: a kernel thread (empty command line) cannot be traced.
    let foreign: Vec<i32> = visible
        .iter()
        .copied()
        .filter(|&p| p != me)
        .filter(|&p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| !c.is_empty()))
        .filter(|&p| {
            let (pid_ns, mnt_ns) = (ns(p, "pid"), ns(p, "mnt"));
            (pid_ns.is_some() && pid_ns != own_pid) || (mnt_ns.is_some() && mnt_ns != own_mnt)
        })
        .collect();
    if foreign.is_empty() {
        return Finding::nothing(
            NAME,
            format!(
                "no process of another pid or mount namespace is visible ({} processes visible)",
                visible.len()
            ),
        )
        .fact("visible_processes", visible.len());
    }
    // A few of them: one may be privileged beyond reach while another is not.
    let mut last = libc::EPERM;
    for &target in foreign.iter().take(8) {
        match seize_from_child(target) {
            Ok(()) => {
                return Finding::reached(
                    NAME,
                    format!("seized pid {target}, a process of another namespace"),
                )
                .fact("foreign_processes", foreign.len());
            }
            Err(e) => last = e,
        }
    }
    Finding::refused(
        NAME,
        last,
        format!(
            "PTRACE_SEIZE of {} processes of another namespace: {}",
            foreign.len().min(8),
            describe(last)
        ),
    )
    .fact("foreign_processes", foreign.len())
}
