//! `update`: changes a container's memory, CPU and PID limits and its restart policy.
//! The limits go into its spec (its next runs) and, while it runs, into its cgroup at once;
//! the policy into its record, where its monitor reads it at the next exit.

use super::restart::RestartPolicy;
use super::sandbox::Isolation;
use super::state::State;
use super::store::ContainerStore;
use super::ContainerError;
use crate::fsutil::write_replacing;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};
use serde_json::Value;

/// The CFS period capsa sets with a CPU quota (µs).
const CPU_PERIOD_US: u64 = 100_000;

/// What to change; None leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPUs (a fraction of CPU time).
    pub cpus: Option<f64>,
    /// PID limit; 0 or less: unlimited.
    pub pids_limit: Option<i64>,
    /// The restart policy.
    pub restart_policy: Option<RestartPolicy>,
}

impl Update {
    fn changes_limits(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids_limit.is_some()
    }
}

/// Applies `update` to container `id`; returns the state it leaves.
pub fn update(store: &ContainerStore, id: &str, update: &Update) -> Result<State, ContainerError> {
    let invalid = |m: &str| Err(ContainerError::InvalidArgument(m.to_string()));
    if update.memory.is_some_and(|m| m < 6 * 1024 * 1024) {
        return invalid("Minimum memory limit allowed is 6MB");
    }
    if update.cpus.is_some_and(|c| c <= 0.0) {
        return invalid("CPUs must be positive");
    }
    let lock = store.lock(id)?;
    let state = store.observe(id)?;
    if update.changes_limits() && state.isolation == Isolation::Vm {
        return invalid(
            "a VM's memory and CPUs are fixed when it boots: update changes the limits of container isolation only",
        );
    }
    if state.auto_remove
        && update
            .restart_policy
            .is_some_and(|p| p != RestartPolicy::No)
    {
        return invalid(
            "Restart policy cannot be updated because AutoRemove is enabled for the container",
        );
    }
    if update.changes_limits() {
        let path = store.dir(id).config();
        let mut spec: Value = std::fs::read(&path)
            .map_err(|e| ContainerError::io(&path, e))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))
            })?;
        let resources = &mut spec["linux"]["resources"];
        let mut live = LinuxResourcesBuilder::default();
        let setup = |e: oci_spec::OciSpecError| ContainerError::Setup {
            id: id.to_string(),
            reason: e.to_string(),
        };
        if let Some(m) = update.memory {
            resources["memory"]["limit"] = m.into();
            live = live.memory(
                LinuxMemoryBuilder::default()
                    .limit(m)
                    .build()
                    .map_err(setup)?,
            );
        }
        if let Some(c) = update.cpus {
            let quota = (c * CPU_PERIOD_US as f64).round() as i64;
            resources["cpu"]["quota"] = quota.into();
            resources["cpu"]["period"] = CPU_PERIOD_US.into();
            live = live.cpu(
                LinuxCpuBuilder::default()
                    .quota(quota)
                    .period(CPU_PERIOD_US)
                    .build()
                    .map_err(setup)?,
            );
        }
        if let Some(p) = update.pids_limit {
            let limit = if p <= 0 { -1 } else { p };
            if limit > 0 {
                resources["pids"]["limit"] = limit.into();
            } else if let Some(r) = resources.as_object_mut() {
                r.remove("pids");
            }
            live = live.pids(
                LinuxPidsBuilder::default()
                    .limit(limit)
                    .build()
                    .map_err(setup)?,
            );
        }
        if state.init_alive() {
            let live = live.build().map_err(setup)?;
            crate::linux::cgroups::manager(&state.cgroup)
                .apply(&live)
                .map_err(|e| ContainerError::Setup {
                    id: id.to_string(),
                    reason: format!("cannot update its cgroup: {e}"),
                })?;
        }
        let data = serde_json::to_vec(&spec)
            .map_err(|e| ContainerError::io(&path, std::io::Error::other(e)))?;
        write_replacing(&path, &data, false).map_err(|e| ContainerError::io(&path, e))?;
    }
    drop(lock);
    let policy = update.restart_policy;
    store
        .update(id, |s| {
            if let Some(p) = policy {
                s.restart_policy = p;
            }
        })?
        .ok_or_else(|| ContainerError::NotFound(id.to_string()))
}
