//! `pause` / `unpause`: freeze and thaw every process of a running container with the cgroup
//! freezer, as Docker does (in a VM container, the agent freezes the guest's cgroup).

use super::sandbox::Sandbox;
use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;

/// Freezes (`paused`) or thaws container `id`, whose isolation is `sandbox`.
pub fn set_paused(
    store: &ContainerStore,
    id: &str,
    paused: bool,
    sandbox: &dyn Sandbox,
) -> Result<(), ContainerError> {
    let _lock = store.lock(id)?;
    let state = store.observe(id)?;
    if state.status != Status::Running || !state.init_alive() {
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: "container is not running".into(),
        });
    }
    if state.paused == paused {
        let reason = if paused {
            "container is already paused"
        } else {
            "container is not paused"
        };
        return Err(ContainerError::WrongState {
            id: id.to_string(),
            reason: reason.into(),
        });
    }
    sandbox.freeze(&state, paused)?;
    let mut s = state;
    s.paused = paused;
    store.save(&s)
}
