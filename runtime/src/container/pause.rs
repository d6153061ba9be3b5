//! `pause` / `unpause`: freeze and thaw every process of a running container with the cgroup
//! freezer, as Docker does (in a VM container, the agent freezes the guest's cgroup).

use super::state::Status;
use super::store::ContainerStore;
use super::ContainerError;
use crate::linux::cgroups;

/// Freezes (`paused`) or thaws container `id`.
pub fn set_paused(store: &ContainerStore, id: &str, paused: bool) -> Result<(), ContainerError> {
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
    if state.isolation == "vm" {
        // The workload's cgroup is inside the guest: the agent freezes it.
        crate::vm::control::set_frozen(id, paused)?;
    } else {
        cgroups::manager(&state.cgroup)
            .set_frozen(paused)
            .map_err(|e| ContainerError::Setup {
                id: id.to_string(),
                reason: e.to_string(),
            })?;
    }
    let mut s = state;
    s.paused = paused;
    store.save(&s)
}
