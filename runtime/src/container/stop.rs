//! `stop`: SIGTERM, then SIGKILL after the grace period, as Docker stops a container; returns
//! once the exit is recorded.

use super::state::{State, Status};
use super::store::ContainerStore;
use super::{kill, wait, ContainerError};
use crate::linux::sys;
use std::time::Duration;

/// Docker's default grace period.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops container `id`: `signal` (else its `--stop-signal`, else SIGTERM), and SIGKILL if it
/// is still running after `timeout` (else its `--stop-timeout`, else 10 s). A container that
/// is not running is left as it is; either way no restart policy revives it.
pub fn stop(
    store: &ContainerStore,
    id: &str,
    signal: Option<i32>,
    timeout: Option<Duration>,
) -> Result<State, ContainerError> {
    // A restart policy must not bring back what the user stopped.
    store.update(id, |s| s.stopped_by_user = true)?;
    let state = store.observe(id)?;
    let signal = signal.or(state.stop_signal).unwrap_or(libc::SIGTERM);
    let timeout = timeout
        .or(state.stop_timeout.map(Duration::from_secs))
        .unwrap_or(DEFAULT_TIMEOUT);
    if state.status != Status::Running || !state.init_alive() {
        return Ok(state);
    }
    let Some(pid) = state.pid else {
        return Ok(state);
    };
    let Ok(pidfd) = sys::pidfd_open(pid) else {
        return wait::wait_exit(store, id);
    };
    let _ = kill::kill(store, id, signal);
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let exited = sys::pidfd_wait_exit(&pidfd, ms).unwrap_or(false);
    if !exited && state.init_alive() {
        let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
        let _ = sys::pidfd_wait_exit(&pidfd, 10_000);
    }
    wait::wait_exit(store, id)
}
