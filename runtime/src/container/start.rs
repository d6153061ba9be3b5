//! `start`: opens the start gate of a created container and reports how its execve went.

use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use crate::linux::process::exec_fifo::{self, ExecOutcome};
use std::time::{Duration, SystemTime};

/// How long `start` waits for the init to take the gate.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts container `id`. The state says `running` before the gate opens, so the monitor's
/// `exited` (which may follow at once) is never overwritten.
pub fn start(store: &ContainerStore, id: &str) -> Result<ExecOutcome, ContainerError> {
    let state = {
        let _lock = store.lock(id)?;
        let state = store.load(id)?.observed();
        match state.status {
            Status::Created if state.init_alive() => {}
            Status::Running => return Ok(ExecOutcome::Started),
            Status::Exited | Status::Dead | Status::Creating | Status::Created => {
                return Err(ContainerError::WrongState {
                    id: super::id::short(id).to_string(),
                    reason: format!(
                        "cannot start a container that is {}; restarting stopped containers is not supported yet (rm it and run again)",
                        state.status.as_str()
                    ),
                });
            }
        }
        let mut s = state.clone();
        s.status = Status::Running;
        s.started_at = Some(crate::timefmt::rfc3339(SystemTime::now()));
        store.save(&s)?;
        s
    };
    let fifo = store.dir(id).exec_fifo();
    let outcome = exec_fifo::release(&fifo, || state.init_alive(), GATE_TIMEOUT)
        .map_err(|e| ContainerError::io(&fifo, e));
    let _ = std::fs::remove_file(&fifo);
    let outcome = outcome?;
    if let ExecOutcome::Failed(_, msg) = &outcome {
        let msg = msg.clone();
        store.update(id, |s| s.error = Some(msg))?;
    }
    Ok(outcome)
}
