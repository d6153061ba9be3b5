//! The detached VM's monitor: forked under its own cgroup beside the engine's, it boots the
//! VM, reports the start to the waiting CLI, logs output until the workload exits, records
//! the exit, and boots it again while the restart policy says so.

use std::io::Write;

use super::{relay::*, run::*};
use crate::container::state::State;
use crate::container::store::ContainerStore;
use crate::container::ContainerError;
use crate::linux::cgroups;

/// Forks the VM's monitor and waits until it reports the workload started (or why not).
pub(super) fn spawn_monitor(store: &ContainerStore, p: Prepared) -> Result<(), ContainerError> {
    let dir = store.dir(&p.state.id).dir;
    let answer = crate::container::monitor::fork_monitor(&dir, |report| {
        // Its own cgroup beside the engine's, with the VM's CPU quota (its log relay is work
        // the guest's output makes).
        let mut report = std::fs::File::from(report);
        let cgroup = match monitor_cgroup(&p) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(report, "the monitor's cgroup: {e}");
                std::process::exit(125);
            }
        };
        let code = monitor(store, p, report);
        if let Some(c) = cgroup {
            c.leave();
        }
        std::process::exit(code);
    })?;
    match answer.as_str() {
        "ok" => Ok(()),
        "" => Err(ContainerError::Vm(
            "the VM's monitor died while starting it".into(),
        )),
        reason => Err(ContainerError::Vm(reason.to_string())),
    }
}

/// Moves the VM's monitor into its cgroup beside the engine's, limited to the container's
/// CPU quota.
pub(super) fn monitor_cgroup(
    p: &Prepared,
) -> Result<Option<crate::linux::cgroups::sibling::Sibling>, cgroups::CgroupError> {
    use crate::container::monitor::{enter_monitor_cgroup, monitor_resources};
    let Some(cgroup) = enter_monitor_cgroup(&p.state.cgroup)? else {
        return Ok(None);
    };
    if let Err(e) = cgroup.limit(&monitor_resources(&p.launch.create.spec)) {
        cgroup.leave();
        return Err(e);
    }
    Ok(Some(cgroup))
}

/// The detached VM's monitor: boots, reports "ok" (or the error) to the waiting CLI, relays
/// output to the log until the workload exits, records the exit, and boots the VM again
/// while its `--restart` policy says so (with Docker's back-off).
pub(super) fn monitor(store: &ContainerStore, p: Prepared, mut report: std::fs::File) -> i32 {
    let id = p.state.id.clone();
    let (rotation, auto_remove) = (p.state.log_rotation, p.state.auto_remove);
    let log = crate::container::logfile::Writer::for_driver(
        p.state.log_driver,
        &store.dir(&id).log(),
        rotation,
    );
    let mut sink = match log {
        Ok(w) => Sink::Log(w),
        Err(e) => {
            let _ = writeln!(
                report,
                "container log {}: {e}",
                store.dir(&id).log().display()
            );
            return 125;
        }
    };
    let mut report = Some(report);
    // Before the VM's threads: the prober is forked from a single-threaded process.
    crate::container::health::watch_vm(store, &p.state);
    let mut first = Some(p.state);
    let last = crate::container::restart::supervise(store, &id, |again| {
        let state = match again {
            Some(_) => forget_last_run(store, &id)?,
            None => first.take().ok_or(())?,
        };
        let result = boot_and_run(
            store,
            state,
            p.launch.clone(),
            p.engine.as_ref(),
            &p.guest,
            &mut sink,
            |r| {
                if let Some(mut w) = report.take() {
                    // The waiting CLI names it a VM isolation error itself.
                    let _ = match r {
                        Ok(()) => writeln!(w, "ok"),
                        Err(ContainerError::Vm(reason)) => writeln!(w, "{reason}"),
                        Err(e) => writeln!(w, "{e}"),
                    };
                }
            },
        );
        if let Sink::Log(w) = &mut sink {
            w.flush(0);
            w.flush(1);
        }
        Ok::<_, ()>(Some(
            finish(store, &id, &result, auto_remove).unwrap_or(125),
        ))
    });
    last.ok().flatten().unwrap_or(125)
}

/// Clears what the last run recorded (its exit, error, OOM kill) before the VM boots again:
/// it boots for seconds, and meanwhile shows as restarting, not as its last exit.
fn forget_last_run(store: &ContainerStore, id: &str) -> Result<State, ()> {
    let updated = store.update(id, |s| {
        s.exit_code = None;
        s.finished_at = None;
        s.error = None;
        s.oom_killed = false;
    });
    // Gone meanwhile: the monitor's work is over.
    updated.ok().flatten().ok_or(())
}
