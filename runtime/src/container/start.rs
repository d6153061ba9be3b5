//! `start`: opens the start gate of a created container and reports how its execve went.

use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use crate::linux::process::exec_fifo::{self, ExecOutcome};
use std::time::{Duration, SystemTime};

/// How long `start` waits for the init to take the gate.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts container `id`; a stopped one is given a new init first (its writable layer is
/// kept), as `docker start` does. The state says `running` before the gate opens, so the
/// monitor's `exited` (which may follow at once) is never overwritten.
pub fn start(store: &ContainerStore, id: &str) -> Result<ExecOutcome, ContainerError> {
    let current = store.observe(id)?;
    if matches!(current.status, Status::Exited | Status::Dead) && !current.restarting {
        revive(store, &current)?;
    }
    let state = {
        let _lock = store.lock(id)?;
        let state = store.observe(id)?;
        match state.status {
            Status::Created if state.init_alive() => {}
            Status::Running => return Ok(ExecOutcome::Started),
            _ => {
                return Err(ContainerError::WrongState {
                    id: super::id::short(id).to_string(),
                    reason: format!("cannot start a container that is {}", state.status_word()),
                });
            }
        }
        let mut s = state.clone();
        s.status = Status::Running;
        s.restarting = false;
        s.started_at = Some(crate::timefmt::rfc3339(SystemTime::now()));
        s.health = s
            .healthcheck
            .as_ref()
            .and_then(|h| h.command())
            .map(|_| super::health::Health::starting());
        store.save(&s)?;
        crate::events::container(store.root(), "start", &s, &[]);
        s
    };
    let fifo = store.dir(id).exec_fifo();
    let outcome = exec_fifo::release(&fifo, || state.init_alive(), GATE_TIMEOUT)
        .map_err(|e| ContainerError::io(&fifo, e));
    let _ = std::fs::remove_file(&fifo);
    let outcome = outcome?;
    match &outcome {
        ExecOutcome::Failed(_, msg) => {
            let msg = msg.clone();
            store.update(id, |s| s.error = Some(msg))?;
        }
        ExecOutcome::Started => super::health::watch(store, &state),
    }
    Ok(outcome)
}

/// Makes a stopped container `created` again (a new init at its gate, under a new
/// monitor) without starting it, so that a client can attach first.
pub fn prepare_start(store: &ContainerStore, id: &str) -> Result<(), ContainerError> {
    let current = store.observe(id)?;
    if matches!(current.status, Status::Exited | Status::Dead) && !current.restarting {
        revive(store, &current)?;
    }
    Ok(())
}

/// Gives a stopped container a new init, waiting at its start gate under a new monitor.
fn revive(store: &ContainerStore, state: &super::State) -> Result<(), ContainerError> {
    let prepared = super::restart::prepare_again(store, state)?;
    store.update(&state.id, super::State::forget_last_run)?;
    super::monitor::create_detached(store, prepared).map(|_| ())
}
