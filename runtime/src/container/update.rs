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
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResourcesBuilder,
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
    /// CPU shares (relative weight).
    pub cpu_shares: Option<u64>,
    /// The CPUs the container may run on.
    pub cpuset_cpus: Option<String>,
    /// The memory nodes the container may use.
    pub cpuset_mems: Option<String>,
    /// Memory plus swap in bytes; -1 unlimited.
    pub memory_swap: Option<i64>,
    /// The memory soft limit in bytes.
    pub memory_reservation: Option<i64>,
    /// Block I/O weight (10..1000).
    pub blkio_weight: Option<u16>,
    /// The restart policy.
    pub restart_policy: Option<RestartPolicy>,
}

impl Update {
    fn changes_limits(&self) -> bool {
        self.memory.is_some()
            || self.cpus.is_some()
            || self.pids_limit.is_some()
            || self.cpu_shares.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some()
            || self.memory_swap.is_some()
            || self.memory_reservation.is_some()
            || self.blkio_weight.is_some()
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
        check_memory(update, &resources["memory"])?;
        if let Some(memory) = memory_update(update, resources) {
            live = live.memory(memory.build().map_err(setup)?);
        }
        if let Some(cpu) = cpu_update(update, resources) {
            live = live.cpu(cpu.build().map_err(setup)?);
        }
        if let Some(w) = update.blkio_weight {
            resources["blockIO"]["weight"] = w.into();
            live = live.block_io(
                LinuxBlockIoBuilder::default()
                    .weight(w)
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

/// Refuses a swap or reservation that does not fit the memory limit the update leaves
/// (`recorded`: the spec's memory section), as Docker does.
fn check_memory(update: &Update, recorded: &Value) -> Result<(), ContainerError> {
    let t = super::tuning::Tuning {
        memory_swap: update.memory_swap,
        memory_reservation: update.memory_reservation,
        ..Default::default()
    };
    t.check(update.memory.or(recorded["limit"].as_i64()), false)?;
    if let (Some(m), None, Some(swap)) =
        (update.memory, update.memory_swap, recorded["swap"].as_i64())
    {
        if swap != -1 && swap < m {
            return Err(ContainerError::InvalidArgument(
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time".into(),
            ));
        }
    }
    Ok(())
}

/// The memory section of an update, written into the spec's `resources` too: the limit
/// goes with the swap limit the container has (v1 keeps memsw at least the limit).
fn memory_update(update: &Update, resources: &mut Value) -> Option<LinuxMemoryBuilder> {
    if update.memory.is_none()
        && update.memory_swap.is_none()
        && update.memory_reservation.is_none()
    {
        return None;
    }
    let m = &mut resources["memory"];
    let mut b = LinuxMemoryBuilder::default();
    if let Some(limit) = update.memory {
        m["limit"] = limit.into();
    }
    if let Some(swap) = update.memory_swap {
        m["swap"] = swap.into();
    }
    if update.memory.is_some() || update.memory_swap.is_some() {
        if let Some(limit) = m["limit"].as_i64() {
            b = b.limit(limit);
        }
        if let Some(swap) = m["swap"].as_i64() {
            b = b.swap(swap);
        }
    }
    if let Some(r) = update.memory_reservation {
        m["reservation"] = r.into();
        b = b.reservation(r);
    }
    Some(b)
}

/// The CPU section of an update (quota, shares, cpusets), written into the spec too.
fn cpu_update(update: &Update, resources: &mut Value) -> Option<LinuxCpuBuilder> {
    let any = update.cpus.is_some()
        || update.cpu_shares.is_some()
        || update.cpuset_cpus.is_some()
        || update.cpuset_mems.is_some();
    if !any {
        return None;
    }
    let c = &mut resources["cpu"];
    let mut b = LinuxCpuBuilder::default();
    if let Some(cpus) = update.cpus {
        let quota = (cpus * CPU_PERIOD_US as f64).round() as i64;
        c["quota"] = quota.into();
        c["period"] = CPU_PERIOD_US.into();
        b = b.quota(quota).period(CPU_PERIOD_US);
    }
    if let Some(shares) = update.cpu_shares {
        c["shares"] = shares.into();
        b = b.shares(shares);
    }
    if let Some(cpus) = &update.cpuset_cpus {
        c["cpus"] = cpus.clone().into();
        b = b.cpus(cpus.clone());
    }
    if let Some(mems) = &update.cpuset_mems {
        c["mems"] = mems.clone().into();
        b = b.mems(mems.clone());
    }
    Some(b)
}
