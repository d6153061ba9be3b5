//! `events`: the container's cgroup counters as runc's `stats` event objects, and its OOM
//! kills as `oom` events (the CLI prints them once with `--stats`, else every interval
//! until the container stops).

use super::state::{self, Status};
use super::RuntimeError;
use crate::linux::cgroups;

/// One observation of container `id`: its `stats` event, whether the kernel's OOM killer
/// has killed a process of it, and whether it still runs.
pub struct Observation {
    pub stats: serde_json::Value,
    pub oom_killed: bool,
    pub stopped: bool,
}

/// Observes container `id` now.
pub fn observe(root: &std::path::Path, id: &str) -> Result<Observation, RuntimeError> {
    let (dir, record) = state::load(root, id)?;
    let stopped = record.status(&dir) == Status::Stopped;
    cgroups::check_recorded(&record.cgroup).map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let cgroup = cgroups::manager(&record.cgroup);
    let s = cgroup.stats();
    let stats = serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {"total": s.cpu_ns}},
            "memory": {
                "usage": {"usage": s.memory_usage, "limit": s.memory_limit.unwrap_or(0)},
                "stats": {"inactive_file": s.memory_inactive_file},
            },
            "pids": {"current": s.pids},
            "blkio": {"ioServiceBytesRecursive": [
                {"op": "Read", "value": s.block_read},
                {"op": "Write", "value": s.block_write},
            ]},
        },
    });
    Ok(Observation {
        stats,
        oom_killed: cgroup.oom_killed(),
        stopped,
    })
}

/// runc's `oom` event for container `id`.
pub fn oom_event(id: &str) -> serde_json::Value {
    serde_json::json!({"type": "oom", "id": id})
}
