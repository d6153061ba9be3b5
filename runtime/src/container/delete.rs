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
    let state = store.observe(id)?;
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
    // Again here: a monitor killed before it recorded the exit never took the ports back.
    super::network::disconnect(store, &state);
    let _ = std::fs::remove_file(crate::vm::control::path(id));
    store.release_name(&state.name, id);
    // Renamed first, atomically: a monitor that still records the exit then finds no
    // folder, instead of re-creating files in one being deleted.
    let dir = store.dir(id).dir;
    let doomed = store
        .root()
        .containers_dir()
        .join(format!("{REMOVING_PREFIX}{id}"));
    std::fs::rename(&dir, &doomed).map_err(|e| ContainerError::io(&dir, e))?;
    match std::fs::remove_dir_all(&doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ContainerError::io(&doomed, e)),
    }
    sweep_interrupted(store);
    for e in state.endpoints() {
        super::network::refresh_hosts(store, &e.network);
    }
    Ok(())
}

/// Prefix of a container folder being deleted.
const REMOVING_PREFIX: &str = ".removing-";

/// Deletes what an interrupted `rm` left (folders still named `.removing-<id>`). A folder
/// whose lock is held belongs to an `rm` in progress and is left to it.
fn sweep_interrupted(store: &ContainerStore) {
    let Ok(entries) = std::fs::read_dir(store.root().containers_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(REMOVING_PREFIX) {
            continue;
        }
        if let Some(_held) = crate::fsutil::FileLock::try_existing(&e.path().join("lock")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
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
