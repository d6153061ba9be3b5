//! `rm`: removes a container and everything it held: its init (with `-f`), cgroup, name
//! and folder. Mounts need no cleaning: they only ever existed in the container's own
//! mount namespace, which ended with its last process.

use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use crate::linux::{cgroups, sys};

/// How long `rm -f` waits for a killed init to be gone (ms).
const KILL_WAIT_MS: i32 = 10_000;

/// Removes container `id`; a live one only with `force`.
pub fn remove(store: &ContainerStore, id: &str, force: bool) -> Result<(), ContainerError> {
    let _lock = store.lock(id)?;
    let state = store.load(id)?.observed();
    let alive = state.init_alive();
    if alive && !force {
        let what = if state.status == Status::Running {
            "running"
        } else {
            "created"
        };
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: format!("You cannot remove a {what} container. Stop the container before attempting removal or force remove"),
        });
    }
    if alive {
        if state.paused {
            let _ = cgroups::manager(&state.cgroup).set_frozen(false);
        }
        kill_init(&state)?;
    }
    tracing::debug!(id, "killed");
    cgroups::manager(&state.cgroup)
        .destroy()
        .map_err(|e| ContainerError::Setup {
            id: id.to_string(),
            reason: e.to_string(),
        })?;
    tracing::debug!(id, "cgroup removed");
    store.release_name(&state.name, id);
    let dir = store.dir(id).dir;
    std::fs::remove_dir_all(&dir).map_err(|e| ContainerError::io(&dir, e))
}

/// SIGKILLs the init through a pidfd (no recycled-PID risk once open) and waits until gone.
fn kill_init(state: &super::State) -> Result<(), ContainerError> {
    let Some(pid) = state.pid else { return Ok(()) };
    let Ok(pidfd) = sys::pidfd_open(pid) else {
        return Ok(());
    }; // already gone
       // The PID could have been recycled between the liveness check and pidfd_open.
    if !state.init_alive() {
        return Ok(());
    }
    let err = |e: std::io::Error| ContainerError::Setup {
        id: state.id.clone(),
        reason: format!("kill init {pid}: {e}"),
    };
    match sys::pidfd_send_signal(&pidfd, libc::SIGKILL) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(err(e)),
    }
    if !sys::pidfd_wait_exit(&pidfd, KILL_WAIT_MS).map_err(err)? {
        return Err(err(std::io::Error::other("still alive after SIGKILL")));
    }
    Ok(())
}
