//! `rm`: removes a container and everything it held: its init (with `-f`), cgroup, name,
//! user-namespace range and folder (what an isolation keeps elsewhere goes by its
//! [`super::sandbox::Sandbox::cleanup`]); with `-f` also one whose record cannot be read. Mounts
//! need no cleaning: they only ever existed in the container's own mount namespace, which
//! ended with its last process.

use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use crate::linux::{cgroups, sys};

/// How long `rm -f` waits for a killed init to be gone (ms).
const KILL_WAIT_MS: i32 = 10_000;

/// Removes container `id`; a live one only with `force`. With `force`, a container whose
/// record cannot be read is removed too, from what is left of it ([`remove_remnant`]).
pub fn remove(store: &ContainerStore, id: &str, force: bool) -> Result<(), ContainerError> {
    let _lock = store.lock(id)?;
    let state = match store.observe(id) {
        Ok(s) => s,
        Err(e) => {
            return match store.unreadable_record(id) {
                Some(_) if force => remove_remnant(store, id),
                Some(cause) => Err(ContainerError::WrongState {
                    id: id.to_string(),
                    reason: format!(
                        "its record (state.json) is unreadable ({cause}); `rm -f` removes what is left of it"
                    ),
                }),
                None => Err(e),
            };
        }
    };
    let alive = state.init_alive();
    // Between two runs its monitor is about to start it again (or, just after an exit,
    // about to say so).
    let will_restart = super::state::is_same_process(state.monitor_pid, state.monitor_start_time)
        && state.restart_policy.should_restart(
            state.exit_code.unwrap_or(0),
            state.restart_count,
            state.stopped_by_user,
        );
    // Or its next run is being created: its init is alive, waiting at the start gate.
    let restart_created = state.restarting && state.status == Status::Created;
    if (((state.restarting || will_restart) && !alive) || restart_created) && !force {
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: "container is restarting: stop the container before removing or force remove"
                .into(),
        });
    }
    // A created container's init only waits at the start gate: Docker removes it without
    // `-f`, and so does capsa (its init is killed below as for `-f`).
    if alive && !force && state.status == Status::Running {
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: "You cannot remove a running container. Stop the container before attempting removal or force remove".into(),
        });
    }
    if alive {
        // Thawed first, paused or not: a v1-frozen process does not die of SIGKILL, and a
        // copy into the container that was killed mid-way (`cp`, a build's COPY) leaves it
        // frozen without marking it paused.
        let _ = cgroups::manager(&state.cgroup).set_frozen(false);
        kill_init(id, state.pid, state.pid_start_time)?;
    }
    tracing::debug!(id, "killed");
    destroy_cgroup(id, &state.cgroup)?;
    tracing::debug!(id, "cgroup removed");
    // Again here: a monitor killed before it recorded the exit never took the ports back.
    super::network::disconnect(store, &state);
    store.release_name(&state.name, id);
    if state.userns_base.is_some() {
        super::create::release_userns(store, id, state.userns_base);
    }
    remove_folder(store, id)?;
    crate::events::container(store.root(), "destroy", &state, &[]);
    for e in state.endpoints() {
        super::network::refresh_hosts(store, &e.network);
    }
    if state.auto_remove {
        // `--rm` takes the container's anonymous volumes with it, as Docker's does.
        super::volumes::remove_anonymous(store, &state.volumes)?;
    }
    Ok(())
}

/// `rm -f` of a container whose state.json does not parse (a power loss tore it): removes
/// what is left and nothing else: its init and cgroup where the record still names them
/// (checked to be this container's, below the cgroup mount), its names, its
/// user-namespace range, its folder.
fn remove_remnant(store: &ContainerStore, id: &str) -> Result<(), ContainerError> {
    let remnant = store.remnant(id);
    tracing::debug!(
        id,
        ?remnant,
        "removing a container whose record is unreadable"
    );
    kill_init(id, remnant.pid, remnant.pid_start_time)?;
    if let Some(cgroup) = &remnant.cgroup {
        let own = cgroup
            .dirs
            .values()
            .all(|d| d.file_name().is_some_and(|n| n == std::ffi::OsStr::new(id)));
        if own && cgroups::check_recorded(cgroup).is_ok() {
            destroy_cgroup(id, cgroup)?;
        }
    }
    for name in store.names_of(id) {
        store.release_name(&name, id);
    }
    super::create::release_userns(store, id, None);
    remove_folder(store, id)
}

/// Kills whatever is left in the container's cgroup and removes it.
fn destroy_cgroup(id: &str, cgroup: &cgroups::CgroupPaths) -> Result<(), ContainerError> {
    let setup = |reason: String| ContainerError::Setup {
        id: id.to_string(),
        reason,
    };
    cgroups::check_recorded(cgroup).map_err(|e| setup(e.to_string()))?;
    cgroups::manager(cgroup)
        .destroy()
        .map_err(|e| setup(e.to_string()))?;
    // The monitor's, beside it (a monitor still relaying a killed container's last output
    // goes with it).
    super::monitor::remove_monitor_cgroup(cgroup).map_err(|e| setup(e.to_string()))
}

/// Deletes the container's folder: renamed first, atomically, so that a monitor that still
/// records the exit finds no folder instead of re-creating files in one being deleted.
fn remove_folder(store: &ContainerStore, id: &str) -> Result<(), ContainerError> {
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

/// SIGKILLs the init `pid` (if it is still the process that started at `start_time`)
/// through a pidfd (no recycled-PID risk once open) and waits until it is gone.
fn kill_init(id: &str, pid: Option<i32>, start_time: Option<u64>) -> Result<(), ContainerError> {
    let Some(pid) = pid else { return Ok(()) };
    let Ok(pidfd) = sys::pidfd_open(pid) else {
        return Ok(());
    }; // already gone
       // The PID could have been recycled between the liveness check and pidfd_open.
    if !super::state::is_same_process(Some(pid), start_time) {
        return Ok(());
    }
    let err = |e: std::io::Error| ContainerError::Setup {
        id: id.to_string(),
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
