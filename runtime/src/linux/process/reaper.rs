//! `--init`: the container's init stays as PID 1 (instead of exec'ing the workload), reaps
//! every orphan the workload leaves, forwards the signals it receives to the workload, and
//! exits with the workload's status. Before it waits it gives up every capability but
//! CAP_KILL (to signal a workload that changed user), sets no_new_privs and installs the
//! container's seccomp filter, so it is no stronger than the workload it serves.

use crate::linux::sys;
use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Confines this process: only CAP_KILL left, no_new_privs, the container's filters.
fn confine(seccomp: &[seccompiler::BpfProgram]) -> Result<(), String> {
    let keep: CapsHashSet = [Capability::CAP_KILL].into_iter().collect();
    for cap in caps::runtime::thread_all_supported() {
        if cap != Capability::CAP_KILL {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| e.to_string())?;
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| e.to_string())?;
    sys::set_no_new_privs().map_err(|e| e.to_string())?;
    for program in seccomp {
        sys::install_seccomp_filter(program).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs as PID 1 until `workload` exits; returns the exit code to leave with.
pub fn run(workload: i32, seccomp: &[seccompiler::BpfProgram]) -> i32 {
    sys::reset_signals();
    let mut signals = super::sigforward::USER_SIGNALS.to_vec();
    signals.push(libc::SIGWINCH);
    super::sigforward::forward_to(workload, &signals);
    if confine(seccomp).is_err() {
        // Better a workload without a reaper than a reaper with privileges.
        let _ = nix::sys::signal::kill(Pid::from_raw(workload), nix::sys::signal::Signal::SIGKILL);
        return 126;
    }
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == workload => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == workload => {
                return 128 + sig as i32
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255, // no child left: cannot happen while the workload lives
        }
    }
}
